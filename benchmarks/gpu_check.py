"""The one prepared GPU check: what a session with a lent H100/H200 should measure, in one call that fits a short
window.

    python benchmarks/gpu_check.py --out $OUT            # on the GPU machine: the plan below, about 7.5 minutes
    python benchmarks/gpu_check.py --out $OUT --steps identity,long_context   # some steps, in the plan's order
    python benchmarks/gpu_check.py --out DIR --quick     # on a CPU, at the small shape (what the tests run)

It writes DIR/gpu_check.json (every figure) and DIR/gpu_check.md (the summary to paste) after every step, so a
kill keeps what finished, and exits 0 unless a step failed to run (a missed target is a finding, reported as
such, not a failure). The steps, in the order a short window should bring them back (PLAN holds each one's
estimated seconds on an H200; the summary puts the time each took beside it):

1. identity: every lossless method on the tiny family in float32, token for token against `ar`;
2. long context: at the qwen3-8b shape in bf16, a prefill and decode at 8K, 32K and 40K for AR and Orthrus in
   the device's default engine: the attention kernel every pass took (and the SDPA backend torch selected for
   it), the generation's own allocator peak against `orthrus_core.memory`'s plan, prefill, AR step and Orthrus
   cycle times;
3. engine: `bench-engine` at the qwen3-8b shape, bf16, eager and cudagraph (nothing compiled by inductor);
   targets: AR step >= 80% of the roofline at 1K context, Orthrus cycle / AR step <= 2.1 up to 32K at K = 32,
   CUDA-event times within 2% of wall clock;
4. bf16: a run of the tiny family in bfloat16, verified: divergences classified near-tie or algorithmic; then
   the telemetry cross-checks of its records (CUDA events vs wall clock, NVML power and energy, allocator peak
   vs NVML device memory);
5. batch: the batched AR step, diffusion and verify passes at the qwen3-8b shape (bf16, K = 32) at
   B = 1, 4, 16, 64 and contexts 1K and 4K, with cycle / AR (the τ an Orthrus cycle must beat at that B); and
   every batched method on the tiny family in float32 at B = 4 (continuous), row for row against its own
   batch-1 output;
6. pipeline: `run` -> `verify` -> `report` on a random Orthrus checkpoint at the qwen3-1.7b shape written in
   bf16 (the small shape with --quick), a few prompts of a few tokens.

The random 8B model is made once, on the device, in bf16, and shared by the steps that read it.

The machine has no network: only the repository arrives, so it needs only what the project imports (carry
missing pure-Python packages as wheels; the device tool's README says how).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from harness.bench.engine_bench import available_engines, bench_engine, random_model  # noqa: E402
from harness.methods import BATCHED, make_decoder  # noqa: E402
from harness.methods.target import load_target, torch_dtype  # noqa: E402
from harness.paths import default_model  # noqa: E402
from harness.run.runner import execute  # noqa: E402
from harness.run.spec import RunSpec  # noqa: E402
from harness.store import read_records  # noqa: E402
from harness.suites.suite import load_suite  # noqa: E402
from harness.verify.config import VerifyConfig  # noqa: E402
from harness.verify.verdicts import verify_main  # noqa: E402
from orthrus_core.checkpoint import save_model  # noqa: E402

LOSSLESS = ["ar-hf", "ar-hf:cache=static", "orthrus", "orthrus:cache=dynamic", "eagle3", "dflash", "pld"]

# The default plan, in the order a short GPU window should bring results back, with each step's estimated
# seconds on an H200 (estimates from the shapes' bytes and FLOPs and the CPU runs of the same steps: no GPU has
# run them). The whole plan: about 7.5 minutes, for a window of 8. Each step writes the summary as it finishes.
PLAN = {
    "identity": 40,  # every lossless method on the tiny family in float32 against ar: correctness first
    "long_context": 150,  # 8B bf16, 8K/32K/40K, AR and Orthrus: prefill + 64 tokens twice; flex compiles
    "engine": 90,  # 8B bf16, eager and cudagraph (nothing compiled by inductor): per-pass costs at 1K/8K/32K
    "bf16": 60,  # the tiny family in bf16, verified; the telemetry cross-checks read its records
    "batch": 60,  # 8B bf16 batched passes at B = 1, 4, 16, 64 and 1K/4K; tiny batched identity
    "pipeline": 50,  # run -> verify -> report on a random 1.7B checkpoint written in bf16
}

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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def engine_figures(quick: bool, device: str) -> dict:
    if quick:  # the small shape, eager only: what the tests can afford on a CPU
        runs = {
            "small": dict(
                engines=["eager"], contexts=[64], block_sizes=[16], new_tokens=16, repeats=3, baselines=False
            )
        }
        dtype = "float32"
    else:
        dtype = "bfloat16"
        runs = {
            # compile would spend minutes on an 8B graph; the 8B targets are CUDA-graph targets
            "qwen3-8b": dict(
                engines=["eager", "cudagraph"],
                contexts=[1024, 8192, 32768],
                block_sizes=[32],
                new_tokens=64,
                repeats=10,
                baselines=False,
            ),
        }
    figures = {}
    for shape, options in runs.items():
        model = shared_model(shape, torch_dtype(dtype), device)
        figures[shape] = bench_engine(
            shape, model=model, dtype=dtype, device=device, print_tables=False, **options
        )
    return figures


def engine_targets(figures: dict) -> list[str]:
    """The issue's GPU targets, each as a line: met or missed, with the figure."""
    lines = []
    big = figures.get("qwen3-8b")
    if big:
        for mode, f in big["modes"].items():
            at_1k = [r for r in f["forwards"] if r["context"] == 1024]
            if at_1k:
                pct = at_1k[0]["roofline_pct"]
                lines.append(
                    f"8B AR step at 1K, {mode}: {pct:.0f}% of roofline ({'met' if pct >= 80 else 'MISSED'})"
                )
            worst = max(
                (r["cycle_over_ar"] for r in f["forwards"] if r["context"] <= 32768 and r["K"] == 32),
                default=None,
            )
            if worst is not None:
                lines.append(
                    f"8B cycle / AR up to 32K, {mode}: {worst:.2f} ({'met' if worst <= 2.1 else 'MISSED'})"
                )
            ratio = f["events_over_wall"]
            if ratio is not None:
                ok = abs(ratio - 1) <= 0.02
                lines.append(
                    f"8B CUDA events / wall clock, {mode}: {ratio:.3f} ({'met' if ok else 'MISSED'})"
                )
    return lines


