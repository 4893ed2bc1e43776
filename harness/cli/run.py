"""`orthrus-bench run`, `merge`, `repair`, `suites` and `methods`: suites x methods into a results directory."""

from __future__ import annotations

import dataclasses
import shlex
import sys
import time
from pathlib import Path

from harness.method_spec import MethodSpec

from .args import (
    UsageError,
    add_data_dir_arg,
    add_engine_arg,
    add_model_args,
    add_quiet_arg,
    parse_ids,
    parse_int_list,
    parse_methods,
    parse_suites,
)


def register(sub) -> None:
    _register_run(sub)

    p = sub.add_parser("merge", help="join the shard directories of one run")
    p.add_argument("shards", nargs="+", help="shard result directories")
    p.add_argument("--out", required=True, help="merged results directory")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "repair",
        help="move the bad lines of a run's records.jsonl to records.rejected.jsonl, keeping every good record",
    )
    p.add_argument("run", help="results directory")
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("suites", help="list the suite files")
    add_data_dir_arg(p)
    p.set_defaults(func=cmd_suites)

    p = sub.add_parser("methods", help="list the registered methods and their options")
    p.set_defaults(func=cmd_methods)


def _register_run(sub) -> None:
    """`run`'s parser: the model and engine, what to run, how to sample, how much, where to write, batching,
    parallelism and quantization."""
    p = sub.add_parser(
        "run",
        help="run suites x methods on a model into a results directory (no arguments: the embedded default)",
    )
    add_model_args(p)
    add_engine_arg(p)
    _add_selection_args(p)
    _add_sampling_args(p)
    _add_scope_args(p)
    add_data_dir_arg(p)
    _add_output_args(p)
    _add_batching_args(p)
    _add_parallelism_args(p)
    p.add_argument(
        "--quantize",
        metavar="FORMAT",
        help="simulated weight quantization of the target's and drafters' linear weights (not lm_head, "
        "norms, embeddings): fp8-tensor, fp8-channel, int8-channel or int4-group; in the run's config, and "
        "verify checks against ar of the same quantized model",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the equivalence verdicts at the end")
    add_quiet_arg(p)
    p.set_defaults(func=cmd_run)


def _add_selection_args(p) -> None:
    """What runs: --suite, --methods and --sweep."""
    p.add_argument("--suite", type=parse_suites, help="comma-separated suite names or .toml paths")
    p.add_argument(
        "--methods",
        type=parse_methods,
        help="comma-separated method specs, e.g. ar,orthrus,eagle3:tree=chain",
    )
    p.add_argument(
        "--sweep",
        action="append",
        metavar="SPEC",
        help="a method option's grid, one method per value into the same run, e.g. "
        "'orthrus:block_size=4,8,16,32', 'dflash:block_size=4,8,16', 'pld:num_draft_tokens=2,5,10', "
        "'eagle3:tree=chain:depth=2,4,6' (one option lists values, the others stay fixed); repeatable; added to "
        "--methods (without --methods: ar and the sweeps), ar added as the speedup baseline where no AR "
        "baseline is listed; the report's Sweeps section shows tau, TPF and speedup against the values",
    )


def _add_sampling_args(p) -> None:
    """The overrides of every suite's generation settings: --temperature, --top-k, --top-p, --max-new-tokens."""
    from orthrus_core.params import TEMPERATURE_FLOOR, TOP_P_FLOOR

    p.add_argument(
        "--temperature",
        type=float,
        help="override every suite's temperature: a finite number >= 0, 0 = greedy. Degenerate settings, whose "
        "distribution is one token, are decoded and verified as greedy, and the verdict says so: temperature "
        f"below {TEMPERATURE_FLOOR:g}, --top-k 1, or --top-p below {TOP_P_FLOOR:g}",
    )
    p.add_argument("--top-k", type=int, help="override every suite's top-k (0 disables; 1 is greedy)")
    p.add_argument(
        "--top-p",
        type=float,
        help=f"override every suite's top-p, in (0, 1] (1 disables; below {TOP_P_FLOOR:g}: greedy)",
    )
    p.add_argument("--max-new-tokens", type=int)


def _add_scope_args(p) -> None:
    """How much runs and how it is measured: --limit, --ids, --samples, --seed, --warmup, --no-telemetry."""
    p.add_argument("--limit", type=int, help="first N items of each suite")
    p.add_argument("--ids", type=parse_ids, help="comma-separated dataset ids to keep (one suite)")
    p.add_argument("--samples", type=int, default=1, help="generations per item and method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup", type=int, default=2, help="unrecorded warm-up generations per method")
    p.add_argument("--no-telemetry", action="store_true", help="measure wall-clock only (overhead baseline)")


def _add_output_args(p) -> None:
    """Where the run goes and which part of it this process runs: --out, --resume, --retry-failed, --shard."""
    p.add_argument("--out", help="results directory (default: runs/<date-time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: run again the units that ended in an error (their records kept in "
        "retried-errors.jsonl)",
    )
    p.add_argument(
        "--shard",
        help="i/n: run shard i of n (items balanced by expected cost); under torchrun, accelerate or srun "
        "each process takes its own shard from the launcher, and rank 0 merges them into --out",
    )


def _add_batching_args(p) -> None:
    """--batch-size, --continuous and the --batch-sizes sweep."""
    p.add_argument(
        "--batch-size",
        type=int,
        help=batch_size_help(),
    )
    p.add_argument(
        "--continuous",
        action="store_true",
        help="with --batch-size or --batch-sizes: refill a finished row with the next prompt at once",
    )
    p.add_argument(
        "--batch-sizes",
        type=parse_int_list,
        help="a concurrency sweep, e.g. 1,2,4,8,16,32,64: one run per batch size into OUT/batch-<B>, each "
        "verified, then throughput, latency and speedup over ar against B",
    )


def _add_parallelism_args(p) -> None:
    """The vLLM methods' own parallelism: --tensor-parallel-size, --data-parallel-size."""
    p.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        help="the vLLM methods' tensor parallelism (vLLM's own, over that many GPUs); recorded in run.json",
    )
    p.add_argument(
        "--data-parallel-size",
        type=int,
        default=1,
        help="the vLLM methods' data parallelism (vLLM's own engine replicas); recorded in run.json",
    )


