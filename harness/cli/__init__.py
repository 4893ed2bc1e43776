"""The `orthrus-bench` command: one module per command group, each registering its subcommands.

    generate.py  generate                       one prompt through a decoder
    run.py       run, merge, suites             suites x methods into a results directory
    verify.py    verify, calibrate              the equivalence verdicts and their error rates
    report.py    report, compare, dashboard     pages, the regression gate, trends
    bench.py     bench-engine, bench-overhead   benchmarks that print figures
    checkpoints.py  inspect                     a checkpoint as the loaders see it, without its weights
    train.py     train-tiny                     the tiny family
    args.py      what several commands share

Bad input exits 2 with a message naming it (no traceback); a lossless method that fails verification exits
1; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import sys

from . import bench, checkpoints, generate, report, run, train, verify
from .args import UsageError

GROUPS = (generate, run, verify, report, bench, checkpoints, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"orthrus-bench {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, usage_errors()):
            raise
        print(f"orthrus-bench {args.command}: error: {e}", file=sys.stderr)
        return 2