def identity(device: str, quick: bool) -> dict:
    """Every lossless method against `ar` on the tiny family in float32, under the device's default engine."""
    target = load_target(None, "float32", device, engine="auto")
    suite = load_suite("tiny-math", limit=2 if quick else 8)
    prompts = [suite.render(target.tokenizer, item, []) for item in suite.items(target.tokenizer)]
    new = 24 if quick else 128
    ar = [make_decoder("ar", target).generate(p, new).tokens for p in prompts]
    out = {}
    for spec in LOSSLESS if not quick else ["orthrus", "orthrus:cache=dynamic", "pld"]:
        decoder = make_decoder(spec, target)
        same = sum(decoder.generate(p, new).tokens == a for p, a in zip(prompts, ar, strict=True))
        out[spec] = {"identical": same, "prompts": len(prompts)}
    return out


def batch_step(device: str, quick: bool) -> dict:
    """Batched pass costs against B x K at the 8B shape, and batched identity on the tiny family."""
    from harness.bench.engine_bench import forward_costs
    from orthrus_core.engine import Engine, default_engine
    from orthrus_core.generation import stop_ids
    from orthrus_core.loop import Request

    if quick:
        shape, dtype, contexts, K, sizes, repeats = "small", torch.float32, [64], 16, [1, 2], 3
    else:
        shape, dtype, contexts, K, sizes, repeats = (
            "qwen3-8b",
            torch.bfloat16,
            [1024, 4096],
            32,
            [1, 4, 16, 64],
            10,
        )
    model = shared_model(shape, dtype, device)
    passes = [
        dict(batch_size=B, context=ctx, K=K, ar_ms=ar * 1e3, diffusion_ms=d * 1e3, verify_ms=v * 1e3,
             cycle_over_ar=(d + v) / ar)
        for B, ctx, _, ar, d, v in forward_costs(Engine(model, default_engine(device)), contexts, K, repeats,
                                                 torch.device(device), sizes, time_prefill=False)
    ]  # fmt: skip
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    target = load_target(None, "float32", device)  # the default engine: CUDA graphs on a GPU
    suite = load_suite("tiny-math", limit=2 if quick else 6)  # a minute on a GPU: the check's budget is ten
    prompts = [suite.render(target.tokenizer, item, []) for item in suite.items(target.tokenizer)]
    new, stop = 12 if quick else 64, stop_ids(target.model)
    identity = {}
    for spec in BATCHED:
        decoder = make_decoder(spec, target)
        alone = [decoder.generate(p, new).tokens for p in prompts]
        queue = [Request(p, new, stop, key=i) for i, p in enumerate(prompts)][::-1]
        done = decoder.decode(lambda q=queue: q.pop() if q else None, rows=4, continuous=True)
        same = sum(d.result.tokens == alone[d.request.key] for d in done)
        identity[spec] = {"identical": same, "prompts": len(prompts)}
    return {"shape": shape, "passes": passes, "identity": identity}


