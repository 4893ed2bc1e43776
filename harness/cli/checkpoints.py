"""`orthrus-bench inspect PATH_OR_ID`: what the harness sees in a checkpoint, from its config files and tensor
headers alone (orthrus_core.formats), so that it can be checked before a long GPU run. Exit 1 when loading it
would fail; exit 2, with the file named, when a file cannot be read at all (truncated weights, JSON that does not
parse, missing shards or tokenizer.json).

With `--context N` it also plans each method's memory for requests of N positions (prompt + new tokens) at
`--batch-size` rows (orthrus_core.memory, harness.methods.plan): weights, KV cache (needed -> bucketed),
drafter state, workspace, logits, total, and whether that fits the device (`--memory GIB`, or what is free on
`--device` here); exit 1 when a method does not fit or cannot run. PATH_OR_ID may also be a named Qwen3 shape
(`qwen3-8b`: harness/methods/checkpoints.py QWEN3_SHAPES, with Orthrus' diffusion view), planned from its
config alone, offline:

    orthrus-bench inspect qwen3-8b --context 40960 --dtype bf16 --memory 141
"""

from __future__ import annotations

from pathlib import Path

from .args import UsageError, add_engine_arg, parse_dtype, parse_methods


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="a checkpoint's format, shapes, parameters, stop tokens, fit and load problems, without its weights",
    )
    p.add_argument("checkpoint", metavar="PATH_OR_ID", help="checkpoint directory or hub id")
    p.add_argument(
        "--target", help="for a draft: the target checkpoint (directory or hub id) to check it against"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    plan = p.add_argument_group("memory plan (with --context)")
    plan.add_argument(
        "--context",
        type=int,
        metavar="N",
        help="plan each method's memory for requests of N positions (prompt + new tokens); PATH_OR_ID may then "
        "also be a named Qwen3 shape (qwen3-1.7b, qwen3-4b, qwen3-8b), planned from its config alone",
    )
    plan.add_argument("--batch-size", type=int, default=1, help="rows decoded together (default 1)")
    plan.add_argument(
        "--methods",
        type=parse_methods,
        help="method specs, comma-separated (default: the batched methods that run on the model)",
    )
    plan.add_argument(
        "--dtype", type=parse_dtype, default="float32", help="float32 | bfloat16 | float16 (or bf16...)"
    )
    plan.add_argument(
        "--device", help="cuda | cpu (default: cuda with --memory or where a GPU is present, else cpu)"
    )
    plan.add_argument(
        "--memory",
        type=float,
        metavar="GIB",
        help="the device's memory in GiB, to plan for a device that is not here (default: what is free on "
        "--device now)",
    )
    add_engine_arg(plan, help="the engine the run would use (auto: cudagraph on a GPU, eager on a CPU)")
    plan.add_argument(
        "--greedy",
        action="store_true",
        help="plan greedy decoding (default: sampling with top-p, whose distributions hold more logits)",
    )
    p.set_defaults(func=cmd_inspect)


def fits(info) -> list[str]:
    """For a draft, the public Qwen3 bases it could draft for (methods/checkpoints.py); for a target, the
    drafts the registry would pick for it."""
    from transformers import Qwen3Config

    from harness.methods.checkpoints import BASE_NAME, PUBLIC_DRAFTS, QWEN3_SHAPES
    from orthrus_core import dflash, eagle3, formats

    if info.format == "eagle3":
        config = eagle3.head_config(_config(info), _head_state(info))
        check = lambda base: eagle3.fit_problems(config, {}, base)  # noqa: E731
    elif info.format == "dflash":
        raw = _config(info)
        check = lambda base: dflash.fit_problems(  # noqa: E731
            raw, dflash.draft_config(raw, base.num_hidden_layers), base
        )
    elif info.format in formats.TARGET_FORMATS:
        match = BASE_NAME.search(info.path)
        base = match.group(0).lower() if match else None
        return [f"{m}: {drafts[base]}" for m, drafts in PUBLIC_DRAFTS.items() if base in drafts]
    else:
        return []
    return [name for name, shape in QWEN3_SHAPES.items() if not check(Qwen3Config(**shape))]


def _config(info) -> dict:
    from pathlib import Path

    from orthrus_core.checkpoint import read_json

    return read_json(Path(info.path) / "config.json")


def _head_state(info):
    from pathlib import Path

    from orthrus_core import eagle3

    return eagle3.read_weights(eagle3.weights_file(Path(info.path)), meta=True)


def _millions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def lines(info, fitting: list[str], tokenizer=None) -> list[str]:
    def token(i: int) -> str:
        name = tokenizer.convert_ids_to_tokens(i) if tokenizer is not None else None
        return f"{i} ({name})" if name else str(i)

    out = [info.path]
    arch = ", ".join(info.architectures) or "no architectures"
    out.append(
        f"  format       {info.format or 'not recognised'} ({arch}; model_type {info.model_type}), {info.dtype}"
    )
    out.append(
        f"  shape        {info.layers} layers, hidden {info.hidden_size}, vocabulary {info.vocab_size}"
    )
    if info.parameters:
        p = info.parameters
        views = ""
        if "diffusion_view_only" in p:
            views = f": AR view {_millions(p['ar_view'])}, the diffusion view adds {_millions(p['diffusion_view_only'])}"
        out.append(f"  parameters   {_millions(p['total'])} stored{views}")
    if info.block_size is not None or info.mask_token_id is not None:
        out.append(f"  block        size {info.block_size}, mask token {info.mask_token_id}")
    if not info.is_draft:
        stops = ", ".join(token(i) for i in info.stop_token_ids) or "none"
        out.append(f"  stop tokens  {stops}")
        out.append(f"  tokenizer    {'yes' if info.tokenizer else 'none (prompts must be token ids)'}")
    if info.reads_target_states is not None:
        out.append(
            f"  reads        target {'hidden states' if info.format == 'eagle3' else 'layers'} {info.reads_target_states}"
        )
    if info.is_draft:
        out.append(f"  fits         {', '.join(fitting) or 'none of the public Qwen3 bases'}")
    elif fitting:
        out.append(f"  drafts       {'; '.join(fitting)}")
    if info.problems:
        out.append(
            "  problems     "
            + "\n               ".join(p.replace("\n", "\n               ") for p in info.problems)
        )
    else:
        out.append("  problems     none" + (": it loads" if not info.is_draft else ""))
    return out


def cmd_inspect(args) -> int:
    from harness.methods.plan import named_shape
    from orthrus_core.formats import describe
    from orthrus_core.tokenizer import load_tokenizer

    if not Path(args.checkpoint).expanduser().exists() and named_shape(args.checkpoint) is not None:
        return inspect_shape(args)
    info = describe(args.checkpoint, target=args.target)
    fitting = fits(info)
    # Loaded in either mode: tokenizer files that cannot make a tokenizer are an error (exit 2), as in a run.
    tokenizer = load_tokenizer(info.path) if info.tokenizer else None
    out = {**info.to_dict(), "fits" if info.is_draft else "drafts": fitting}
    text = lines(info, fitting, tokenizer)
    code = 1 if info.problems else 0
    if args.context is not None:
        if info.is_draft:
            raise UsageError(
                f"--context plans a target's memory and {info.path} is a draft ({info.format}): inspect its "
                f"target with --methods {info.format}:draft={info.path}"
            )
        if info.problems:
            text.append("memory plan  none: the checkpoint does not load (see its problems)")
        else:
            plan_code, plan_text, out["plan"] = memory_plan(args, info.path)
            text += plan_text
            code = max(code, plan_code)
    from orthrus_core.jsonfile import json_text

    print(json_text(out) if args.json else "\n".join(text))
    return code


def inspect_shape(args) -> int:
    """A named Qwen3 shape: its config alone, with Orthrus' diffusion view (no checkpoint, offline)."""
    from harness.methods.checkpoints import QWEN3_SHAPES
    from harness.methods.plan import named_shape, plan_target

    name = args.checkpoint.lower()
    config = named_shape(name)
    if args.target:
        raise UsageError(f"--target checks a draft; {args.checkpoint} is a named target shape")
    target = plan_target(name, "float32")
    model = target.model
    total = sum(p.numel() for p in model.parameters())
    diffusion = sum(p.numel() for n, p in model.named_parameters() if "_diff" in n)
    text = [
        target.what + "; no checkpoint is read",
        f"  shape        {config.num_hidden_layers} layers, hidden {config.hidden_size}, vocabulary "
        f"{config.vocab_size}, {config.num_attention_heads} heads ({config.num_key_value_heads} KV) of "
        f"{config.head_dim}",
        f"  parameters   {_millions(total)}: AR view {_millions(total - diffusion)}, the diffusion view adds "
        f"{_millions(diffusion)}",
        f"  block        size {config.block_size}, mask token {config.mask_token_id}",
    ]
    out, code = {"path": name, "format": "named shape", "shape": QWEN3_SHAPES[name]}, 0
    if args.context is not None:
        code, plan_text, out["plan"] = memory_plan(args, name)
        text += plan_text
    from orthrus_core.jsonfile import json_text

    print(json_text(out) if args.json else "\n".join(text))
    return code


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f}"


