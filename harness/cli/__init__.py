"""The `orthrus-bench` command: one module per command group, each registering its subcommands.

    generate.py  generate                       one prompt through a decoder
    run.py       run, merge, suites             suites x methods into a results directory
    verify.py    verify, calibrate              the equivalence verdicts and their error rates
    report.py    report, compare, dashboard     pages, the regression gate, trends
    bench.py     bench-engine, bench-overhead   benchmarks that print figures
    checkpoints.py  inspect                     a checkpoint as the loaders see it, without its weights
    train.py     train-tiny                     the tiny family
    args.py      what several commands share

Bad input exits 2 with a message naming it (no traceback), and so does a path the command may not write (a
read-only results directory, a file where --out needs a directory: make it writable or choose another
--out); a run that fails (a full disk, an I/O error) exits 1 with a message, as does a lossless method that
fails verification; Ctrl-C exits 130, and SIGTERM during `run` 143 (handled as Ctrl-C:
harness.run.signals). An interrupted or failed `run` says how to continue it: its finished units are kept,
and `--resume` runs the rest.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

from . import bench, checkpoints, generate, report, run, train, verify
from .args import ArgumentParser, UsageError

GROUPS = (generate, run, verify, report, bench, checkpoints, train)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(  # no prefix matching, in every subcommand too (args.ArgumentParser)
        prog="orthrus-bench",
        description="Benchmark lossless parallel decoders (Orthrus and its baselines): run suites, verify that "
        "outputs are the AR model's, report.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def usage_errors() -> tuple[type[Exception], ...]:
    """The errors that mean bad input, not a bug: a checkpoint, suite, dataset, store or run that cannot be
    used as asked (CheckpointError and SuiteError are ValueErrors)."""
    from harness.run.spec import RunError
    from harness.store import StoreError
    from harness.suites.data import DatasetUnavailableError

    return (UsageError, RunError, StoreError, DatasetUnavailableError, FileNotFoundError, ValueError)


def resume_hint(args) -> str:
    """How to continue an interrupted or failed `run` (empty for the other commands)."""
    if args.command != "run" or getattr(args, "out", None) is None:
        return ""
    out = Path(args.out)
    if not (out.is_dir() and any(out.iterdir())):  # stopped before it wrote anything
        return f"; nothing was written to {out}: the same command starts the run again"
    again = "the same command" if args.resume else f"the same command with --resume --out {args.out}"
    return f"; the finished units are kept in {args.out}: {again} runs the rest"


# An OSError with one of these is the user's to fix (exit 2), not the machine failing (exit 1): a path that
# cannot be written or read as asked, where running the same command again changes nothing.
NOT_PERMITTED = (errno.EACCES, errno.EPERM, errno.EROFS)


def permission_hint(args, e: OSError) -> str:
    """What to do about a path the command may not write (or read): `run`'s own directory made writable, or
    another --out; then, if units were kept there, how to continue."""
    where = Path(e.filename) if e.filename else None
    out = Path(args.out) if args.command == "run" and getattr(args, "out", None) else None
    if out is None or (
        where is not None and out.resolve() not in (where.resolve(), *where.resolve().parents)
    ):
        return f"; check the permissions of {where or 'the files the command uses'}"
    hint = f"; {out} cannot be written: make it writable (e.g. chmod -R u+w {out}) or choose another --out"
    if out.is_dir() and any(out.iterdir()):
        again = "the same command" if args.resume else f"the same command with --resume --out {args.out}"
        hint += f". The finished units are kept in {out}: once it is writable, {again} runs the rest"
    return hint


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during a run (harness.run.signals.Terminated)
        signum = getattr(e, "signum", None)
        what = "interrupted" if signum is None else f"terminated ({signal.Signals(signum).name})"
        print(f"orthrus-bench {args.command}: {what}{resume_hint(args)}", file=sys.stderr)
        return 130 if signum is None else 128 + signum
    except Exception as e:
        if isinstance(e, usage_errors()):
            print(f"orthrus-bench {args.command}: error: {e}", file=sys.stderr)
            return 2
        if isinstance(e, OSError) and e.errno in NOT_PERMITTED:
            print(f"orthrus-bench {args.command}: error: {e}{permission_hint(args, e)}", file=sys.stderr)
            return 2
        if isinstance(e, OSError):  # the machine's, not the input's: a full disk, a lost mount, an I/O error
            print(f"orthrus-bench {args.command}: failed: {e}{resume_hint(args)}", file=sys.stderr)
            return 1
        raise
