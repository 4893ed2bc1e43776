"""SIGTERM during `orthrus-bench run`, handled as Ctrl-C is: what a scheduler (Slurm's time limit, a
preemption, `kill`, a container stopping) sends a run before it kills it.

`terminate_as_interrupt()` installs, for its duration only and in the main thread only, a SIGTERM handler
that raises `Terminated`, a KeyboardInterrupt: the runner marks run.json "interrupted" and closes the store
(the finished units kept, the unfinished one left out), and the command line exits 128 + 15 = 143 naming the
resume command. The previous handler is restored when the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class Terminated(KeyboardInterrupt):
    """A terminating signal received during a run; `signum` is its number (exit status 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def terminate_as_interrupt(signums: tuple[int, ...] = (signal.SIGTERM,)):
    """Within the block, `signums` raise Terminated in the main thread; outside it, their previous handlers.
    Elsewhere than the main thread (where Python cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise_terminated) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():  # None: a handler not installed from Python; the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