def batch_size_help() -> str:
    """`run --batch-size`'s help, from the registry's batched flags (harness.methods.REGISTRY): the methods of
    the project's engine that decode rows together in the decode loop (with the option values that leave it),
    and vLLM's, where B is the requests in flight."""
    from harness.methods import BACKEND, REGISTRY

    loop = [
        m.name + "".join(f" (not {m.name}:{k}={v})" for k, v in m.one_at_a_time.items())
        for m in REGISTRY
        if m.batched and m.backend == BACKEND
    ]
    vllm = [m.name for m in REGISTRY if m.batched and m.backend != BACKEND]
    return (
        f"decode B prompts together: ragged rows with per-row acceptance in the decode loop for {', '.join(loop)}; "
        f"B concurrent requests for {', '.join(vllm)}. Without it every prompt is decoded alone"
    )


def cmd_run(args) -> int:
    from harness.run.signals import terminate_as_interrupt

    with terminate_as_interrupt():  # SIGTERM as Ctrl-C (run.json "interrupted", exit 143), for the run only
        return _cmd_run(args)


def _cmd_run(args) -> int:
    from harness.run.launch import launch_env
    from harness.run.spec import DEFAULT_LIMIT, RunSpec

    defaults = RunSpec()
    embedded = args.suite is None and args.model is None
    methods = args.methods or defaults.methods
    if args.sweep:
        methods = sweep_methods(args.methods, args.sweep, args.model, args.dtype)
    spec = RunSpec(
        suites=args.suite or defaults.suites,
        methods=methods,
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
        batch_size=args.batch_size,
        continuous=args.continuous,
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        quantize=args.quantize,
    )
    launch = launch_env()
    if (
        args.out is None and not launch.distributed
    ):  # named now, so that an interrupted run can say where it is
        args.out = f"runs/{time.strftime('%Y%m%d-%H%M%S')}"
    if args.batch_sizes is not None:
        return run_batch_sweep(spec, args, launch)
    if launch.distributed:
        return run_launched(spec, args, launch)
    directory, status = run_one(spec, args.out, args)
    print_wrote([directory])
    return status


