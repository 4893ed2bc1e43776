"""`orthrus-bench bench-engine`: what a prefill, one AR step, one diffusion pass and one verify pass cost,
against the memory-bandwidth roofline, and end to end against a straightforward implementation.

Prints figures; asserts nothing. Random weights at a named shape (the real model's cost does not depend on
its weights), or a real checkpoint with --model. The random weights are `orthrus_core.model.init_weights`'s
(ones for every norm, the diffusion view's q/k norms included, zeros for biases, N(0, RANDOM_STD) for the rest),
spread wider than Qwen3's 0.02 so that, at every shape, next-token logits have a clear argmax and greedy
outputs vary: the identity column then compares real decisions, not near-ties.

* Prefill as the decoders do it: every context is written by one `Engine.prefill` of the whole context (eager,
  one pass, last-position logits only), exactly as the decode loop admits a prompt, never in chunks; its
  median time is printed per context (the prefill column), so what a long context costs before the first
  token is in the table, and a context one prefill cannot hold fails here as it would in a run.
* Roofline: at batch size 1 an AR step must stream every weight it multiplies by once, so no AR step can be
  faster than streamed bytes / device copy bandwidth. The streamed bytes (`weight_bytes`) are the AR view's
  parameters that a forward reads in full; the input embedding, of which a forward gathers only its tokens'
  rows, is left out unless it is also the (tied) lm_head. The bandwidth is measured in the same run (a
  device-to-device copy of a buffer far larger than the caches). On CPU the same figure is printed but means
  little.
* Every per-pass figure per engine mode (orthrus_core.engine: eager, compile, and cudagraph on a GPU); the
  prefill runs eager in every mode, as the loop's does.
* End to end, beside the project's `ar` and `orthrus` in each mode, the baselines in their own engines:
  transformers' `generate` on its DynamicCache (`ar-hf`) and on its StaticCache compiled (`ar-hf:cache=static`,
  the strongest off-the-shelf AR), and Orthrus on a DynamicCache as the official code writes it
  (`orthrus:cache=dynamic`). Outputs must be identical; the ratios are what the engine buys. With random
  weights the prompts are random and the diffusion view is unrelated to the AR view, so tau is near 1 and says
  nothing about a trained model.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from functools import partial

import torch
from rich.table import Table
from transformers import Qwen3Config

from harness.console import console as make_console
from harness.methods import make_decoder
from harness.methods.checkpoints import QWEN3_SHAPES
from harness.methods.target import Target, load_target, torch_dtype
from harness.options import check_device
from orthrus_core import metrics
from orthrus_core.compiled import rehearsing
from orthrus_core.engine import ENGINES, Engine, check_engine
from orthrus_core.generation import Clock
from orthrus_core.model import OrthrusForCausalLM, init_weights

# "small": a 4-layer random model at the tiny family's width and vocabulary (not the family itself, which has
# 6 layers and trained weights: pass --model for it); the Qwen3 shapes of the public checkpoints.
SMALL = dict(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=64,
    max_position_embeddings=4096,
    block_size=16,
    mask_token_id=4095,
    eos_token_id=0,
    tie_word_embeddings=True,
)
SHAPES = {
    "small": SMALL,
    # The GPU check's rehearsal of the qwen3-8b shape (benchmarks/gpu_check.py --rehearse): small, but with the
    # 8B's block size and its 4 query heads per KV head, and attention shapes of its own (the tiny family's are
    # the small shape's), so that what it compiles is what the 8B compiles, no more, no less.
    "rehearsal": dict(
        SMALL, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8, head_dim=32, block_size=32
    ),
    **QWEN3_SHAPES,
}
# The random weights' std (the norms are ones). At Qwen3's 0.02 the 256-wide small shape's logits spread over
# 0.3 nats and its greedy output is one or two tokens repeated; at 0.1 they spread over 1.6 nats (4.5 for six
# layers 2048 wide) and greedy outputs vary (tests/test_engine.py holds the small shape to a clear argmax).
RANDOM_STD = 0.1
# Timed prefills per context (after one untimed): one takes seconds at 32K+ tokens, and a few make a median.
PREFILL_REPEATS = 3


def random_model(shape: str, dtype: torch.dtype, device: str) -> OrthrusForCausalLM:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    config = Qwen3Config(architectures=["OrthrusLM"], **SHAPES[shape])
    with torch.device(device):
        model = OrthrusForCausalLM(config).to(dtype)
    return init_weights(model, std=RANDOM_STD, seed=0).eval()


def median_time(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn(): CUDA events on a GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            with torch.cuda.device(device):  # events on the stream of the device the work runs on
                start.record()
                fn()
                end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def weight_bytes(model: OrthrusForCausalLM) -> int:
    """Bytes one AR-view forward streams: every AR-view parameter it reads in full, each storage once. The
    diffusion view's (`*_diff`) are not read; the input embedding is left out, since a forward gathers only its
    tokens' rows of it, unless it is the same storage as lm_head (tied embeddings), which reads all of it."""
    embed, lm_head = model.model.embed_tokens.weight, model.lm_head.weight
    gathered = set() if embed.data_ptr() == lm_head.data_ptr() else {embed.data_ptr()}
    seen, total = set(gathered), 0
    for name, p in model.named_parameters():
        if "_diff" not in name and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Measured bytes/s of a device-to-device copy (read + write counted), the roofline's denominator."""
    if device.type != "cuda":
        nbytes = 1 << 26
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device, repeats)
    return 2 * nbytes / seconds


