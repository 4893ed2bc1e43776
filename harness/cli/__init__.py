"""The `orthrus-bench` command line. Each subcommand parses its flags here and calls into a module."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit status 2."""


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def check_device(name: str) -> str:
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for but no CUDA device is available; use --device cpu")
    return name


def load(args):
    """The model (and its tokenizer, when the checkpoint has one) named by --model, or the embedded default."""
    from harness.paths import default_model
    from orthrus_core.checkpoint import load_model, resolve
    from orthrus_core.tokenizer import load_tokenizer

    directory = resolve(args.model) if args.model else default_model()
    model = load_model(directory, dtype=args.dtype, device=check_device(args.device))
    return model, load_tokenizer(directory)


def cmd_generate(args) -> int:
    from orthrus_core import generate

    model, tokenizer = load(args)
    if args.prompt_ids is not None:
        prompt_ids = args.prompt_ids
    else:
        if tokenizer is None:
            raise UsageError(f"{args.model} has no tokenizer files: pass --prompt-ids instead of --prompt")
        messages = [{"role": "user", "content": args.prompt}]
        prompt_ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
        )
    bad = [t for t in prompt_ids if not 0 <= t < model.config.vocab_size]
    if bad:
        raise UsageError(f"prompt ids {bad[:5]} are outside the vocabulary [0, {model.config.vocab_size})")

    stream = None
    if not args.json and tokenizer is not None:

        def stream(new_tokens):
            print(tokenizer.decode(new_tokens, skip_special_tokens=False), end="", flush=True)

    result = generate(
        model,
        prompt_ids,
        args.max_new_tokens,
        args.mode,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        block_size=args.block_size,
        on_tokens=stream,
    )
    text = tokenizer.decode(result.tokens, skip_special_tokens=False) if tokenizer is not None else None
    if args.json:
        print(json.dumps({**result.to_dict(), "text": text}))
        return 0
    if tokenizer is None:
        print(" ".join(map(str, result.tokens)))
    else:
        print()
    tau = f"  tau {result.tau:.2f}" if result.tau is not None else ""
    print(
        f"[{result.new_tokens} tokens, stop: {result.stop_reason}{tau}  TPF {result.tpf or float('nan'):.2f}"
        f"  {result.tokens_per_s:.1f} tok/s  TTFT {result.prefill_s * 1e3:.1f} ms]",
        file=sys.stderr,
    )
    return 0


def cmd_bench_engine(args) -> int:
    from harness.bench.engine import bench_engine

    bench_engine(
        args.shape,
        model_path=args.model,
        dtype=args.dtype,
        device=check_device(args.device),
        contexts=args.contexts,
        block_sizes=args.block_sizes,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
    )
    return 0


def cmd_train_tiny(args) -> int:
    import dataclasses

    from harness.paths import DEFAULT_MODEL
    from harness.suites.data import resolve_data_dir
    from harness.tiny.family import evaluate, figures_table, save_family
    from orthrus_core.training.tiny import Recipe, train_tiny

    out = args.out or DEFAULT_MODEL
    if args.eval_only:
        print(figures_table(evaluate(out, limit=args.eval_limit, data_dir=args.data_dir)))
        return 0
    overrides = {k: v for k, v in (("base_steps", args.base_steps), ("diff_steps", args.diff_steps)) if v}
    recipe = dataclasses.replace(Recipe(), **overrides)
    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        print(
            "train-tiny: no data folder (--data-dir or ORTHRUS_DATA_DIR): training on generated text only",
            file=sys.stderr,
        )
    model, tokenizer, log = train_tiny(
        out, data_dir, recipe=recipe, device=check_device(args.device), work_dir=args.work_dir
    )
    figures = save_family(out, model.float().cpu(), tokenizer, log, evaluate_limit=args.eval_limit)
    print(f"wrote {out}\n{figures_table(figures)}")
    return 0


def parse_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def cmd_run(args) -> int:
    from harness.run.runner import DEFAULT_LIMIT, RunSpec, execute, parse_shard, print_summary, summarize
    from harness.store import read_records

    defaults = RunSpec()
    embedded = args.suite is None and args.model is None
    spec = RunSpec(
        suites=args.suite or defaults.suites,
        methods=args.methods or defaults.methods,
        model=args.model,
        dtype=str(args.dtype).removeprefix("torch."),
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
    from harness.verify.verdicts import verify_main

    return verify_main(directory, device=args.device)


def cmd_merge(args) -> int:
    from harness.run.runner import merge, print_summary, summarize
    from harness.store import read_records

    directory = merge(args.shards, args.out)
    print_summary(summarize(read_records(directory)), f"{directory} (merged from {len(args.shards)} shards)")
    return 0


def cmd_bench_overhead(args) -> int:
    from harness.bench.overhead import bench_overhead, print_overhead
    from harness.suites.suite import load_suite

    model, tokenizer = load(args)
    if tokenizer is None:
        raise UsageError(f"{args.model} has no tokenizer files; the benchmark renders suite prompts")
    suite = load_suite(args.suite, args.data_dir, limit=args.prompts)
    prompts = [suite.render(tokenizer, item, []) for item in suite.items(tokenizer)]
    results = [
        bench_overhead(
            model, tokenizer, prompts, mode=mode, max_new_tokens=args.max_new_tokens, repeats=args.repeats
        )
        for mode in ("ar", "orthrus")
    ]
    print_overhead(results)
    return 0


def cmd_suites(args) -> int:
    from harness.suites.suite import list_suites, load_suite

    for name in list_suites():
        suite = load_suite(name, args.data_dir)
        print(f"{name:12s} {suite.config.get('description', '')}")
    return 0


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", help="checkpoint directory or hub id (default: the embedded tiny Orthrus model)"
    )
    p.add_argument("--dtype", type=parse_dtype, default=torch.float32, help="float32 | bfloat16 | float16")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")


