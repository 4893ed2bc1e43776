"""`orthrus-bench bench-overhead`: what the runner's instrumentation costs, telemetry on vs off.

The same prompts are generated with telemetry off and on, alternating (off, on, on, off, ...) so drift in
clocks or load falls on both sides equally; the figure is the relative difference of total wall-clock, with
a bootstrap 95% interval over prompts. Instrumentation here is everything `run` adds around a generation:
per-forward timers, the allocator peak and, on a GPU with NVML, the sampling thread.
"""

from __future__ import annotations

import random

from harness.methods import make_decoder
from harness.progress import SILENT, Reporter
from harness.run.telemetry import Telemetry, load_nvml
from orthrus_core.generation import Clock


def bench_overhead(
    target,
    prompts: list[list[int]],
    *,
    method: str,
    max_new_tokens: int,
    repeats: int,
    seed: int = 0,
    progress: Reporter = SILENT,
) -> dict:
    """`method` (a spec of the registry) on `target` over the prompts, telemetry off and on, interleaved;
    how far it is shows on `progress` (stderr)."""
    model, decoder = target.model, make_decoder(method, target)
    device = model.lm_head.weight.device
    on = Telemetry(target.engine, device, nvml=load_nvml() if device.type == "cuda" else None)
    off = Telemetry(target.engine, device, enabled=False)
    clock = Clock(device)

    def timed(telemetry, prompt) -> float:
        telemetry.start()
        t0 = clock()
        decoder.generate(prompt, max_new_tokens)
        wall = clock() - t0
        telemetry.stop()
        return wall

    for prompt in prompts[:2]:  # warm-up
        timed(off, prompt)
    walls = {"off": [0.0] * len(prompts), "on": [0.0] * len(prompts)}
    bar = progress.bar(desc=f"bench-overhead: {method}", total=2 * repeats * len(prompts), unit="generations")
    for r in range(repeats):
        order = ("off", "on") if r % 2 == 0 else ("on", "off")
        for i, prompt in enumerate(prompts):
            for side in order:
                walls[side][i] += timed(on if side == "on" else off, prompt)
                bar.update(1)
    bar.close()
    rng = random.Random(seed)
    n = len(prompts)

    def overhead(idx):
        return sum(walls["on"][i] for i in idx) / sum(walls["off"][i] for i in idx) - 1

    boot = sorted(overhead([rng.randrange(n) for _ in range(n)]) for _ in range(2000))
    return {
        "method": method,
        "prompts": n,
        "repeats": repeats,
        "off_s": sum(walls["off"]),
        "on_s": sum(walls["on"]),
        "overhead": overhead(range(n)),
        "ci95": (boot[49], boot[1949]),
    }


def print_overhead(results: list[dict]) -> None:
    from rich.table import Table

    from harness.console import console

    t = Table(title="instrumentation overhead (telemetry on vs off, same prompts, interleaved)")
    for name in ("decoder", "prompts × repeats", "off (s)", "on (s)", "overhead", "95% CI"):
        t.add_column(name, justify="right")
    for r in results:
        lo, hi = r["ci95"]
        t.add_row(
            r["method"],
            f"{r['prompts']} × {r['repeats']}",
            f"{r['off_s']:.2f}",
            f"{r['on_s']:.2f}",
            f"{100 * r['overhead']:+.2f}%",
            f"[{100 * lo:+.2f}%, {100 * hi:+.2f}%]",
        )
    console().print(t)
