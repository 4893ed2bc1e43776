"""`orthrus-bench bench-engine`, `bench-overhead` and `bench-syncs`: benchmarks that print figures."""

from __future__ import annotations

from .args import (
    UsageError,
    add_data_dir_arg,
    add_engine_arg,
    add_model_args,
    add_quiet_arg,
    parse_float_list,
    parse_int_list,
    parse_list,
    parse_methods,
)


def register(sub) -> None:
    register_bench_engine(sub)
    register_bench_overhead(sub)
    register_bench_syncs(sub)


def register_bench_engine(sub) -> None:
    p = sub.add_parser(
        "bench-engine",
        help="time a prefill, an AR step (against the roofline), a diffusion pass and a verify pass, and end to end",
    )
    add_model_args(p)
    p.add_argument(
        "--shape",
        default="small",
        help="small | qwen3-1.7b | qwen3-4b | qwen3-8b (random weights; ignored with --model)",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="on a CPU, the whole plan: every engine mode (compile builds autotuned kernels: minutes), 20 "
        "repeats, 128 new tokens, every baseline (ar-hf:cache=static compiles); a GPU runs it by default",
    )
    p.add_argument(
        "--contexts",
        type=parse_int_list,
        default=None,
        help="context lengths, e.g. 128,1024 (default: 64,256,1024 on a CPU, 1024 to 40000 on a GPU)",
    )
    p.add_argument(
        "--block-sizes", type=parse_int_list, default=None, help="e.g. 16,32 (default: the model's on a CPU)"
    )
    p.add_argument(
        "--new-tokens",
        type=int,
        default=None,
        help="tokens per end-to-end generation (default: 16 on a CPU, 128 with --full or on a GPU)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per pass (default: 10 on a CPU, 20 with --full or on a GPU)",
    )
    p.add_argument(
        "--engines",
        type=parse_list,
        default=None,
        help="engine modes to time, e.g. eager,compile (default: eager on a CPU; every mode the device runs "
        "with --full or on a GPU)",
    )
    p.add_argument(
        "--batch-sizes",
        type=parse_int_list,
        default=None,
        help="also time the batched passes (B rows, as the decode loop orthrus_core.loop runs them) at these batch "
        "sizes, e.g. 1,4,16,64",
    )
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_bench_engine)


def register_bench_overhead(sub) -> None:
    p = sub.add_parser("bench-overhead", help="wall-clock cost of the runner's telemetry (on vs off)")
    add_model_args(p)
    add_engine_arg(p)
    p.add_argument(
        "--methods", type=parse_methods, default=["ar", "orthrus"], help="method specs, e.g. ar,orthrus"
    )
    p.add_argument("--suite", default="tiny-math", help="suite whose first prompts are generated")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--repeats", type=int, default=4, help="passes over the prompts per side")
    p.add_argument("--max-new-tokens", type=int, default=128)
    add_data_dir_arg(p)
    add_quiet_arg(p)
    p.set_defaults(func=cmd_bench_overhead)


def register_bench_syncs(sub) -> None:
    p = sub.add_parser(
        "bench-syncs",
        help="kernel launches outside graphs, graph replays and compiled calls, and host syncs per decode cycle "
        "for each method in each engine mode, on the CUDA route (rehearsed on a CPU); how each is counted and "
        "what it costs a GPU: harness/bench/syncs.py",
    )
    add_model_args(p)
    p.add_argument(
        "--methods", type=parse_methods, default=None, help="method specs (default: every batched one)"
    )
    p.add_argument(
        "--engines",
        type=parse_list,
        default=None,
        help="engine modes, e.g. eager,cudagraph (default: every mode, orthrus_core.engine.ENGINES)",
    )
    p.add_argument("--rows", type=parse_int_list, default=[1, 4], help="batch sizes (continuous), e.g. 1,4")
    p.add_argument("--temperatures", type=parse_float_list, default=[0.0, 1.0], help="e.g. 0,1")
    p.add_argument("--suite", default="tiny-math", help="suite whose first prompts are decoded")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--json", help="also write the counts to this JSON file")
    add_data_dir_arg(p)
    add_quiet_arg(p)
    p.set_defaults(func=cmd_bench_syncs)


def cmd_bench_engine(args) -> int:
    from harness.bench.engine_bench import bench_engine
    from orthrus_core.engine import EngineError

    try:
        figures = bench_engine(
            args.shape,
            model_path=args.model,
            dtype=args.dtype,
            device=args.device,
            engines=args.engines,
            contexts=args.contexts,
            block_sizes=args.block_sizes,
            new_tokens=args.new_tokens,
            repeats=args.repeats,
            batch_sizes=args.batch_sizes,
            full=args.full,
        )
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        from orthrus_core.jsonfile import write_json

        write_json(args.json, figures)
    return 0


def cmd_bench_overhead(args) -> int:
    from harness.bench.overhead import bench_overhead, print_overhead
    from harness.methods import load_target
    from harness.progress import Reporter
    from harness.suites import load_suite

    progress = Reporter(enabled=not args.quiet)
    progress.say(f"bench-overhead: loading {args.model or 'the embedded tiny family'} ({args.dtype})")
    target = load_target(args.model, args.dtype, args.device, args.engine)
    if target.tokenizer is None:
        raise UsageError(f"{args.model} has no tokenizer files; the benchmark renders suite prompts")
    suite = load_suite(args.suite, args.data_dir, limit=args.prompts)
    prompts = [suite.render(target.tokenizer, item, []) for item in suite.items(target.tokenizer)]
    results = [
        bench_overhead(
            target,
            prompts,
            method=method,
            max_new_tokens=args.max_new_tokens,
            repeats=args.repeats,
            progress=progress,
        )
        for method in args.methods
    ]
    print_overhead(results)
    return 0


def cmd_bench_syncs(args) -> int:
    from harness.bench.syncs import METHODS, bench_syncs, print_syncs, route_name
    from harness.methods import BATCHED
    from harness.progress import Reporter
    from harness.suites import load_suite
    from orthrus_core.engine import ENGINES

    # Refused before a model loads: each method decodes in the loop, at rows it can have
    for spec in args.methods or []:
        if spec.name not in BATCHED:
            raise UsageError(
                f"bench-syncs counts the decode loop's cycles: {spec!r} is not one of {', '.join(BATCHED)}"
            )
    engines = args.engines or list(ENGINES)
    if unknown := [e for e in engines if e not in ENGINES]:
        raise UsageError(f"--engines takes {', '.join(ENGINES)}, not {', '.join(unknown)}")
    if not args.rows or min(args.rows) < 1:
        raise UsageError(f"--rows needs batch sizes of at least 1, got {args.rows}")
    if args.prompts < 1 or args.max_new_tokens < 2:
        raise UsageError(
            "--prompts needs at least 1 and --max-new-tokens at least 2 (one cycle after the first token)"
        )
    suite = load_suite(args.suite, args.data_dir, limit=args.prompts)
    results = bench_syncs(
        args.model, args.dtype, args.device, suite, methods=args.methods or METHODS, engines=engines,
        rows=args.rows, temperatures=args.temperatures, max_new_tokens=args.max_new_tokens,
        progress=Reporter(enabled=not args.quiet),
    )  # fmt: skip
    print_syncs(results, route_name(args.device))
    if args.json:
        from orthrus_core.jsonfile import write_json

        write_json(args.json, results)
    return 0