@contextmanager
def kernels_seen():
    """Every attention call inside the block, by (queries, kernel, backend) -> [calls, fewest keys, most keys]:
    SDPA's backend as
    torch selects it for those inputs (`torch._fused_sdp_choice`; "lower-right" is flash's own bottom-right
    causal, which the bias dispatches to directly), or FlexAttention (compiled on CUDA)."""
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
        compiled = "compiled" if q.device.type == "cuda" else "eager (CPU reference)"
        count(q, k, "flex", compiled)
        return real_flex(q, k, v, **kwargs)

    F.scaled_dot_product_attention, attention._flex = sdpa, flex
    try:
        yield seen
    finally:
        F.scaled_dot_product_attention, attention._flex = real_sdpa, real_flex


def long_context(device: str, quick: bool) -> dict:
    """AR and Orthrus at long contexts on one device: kernels, peak memory against the plan, times."""
    from orthrus_core import memory
    from orthrus_core.engine import Engine, default_engine
    from orthrus_core.loop import generate
    from orthrus_core.orthrus import OrthrusDrafter

    if quick:
        shape, dtype, contexts, K, new = "small", torch.float32, [256, 1024], 16, 8
    else:
        shape, dtype, contexts, K, new = "qwen3-8b", torch.bfloat16, [8192, 32768, 40960], 32, 64
    model = shared_model(shape, dtype, device)
    engine = Engine(model, default_engine(device))
    cuda = device.startswith("cuda")
    g = torch.Generator().manual_seed(0)
    rows = []
    for ctx in contexts:
        prompt = torch.randint(0, model.config.vocab_size - 1, (ctx - new,), generator=g).tolist()
        for method, drafter in (("ar", None), ("orthrus", OrthrusDrafter(model, K))):
            decoding = memory.Decoding(method, drafter=drafter)
            plan = memory.plan(model, decoding, context=ctx, device=device, engine=engine.mode)
            generate(engine, drafter, prompt, new, stop_token_ids=[])  # captures and compiles, untimed
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            engine.mark()
            with kernels_seen() as seen:
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
                    "plan_bytes": plan.total,
                    "plan": plan.items(),
                    "kernels": [
                        {"queries": q, "keys": [low, high], "kernel": kind, "backend": backend, "calls": n}
                        for (q, kind, backend), (n, low, high) in sorted(seen.items())
                    ],
                }
            )
            print(f"gpu_check: long context {ctx} {method}: {rows[-1]['step_ms']:.2f} ms/step", flush=True)
        if cuda:
            torch.cuda.empty_cache()
    return {"shape": shape, "dtype": str(dtype).removeprefix("torch."), "rows": rows}


def verified_run(
    out: Path, model: str | None, dtype: str, device: str, methods: list[str], limit: int, new: int
):
    spec = RunSpec(
        suites=["tiny-math"],
        methods=methods,
        model=model,
        dtype=dtype,
        device=device,
        max_new_tokens=new,
        limit=limit,
        warmup=1,
    )
    directory = execute(spec, str(out))
    status = verify_main(directory, VerifyConfig(device=device))
    verdicts = json.loads((Path(directory) / "verdicts.json").read_text())
    return Path(directory), status, verdicts