def build_parser() -> argparse.ArgumentParser:
    from .report import (
        add_compare_args,
        add_dashboard_args,
        add_report_args,
        compare_main,
        dashboard_main,
        report_main,
    )

    parser = argparse.ArgumentParser(prog="orthrus-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="generate from one prompt with the AR or the Orthrus decoder")
    add_model_args(p)
    prompt = p.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="user message, formatted with the model's chat template")
    prompt.add_argument("--prompt-ids", type=parse_int_list, help="raw prompt token ids, e.g. 1,2,3")
    p.add_argument("--mode", choices=["ar", "orthrus"], default="orthrus")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-size", type=int, help="Orthrus block size K (default: the checkpoint's)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of streaming text")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser(
        "bench-engine",
        help="time an AR step, a diffusion pass and a verify pass against the roofline, and end to end",
    )
    add_model_args(p)
    p.add_argument(
        "--shape",
        default="tiny",
        help="tiny | qwen3-1.7b | qwen3-4b | qwen3-8b (random weights; ignored with --model)",
    )
    p.add_argument("--contexts", type=parse_int_list, default=None, help="context lengths, e.g. 128,1024")
    p.add_argument("--block-sizes", type=parse_int_list, default=None, help="e.g. 16,32")
    p.add_argument("--new-tokens", type=int, default=128, help="tokens per end-to-end generation")
    p.add_argument("--repeats", type=int, default=20)
    p.set_defaults(func=cmd_bench_engine)

    p = sub.add_parser(
        "train-tiny",
        help="train the tiny Orthrus family from scratch (tokenizer, base, diffusion view), evaluate, ship",
    )
    p.add_argument("--out", help="checkpoint directory (default: models/tiny/orthrus)")
    p.add_argument("--data-dir", help="data folder laid out like ../shared/data (default: $ORTHRUS_DATA_DIR)")
    p.add_argument("--device", default="cpu", help="cpu | cuda (bf16 autocast on cuda)")
    p.add_argument(
        "--work-dir", help="where stage checkpoints go, for resuming (default: beside --out, hidden)"
    )
    p.add_argument("--base-steps", type=int, help="override the recipe's base-stage steps")
    p.add_argument("--diff-steps", type=int, help="override the recipe's diffusion-stage steps")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N prompts of each tiny suite")
    p.add_argument("--eval-only", action="store_true", help="only measure the checkpoint at --out")
    p.set_defaults(func=cmd_train_tiny)

    p = sub.add_parser(
        "run",
        help="run suites x methods on a model into a results directory (no arguments: the embedded default)",
    )
    add_model_args(p)
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
    p.add_argument("--data-dir", help="data folder laid out like ../shared/data (default: $ORTHRUS_DATA_DIR)")
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

    p = sub.add_parser("bench-overhead", help="wall-clock cost of the runner's telemetry (on vs off)")
    add_model_args(p)
    p.add_argument("--suite", default="tiny-math", help="suite whose first prompts are generated")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--repeats", type=int, default=4, help="passes over the prompts per side")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_bench_overhead)

    p = sub.add_parser("report", help="HTML + markdown report with figures from run directories")
    add_report_args(p)
    p.set_defaults(func=report_main)

    p = sub.add_parser("compare", help="regression gate: NEW against BASE per prompt (exit 1 on regression)")
    add_compare_args(p)
    p.set_defaults(func=compare_main)

    p = sub.add_parser("dashboard", help="trends across runs and github-action-benchmark JSON")
    add_dashboard_args(p)
    p.set_defaults(func=dashboard_main)

    from harness.verify.calibrate import add_calibrate_args, cmd_calibrate
    from harness.verify.verdicts import add_verify_args, cmd_verify

    p = sub.add_parser("verify", help="lossless-equivalence verdicts of a run against its AR run")
    add_verify_args(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("calibrate", help="measure the verification tests' false-positive rate and power")
    add_calibrate_args(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("suites", help="list the suite files")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_suites)
    return parser


def main(argv: list[str] | None = None) -> int:
    from harness.run.runner import RunError
    from harness.store import StoreError
    from harness.suites.config import SuiteError
    from harness.suites.data import DatasetUnavailableError
    from orthrus_core.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        UsageError,
        CheckpointError,
        RunError,
        StoreError,
        SuiteError,
        DatasetUnavailableError,
        FileNotFoundError,
        ValueError,
    ) as e:
        print(f"orthrus-bench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"orthrus-bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
