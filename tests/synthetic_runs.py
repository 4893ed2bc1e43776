"""Synthetic run directories in the runner's format (harness.records, harness.store), with known speeds and outputs, so the
report, compare and dashboard tests can plant exactly the effect they look for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.records import BACKEND, GenerationRecord, TelemetryFields
from harness.store import RunInfo, open_run
from orthrus_core import metrics

# method label -> (method name, lossless, tokens/s relative to ar, mean accepted drafts per cycle)
METHODS = {
    "ar": ("ar", True, 1.0, None),
    "ar-hf": ("ar-hf", True, 0.9, None),
    "orthrus": ("orthrus", True, 4.0, 6.0),
    "eagle3": ("eagle3", True, 2.0, 2.5),
    "dflash": ("dflash", True, 3.0, 4.5),
    "diffusion": ("diffusion", False, 2.5, None),
    # vLLM's (the backend its name says), each the algorithm of the project's method of the same name
    "vllm-ar": ("vllm-ar", True, 1.2, None),
    "vllm-eagle3": ("vllm-eagle3", True, 2.2, 2.5),
    "vllm-dflash": ("vllm-dflash", True, 3.3, 4.5),
    "vllm-orthrus": ("vllm-orthrus", True, 3.6, 6.0),
}
SUITES = {"tiny-math": 1024, "tiny-code": 2048}  # suite -> context bucket


def generation_record(
    *, output_ids=(1, 2, 3), accepted=(), wall_s=0.1, ttft_s=0.02, **fields
) -> GenerationRecord:
    """A successful generation with plausible values for every field `fields` does not set; its counts and
    rates follow from `output_ids`, `accepted`, the forwards and the times, as the runner's do."""
    output_ids, accepted = list(output_ids), list(accepted)
    new_tokens = len(output_ids)
    cycles = len(accepted)
    ar_forwards = fields.pop("ar_forwards", cycles if cycles else new_tokens - 1)
    draft_forwards = fields.pop("draft_forwards", cycles)
    forwards = ar_forwards + draft_forwards
    prompt_ids = fields.pop("prompt_ids", list(range(30)))
    defaults = dict(
        suite="s",
        item_id="s/0",
        method="ar",
        method_name="ar",
        lossless=True,
        sample=0,
        turn=0,
        turns=1,
        seed=0,
        temperature=0.0,
        prompt_tokens=len(prompt_ids),
        context_tokens=None,
        context_bucket=1024,
        stop_reason="stop",
        acceptance_trace=[],
        prefill_forwards=1,
        tau=metrics.tau(sum(accepted), cycles),
        tpf=metrics.tpf(new_tokens, forwards),
        decode_s=wall_s - ttft_s,
        tpot_s=(wall_s - ttft_s) / (new_tokens - 1) if new_tokens > 1 else None,
        tokens_per_s=new_tokens / wall_s,
        telemetry=None,
        score_correct=None,
        score_status=None,
        score_detail=None,
    )
    given = dict(
        output_ids=output_ids, accepted=accepted, wall_s=wall_s, ttft_s=ttft_s, prompt_ids=prompt_ids
    )
    derived = dict(new_tokens=new_tokens, ar_forwards=ar_forwards, draft_forwards=draft_forwards)
    return GenerationRecord(**{**defaults, **fields, **given, **derived})


def backend(name: str) -> str:
    """Whose engine decodes the method `name`: vLLM's for its vLLM methods (`vllm-…`), else the project's."""
    return "vllm" if name.startswith("vllm-") else BACKEND


def run_info(suites=("s",), methods=("ar",), samples=1, config_hash: str = "h", **fields) -> RunInfo:
    """A run.json for hand-made records: the suites, methods and samples they name (their items, settings and
    seeds unrecorded, so unchecked)."""
    config = {"suites": list(suites), "methods": list(methods), "samples": samples}
    return RunInfo(
        config=config,
        config_hash=config_hash,
        suites={s: {} for s in suites},
        methods={m: {} for m in methods},
        **fields,
    )