def bf16_divergences(out: Path, device: str, quick: bool) -> dict:
    methods = ["ar", "orthrus", "pld"] if quick else ["ar", "ar-hf", "orthrus", "eagle3", "dflash", "pld"]
    directory, status, verdicts = verified_run(
        out / "bf16", None, "bfloat16", device, methods, 2 if quick else 8, 32 if quick else 128
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
    return {"run": str(directory), "verify_exit": status, "methods": rows, "records": read_records(directory)}


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


def pipeline(out: Path, device: str, quick: bool) -> dict:
    """run -> verify -> report on a random Orthrus checkpoint written here, with the tiny family's tokenizer."""
    from harness.report.page import write_report

    shape, dtype = ("small", "float32") if quick else ("qwen3-1.7b", "bfloat16")
    checkpoint = out / f"random-{shape}"
    t0 = time.perf_counter()
    model = random_model(shape, torch.float32 if quick else torch.bfloat16, device)
    save_model(model, checkpoint)
    del model
    for name in TOKENIZER_FILES:
        if (default_model() / name).exists():
            shutil.copy(default_model() / name, checkpoint / name)
    written = time.perf_counter() - t0
    directory, status, verdicts = verified_run(
        out / "pipeline-run", str(checkpoint), dtype, device, ["ar", "orthrus"], 2, 16
    )
    report = write_report([str(directory)], out / "pipeline-report")
    shutil.rmtree(checkpoint)  # gigabytes at the 8B shape
    return {
        "shape": shape,
        "checkpoint_write_s": written,
        "verify_exit": status,
        "verdicts": {v["method"]: v["verdict"] for v in verdicts["verdicts"]},
        "report": str(report),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# GPU check ({result['machine']})",
        "",
        f"{result['seconds']:.0f} s; steps failed: {result['failed'] or 'none'}",
        "",
        "| step | estimate s | took s |",
        "|---|---:|---:|",
        *(
            f"| {name} | {p['estimate_s']} | {p['seconds']:.0f} |"
            if "seconds" in p
            else f"| {name} | {p['estimate_s']} | not run |"
            for name, p in result.get("plan", {}).items()
        ),
        "",
    ]
    for shape, f in result.get("engine", {}).items():
        lines += [f"## Engine, {shape} ({f['dtype']}); roofline {f['roofline_ms']:.3f} ms", ""]
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
        e2e = {f"{s} · {mode}": row for mode, m in f["modes"].items() for s, row in m["end_to_end"].items()}
        for name, row in {**e2e, **f["baselines"]}.items():
            tau = "–" if row["tau"] is None else f"{row['tau']:.2f}"
            lines.append(
                f"| {name} | {row['tokens_per_s']:.1f} | {tau} | {'yes' if row['identical_to_ar'] else 'NO'} |"
            )
        lines.append("")
    if result.get("targets"):
        lines += ["## Targets", ""] + [f"- {t}" for t in result["targets"]] + [""]
    if "identity" in result:
        lines += ["## float32 identity on the tiny family", ""]
        lines += [
            f"- {m}: {r['identical']}/{r['prompts']} identical to ar" for m, r in result["identity"].items()
        ] + [""]
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
        lines.append("")
    if "telemetry" in result:
        lines += (
            ["## Telemetry cross-checks", ""] + [f"- {k}: {v}" for k, v in result["telemetry"].items()] + [""]
        )
    if "pipeline" in result:
        p = result["pipeline"]
        lines += [
            f"## run -> verify -> report, random {p['shape']} checkpoint",
            "",
            f"- written in {p['checkpoint_write_s']:.0f} s; verify exit {p['verify_exit']}; verdicts {p['verdicts']}",
            "",
        ]
    if "long_context" in result:
        lc = result["long_context"]
        lines += [
            f"## Long context, {lc['shape']} ({lc['dtype']}): the generation's own peak against the plan",
            "",
            "| context | method | engine | prefill s | ms / step or cycle | peak GiB | plan GiB | kernels (queries x keys: kernel, backend) |",
            "|---:|---|---|---:|---:|---:|---:|---|",
        ]
        for r in lc["rows"]:
            kernels = "; ".join(
                f"{k['queries']} x {k['keys'][0]}–{k['keys'][1]}: {k['kernel']}, {k['backend']} ({k['calls']})"
                for k in r["kernels"]
            )
            peak = "–" if r["peak_bytes"] is None else f"{r['peak_bytes'] / 2**30:.2f}"
            lines.append(
                f"| {r['context']} | {r['method']} | {r['engine']} | {r['prefill_s']:.3f} | {r['step_ms']:.2f} | "
                f"{peak} | {r['plan_bytes'] / 2**30:.2f} | {kernels} |"
            )
        lines.append("")
    if "batch" in result:
        b = result["batch"]
        lines += [
            f"## Batched passes, {b['shape']} (eager; an Orthrus cycle beats AR per token where τ > cycle / AR)",
            "",
            "| B | context | K | AR step ms | ms / row | diffusion ms | verify ms | cycle / AR |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in b["passes"]:
            lines.append(
                f"| {r['batch_size']} | {r['context']} | {r['K']} | {r['ar_ms']:.3f} | "
                f"{r['ar_ms'] / r['batch_size']:.3f} | {r['diffusion_ms']:.3f} | {r['verify_ms']:.3f} | "
                f"{r['cycle_over_ar']:.2f} |"
            )
        lines += [
            "",
            "Batched identity (tiny family, float32, B = 4 continuous, against each method's batch-1):",
            "",
        ]
        lines += [
            f"- {m}: {r['identical']}/{r['prompts']} rows identical" for m, r in b["identity"].items()
        ] + [""]
    for step, error in result.get("errors", {}).items():
        lines += [f"## {step} FAILED", "", "```", error[-2000:], "```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", required=True, help="directory for gpu_check.json, gpu_check.md and the runs"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="the small shape and a few prompts (CPU, tests)")
    parser.add_argument(
        "--steps", type=lambda s: s.split(","), help="only these steps, comma-separated (e.g. long_context)"
    )
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    from harness.bench.engine_bench import machine

    result: dict = {
        "machine": machine(),
        "device": args.device,
        "engines": available_engines(torch.device(args.device)),
    }
    result["errors"] = {}
    steps = {
        "identity": lambda: identity(args.device, args.quick),
        "long_context": lambda: long_context(args.device, args.quick),
        "engine": lambda: engine_figures(args.quick, args.device),
        "bf16": lambda: bf16_divergences(out, args.device, args.quick),
        "batch": lambda: batch_step(args.device, args.quick),
        "pipeline": lambda: pipeline(out, args.device, args.quick),
    }
    assert list(steps) == list(PLAN)
    if args.steps:
        unknown = set(args.steps) - set(steps)
        if unknown:
            parser.error(f"unknown steps {', '.join(sorted(unknown))}; choose from {', '.join(steps)}")
        steps = {name: step for name, step in steps.items() if name in args.steps}
    result["plan"] = {name: {"estimate_s": PLAN[name]} for name in steps}
    for name, step in steps.items():
        started = time.perf_counter()
        try:
            result[name] = step()
            if name == "engine":
                result["targets"] = engine_targets(result["engine"])
            if name == "bf16":
                result["telemetry"] = telemetry_checks(result["bf16"].pop("records"))
        except Exception:  # one failed step must not lose the others' figures
            result["errors"][name] = traceback.format_exc()
        result["plan"][name]["seconds"] = time.perf_counter() - started
        print(f"gpu_check: {name} done at {time.perf_counter() - t0:.0f} s", flush=True)
        write(out, result, t0)  # a kill after this step keeps it
    print(markdown(result))
    return 1 if result["failed"] else 0


def write(out: Path, result: dict, t0: float) -> None:
    """gpu_check.json and gpu_check.md as they stand, each replaced whole (a kill leaves the last complete)."""
    result["failed"] = sorted(result["errors"])
    result["seconds"] = time.perf_counter() - t0
    for name, text in (
        ("gpu_check.json", json.dumps(result, indent=2, default=str)),
        ("gpu_check.md", markdown(result)),
    ):
        partial = out / f".{name}.partial"
        partial.write_text(text)
        partial.replace(out / name)


if __name__ == "__main__":
    sys.exit(main())