@torch.inference_mode()
def forward_costs(engine: Engine, contexts, K, repeats, device, batch_sizes=(1,), time_prefill=True):
    """Rows of (B, context, prefill s, AR step s, diffusion pass s, verify pass s) over B rows at each context
    length, as the decode loop runs them in `engine` (every row at the same length: the cost of a cycle against
    B x K). The context is written as the loop writes a prompt: one `engine.prefill` of all of it into row 0
    (whose K/V are then copied into the other rows); its median over PREFILL_REPEATS, or None without
    `time_prefill`."""
    rows = []
    g = torch.Generator().manual_seed(0)
    model = engine.model
    for B in batch_sizes:
        for ctx in contexts:
            cache = engine.new_cache(B, ctx + K)
            ids = torch.randint(0, model.config.vocab_size - 1, (1, ctx), generator=g).to(device)
            prefill = partial(engine.prefill, cache, 0, ids[0])
            prefill_s = None
            # Every prefill writes the same K/V: the warm-up writes them, each timed one writes them again.
            if time_prefill:
                prefill_s = median_time(prefill, device, min(repeats, PREFILL_REPEATS), warmup=1)
            else:
                prefill()
            cache.k[:, 1:B] = cache.k[:, :1]  # one prefill, its K/V copied into every row
            cache.v[:, 1:B] = cache.v[:, :1]
            cache.lengths = [ctx] * B
            one = ids[:, -1:].expand(B, 1)
            block = (ids[:, -K:] if ctx >= K else ids.new_zeros(1, K)).expand(B, K)
            passes = (
                partial(engine.step, cache, one),
                partial(engine.step, cache, block, diffusion=True),
                partial(engine.step, cache, block),
            )
            rows.append((B, ctx, prefill_s, *(median_time(f, device, repeats) for f in passes)))
    return rows


def print_batched(console, rows: list[dict], repeats: int, mode: str) -> None:
    table = Table(
        "B",
        "context",
        "K",
        "AR step ms",
        "ms / row",
        "diffusion ms",
        "verify ms",
        "cycle / AR",
        title=f"batched passes (engine {mode}): medians over {repeats} repeats; an Orthrus cycle beats AR per "
        "token where τ > cycle / AR",
    )
    for r in rows:
        table.add_row(
            str(r["batch_size"]),
            str(r["context"]),
            str(r["K"]),
            f"{r['ar_ms']:.3f}",
            f"{r['ar_ms'] / r['batch_size']:.3f}",
            f"{r['diffusion_ms']:.3f}",
            f"{r['verify_ms']:.3f}",
            f"{r['cycle_over_ar']:.2f}",
        )
    console.print(table)


