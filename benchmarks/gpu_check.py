"""The one prepared GPU check, in three calls that each fit five minutes on an H200, compiles included, and its
rehearsal on a CPU.

    python benchmarks/gpu_check.py --call 1 --out $OUT                  # smoke, long context, engine, bf16
    python benchmarks/gpu_check.py --call 2 --out $OUT --after DIR      # identity (DIR: call 1's $OUT)
    python benchmarks/gpu_check.py --call 3 --out $OUT --after DIR      # batch
    python benchmarks/gpu_check.py --rehearse --out DIR                 # every step, the CUDA route on this CPU
    python benchmarks/gpu_check.py --rehearse --out DIR --write-plan    # ... and refresh gpu_check_plan.json

Before it starts, each call prints its plan: per step, the shapes it compiles (FlexAttention kernels, CUDA
graph captures, transformers' own graphs), as the rehearsal counted them (gpu_check_plan.json, which a test
holds to the rehearsal), times the seconds one costs (COMPILE_S), plus the step's own work (WORK_S); `--after`
carries call 1's measured seconds per compile into the later calls' plans, and its compile caches (Inductor's
and Triton's, archived in call 1's $OUT as compile-cache.tar.gz) into them. Every step writes DIR/gpu_check.json
and DIR/gpu_check.md as it finishes, so a kill keeps what finished; a method that fails keeps the others' rows.
Exit 0 unless a step failed to run (a missed target is a finding, reported as such). The calls are balanced by
the plan, each within CALL_LIMIT_S (tests/test_gpu_check.py).

Call 1:
1. smoke: imports, Triton and a C compiler, NVML matched to the device, then at the qwen3-8b shape in bf16 one
   AR step and one Orthrus cycle under cudagraph: the kernels every pass chose (recorded at capture), and the
   host syncs per cycle (counted by orthrus_core.host, and by CUDA's own sync debug mode);
2. long context: prefill and decode at 32K and 40K for AR and Orthrus: kernels at capture, the generation's own
   allocator peak against `orthrus_core.memory`'s plan (the graph pool included), prefill, AR step and Orthrus
   cycle times;
3. engine: `bench-engine` at 1K and 32K, eager and cudagraph; targets: AR step >= 80% of the roofline at 1K,
   Orthrus cycle / AR step <= 2.1 up to 32K at K = 32, CUDA-event times within 2% of wall clock;
4. bf16: a run of the tiny family in bfloat16 (ar, Orthrus, EAGLE-3, DFlash), verified (divergences near-tie
   or algorithmic), then the telemetry cross-checks of its records (CUDA events vs wall clock, NVML power and
   energy, allocator peak vs NVML device memory).

Call 2:
5. identity: every lossless method on the tiny family in float32, EAGLE-3 and ar-hf:cache=static included,
   token for token against `ar`, in the device's default engine.

Call 3:
6. batch: the batched AR step, diffusion and verify passes at the qwen3-8b shape at 4K, at the smallest and the
   largest batch sizes the memory plan of the device fits (H100 or H200), with cycle / AR; Orthrus and DFlash on
   the tiny family at B = 2 (continuous), row for row against their own batch-1 output.

`--steps pipeline` adds run -> verify -> report on a random checkpoint at the qwen3-1.7b shape written in bf16.

The rehearsal (--rehearse, orthrus_core.rehearsal) runs the same steps with the same structure (methods, row
buckets, capacity buckets, dtypes: what decides how many shapes compile) at a small shape, with contexts that
group into capacity buckets as the GPU's do (`Scale`, `capacity_groups`), fewer timing repeats, and Dynamo's
caches emptied at each call's first step: the calls are processes of their own on the GPU.

The machine has no network: only the repository arrives, so it needs only what the project imports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from harness.bench.engine_bench import available_engines, bench_engine, machine, random_model  # noqa: E402
from harness.methods import make_decoder  # noqa: E402
from harness.methods.target import load_target  # noqa: E402
from harness.paths import default_model  # noqa: E402
from harness.run.runner import execute  # noqa: E402
from harness.run.spec import RunSpec  # noqa: E402
from harness.store import read_records  # noqa: E402
from harness.suites.suite import load_suite  # noqa: E402
from harness.verify.config import VerifyConfig  # noqa: E402
from harness.verify.verdicts import verify_main  # noqa: E402
from orthrus_core import compiled  # noqa: E402
from orthrus_core.checkpoint import save_model  # noqa: E402
from orthrus_core.jsonfile import replace_file, write_json  # noqa: E402
from orthrus_core.rehearsal import rehearsal  # noqa: E402

HERE = Path(__file__).resolve().parent
PLAN_FILE = HERE / "gpu_check_plan.json"
LOSSLESS = ["ar-hf", "ar-hf:cache=static", "orthrus", "orthrus:cache=dynamic", "eagle3", "dflash", "pld"]
# Balanced by the plan: the bf16 step (the tiny family, its own dtype's shapes) fits beside the 8B steps, whose
# shapes are few; identity (every method, the drafters' passes and transformers' own graphs) fills call 2, and
# batch (two row buckets, the drafters' passes at each) call 3: together they plan past one call's limit.
CALLS = {1: ["smoke", "long_context", "engine", "bf16"], 2: ["identity"], 3: ["batch"]}
STEPS = [*CALLS[1], *CALLS[2], *CALLS[3], "pipeline"]
CALL_LIMIT_S = 300  # one call of the device tool, as a session should spend it

# Each step's own work on an H200, compiles excluded (the plan adds those from the rehearsal's counts), from
# the shapes' FLOPs and bytes at ~600 TFLOP/s and ~4.3 TB/s (KINDS.md) and the CPU runs of the same steps:
WORK_S = {
    "smoke": 15,  # imports (~5 s), the random 8B model drawn on the device (~5 s), one prefill of 1K, two passes
    "long_context": 30,  # 8 prefills of 32-40K (~2 s each: ~1.1e15 FLOP), 4 x 64 tokens at ~5 ms per pass
    "engine": 60,  # 2 modes x 2 contexts: 4 prefills, 3 passes x 13 runs; 2 x 4 prompts x 64 tokens, eager ~20 ms
    "identity": 20,  # the tiny family, 7 methods x 8 prompts x 96 tokens, ~1-5 ms per cycle
    "bf16": 35,  # a tiny bf16 run of 4 methods, then verify's float32 references and near-tie study
    "batch": 30,  # 8B passes at 2 batch sizes x 3 kinds x 13 runs at 4K; tiny batched identity of 2 methods
    "pipeline": 50,  # a random 1.7B checkpoint written in bf16 (~3.4 GB), run, verify, report
}
# Seconds one compile costs cold on an H200, until call 1 has measured them (--after): a FlexAttention forward
# kernel (Triton; 10-60 s reported, its lower middle taken: no autotuning, one kernel per shape), a CUDA graph
# capture, and one of transformers' own graphs (ar-hf:cache=static: inductor and CUDA graphs over the tiny
# model).
COMPILE_S = {"flex_attention": 15.0, "static_pass": 60.0, "cudagraph": 0.5, "transformers": 30.0}


@dataclass(frozen=True)
class Scale:
    """What the steps run at. Only the sizes differ between the GPU's and the rehearsal's; what compiles depends
    on the structure (methods, passes, row buckets, which capacity buckets the contexts share, dtypes), which is
    the same in both (`capacity_groups`, held equal by tests/test_gpu_check.py)."""

    shape: str  # the random model's shape (harness.bench.engine_bench.SHAPES)
    smoke_context: int  # the smoke step's and the engine step's end-to-end prompts: the 1K bucket's
    long_contexts: tuple[int, ...]
    engine_contexts: tuple[int, ...]
    batch_contexts: tuple[int, ...]
    new_tokens: int  # tokens per long-context or engine generation
    repeats: int  # timing repeats
    # The tiny family's steps (identity, bf16, batched identity): its first tiny-math prompts, each with its drafts
    # in one capacity bucket (256: the prompts have <= 89 tokens, EAGLE-3's tree 60 nodes) at either scale.
    tiny_prompts: int
    tiny_new_tokens: int


GPU = Scale("qwen3-8b", 1100, (32768, 40960), (1024, 32768), (4096,), 64, 10, 8, 96)
REHEARSAL = Scale("rehearsal", 34, (1024, 1280), (32, 1024), (384,), 16, 2, 3, 24)
# Of these, the smallest and the largest the device's memory fits at 4K (B = 1 is the engine step's): two row
# buckets, each a FlexAttention kernel per pass kind.
BATCH_SIZES = [8, 16, 32, 64]
BATCHED_IDENTITY = ["orthrus", "dflash"]  # ragged rows through the static passes and DFlash's own ragged pass


def capacity_groups(scale: Scale, K: int) -> dict[int, list[int]]:
    """Per call, the capacity bucket (orthrus_core.engine.bucket) of every cache its 8B-shape steps ask for, in
    order, each numbered by its first appearance: what a pass shape depends on besides the model. K: the
    model's block size (Orthrus' drafts, and the K of bench-engine's passes)."""
    from orthrus_core.engine import bucket

    smoke = [
        scale.smoke_context + 2 + 1,
        scale.smoke_context + (K + 1) + K,
    ]  # AR, then Orthrus (K + 1 tokens)
    long = [need for c in scale.long_contexts for need in (c + 1, c + K)]  # prompt + new = c, then the nodes
    engine = [c + K for c in scale.engine_contexts] + [scale.engine_contexts[0] + 1]  # the passes, events
    engine += [scale.smoke_context + scale.new_tokens + n for n in (1, K)]  # end to end, AR and Orthrus
    batch = [c + K for c in scale.batch_contexts]
    groups = {}
    for call, needs in ((1, smoke + long + engine), (2, batch)):
        seen: dict[int, int] = {}
        groups[call] = [seen.setdefault(bucket(n), len(seen)) for n in needs]
    return groups