class Unit:
    """GiB, or MiB where the largest figure is under 1 GiB (a tiny model): one unit for every figure of a plan, or
    of a line (the verdict: the plan's total beside the memory a plan may take)."""

    def __init__(self, largest: int):
        self.name, self.size = ("GiB", 2**30) if largest >= 2**30 else ("MiB", 2**20)

    def __call__(self, n: float) -> str:
        return f"{n / self.size:.2f}"


def memory_plan(args, model: str) -> tuple[int, list[str], dict]:
    """(exit status, the lines, the JSON) of the memory plan of `args.methods` on `model` (a checkpoint's path or
    a named shape) at --context, --batch-size, --dtype on --device against --memory (or what is free there)."""
    import torch

    from harness.methods.plan import decoding_for, default_methods, plan_target
    from harness.options import check_device_name, check_positive
    from orthrus_core import memory
    from orthrus_core.params import SamplingParams

    context = check_positive("--context", args.context)
    rows = check_positive("--batch-size", args.batch_size)
    device = args.device or ("cuda" if args.memory is not None or torch.cuda.is_available() else "cpu")
    check_device_name(device)
    available, source = plan_memory(args.memory, device)
    # Sampled with top-p holds the most logits (orthrus_core.memory.sampling_copies); the values are stand-ins.
    sampling = None if args.greedy else SamplingParams(temperature=1.0, top_p=0.95)
    target = plan_target(model, args.dtype)
    specs = args.methods or default_methods(target)
    plans, problems = [], {}
    for spec in specs:
        try:
            decoding = decoding_for(spec, target)
        except ValueError as exc:  # cannot run on this target (CheckpointError included)
            problems[spec] = str(exc)
            continue
        plans.append(
            memory.plan(
                target.model,
                decoding,
                context=context,
                rows=rows,
                device=device,
                engine=args.engine,
                sampling=sampling,
            )
        )
    usable = memory.USABLE * available
    engine = f" (engine {plans[0].engine})" if plans else ""
    text = [
        f"memory plan  {context} positions (prompt + new tokens), batch size {rows}, {args.dtype} on "
        f"{device}{engine}, logits {memory.sampling_name(sampling)}",
        f"             memory {source}: a plan may take {memory.USABLE:.0%} of it, {_gib(usable)} GiB",
    ]
    max_positions = target.model.config.max_position_embeddings
    if context > max_positions:
        text.append(f"             note: {context} positions are more than the model's {max_positions}")
    text += plan_table(plans, problems, available)
    code = 1 if problems or any(not p.fits(available) for p in plans) else 0
    plan = {
        "context": context,
        "batch_size": rows,
        "dtype": args.dtype,
        "device": device,
        "memory": available,
        "memory_source": source,
        "usable": int(usable),
        "methods": [{**p.to_dict(), "fits": p.fits(available)} for p in plans],
        "problems": problems,
    }
    return code, text, plan