def suite_prompts(model_path, count: int) -> list[list[int]] | None:
    """The first prompts of the tiny-math suite in the checkpoint's chat template, or None without a tokenizer."""
    from harness.suites.suite import load_suite
    from orthrus_core.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    if tokenizer is None:
        return None
    suite = load_suite("tiny-math", limit=count)
    return [suite.render(tokenizer, item, []) for item in suite.items(tokenizer)]


END_TO_END = ("ar", "orthrus")  # this project's decoders, timed in each engine mode
BASELINES = ("ar-hf", "ar-hf:cache=static", "orthrus:cache=dynamic")  # their own engines, timed once


@dataclass(frozen=True)
class Plan:
    """What bench-engine times where an option does not say: engine modes (None: every mode the device runs),
    context lengths, block sizes K (None: the model's), new tokens per end-to-end generation, timed repeats per
    pass, end-to-end prompts (random ones for random weights, else the tiny-math suite's) and baselines."""

    engines: tuple[str, ...] | None
    contexts: tuple[int, ...]
    block_sizes: tuple[int, ...] | None
    new_tokens: int
    repeats: int
    random_prompts: int
    suite_prompts: int
    baselines: tuple[str, ...]


# A CPU without --full: about a minute on 2 busy cores. The eager engine only (the compile mode builds autotuned
# kernels for every pass shape: minutes on a CPU), 10 repeats, 4 prompts of 16 new tokens, and the baselines
# that compile nothing (ar-hf:cache=static is transformers' compiled StaticCache).
QUICK = Plan(
    engines=("eager",),
    contexts=(64, 256, 1024),
    block_sizes=None,
    new_tokens=16,
    repeats=10,
    random_prompts=4,
    suite_prompts=4,
    baselines=("ar-hf", "orthrus:cache=dynamic"),
)
# --full on a CPU: every mode and baseline (compiles included: 10 minutes or more on 2 cores).
FULL_CPU = Plan(
    engines=None,
    contexts=(64, 256, 1024),
    block_sizes=None,
    new_tokens=128,
    repeats=20,
    random_prompts=4,
    suite_prompts=8,
    baselines=BASELINES,
)
# A GPU, with or without --full: every mode and baseline, the contexts of the long-context targets, K 16 and 32.
FULL_GPU = Plan(
    engines=None,
    contexts=(1024, 4096, 16384, 32768, 40000),
    block_sizes=(16, 32),
    new_tokens=128,
    repeats=20,
    random_prompts=4,
    suite_prompts=8,
    baselines=BASELINES,
)


def default_plan(device: str | torch.device, full: bool = False) -> Plan:
    """The plan of `bench-engine` on `device` where no option overrides it: QUICK on a CPU, FULL_CPU there with
    --full, FULL_GPU on a GPU."""
    if torch.device(device).type == "cuda":
        return FULL_GPU
    return FULL_CPU if full else QUICK


def end_to_end(target: Target, prompts, new_tokens: int, specs, ar_tokens=None) -> tuple[dict, list]:
    """Greedy over the prompts (the model's own stop tokens), per method spec: tokens/s, tau, and whether every
    output equals `ar_tokens` (default: this call's `ar`). Each prompt is generated once untimed first, so no
    compilation is timed. Returns (the figures per spec, the AR tokens they were held to)."""
    summary, outputs = {}, {}
    for spec in specs:
        decoder = make_decoder(spec, target)
        for prompt in prompts:
            decoder.generate(prompt, new_tokens)
        results = [decoder.generate(prompt, new_tokens) for prompt in prompts]
        outputs[spec] = [r.tokens for r in results]
        accepted = [n for r in results for n in r.accepted]
        summary[spec] = {
            "tokens_per_s": sum(r.new_tokens for r in results) / sum(r.total_s for r in results),
            "tau": metrics.tau(sum(accepted), len(accepted)),
        }
    ar_tokens = ar_tokens or outputs["ar"]
    for spec, tokens in outputs.items():
        summary[spec]["identical_to_ar"] = tokens == ar_tokens
    return summary, ar_tokens