H200_BYTES = 139 * 2**30  # the device a rehearsal plans its batch sizes for

_shared: dict = {}


def shared_model(shape: str, dtype: torch.dtype, device: str):
    """One random model per (shape, dtype, device) for every step that reads it, made once (init on the
    device); a different one frees the last."""
    key = (shape, dtype, device)
    if key not in _shared:
        _shared.clear()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        _shared[key] = random_model(shape, dtype, device)
    return _shared[key]


def random_prompt(model, tokens: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size - 1, (tokens,), generator=g).tolist()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


# --------------------------------------------------------------------------------------------------- steps


@contextmanager
def kernels_seen():
    """Every attention call inside the block, by (queries, kernel, backend) -> [calls, fewest keys, most keys]:
    SDPA's backend as torch selects it for those inputs (`torch._fused_sdp_choice`; "lower-right" is flash's
    own bottom-right causal, which the bias dispatches to directly), or FlexAttention (compiled on the CUDA
    route). Under cudagraph a pass calls attention while it is captured (its warm-up runs and the capture) and
    never again (replays run no Python): wrap the generation that captures."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend

    from orthrus_core import attention

    seen: dict = {}

    def count(q, k, kind, backend):
        calls, low, high = seen.get((q.shape[2], kind, backend), (0, k.shape[2], k.shape[2]))
        seen[(q.shape[2], kind, backend)] = (calls + 1, min(low, k.shape[2]), max(high, k.shape[2]))

    real_sdpa, real_flex = F.scaled_dot_product_attention, attention._flex

    def sdpa(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        if attn_mask is None or isinstance(attn_mask, torch.Tensor):
            choice = torch._fused_sdp_choice(
                q, k, v, attn_mask, 0.0, is_causal, enable_gqa=kwargs.get("enable_gqa", False)
            )
            backend = SDPBackend(choice).name.lower()
            kind = "sdpa, mask" if attn_mask is not None else "sdpa, is_causal" if is_causal else "sdpa"
        else:
            kind, backend = "sdpa, lower-right causal", "flash (bottom-right)"
        count(q, k, kind, backend)
        return real_sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    def flex(q, k, v, **kwargs):
        count(q, k, "flex", "compiled" if q.device.type == "cuda" or compiled.rehearsing() else "eager")
        return real_flex(q, k, v, **kwargs)

    F.scaled_dot_product_attention, attention._flex = sdpa, flex
    try:
        yield seen
    finally:
        F.scaled_dot_product_attention, attention._flex = real_sdpa, real_flex


def kernel_rows(seen: dict) -> list[dict]:
    return [
        {"queries": q, "keys": [low, high], "kernel": kind, "backend": backend, "calls": n}
        for (q, kind, backend), (n, low, high) in sorted(seen.items())
    ]


@contextmanager
def cuda_sync_warnings(device: str):
    """CUDA's own count of host syncs (torch.cuda.set_sync_debug_mode "warn": one warning per synchronising
    call) inside the block, a cross-check of orthrus_core.host's rules; None off a GPU."""
    counted: dict = {"syncs": None}
    if not device.startswith("cuda"):
        yield counted
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield counted
        finally:
            torch.cuda.set_sync_debug_mode("default")
    counted["syncs"] = sum("synchroniz" in str(w.message) for w in caught)


