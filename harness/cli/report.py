"""`orthrus-bench report`, `compare` and `dashboard`: results directories into pages, the regression gate and
trends. The modules that draw and test (matplotlib, pandas, scipy) load when a command runs."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("report", help="HTML + markdown report with figures from run directories")
    p.add_argument("runs", nargs="+", help="run directories (records.jsonl + run.json)")
    p.add_argument("--out", required=True, help="report directory, e.g. reports/tiny")
    p.add_argument("--title", help="page title (default: the run directories)")
    p.add_argument(
        "--calibration",
        default="reports/calibration.json",
        help="calibration table from `orthrus-bench calibrate` (default: reports/calibration.json, if present)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="regression gate: NEW against BASE per prompt (exit 1 on regression)")
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
        help="show timing and memory changes without failing on them (they are never gated between runs from "
        "different machines or software: CPU or GPU model, torch version, engine mode)",
    )
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="compare runs generated with different settings (model, dtype, --quantize, lengths, sampling, "
        "seed, suites and items, method options), which is refused otherwise (exit 2)",
    )
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("dashboard", help="trends across runs and github-action-benchmark JSON")
    p.add_argument("history", help="directory holding one run directory per benchmarked commit")
    p.add_argument("--out", default="reports/dashboard", help="output directory (default: reports/dashboard)")
    p.set_defaults(func=cmd_dashboard)


def cmd_report(args) -> int:
    from harness.report.page import write_report

    out = write_report(args.runs, args.out, args.title, args.calibration)
    print(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'figures'}/*.png")
    return 0


def cmd_compare(args) -> int:
    """Exit status 1 when anything regressed, 2 when the runs' configurations differ in what changes their
    tokens and --allow-config-change is not given (the refusal is appended to --out too), 0 otherwise."""
    from harness.report.compare import ConfigChangeError, compare, markdown
    from harness.report.runs import load_runs

    base, new = load_runs([args.base, args.new])
    try:
        comparison = compare(
            base,
            new,
            args.threshold,
            args.alpha,
            gate_timing=not args.no_timing_gate,
            allow_config_change=args.allow_config_change,
        )
    except ConfigChangeError as refused:
        if args.out:
            with open(args.out, "a") as f:
                f.write(f"### orthrus-bench compare: refused, the configurations differ\n\n{refused}\n")
        raise
    text = markdown(comparison, Path(args.base), Path(args.new), args.threshold, args.alpha)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text)
    return 1 if comparison.regressions else 0


def cmd_dashboard(args) -> int:
    from harness.report.dashboard import write_dashboard

    out = write_dashboard(args.history, args.out)
    print(f"wrote {out / 'dashboard.html'}, trend PNGs, benchmark-bigger.json and benchmark-smaller.json")
    return 0