def plan_memory(gib: float | None, device: str) -> tuple[int, str]:
    """(bytes a plan is held to, where that figure comes from): --memory GIB, or what is free on `device` now."""
    from harness.options import check_device, free_memory
    from orthrus_core import memory

    if gib is not None:
        if not gib > 0:
            raise UsageError(f"--memory must be a positive number of GiB, got {gib}")
        return int(gib * memory.GIB), f"{gib:g} GiB (--memory)"
    check_device(device)
    available = free_memory(device)
    return available, f"{_gib(available)} GiB free on {device} now"


def plan_table(plans: list, problems: dict[str, str], available: int) -> list[str]:
    """The plan's lines under its heading: one row per method (the ones that cannot run saying why), each
    method's own table, and what the plans assume."""
    g = Unit(max((p.total for p in plans), default=0))
    header = f"  {g.name:<22}{'weights':>9}{'KV needed -> bucketed':>24}{'drafter':>9}{'workspace':>11}"
    header += f"{'logits':>8}{'total':>8}  verdict"
    text = [header]
    for p in plans:
        kv = f"{g(p.kv_needed)} -> {g(p.kv)}"
        verdict = "fits" if p.fits(available) else "does not fit"
        text.append(
            f"  {p.label:<22}{g(p.weights_total):>9}{kv:>24}{g(p.drafter_state_total):>9}"
            f"{g(p.workspace):>11}{g(p.logits):>8}{g(p.total):>8}  {verdict}"
        )
    for spec, problem in problems.items():
        text.append(f"  {spec:<22}cannot run: {problem}")
    for p in plans:
        text += method_lines(p, available, g)
    text.append(
        "  assumed: attention builds no score matrix (flash SDPA from position 0; FlexAttention for masked passes "
        "on CUDA, a dense boolean mask on a CPU, counted); a static engine's caches of shorter buckets, kept "
        "after shorter requests, are not counted"
    )
    return text