def environment(device: str) -> dict:
    """What the check needs of the machine besides torch: Triton and a C compiler (inductor's kernels and
    their launchers), and NVML matched to the device."""
    from harness.run.telemetry import load_nvml, nvml_handle

    found: dict = {"c_compiler": shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")}
    try:
        import triton

        found["triton"] = triton.__version__
    except ImportError as exc:
        found["triton"] = f"missing ({exc})"
    nvml = load_nvml() if device.startswith("cuda") else None
    if nvml is None:
        found["nvml"] = "not loaded" if device.startswith("cuda") else "no GPU"
    else:
        try:
            handle, whole_gpu = nvml_handle(nvml, torch.device(device))
            name = nvml.nvmlDeviceGetName(handle)
            found["nvml"] = f"{name if isinstance(name, str) else name.decode()}" + (
                " (MIG parent)" if whole_gpu else ""
            )
        except Exception as exc:  # a missing or mismatched device: the finding is the error
            found["nvml"] = f"{type(exc).__name__}: {exc}"
    if device.startswith("cuda"):
        free, total = torch.cuda.mem_get_info(torch.device(device))
        found["memory_gib"] = {"free": free / 2**30, "total": total / 2**30}
    return found


def smoke(device: str, scale: Scale) -> dict:
    """The machine, then one AR step and one Orthrus cycle at the 8B shape under the device's default engine:
    the kernels each pass chose (at capture), and the host syncs and launches of a cycle."""
    from harness.bench.syncs import cycle_counts
    from orthrus_core import loop
    from orthrus_core.engine import Engine, default_engine
    from orthrus_core.orthrus import OrthrusDrafter

    t0 = time.perf_counter()
    found = environment(device)
    model = shared_model(scale.shape, torch.bfloat16, device)
    found["model_s"] = time.perf_counter() - t0
    engine = Engine(model, default_engine(device))
    prompt = random_prompt(model, scale.smoke_context)
    rows = []
    for method, drafter in (("ar", None), ("orthrus", OrthrusDrafter(model, model.block_size))):
        new = 2 if drafter is None else model.block_size + 1  # one cycle after the first token
        with kernels_seen() as seen:  # the first generation captures its passes: recorded at capture
            loop.generate(engine, drafter, prompt, new, stop_token_ids=[])
        with cuda_sync_warnings(device) as cuda, cycle_counts(device) as counts:
            loop.generate(engine, drafter, prompt, new, stop_token_ids=[])
        rows.append(
            {
                "method": method,
                "engine": engine.mode,
                "cycles": counts.cycles,
                "host_syncs": counts.syncs.total,
                "launches": counts.launches.total,  # outside graphs (harness.bench.syncs)
                "replays": counts.launches.replays,
                "cuda_syncs": cuda["syncs"],  # the whole generation: its prefill and first token included
                "kernels": kernel_rows(seen),
            }
        )
    return {"environment": found, "passes": rows}


def identity(device: str, scale: Scale) -> dict:
    """Every lossless method against `ar` on the tiny family in float32, under the device's default engine."""
    target = load_target(None, "float32", device, engine="auto")
    suite = load_suite("tiny-math", limit=scale.tiny_prompts)
    prompts = [suite.render(target.tokenizer, item, []) for item in suite.items(target.tokenizer)]
    ar = [make_decoder("ar", target).generate(p, scale.tiny_new_tokens).tokens for p in prompts]
    out = {}
    for spec in LOSSLESS:
        try:  # one method's failure keeps the others' rows
            decoder = make_decoder(spec, target)
            same = sum(
                decoder.generate(p, scale.tiny_new_tokens).tokens == a
                for p, a in zip(prompts, ar, strict=True)
            )
            out[spec] = {"identical": same, "prompts": len(prompts)}
        except Exception as exc:
            out[spec] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    return {"engine": target.engine.mode, "methods": out}


def batch_sizes_that_fit(device: str, context: int) -> tuple[list[int], float]:
    """The smallest and the largest of BATCH_SIZES whose Orthrus memory plan (orthrus_core.memory, on the meta
    device) at the 8B shape fits the device (a rehearsal plans for an H200) at `context` positions per row, and
    the memory planned for."""
    from transformers import Qwen3Config

    from harness.methods.checkpoints import QWEN3_SHAPES
    from orthrus_core import memory
    from orthrus_core.orthrus import OrthrusDrafter

    config = Qwen3Config(architectures=["OrthrusLM"], **QWEN3_SHAPES["qwen3-8b"])
    meta = memory.meta_target(config, torch.bfloat16)
    capacity = torch.cuda.mem_get_info(torch.device(device))[1] if device.startswith("cuda") else H200_BYTES
    decoding = memory.Decoding("orthrus", drafter=OrthrusDrafter(meta, meta.block_size))
    fits = [
        B
        for B in BATCH_SIZES
        if memory.plan(meta, decoding, context=context, rows=B, device="cuda", engine="cudagraph").fits(
            capacity
        )
    ]
    return sorted({fits[0], fits[-1]}) if fits else [], capacity / 2**30


def batch_step(device: str, scale: Scale) -> dict:
    """Batched pass costs against B x K at the 8B shape, at the batch sizes the device fits, and batched
    identity on the tiny family."""
    from harness.bench.engine_bench import forward_costs
    from orthrus_core.engine import Engine, default_engine
    from orthrus_core.generation import stop_ids
    from orthrus_core.loop import Request

    sizes, planned_gib = batch_sizes_that_fit(device, max(GPU.batch_contexts) + 32)
    model = shared_model(scale.shape, torch.bfloat16, device)
    contexts = list(scale.batch_contexts)
    K = model.block_size
    passes = [
        dict(batch_size=B, context=ctx, K=K, ar_ms=ar * 1e3, diffusion_ms=d * 1e3, verify_ms=v * 1e3,
             cycle_over_ar=(d + v) / ar)
        for B, ctx, _, ar, d, v in forward_costs(Engine(model, default_engine(device)), contexts, K, scale.repeats,
                                                 torch.device(device), sizes, time_prefill=False)
    ]  # fmt: skip
    _shared.clear()
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    target = load_target(None, "float32", device)  # the default engine
    suite = load_suite("tiny-math", limit=scale.tiny_prompts)
    prompts = [suite.render(target.tokenizer, item, []) for item in suite.items(target.tokenizer)]
    new, stop = scale.tiny_new_tokens, stop_ids(target.model)
    identity = {}
    for spec in BATCHED_IDENTITY:
        try:
            decoder = make_decoder(spec, target)
            alone = [decoder.generate(p, new).tokens for p in prompts]
            queue = [Request(p, new, stop, key=i) for i, p in enumerate(prompts)][::-1]
            done = decoder.decode(lambda q=queue: q.pop() if q else None, rows=2, continuous=True)
            same = sum(d.result.tokens == alone[d.request.key] for d in done)
            identity[spec] = {"identical": same, "prompts": len(prompts)}
        except Exception as exc:
            identity[spec] = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:],
            }
    return {"shape": scale.shape, "planned_for_gib": planned_gib, "batch_sizes": sizes, "passes": passes,
            "identity": identity}  # fmt: skip