def clock_overhead(device: torch.device, repeats: int = 200) -> float:
    """Seconds one synchronised clock reading costs (the instrumentation every timed generation carries)."""
    clock = Clock(device)
    t0 = clock()
    for _ in range(repeats):
        clock()
    return (clock() - t0) / repeats


@torch.inference_mode()
def events_vs_wall(engine: Engine, context: int, steps: int, device: torch.device) -> float | None:
    """CUDA-event time / synchronised wall-clock time of `steps` AR steps (None off a GPU)."""
    if device.type != "cuda":
        return None
    cache = engine.new_cache(1, context + 1)
    ids = torch.zeros(1, context, dtype=torch.long, device=device)
    engine.prefill(cache, 0, ids[0])
    cache.lengths = [context]
    one = ids[:, -1:]
    for _ in range(3):
        engine.step(cache, one)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with torch.cuda.device(device):  # the events on the model's device's stream, not the current device's
        start.record()
        for _ in range(steps):
            engine.step(cache, one)
        end.record()
    end.synchronize()
    wall = time.perf_counter() - t0
    return start.elapsed_time(end) / 1e3 / wall


def available_engines(device: torch.device) -> list[str]:
    """The engine modes that run on `device` (cudagraph on a GPU, or in a rehearsal of one)."""
    return [m for m in ENGINES if m != "cudagraph" or device.type == "cuda" or rehearsing()]


def bench_engine(
    shape="small",
    *,
    model_path=None,
    dtype="float32",
    device="cpu",
    engines=None,
    contexts=None,
    block_sizes=None,
    new_tokens=None,
    repeats=None,
    prompts=None,
    baselines=True,
    batch_sizes=None,
    print_tables=True,
    model=None,
    full=False,
) -> dict:
    """Per engine mode: forward costs per context and K, and end to end; the baselines once (`baselines`: True
    for the plan's, False for none); with `batch_sizes`, the batched passes' costs against B x K, per mode. Each
    mode is a target of its own around the same weights (an engine is settled when its target is made, never
    switched). What is not given comes from default_plan(device, full). Returns the figures (what --json
    writes) after printing them. `model`: a random model already made at `shape` (the GPU check shares one
    among its steps)."""
    dtype = torch_dtype(dtype)
    target, label = bench_target(shape, model_path, dtype, device, model)
    model, tokenizer, device = target.model, target.tokenizer, torch.device(device)
    plan = default_plan(device, full)
    engines = engines or list(plan.engines or available_engines(device))
    for mode in engines:
        check_engine(mode, device)
    block_sizes = block_sizes or list(plan.block_sizes or [model.block_size])
    contexts = list(plan.contexts) if contexts is None else contexts
    contexts = [c for c in contexts if c + max(block_sizes) <= model.config.max_position_embeddings]
    new_tokens = plan.new_tokens if new_tokens is None else new_tokens
    repeats = plan.repeats if repeats is None else repeats
    console = make_console()
    console.quiet = not print_tables
    console.print(f"[bold]bench-engine[/]: {label}, {str(dtype).removeprefix('torch.')}, on {machine()}")
    figures, floor = roofline(console, model, label, dtype, device)
    prompts = end_to_end_prompts(target, plan) if prompts is None else prompts
    ar_tokens = None  # every decoder in every mode is held to the first mode's AR
    batched = []
    for mode in engines:
        in_mode = Target(model, target.path, tokenizer, Engine(model, mode))
        if mode != "eager":  # the first pass of each shape compiles or captures; the timings come after
            console.print(f"engine {mode}: compiling each pass shape on first use (minutes on a CPU) ...")
        rows = [
            row
            for K in block_sizes
            for row in forward_table(console, in_mode.engine, mode, contexts, K, repeats, device, floor)
        ]
        e2e, ar_tokens = end_to_end(in_mode, prompts, new_tokens, END_TO_END, ar_tokens)
        figures["modes"][mode] = {
            "forwards": rows,
            "end_to_end": e2e,
            "events_over_wall": events_vs_wall(in_mode.engine, contexts[0], 50, device),
        }
        if batch_sizes:
            rows = batched_costs(in_mode.engine, mode, contexts, block_sizes, repeats, device, batch_sizes)
            print_batched(console, rows, repeats, mode)
            batched += rows
    if batch_sizes:
        figures["batched"] = batched
    figures["baselines"] = (
        end_to_end(target, prompts, new_tokens, plan.baselines, ar_tokens)[0] if baselines else {}
    )
    figures["instrumentation"] = instrumentation(figures, device)
    print_end_to_end(console, figures, len(prompts), new_tokens)
    return figures