def method_lines(p, available: int, g: Unit) -> list[str]:
    """One method's table: what takes how much, and the verdict with its arithmetic."""
    from orthrus_core import memory

    usable = memory.USABLE * available
    v = Unit(max(p.total, usable))  # the verdict's two figures in one unit, the larger's
    if p.fits(available):
        verdict = f"fits: {v(p.total)} <= {v(usable)} {v.name}"
    else:
        verdict = (
            f"does not fit: {v(p.total)} > {v(usable)} {v.name}; lower --context or --batch-size, use a smaller "
            "--dtype, or a device with more memory"
        )
    weights = " + ".join(f"{k} {g(v)}" for k, v in p.weights.items())
    state = ", ".join(f"{k} {g(v)}" for k, v in p.drafter_state.items()) or "none"
    phase, other = p.peak_phase, "decode" if p.peak_phase == "prefill" else "prefill"
    what = {
        "prefill": f"prefill of a {p.prompt_tokens}-token prompt",
        "decode": f"decode pass of {p.rows} row(s) x {p.pass_tokens} token(s)",
    }
    if p.capacity == p.needed:
        kv = f"{p.rows} row(s) x {p.capacity} positions ({p.context} + {p.needed - p.context} scratch), not rounded"
    else:
        kv = (
            f"{p.rows} row(s) x {p.capacity} positions: the bucket of {p.needed} ({p.context} + "
            f"{p.needed - p.context} scratch), {g(p.kv_needed)} at {p.needed} (+{g(p.kv - p.kv_needed)} rounding)"
        )
    unit = g.name  # every figure of the lines below, each line saying so after its first
    out = [
        f"  {p.label}  {verdict} ({p.dtype}, {p.sampling})",
        f"    weights        {g(p.weights_total):>8} {unit}  {weights}",
        f"    KV cache       {g(p.kv):>8} {unit}  {kv}",
        f"    drafter state  {g(p.drafter_state_total):>8} {unit}  {state}",
        f"    workspace      {g(p.workspace):>8} {unit}  the {what[phase]}, the larger phase ({other} "
        f"{g(p.phases[other]['workspace'])})",
        f"    logits         {g(p.logits):>8} {unit}  the {phase} ({other} {g(p.phases[other]['logits'])})",
        f"    total          {g(p.total):>8} {unit}",
    ]
    if p.source:
        out.append(f"    draft shape    {p.source}")
    out += [f"    note           {note}" for note in p.notes]
    return out