def long_context(device: str, scale: Scale) -> dict:
    """AR and Orthrus at long contexts on one device: kernels (at capture), peak memory against the plan,
    times."""
    from orthrus_core import memory
    from orthrus_core.engine import Engine, default_engine
    from orthrus_core.loop import generate
    from orthrus_core.orthrus import OrthrusDrafter

    model = shared_model(scale.shape, torch.bfloat16, device)
    engine = Engine(model, default_engine(device))
    cuda, new, K = device.startswith("cuda"), scale.new_tokens, model.block_size
    rows = []
    for ctx in scale.long_contexts:
        prompt = random_prompt(model, ctx - new)
        for method, drafter in (("ar", None), ("orthrus", OrthrusDrafter(model, K))):
            try:
                decoding = memory.Decoding(method, drafter=drafter)
                plan = memory.plan(model, decoding, context=ctx, device=device, engine=engine.mode)
                with kernels_seen() as seen:  # the untimed generation captures and compiles
                    generate(engine, drafter, prompt, new, stop_token_ids=[])
                if cuda:
                    torch.cuda.synchronize(device)
                    torch.cuda.reset_peak_memory_stats(device)
                engine.mark()
                result = generate(engine, drafter, prompt, new, stop_token_ids=[])
                peak = None
                if cuda:
                    torch.cuda.synchronize(device)
                    peak = torch.cuda.max_memory_allocated(device) - engine.held_bytes() + engine.pool_bytes
                steps = result.cycles if drafter else result.new_tokens - 1
                rows.append(
                    {
                        "context": ctx,
                        "method": method,
                        "K": K if drafter else 1,
                        "engine": engine.mode,
                        "prefill_s": result.prefill_s,
                        "step_ms": 1e3 * result.decode_s / max(steps, 1),  # an AR step, or an Orthrus cycle
                        "tau": result.tau,
                        "peak_bytes": peak,
                        "pool_bytes": engine.pool_bytes,
                        "plan_bytes": plan.total,
                        "plan": plan.items(),
                        "kernels": kernel_rows(seen),
                    }
                )
            except Exception as exc:
                rows.append({"context": ctx, "method": method, "error": f"{type(exc).__name__}: {exc}"})
            print(f"gpu_check: long context {ctx} {method} done", flush=True)
        if cuda:
            torch.cuda.empty_cache()
    return {"shape": scale.shape, "dtype": "bfloat16", "rows": rows}