def bench_target(shape: str, model_path, dtype: torch.dtype, device: str, model) -> tuple[Target, str]:
    """(the eager target timed, its label): the checkpoint at `model_path`, else `model` or a random model at
    `shape`."""
    if model_path:
        return load_target(model_path, dtype, device, "eager"), str(model_path)
    model = model if model is not None else random_model(shape, dtype, check_device(device))
    return Target.of(model, f"random {shape}", engine="eager"), f"{shape} shape, random weights"


def roofline(console, model, label: str, dtype: torch.dtype, device: torch.device) -> tuple[dict, float]:
    """The roofline measured and printed -> (the figures' head, its modes still empty; the floor: seconds per AR
    step at batch size 1 that streaming the weights at the measured copy bandwidth takes)."""
    bandwidth = copy_bandwidth(device)
    floor = weight_bytes(model) / bandwidth
    console.print(
        f"roofline: {weight_bytes(model) / 1e9:.3f} GB of AR-view weights streamed per step (the input "
        f"embedding only gathered) / {bandwidth / 1e9:.0f} GB/s "
        f"measured copy bandwidth = {floor * 1e3:.3f} ms per AR step at batch size 1"
    )
    figures = {
        "model": label,
        "dtype": str(dtype).removeprefix("torch."),
        "machine": machine(),
        "roofline_ms": floor * 1e3,
        "bandwidth_gb_s": bandwidth / 1e9,
        "modes": {},
    }
    return figures, floor


def end_to_end_prompts(target: Target, plan: Plan) -> list[list[int]]:
    """The plan's tiny-math prompts in the checkpoint's chat template; random ones for random weights or a
    checkpoint without a tokenizer (acceptance is then meaningless)."""
    prompts = None
    if target.tokenizer is not None:
        prompts = suite_prompts(target.path, plan.suite_prompts)
    if prompts is None:
        g = torch.Generator().manual_seed(1)
        prompts = [
            torch.randint(0, target.model.config.vocab_size - 1, (32,), generator=g).tolist()
            for _ in range(plan.random_prompts)
        ]
    return prompts