def _command(*words) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def print_wrote(directories: list[Path], sweep: Path | None = None) -> None:
    """The last lines of a run, a sweep (`sweep`: its directory) or a merge, on stderr beside verify's "wrote":
    the directory and its files, then the commands that verify it (where no verdicts were written) and render
    it into a report, for the user to copy."""
    from harness.store import RECORDS, RUN
    from harness.verify.config import VERDICTS

    where = sweep or directories[0]
    name = where.resolve().name
    files = [f for f in (RECORDS, RUN, VERDICTS) if (directories[0] / f).is_file()]
    if sweep is None:
        lines = [f"wrote {where} ({', '.join(files)})"]
    else:
        runs = ", ".join(d.name for d in directories)
        lines = [f"wrote {where}: {len(directories)} runs ({runs}), each with {', '.join(files)}"]
    unverified = [d for d in directories if not (d / VERDICTS).is_file()]
    if unverified:
        lines.append(
            f"verify it with: {'; '.join(_command('orthrus-bench', 'verify', d) for d in unverified)}"
        )
    lines.append(
        f"render it with: {_command('orthrus-bench', 'report', *directories, '--out', f'reports/{name}')}"
    )
    print("\n".join(lines), file=sys.stderr)


def sweep_methods(
    methods: list[str] | None, sweeps: list[str], model: str | None, dtype: str
) -> list[MethodSpec]:
    """`--sweep`: the run's methods, `--methods` (or ar alone) followed by one spec per swept value
    (harness.methods.expand_sweep), ar first where no AR baseline is listed. Every value is checked before
    anything is loaded, with the method's own checks on the model's config (harness.methods.plan): a bad one
    is a UsageError naming the --sweep and what to write instead."""
    from harness.methods import expand_sweep
    from harness.report.verdicts import AR_BASELINES

    out = [MethodSpec.of(m) for m in methods or []]
    origin = {m: f"--methods {m}" for m in out}
    for sweep in sweeps:
        try:
            _, key, specs = expand_sweep(sweep)
        except ValueError as exc:
            raise UsageError(f"--sweep {exc}") from None
        check_sweep_values(sweep, key, specs, model, dtype)
        for spec in specs:
            if spec in origin:
                raise UsageError(
                    f"--sweep {sweep!r}: {spec} is already in the run ({origin[spec]}); list it once"
                )
            origin[spec] = f"--sweep {sweep!r}"
            out.append(spec)
    if not any(m.name in AR_BASELINES for m in out):
        out.insert(0, MethodSpec.parse("ar"))  # the speedup's baseline
    return out


def check_sweep_values(sweep: str, key: str, specs: list[MethodSpec], model: str | None, dtype: str) -> None:
    """Each swept spec of the project's engine planned on `model`'s config (no weights loaded; vLLM's methods
    are checked when their engines start): what the method refuses is refused now, with the values to drop."""
    from harness.methods import BACKEND, backend_of
    from harness.methods.plan import decoding_for, plan_target
    from harness.paths import default_model

    if backend_of(specs[0]) != BACKEND:
        return
    target = plan_target(str(model or default_model()), dtype)
    refused = {}
    for spec in specs:
        try:
            decoding_for(spec, target)
        except ValueError as exc:  # the method's build names the spec; the drafters' own checks do not
            refused[spec.options[key]] = str(exc) if str(exc).startswith(spec) else f"{spec}: {exc}"
    if not refused:
        return
    values = [s.options[key] for s in specs]
    why = next(iter(refused.values()))
    if len(refused) == len(values):
        raise UsageError(f"--sweep {sweep!r}: no value runs: {why}")
    kept = [v for v in values if v not in refused]
    if len(kept) > 1:
        instead = f"--sweep '{specs[0].with_options(**{key: ','.join(kept)})}'"
    else:
        instead = "--methods " + next(s for s in specs if s.options[key] == kept[0])
    raise UsageError(f"--sweep {sweep!r}: {key}={', '.join(refused)} refused ({why}); drop it: {instead}")