def engine_figures(device: str, scale: Scale) -> dict:
    model = shared_model(scale.shape, torch.bfloat16, device)
    # Prompts of the 1K bucket: the end-to-end generations meet the shapes the 1K passes compiled.
    prompts = [random_prompt(model, scale.smoke_context, seed=s) for s in range(4)]
    return bench_engine(
        scale.shape, model=model, dtype="bfloat16", device=device, print_tables=False,
        engines=[m for m in ("eager", "cudagraph") if m in available_engines(torch.device(device))],
        contexts=list(scale.engine_contexts), block_sizes=[model.block_size],
        new_tokens=scale.new_tokens, repeats=scale.repeats, prompts=prompts, baselines=False,
    )  # fmt: skip


def engine_targets(figures: dict) -> list[str]:
    """The GPU targets, each as a line: met or missed, with the figure (none off a GPU)."""
    lines = []
    for mode, f in figures["modes"].items():
        if "CPU" in figures["machine"]:
            break
        first = f["forwards"][0]
        pct = first["roofline_pct"]
        lines.append(
            f"AR step at {first['context']}, {mode}: {pct:.0f}% of roofline ({'met' if pct >= 80 else 'MISSED'})"
        )
        worst = max(r["cycle_over_ar"] for r in f["forwards"])
        lines.append(f"cycle / AR up to 32K, {mode}: {worst:.2f} ({'met' if worst <= 2.1 else 'MISSED'})")
        ratio = f["events_over_wall"]
        if ratio is not None:
            lines.append(
                f"CUDA events / wall clock, {mode}: {ratio:.3f} ({'met' if abs(ratio - 1) <= 0.02 else 'MISSED'})"
            )
    return lines


def verified_run(
    work: Path, model: str | None, dtype: str, device: str, methods: list[str], limit: int, new: int
):
    spec = RunSpec(suites=["tiny-math"], methods=methods, model=model, dtype=dtype, device=device,
                   max_new_tokens=new, limit=limit, warmup=1)  # fmt: skip
    directory = execute(spec, str(work), progress=False)
    status = verify_main(directory, VerifyConfig(device=device))
    verdicts = json.loads((Path(directory) / "verdicts.json").read_text())
    return Path(directory), status, verdicts


def bf16_divergences(work: Path, device: str, scale: Scale) -> dict:
    methods = ["ar", "orthrus", "eagle3", "dflash"]  # the product and its two competitors, against ar
    directory, status, verdicts = verified_run(
        work / "bf16", None, "bfloat16", device, methods, scale.tiny_prompts, scale.tiny_new_tokens
    )
    rows = {}
    for v in verdicts["verdicts"]:
        g = v.get("greedy") or {}
        rows[v["method"]] = {
            "verdict": v["verdict"],
            "identical": g.get("identical"),
            "prompts": g.get("prompts"),
            "near_tie_events": g.get("near_tie_events"),
            "algorithmic_events": g.get("algorithmic_events"),
            "near_tie_threshold": g.get("near_tie_threshold"),
            "margins_combined_pvalue": g.get("margins_combined_pvalue"),
        }
    return {"verify_exit": status, "methods": rows, "telemetry": telemetry_checks(read_records(directory))}


def telemetry_checks(records: list[dict]) -> dict:
    """Cross-checks on a run's records: what each telemetry path measured and whether the paths agree."""
    gens = [r for r in records if r["status"] == "ok"]
    timed = [r for r in gens if r.get("ar_forward_count") and r.get("ar_forward_ms_mean")]
    # The AR forwards' own (event) time cannot exceed the generation's wall clock.
    forward_s = [r["ar_forward_count"] * r["ar_forward_ms_mean"] / 1e3 for r in timed]
    within_wall = sum(f <= r["wall_s"] * 1.02 for f, r in zip(forward_s, timed, strict=True))
    mem = [r for r in gens if r.get("allocator_peak_bytes") and r.get("device_mem_peak_bytes")]
    energy = [r for r in gens if r.get("energy_j") is not None and r.get("power_mean_w") is not None]
    energy_ok = sum(
        abs(r["energy_j"] - r["power_mean_w"] * r["wall_s"]) <= 0.25 * r["energy_j"]
        for r in energy
        if r.get("energy_reliable")
    )
    return {
        "generations": len(gens),
        "forward_times_within_wall": f"{within_wall}/{len(timed)}",
        "allocator_peak_le_nvml_memory": f"{sum(r['allocator_peak_bytes'] <= r['device_mem_peak_bytes'] for r in mem)}/{len(mem)}",
        "energy_matches_power_x_time": f"{energy_ok}/{sum(1 for r in energy if r.get('energy_reliable'))}",
        "nvml_measured": bool(energy or mem),
    }