def forward_table(console, engine: Engine, mode: str, contexts, K: int, repeats: int, device, floor: float):
    """One pass of each kind per context at block size K in `engine`, printed as a table -> its rows (per
    context: prefill s, the AR step, diffusion and verify passes in ms, the AR step against the roofline)."""
    table = Table(
        "context",
        "prefill s",
        "AR ms",
        "roofline %",
        "diffusion ms",
        "verify ms",
        "cycle / AR",
        title=f"engine {mode}: per-forward medians over {repeats} repeats, K = {K}; prefill: one eager "
        f"pass of the whole context, median over {min(repeats, PREFILL_REPEATS)}",
    )
    rows = []
    for _, ctx, prefill, ar, diffusion, verify in forward_costs(engine, contexts, K, repeats, device):
        row = dict(
            context=ctx,
            K=K,
            prefill_s=prefill,
            ar_ms=ar * 1e3,
            roofline_pct=100 * floor / ar,
            diffusion_ms=diffusion * 1e3,
            verify_ms=verify * 1e3,
            cycle_over_ar=(diffusion + verify) / ar,
        )
        rows.append(row)
        table.add_row(
            str(ctx),
            f"{prefill:.3f}",
            f"{row['ar_ms']:.3f}",
            f"{row['roofline_pct']:.0f}%",
            f"{row['diffusion_ms']:.3f}",
            f"{row['verify_ms']:.3f}",
            f"{row['cycle_over_ar']:.2f}",
        )
    console.print(table)
    return rows


def batched_costs(
    engine: Engine, mode: str, contexts, block_sizes, repeats: int, device, batch_sizes
) -> list:
    """The batched passes' costs in `engine` per block size, batch size and context (no prefill timed)."""
    return [
        dict(
            engine=mode,
            batch_size=B,
            context=ctx,
            K=K,
            ar_ms=ar * 1e3,
            diffusion_ms=diffusion * 1e3,
            verify_ms=verify * 1e3,
            cycle_over_ar=(diffusion + verify) / ar,
        )
        for K in block_sizes
        for B, ctx, _, ar, diffusion, verify in forward_costs(
            engine, contexts, K, repeats, device, batch_sizes, time_prefill=False
        )
    ]


def instrumentation(figures: dict, device: torch.device) -> dict:
    """What one synchronised clock reading costs, in µs and against the first mode's first AR step."""
    first_ar_ms = next(iter(figures["modes"].values()))["forwards"][0]["ar_ms"]
    overhead = clock_overhead(device)
    return {
        "clock_us": overhead * 1e6,
        "pct_of_ar_step": 100 * overhead / (first_ar_ms / 1e3),  # one reading against the first mode's step
    }


def print_end_to_end(console, figures: dict, n_prompts: int, new_tokens: int) -> None:
    rows = {
        f"{spec} · {mode}": row
        for mode, f in figures["modes"].items()
        for spec, row in f["end_to_end"].items()
    }
    rows.update(figures["baselines"])
    ar_hf = figures["baselines"].get("ar-hf:cache=static")
    reference = rows[next(iter(rows))]
    table = Table(
        "decoder · engine",
        "tokens/s",
        "tau",
        "vs the first",
        *(["vs ar-hf:cache=static"] if ar_hf else []),  # a baseline --full times on a CPU
        "identical to ar",
        title=f"end to end: {n_prompts} prompts, up to {new_tokens} new tokens, greedy",
    )
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['tokens_per_s']:.1f}",
            "–" if row["tau"] is None else f"{row['tau']:.2f}",
            f"{row['tokens_per_s'] / reference['tokens_per_s']:.2f}x",
            *([f"{row['tokens_per_s'] / ar_hf['tokens_per_s']:.2f}x"] if ar_hf else []),
            "yes" if row["identical_to_ar"] else "NO",
        )
    console.print(table)
    dynamic = figures["baselines"].get("orthrus:cache=dynamic")
    for mode, f in figures["modes"].items():
        if dynamic:
            ratio = f["end_to_end"]["orthrus"]["tokens_per_s"] / dynamic["tokens_per_s"]
            console.print(
                f"orthrus · {mode} vs orthrus:cache=dynamic (the reference-style loop): {ratio:.2f}x"
            )
    i = figures["instrumentation"]
    console.print(
        f"instrumentation: a synchronised clock reading costs {i['clock_us']:.1f} us "
        f"({i['pct_of_ar_step']:.2f}% of one AR step); a generation takes two"
    )