def make_run(
    directory: Path,
    *,
    methods=("ar", "ar-hf", "orthrus", "eagle3", "dflash", "diffusion"),
    suites=tuple(SUITES),
    temperature: float = 0.0,
    items: int = 12,
    seed: int = 0,
    ar_tokens_per_s: float = 50.0,
    noise: float = 0.03,
    slowdown: dict[str, float] | None = None,
    changed_outputs: dict[str, int] | None = None,
    accepted_drop: dict[str, int] | None = None,
    gpu: bool = False,
    telemetry: bool = True,
    commit: str = "0123456789abcdef",
    started: str = "2026-11-30T12:00:00+00:00",
    model: str | None = None,
    categories: tuple[str, ...] = (),
    specs: dict[str, tuple] | None = None,
    info: dict | None = None,
) -> Path:
    """A complete run. `slowdown[method]` divides that method's speed; `changed_outputs[method]` alters the
    output of that many items; `accepted_drop[method]` lowers that many cycles' accepted drafts by one;
    `categories` are given to the items in turn, as their `category` tag (Spec-Bench's). `specs` defines labels
    beyond METHODS (a sweep's `orthrus:block_size=8`), each as METHODS does.
    Speeds carry multiplicative noise of relative size `noise`, drawn from `seed`. `telemetry=False` leaves out
    the fields that `run --no-telemetry` does not record. `info` sets run.json's fields (RunInfo's): its
    "config" is added to the one made here, any other key replaces that field (hardware, versions, engine)."""
    rng = np.random.default_rng(seed)
    emit_rng = np.random.default_rng(seed + 1)  # its own stream: the other figures stay as they were
    outputs_rng = np.random.default_rng(1234)  # outputs do not depend on the seed: A/A runs agree
    slowdown = slowdown or {}
    changed_outputs = changed_outputs or {}
    accepted_drop = accepted_drop or {}
    known = {**METHODS, **(specs or {})}
    info = dict(info or {})
    fields = dict(
        config={
            "suites": list(suites),
            "methods": list(methods),
            "model": model,
            "dtype": "float32",
            "device": "cuda" if gpu else "cpu",
            "temperature": temperature,
            **info.pop("config", {}),
        },
        config_hash="synthetic",
        git={"commit": commit, "dirty": False},
        versions={"torch": "2.13.0", "transformers": "5.24.0"},
        hardware={"cpu": "synthetic CPU", "gpus": [{"name": "synthetic GPU"}] if gpu else []},
        methods={
            m: {
                "name": known[m][0],
                "lossless": known[m][1],
                "hash": "abcdef12",
                "backend": backend(known[m][0]),
            }
            for m in methods
        },
        suites={
            s: {
                "config": {"generation": {"temperature": temperature, "max_new_tokens": 256}},
                "items": {f"{s}/{i}": 1 for i in range(items)},
            }
            for s in suites
        },
        started=started,
        finished=started,
        status="complete",
    )
    run = RunInfo(**{**fields, **info})
    store = open_run(directory, run, resume=False)
    for suite in suites:
        for i in range(items):
            new_tokens = int(outputs_rng.integers(40, 120))
            ar_output = outputs_rng.integers(0, 300, new_tokens).tolist()
            for label in methods:
                name, lossless, speed, mean_accepted = known[label]
                output = list(ar_output) if lossless else outputs_rng.integers(0, 300, new_tokens).tolist()
                if i < changed_outputs.get(label, 0):
                    output[-1] = (output[-1] + 1) % 300
                accepted = []
                if mean_accepted is not None:
                    cycle_rng = np.random.default_rng(i)
                    made = 1
                    while made < new_tokens:
                        n = int(min(cycle_rng.poisson(mean_accepted), new_tokens - made - 1))
                        accepted.append(n)
                        made += n + 1
                    for c in range(min(accepted_drop.get(label, 0), len(accepted))):
                        accepted[c] = max(accepted[c] - 1, 0)
                cycles = len(accepted)
                ar_forwards = cycles if cycles else new_tokens - 1
                draft_forwards = cycles  # one drafter pass per verification cycle
                rate = ar_tokens_per_s * speed / slowdown.get(label, 1.0) * rng.lognormal(0, noise)
                wall = new_tokens / rate
                ttft = 0.02 * rng.lognormal(0, noise)
                telemetry_fields = TelemetryFields(
                    prefill_forward_ms=ttft * 1e3,
                    ar_forward_count=ar_forwards,
                    ar_forward_ms_mean=10.0,
                    ar_forward_ms_median=10.0,
                    diffusion_forward_count=cycles if name == "orthrus" else 0,
                    diffusion_forward_ms_mean=11.0 if name == "orthrus" else None,
                    diffusion_forward_ms_median=11.0 if name == "orthrus" else None,
                    allocator_peak_bytes=(2**30 + (2**24 if name != "ar" else 0)) if gpu else None,
                    nvml_samples=10 if gpu else 0,
                    device_mem_peak_bytes=2**31 if gpu else None,
                    process_mem_peak_bytes=2**31 if gpu else None,
                    power_mean_w=300.0 if gpu else None,
                    sm_clock_mean_mhz=1980.0 if gpu else None,
                    mem_clock_mean_mhz=2619.0 if gpu else None,
                    throttle_reasons=0 if gpu else None,
                    energy_j=300.0 * wall if gpu else None,
                    energy_reliable=gpu,
                )
                # One emission per cycle (AR: per token after the first), the decode time split at random
                emissions = cycles if cycles else new_tokens - 1
                steps = emit_rng.lognormal(0, 0.5, emissions)
                offsets = np.round(np.cumsum(steps) / steps.sum() * (wall - ttft), 6).tolist()
                record = generation_record(
                    suite=suite,
                    item_id=f"{suite}/{i}",
                    method=label,
                    method_name=name,
                    lossless=lossless,
                    backend=backend(name),
                    temperature=temperature,
                    context_bucket=SUITES.get(suite, 1024),
                    tags={"category": categories[i % len(categories)]} if categories else {},
                    output_ids=output,
                    accepted=accepted,
                    ar_forwards=ar_forwards,
                    draft_forwards=draft_forwards,
                    wall_s=wall,
                    ttft_s=ttft,
                    emit_offsets_s=offsets,
                    telemetry=telemetry_fields if telemetry else None,
                    score_correct=i % 3 != 0 if lossless else i % 2 == 0,
                    score_status="correct",
                )
                store.write_unit([record])
    store.write_run(run)
    store.close()
    return directory