def pipeline(work: Path, device: str, scale: Scale) -> dict:
    """run -> verify -> report on a random Orthrus checkpoint written here, with the tiny family's tokenizer."""
    from harness.report.page import write_report

    shape = "qwen3-1.7b" if scale is GPU else "small"
    checkpoint = work / f"random-{shape}"
    t0 = time.perf_counter()
    model = random_model(shape, torch.bfloat16, device)
    save_model(model, checkpoint)
    del model
    for name in TOKENIZER_FILES:
        if (default_model() / name).exists():
            shutil.copy(default_model() / name, checkpoint / name)
    written = time.perf_counter() - t0
    directory, status, verdicts = verified_run(
        work / "pipeline-run", str(checkpoint), "bfloat16", device, ["ar", "orthrus"], 2, 16
    )
    report = write_report([str(directory)], work / "pipeline-report")
    shutil.rmtree(checkpoint)  # gigabytes at the real shape
    return {
        "shape": shape,
        "checkpoint_write_s": written,
        "verify_exit": status,
        "verdicts": {v["method"]: v["verdict"] for v in verdicts["verdicts"]},
        "report": str(report),
    }


# ---------------------------------------------------------------------------------------------------- plan


def compile_kinds(entries: list[compiled.Compile], other_graphs: int) -> dict:
    """What a step compiled, by kind: the ledger's, and graphs Dynamo compiled outside it (transformers')."""
    kinds = dict(Counter(c.kind for c in entries))
    if other_graphs:
        kinds["transformers"] = other_graphs
    return kinds


def load_plan() -> dict:
    """The rehearsal's compile counts per step (gpu_check_plan.json)."""
    return json.loads(PLAN_FILE.read_text())["steps"] if PLAN_FILE.exists() else {}


def plan(steps: list[str], compile_s: dict, counts: dict) -> dict:
    """Per step: its compiles (the rehearsal's counts), their seconds at `compile_s` each, its own work, and
    the estimate: work + compiles."""
    out = {}
    for name in steps:
        kinds = counts.get(name, {})
        compiling = sum(n * compile_s.get(kind, COMPILE_S.get(kind, 0.0)) for kind, n in kinds.items())
        out[name] = {"compiles": kinds, "compile_s": compiling, "work_s": WORK_S[name],
                     "estimate_s": round(WORK_S[name] + compiling)}  # fmt: skip
    return out


def measured_compile_s(result: dict) -> dict:
    """Seconds per compile of each kind, as a finished call measured them (the ledger's entries)."""
    totals: dict = {}
    for step in result.get("steps", {}).values():
        for kind, (n, seconds) in step.get("compiled", {}).items():
            count, total = totals.get(kind, (0, 0.0))
            totals[kind] = (count + n, total + seconds)
    return {kind: total / n for kind, (n, total) in totals.items() if n}


def plan_lines(planned: dict, compile_s: dict, source: str) -> list[str]:
    per = ", ".join(f"{kind} {s:.1f} s" for kind, s in sorted(compile_s.items()))
    lines = [f"gpu_check plan (seconds per compile: {per}; {source}):"]
    for name, p in planned.items():
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(p["compiles"].items())) or "nothing compiled"
        lines.append(
            f"  {name}: ~{p['estimate_s']} s = work {p['work_s']} s + compiles {p['compile_s']:.0f} s ({kinds})"
        )
    lines.append(f"  total: ~{sum(p['estimate_s'] for p in planned.values())} s")
    return lines


# ------------------------------------------------------------------------------------------ compile caches


CACHE_ARCHIVE = "compile-cache.tar.gz"
CACHE_LIMIT = 16 * 2**20  # the device tool brings back files of up to 16 MiB


def use_compile_cache(work: Path, previous: Path | None) -> Path:
    """Inductor's and Triton's caches under `work` (set before anything compiles), seeded from a previous call's
    archive."""
    cache = work / "compile-cache"
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(cache / "triton")
    archive = previous / CACHE_ARCHIVE if previous else None
    if archive and archive.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(cache, filter="data")
    return cache


def archive_compile_cache(cache: Path, out: Path) -> str:
    """The caches as one file in `out` (what the device tool brings back), if it fits."""
    partial = out / f".{CACHE_ARCHIVE}.partial"
    with tarfile.open(partial, "w:gz") as tar:
        for sub in ("inductor", "triton"):
            if (cache / sub).exists():
                tar.add(cache / sub, arcname=sub)
    size = partial.stat().st_size
    if size > CACHE_LIMIT:
        partial.unlink()
        return (
            f"not kept: {size / 2**20:.1f} MiB is over the {CACHE_LIMIT // 2**20} MiB a file may bring back"
        )
    partial.replace(out / CACHE_ARCHIVE)
    return f"{CACHE_ARCHIVE}, {size / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------------------------- summary