def run_one(spec, out, args) -> tuple[Path, int]:
    """One run into `out`: executed, its summary printed and, unless --no-verify, verified; -> its directory
    and the exit status (verify's: 1 if a lossless method left AR)."""
    from harness.report.summary import print_run_summary
    from harness.run.runner import execute
    from harness.run.shards import parse_shard
    from harness.verify.config import VerifyConfig
    from harness.verify.verdicts import verify_main

    t0 = time.perf_counter()
    directory = execute(
        spec,
        out,
        resume=args.resume,
        retry_failed=args.retry_failed,
        shard=parse_shard(args.shard),
        progress=not args.quiet,
    )
    print_run_summary(directory, f"{directory} ({time.perf_counter() - t0:.0f} s)")
    if args.no_verify:
        return directory, 0
    return directory, verify_main(directory, VerifyConfig(device=args.device), quiet=args.quiet)


def run_batch_sweep(spec, args, launch) -> int:
    """`--batch-sizes`: the same run at every batch size, into OUT/batch-<B>, each summarised and verified; then
    the sweep's throughput, latency, τ and memory against B (harness.report.batch)."""
    from harness.report.batch import batch_figures, print_batch_figures
    from harness.report.runs import generations, load_runs

    if args.batch_size is not None:
        raise UsageError("give --batch-size (one run) or --batch-sizes (a sweep), not both")
    if launch.distributed:
        raise UsageError(
            f"a sweep is not launched ({launch.launcher}): launch one run per --batch-size instead"
        )
    sizes = sorted(set(args.batch_sizes))
    if not sizes or sizes[0] < 1:
        raise UsageError(f"--batch-sizes must be integers >= 1, got {','.join(map(str, args.batch_sizes))}")
    out = Path(args.out)
    runs = [
        run_one(dataclasses.replace(spec, batch_size=size), out / f"batch-{size}", args) for size in sizes
    ]
    directories = [directory for directory, _ in runs]
    figures = batch_figures(generations(load_runs(directories)))
    mode = "continuous" if spec.continuous else "static"
    print_batch_figures(figures, f"{out}: batch sweep ({mode} batching)")
    print_wrote(directories, sweep=out)
    return max(code for _, code in runs)


def run_launched(spec, args, launch) -> int:
    """One process of a launched run (harness.run.launch): its shard into OUT/shards/<i>-of-<n>, then at rank 0,
    once every shard has finished, the merged run in OUT, its summary and verdicts."""
    from harness.run.launch import check_own_devices, connect, gather_finished, shard_dir
    from harness.run.runner import execute

    out = launched_out(args, launch)
    device, device_source, device_uuid = own_device(spec.device, launch)
    connect(launch)
    check_own_devices(launch, device_uuid)
    finished = False
    try:
        execute(
            spec,
            shard_dir(out, launch.rank, launch.world_size),
            resume=args.resume,
            retry_failed=args.retry_failed,
            shard=(launch.rank, launch.world_size),
            progress=launch.local_rank == 0 and not args.quiet,
            device=device,
            launch=launch.as_provenance(device, device_source, device_uuid),
        )
        finished = True
    finally:  # a shard that failed still reports, so that the others are not left waiting
        statuses = gather_finished(finished)
    if launch.rank != 0:
        return 0
    return merge_launched(spec, args, launch, out, statuses)


def launched_out(args, launch) -> Path:
    """The results directory every process of a launched run names, refused (by every rank before any joins the
    group, so that none is left waiting for one that refused) where the run cannot go there."""
    from harness.run.spec import RunError
    from harness.store import RUN, load_run

    if args.out is None:
        raise UsageError("a launched run needs --out: every process must name the same results directory")
    if args.shard is not None:
        raise UsageError(
            f"--shard is the launcher's to give ({launch.launcher}, {launch.world_size} processes)"
        )
    out = Path(args.out)  # on a filesystem every process sees: rank 0 reads every shard
    if (out / RUN).exists() and load_run(out).merged_from is None:
        raise RunError(f"{out} holds a run that is not a merge of its shards; choose another --out")
    return out


