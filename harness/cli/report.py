"""Command-line entry points of `orthrus-bench report`, `compare` and `dashboard`: an `add_*_args(parser)`
and `*_main(args) -> int` pair per command. Only argparse here; the modules that draw and test (matplotlib,
pandas, scipy) load when a command runs, so building the parser stays cheap for every other command."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories (records.jsonl + run.json)")
    p.add_argument("--out", required=True, help="report directory, e.g. reports/tiny")
    p.add_argument("--title", help="page title (default: the run directories)")
    p.add_argument(
        "--calibration",
        default="reports/calibration.json",
        help="calibration table from `orthrus-bench calibrate` (default: reports/calibration.json, if present)",
    )


def report_main(args: argparse.Namespace) -> int:
    from harness.report.tables import write_report

    out = write_report(args.runs, args.out, args.title, args.calibration)
    print(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'figures'}/*.png")
    return 0


def add_compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="baseline run directory (e.g. results/tiny)")
    p.add_argument("new", help="run directory to check against it")
    p.add_argument("--threshold", type=float, default=0.05, help="relative change that counts (default 0.05)")
    p.add_argument(
        "--alpha", type=float, default=0.002, help="Mann–Whitney significance level (default 0.002)"
    )
    p.add_argument("--out", help="also append the markdown table to this file (e.g. $GITHUB_STEP_SUMMARY)")
    p.add_argument(
        "--no-timing-gate",
        action="store_true",
        help="show timing and memory changes without failing on them (BASE measured on another machine)",
    )


def compare_main(args: argparse.Namespace) -> int:
    """Exit status 1 when anything regressed, 0 otherwise."""
    from harness.report.compare import REGRESSION, compare_runs, markdown
    from harness.report.runs import load_runs

    base, new = load_runs([args.base, args.new])
    rows = compare_runs(base, new, args.threshold, args.alpha, gate_timing=not args.no_timing_gate)
    text = markdown(rows, Path(args.base), Path(args.new), args.threshold, args.alpha)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)
    return 1 if any(r.verdict == REGRESSION for r in rows) else 0


def add_dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("history", help="directory holding one run directory per benchmarked commit")
    p.add_argument("--out", default="reports/dashboard", help="output directory (default: reports/dashboard)")


def dashboard_main(args: argparse.Namespace) -> int:
    from harness.report.dashboard import write_dashboard

    out = write_dashboard(args.history, args.out)
    print(f"wrote {out / 'dashboard.html'}, trend PNGs, benchmark-bigger.json and benchmark-smaller.json")
    return 0
