"""`orthrus-bench run`, `merge` and `suites`: suites x methods into a results directory."""

from __future__ import annotations

import time

from .args import add_data_dir_arg, add_engine_arg, add_model_args, parse_list


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run suites x methods on a model into a results directory (no arguments: the embedded default)",
    )
    add_model_args(p)
    add_engine_arg(p)
    p.add_argument("--suite", type=parse_list, help="comma-separated suite names or .toml paths")
    p.add_argument(
        "--methods", type=parse_list, help="comma-separated method specs, e.g. ar,orthrus,eagle3:tree=chain"
    )
    p.add_argument("--temperature", type=float, help="override every suite's temperature (0 = greedy)")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--limit", type=int, help="first N items of each suite")
    p.add_argument("--ids", type=parse_list, help="comma-separated dataset ids to keep (one suite)")
    p.add_argument("--samples", type=int, default=1, help="generations per item and method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=2, help="unrecorded warm-up generations per method")
    p.add_argument("--no-telemetry", action="store_true", help="measure wall-clock only (overhead baseline)")
    add_data_dir_arg(p)
    p.add_argument("--out", help="results directory (default: runs/<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: run again the units that ended in an error (their records kept in "
        "retried-errors.jsonl)",
    )
    p.add_argument("--shard", help="i/n: run the items whose position is i modulo n")
    p.add_argument("--no-verify", action="store_true", help="skip the equivalence verdicts at the end")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("merge", help="join the shard directories of one run")
    p.add_argument("shards", nargs="+", help="shard result directories")
    p.add_argument("--out", required=True, help="merged results directory")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("suites", help="list the suite files")
    add_data_dir_arg(p)
    p.set_defaults(func=cmd_suites)


def cmd_run(args) -> int:
    from harness.report.summary import print_summary, summarize
    from harness.run.runner import execute
    from harness.run.shards import parse_shard
    from harness.run.spec import DEFAULT_LIMIT, RunSpec
    from harness.store import read_records
    from harness.verify.config import VerifyConfig
    from harness.verify.verdicts import verify_main

    defaults = RunSpec()
    embedded = args.suite is None and args.model is None
    spec = RunSpec(
        suites=args.suite or defaults.suites,
        methods=args.methods or defaults.methods,
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        limit=args.limit if args.limit is not None else (DEFAULT_LIMIT if embedded else None),
        ids=args.ids,
        samples=args.samples,
        seed=args.seed,
        warmup=args.warmup,
        telemetry=not args.no_telemetry,
        data_dir=args.data_dir,
        engine=args.engine,
    )
    out = args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    directory = execute(
        spec, out, resume=args.resume, retry_failed=args.retry_failed, shard=parse_shard(args.shard)
    )
    wall = time.perf_counter() - t0
    print_summary(summarize(read_records(directory)), f"{directory} ({wall:.0f} s)")
    if args.no_verify:
        return 0
    return verify_main(directory, VerifyConfig(device=args.device))


def cmd_merge(args) -> int:
    from harness.report.summary import print_summary, summarize
    from harness.run.shards import merge
    from harness.store import read_records

    directory = merge(args.shards, args.out)
    print_summary(summarize(read_records(directory)), f"{directory} (merged from {len(args.shards)} shards)")
    return 0


def cmd_suites(args) -> int:
    from harness.suites import list_suites, load_suite

    for name in list_suites():
        suite = load_suite(name, args.data_dir)
        print(f"{name:12s} {suite.config.get('description', '')}")
    return 0