def own_device(device: str, launch) -> tuple[str, str, str | None]:
    """(device, where it came from, its GPU's UUID or None) of this process: on CUDA each process on its own
    GPU, chosen from the launcher's ranks and set current; the spec (and so the config hash) keeps "cuda"."""
    if device != "cuda":
        return device, "--device", None
    import torch

    from harness.run.launch import launched_device
    from harness.run.provenance import cuda_uuid

    index, device_source = launched_device(launch, torch.cuda.device_count())
    torch.cuda.set_device(index)
    return f"cuda:{index}", device_source, cuda_uuid(index)


def merge_launched(spec, args, launch, out: Path, statuses: list[bool]) -> int:
    """Rank 0's end of a launched run: every shard finished, merged into `out` (replacing an earlier merge of
    them), summarised and, unless --no-verify, verified; -> the exit status."""
    from harness.report.summary import print_run_summary
    from harness.run.launch import shard_dir
    from harness.run.shards import merge
    from harness.run.spec import RunError
    from harness.store import RECORDS, RUN
    from harness.verify.config import VerifyConfig
    from harness.verify.verdicts import verify_main

    if not all(statuses):
        failed = [str(shard_dir(out, r, launch.world_size)) for r, ok in enumerate(statuses) if not ok]
        raise RunError(f"shard(s) {', '.join(failed)} did not finish; run the same command with --resume")
    if (out / RUN).exists():  # an earlier merge of these shards (say, before a --retry-failed), superseded
        (out / RECORDS).unlink(missing_ok=True)
        (out / RUN).unlink()
        (out / "verdicts.json").unlink(missing_ok=True)
    shards = [shard_dir(out, r, launch.world_size) for r in range(launch.world_size)]
    directory = merge(shards, out)
    print_run_summary(directory, f"{directory} (merged from {launch.world_size} shards)")
    status = (
        0 if args.no_verify else verify_main(directory, VerifyConfig(device=spec.device), quiet=args.quiet)
    )
    print_wrote([directory])
    return status


def cmd_merge(args) -> int:
    from harness.report.summary import print_run_summary
    from harness.run.shards import merge

    directory = merge(args.shards, args.out)
    print_run_summary(directory, f"{directory} (merged from {len(args.shards)} shards)")
    print_wrote([directory])
    return 0


def cmd_repair(args) -> int:
    from harness.store import REJECTED, repair

    done = repair(args.run)
    if not done.moved:
        print(f"{args.run}: nothing to repair ({done.kept} good records)")
        return 0
    lines = ", ".join(str(line.number) for line in done.moved[:20]) + (" ..." if len(done.moved) > 20 else "")
    print(
        f"{args.run}: moved {len(done.moved)} line(s) ({lines}) to {Path(args.run) / REJECTED}; kept "
        f"{done.kept} good records. `orthrus-bench run ... --resume` runs the units they belonged to again."
    )
    for line in done.moved[:20]:
        print(f"  line {line.number}: {line.problem}")
    return 0


def cmd_suites(args) -> int:
    from harness.suites import list_suites, load_suite

    names = list_suites()
    width = max(map(len, names), default=0)  # every description starts in one column, however long a name
    for name in names:
        suite = load_suite(name, args.data_dir)
        print(f"{name:{width}s}  {suite.config.get('description', '')}")
    return 0


# What `methods` says of a lossy method: verify and run judge it like the others (its verdict "FAIL", its name
# "diffusion (lossy)" in their tables), expecting it to fail token identity.
LOSSY_WORDS = "lossy (verified: expected to fail identity)"


def cmd_methods(args) -> int:
    from importlib import import_module

    from harness.methods import REGISTRY

    for m in REGISTRY:
        options = import_module(f"harness.methods.{m.name.replace('-', '_')}").OPTIONS
        kinds = [
            "lossless" if m.lossless else LOSSY_WORDS,
            "batched" if m.batched else "one prompt at a time",
            *(["greedy only"] if m.greedy_only else []),
        ]
        print(f"{m.name:10s} {m.summary} [{', '.join(kinds)}]")
        for key, (kind, default) in options.items():
            print(f"{'':12s}{m.name}:{key}=<{kind.__name__}>  default {default!r}")
    return 0