def markdown(result: dict) -> str:
    lines = [
        f"# GPU check ({result['machine']}{', rehearsed on a CPU' if result['rehearsal'] else ''})",
        "",
        f"{result['seconds']:.0f} s; steps failed: {result['failed'] or 'none'}; compile cache: {result.get('cache', '–')}",
        "",
        "| step | estimate s | took s | compiles (rehearsal's plan) | compiled here | compile s here |",
        "|---|---:|---:|---|---|---:|",
    ]
    for name, p in result["plan"].items():
        step = result["steps"].get(name, {})
        took = f"{step['seconds']:.0f}" if "seconds" in step else "not run"
        planned = ", ".join(f"{n} {k}" for k, n in sorted(p["compiles"].items())) or "–"
        here = ", ".join(f"{n} {k}" for k, (n, _) in sorted(step.get("compiled", {}).items())) or "–"
        seconds = sum(s for _, s in step.get("compiled", {}).values())
        lines.append(f"| {name} | {p['estimate_s']} | {took} | {planned} | {here} | {seconds:.0f} |")
    lines.append("")
    if "smoke" in result:
        s = result["smoke"]
        lines += ["## Smoke", "", *[f"- {k}: {v}" for k, v in s["environment"].items()], ""]
        lines += [
            "| method | engine | cycles | host syncs (rules) | CUDA sync warnings | kernels at capture |",
            "|---|---|---:|---:|---:|---|",
        ]
        for r in s["passes"]:
            kernels = "; ".join(
                f"{k['queries']} x {k['keys'][1]}: {k['kernel']}, {k['backend']}" for k in r["kernels"]
            )
            lines.append(
                f"| {r['method']} | {r['engine']} | {r['cycles']} | {r['host_syncs']} | {r['cuda_syncs'] if r['cuda_syncs'] is not None else '–'} | {kernels} |"
            )
        lines.append("")
    if "long_context" in result:
        lc = result["long_context"]
        lines += [
            f"## Long context, {lc['shape']} ({lc['dtype']}): the generation's own peak against the plan",
            "",
            "| context | method | engine | prefill s | ms / step or cycle | peak GiB | graph pool GiB | plan GiB | kernels at capture (queries x keys: kernel, backend) |",
            "|---:|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in lc["rows"]:
            if "error" in r:
                lines.append(f"| {r['context']} | {r['method']} | FAILED: {r['error'][:200]} | | | | | | |")
                continue
            kernels = "; ".join(
                f"{k['queries']} x {k['keys'][0]}–{k['keys'][1]}: {k['kernel']}, {k['backend']} ({k['calls']})"
                for k in r["kernels"]
            )
            peak = "–" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}"
            lines.append(
                f"| {r['context']} | {r['method']} | {r['engine']} | {r['prefill_s']:.3f} | {r['step_ms']:.2f} | {peak} | "
                f"{r['pool_bytes'] / 2**30:.2f} | {r['plan_bytes'] / 2**30:.2f} | {kernels} |"
            )
        lines.append("")
    if "engine" in result:
        f = result["engine"]
        lines += [f"## Engine ({f['model']}, {f['dtype']}); roofline {f['roofline_ms']:.3f} ms", ""]
        lines += [
            "| mode | context | K | AR ms | roofline % | diffusion ms | verify ms | cycle / AR |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for mode, m in f["modes"].items():
            for r in m["forwards"]:
                lines.append(
                    f"| {mode} | {r['context']} | {r['K']} | {r['ar_ms']:.3f} | {r['roofline_pct']:.0f}% | "
                    f"{r['diffusion_ms']:.3f} | {r['verify_ms']:.3f} | {r['cycle_over_ar']:.2f} |"
                )
        lines += ["", "| decoder | tokens/s | tau | identical |", "|---|---:|---:|---|"]
        for mode, m in f["modes"].items():
            for spec, row in m["end_to_end"].items():
                tau = "–" if row["tau"] is None else f"{row['tau']:.2f}"
                lines.append(
                    f"| {spec} · {mode} | {row['tokens_per_s']:.1f} | {tau} | {'yes' if row['identical_to_ar'] else 'NO'} |"
                )
        lines += ["", *[f"- {t}" for t in result.get("targets", [])], ""]
    if "identity" in result:
        lines += [f"## float32 identity on the tiny family ({result['identity']['engine']})", ""]
        lines += [f"- {m}: " + (f"{r['identical']}/{r['prompts']} identical to ar" if "error" not in r else f"FAILED: {r['error']}")
                  for m, r in result["identity"]["methods"].items()] + [""]  # fmt: skip
    if "bf16" in result:
        lines += [
            "## bf16 divergences (tiny family)",
            "",
            "| method | verdict | identical | near-tie | algorithmic | near-tie threshold | margins combined p |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for m, r in result["bf16"]["methods"].items():
            threshold, combined = r.get("near_tie_threshold"), r.get("margins_combined_pvalue")
            lines.append(
                f"| {m} | {r['verdict']} | {r['identical']}/{r['prompts']} | {r['near_tie_events']} "
                f"| {r['algorithmic_events']} | {'–' if threshold is None else f'{threshold:.3g}'} "
                f"| {'–' if combined is None else f'{combined:.3g}'} |"
            )
        lines += [
            "",
            "Telemetry cross-checks:",
            "",
            *[f"- {k}: {v}" for k, v in result["bf16"]["telemetry"].items()],
            "",
        ]
    if "batch" in result:
        b = result["batch"]
        lines += [
            f"## Batched passes, {b['shape']} (bf16; batch sizes the memory plan fits in {b['planned_for_gib']:.0f} GiB: {b['batch_sizes']})",
            "",
            "| B | context | K | AR step ms | ms / row | diffusion ms | verify ms | cycle / AR |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in b["passes"]:
            lines.append(
                f"| {r['batch_size']} | {r['context']} | {r['K']} | {r['ar_ms']:.3f} | {r['ar_ms'] / r['batch_size']:.3f} | "
                f"{r['diffusion_ms']:.3f} | {r['verify_ms']:.3f} | {r['cycle_over_ar']:.2f} |"
            )
        lines += [
            "",
            "Batched identity (tiny family, float32, B = 2 continuous, against each method's batch-1):",
            "",
        ]
        lines += [f"- {m}: " + (f"{r['identical']}/{r['prompts']} rows identical" if "error" not in r else f"FAILED: {r['error']}")
                  for m, r in b["identity"].items()] + [""]  # fmt: skip
    if "pipeline" in result:
        p = result["pipeline"]
        lines += [f"## run -> verify -> report, random {p['shape']} checkpoint", "",
                  f"- written in {p['checkpoint_write_s']:.0f} s; verify exit {p['verify_exit']}; verdicts {p['verdicts']}", ""]  # fmt: skip
    for step, error in result["errors"].items():
        lines += [f"## {step} FAILED", "", "```", error[-2000:], "```", ""]
    return "\n".join(lines)


def write(out: Path, result: dict, t0: float) -> None:
    """gpu_check.json and gpu_check.md as they stand, each replaced whole (a kill leaves the last complete)."""
    result["failed"] = sorted(result["errors"])
    result["seconds"] = time.perf_counter() - t0
    write_json(out / "gpu_check.json", result)
    replace_file(out / "gpu_check.md", markdown(result).encode())


def failed_rows(name: str, value: dict) -> list[str]:
    """Methods a step ran that failed (their errors are in the summary; the step itself ran)."""
    if name == "identity":
        return [m for m, r in value["methods"].items() if "error" in r]
    if name == "batch":
        return [m for m, r in value["identity"].items() if "error" in r]
    if name == "long_context":
        return [f"{r['method']} at {r['context']}" for r in value["rows"] if "error" in r]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument(
        "--out", required=True, help="directory for gpu_check.json, gpu_check.md and the compile cache"
    )
    parser.add_argument("--call", type=int, choices=sorted(CALLS), help="the steps of call 1, 2 or 3")
    parser.add_argument(
        "--steps", type=lambda s: s.split(","), help=f"these steps, comma-separated ({', '.join(STEPS)})"
    )
    parser.add_argument(
        "--after", type=Path, help="call 1's output directory: its compile cache and measured compile seconds"
    )
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="on this CPU, the CUDA route rehearsed (orthrus_core.rehearsal)",
    )
    parser.add_argument(
        "--write-plan",
        action="store_true",
        help=f"with --rehearse: write the compile counts to {PLAN_FILE.name}",
    )
    parser.add_argument("--work", type=Path, help="where runs and caches go (default: a temporary directory)")
    args = parser.parse_args(argv)
    steps = args.steps or (CALLS[args.call] if args.call else (STEPS[:-1] if args.rehearse else None))
    if steps is None:
        parser.error("give --call 1, 2 or 3, --steps or --rehearse")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown steps {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    if args.write_plan and not args.rehearse:
        parser.error("--write-plan writes what a rehearsal counted: add --rehearse")
    if args.rehearse and torch.cuda.is_available():
        parser.error("--rehearse runs the CUDA route on a CPU; on this GPU run the calls themselves")
    if args.after and not (args.after / "gpu_check.json").is_file():
        parser.error(f"--after {args.after}: no gpu_check.json there; give the --out directory of call 1")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.rehearse:
        parser.error("no GPU here: add --rehearse to run the steps through the CUDA route on this CPU")
    scale = REHEARSAL if args.rehearse else GPU
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    cache = use_compile_cache(work, args.after)
    compile_s, source = dict(COMPILE_S), "assumed"
    if args.after:
        previous = args.after / "gpu_check.json"
        compile_s.update(measured_compile_s(json.loads(previous.read_text())))
        source = f"measured by {previous}"
    t0 = time.perf_counter()
    result: dict = {"machine": machine(), "device": device, "rehearsal": args.rehearse, "errors": {}, "steps": {},
                    "plan": plan(steps, compile_s, load_plan())}  # fmt: skip
    print("\n".join(plan_lines(result["plan"], compile_s, source)), flush=True)
    run_step = {
        "smoke": lambda: smoke(device, scale),
        "long_context": lambda: long_context(device, scale),
        "engine": lambda: engine_figures(device, scale),
        "identity": lambda: identity(device, scale),
        "bf16": lambda: bf16_divergences(work, device, scale),
        "batch": lambda: batch_step(device, scale),
        "pipeline": lambda: pipeline(work, device, scale),
    }
    with rehearsal() if args.rehearse else contextlib.nullcontext():
        for name in steps:
            # Each call is a process of its own on the GPU: it starts with nothing compiled.
            if args.rehearse and name in (steps[0], *(call[0] for call in CALLS.values())):
                torch._dynamo.reset()
            started, mark = time.perf_counter(), compiled.LEDGER.mark()
            graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
            try:
                result[name] = run_step[name]()
                if name == "engine":
                    result["targets"] = engine_targets(result["engine"])
                failed = failed_rows(name, result[name])
                if failed:
                    result["errors"][name] = f"failed: {', '.join(failed)} (the other rows ran)"
            except Exception:  # one failed step must not lose the others' figures
                result["errors"][name] = traceback.format_exc()
            entries = compiled.LEDGER.since(mark)
            ours = sum(c.kind != "cudagraph" for c in entries)
            other = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs - ours
            kinds = compile_kinds(entries, other)
            result["steps"][name] = {
                "seconds": time.perf_counter() - started,
                "compiled": {
                    k: (n, sum(c.seconds for c in entries if c.kind == k)) for k, n in kinds.items()
                },
                "shapes": [asdict(c) for c in entries],
            }
            if not args.rehearse:
                result["cache"] = archive_compile_cache(cache, out)
            print(f"gpu_check: {name} done at {time.perf_counter() - t0:.0f} s", flush=True)
            write(out, result, t0)  # a kill after this step keeps it
    if args.write_plan:
        counts = {
            name: {k: n for k, (n, _) in step["compiled"].items()} for name, step in result["steps"].items()
        }
        write_json(PLAN_FILE, {"rehearsed_with": machine(), "steps": counts})
    print(markdown(result))
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
