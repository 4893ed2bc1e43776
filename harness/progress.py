"""What a long command is doing, and how far it is, on stderr: never on stdout, which carries the tables and
may be piped. Every command that can run for more than a few seconds (run, verify, calibrate, bench-overhead,
bench-syncs) takes `--quiet`, which turns it off.

    progress = Reporter()                                   # Reporter(enabled=False): silent
    progress.say("verify: loading the target models/tiny/orthrus (float32, cpu)")
    for path in progress.bar(paths, "verify: near-tie study, tiny-math", unit="paths"):
        ...

On a terminal a stage is a tqdm bar (left in place or cleared as the caller asks). Elsewhere (a CI log, a
file, a pipe) it is a few plain lines, so that the log stays readable: one when the stage starts, one at most
every `interval` seconds while it runs, and one when it ends, e.g.

    verify: near-tie study, tiny-math: 0/4 paths
    verify: near-tie study, tiny-math: 4/4 paths, done in 12 s
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator

INTERVAL = 30.0  # seconds between a stage's lines when stderr is not a terminal


class Reporter:
    """Progress on stderr (`file`, default the sys.stderr of the moment), or nothing when not `enabled`.
    `interactive` (default: whether the file is a terminal) chooses between a tqdm bar and plain lines."""

    def __init__(
        self,
        enabled: bool = True,
        *,
        file=None,
        interactive: bool | None = None,
        interval: float = INTERVAL,
    ):
        self.enabled, self._file, self._interactive, self.interval = enabled, file, interactive, interval

    @property
    def file(self):
        return self._file if self._file is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        if self._interactive is not None:
            return self._interactive
        isatty = getattr(self.file, "isatty", None)
        if not (isatty and isatty()):
            return False
        try:  # a terminal of no width (a pty that was never sized) shows no bar: plain lines there
            return os.get_terminal_size(self.file.fileno()).columns > 0
        except (AttributeError, OSError, ValueError):
            return False

    def say(self, text: str) -> None:
        """One line: a step that has no count (loading a model, rebuilding a decoder)."""
        if not self.enabled:
            return
        if self.interactive:
            from tqdm import tqdm

            tqdm.write(text, file=self.file)  # above a bar that is showing, not through it
        else:
            print(text, file=self.file, flush=True)

    def bar(
        self,
        iterable: Iterable | None = None,
        desc: str = "",
        *,
        total: int | None = None,
        unit: str = "it",
        initial: int = 0,
        leave: bool = False,
    ):
        """A stage over `iterable` (or counted with `.update(n)`, then `.close()`), showing `desc` and how far
        it is: `n/total unit`. It supports what the callers use of tqdm: iteration, update, set_postfix_str,
        close. `leave`: on a terminal, keep the finished bar (else it is cleared)."""
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if not self.enabled:
            return _Silent(iterable)
        if self.interactive:
            from tqdm import tqdm

            return tqdm(
                iterable,
                desc=desc,
                total=total,
                unit=unit,
                initial=initial,
                leave=leave,
                file=self.file,
                dynamic_ncols=True,
            )
        return _Lines(self, iterable, desc, total, unit, initial)


class _Silent:
    """A bar that shows nothing."""

    def __init__(self, iterable):
        self.iterable, self.n = iterable, 0

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


class _Lines:
    """A stage as plain lines (stderr not a terminal): at the start, at most every `interval` seconds, and at
    the end. An empty stage (total 0) says nothing."""

    def __init__(self, reporter: Reporter, iterable, desc: str, total: int | None, unit: str, initial: int):
        self.reporter, self.iterable, self.desc, self.total, self.unit = reporter, iterable, desc, total, unit
        self.n, self.postfix, self.closed = initial, "", False
        self.start = self.last = time.monotonic()
        if total != 0:
            self._line()

    def _line(self, end: str = "") -> None:
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        postfix = f" [{self.postfix}]" if self.postfix else ""
        print(f"{self.desc}: {count} {self.unit}{postfix}{end}", file=self.reporter.file, flush=True)

    def __iter__(self) -> Iterator:
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.reporter.interval and (self.total is None or self.n < self.total):
            self.last = now
            self._line(f", {now - self.start:.0f} s")

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if self.closed or self.total == 0:
            return
        self.closed = True
        self._line(f", done in {time.monotonic() - self.start:.0f} s")


SILENT = Reporter(enabled=False)
