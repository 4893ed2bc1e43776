"""`orthrus-bench bench-syncs`: how often each method's decode cycle makes the host wait for the GPU.

A host sync in a cycle (a device value read on the host, a blocking copy up; orthrus_core.host) drains the
GPU's queue: the GPU idles while the host prepares the next pass, a cost that grows with the method's
bookkeeping rather than its work. The loop reads each cycle's accepted tokens back once; every other sync is
overhead. Counted by `orthrus_core.host.HostSyncs` inside each cycle (`orthrus_core.loop._cycle`), on the CUDA
route: on a GPU as it runs, on a CPU in a rehearsal of it (orthrus_core.rehearsal), which chooses kernels and
engine as a GPU would. Admission (prefill, first token) is not a cycle and is not counted.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch

from harness.methods import make_decoder
from harness.progress import SILENT
from orthrus_core import loop
from orthrus_core.host import HostSyncs
from orthrus_core.params import SamplingParams
from orthrus_core.rehearsal import rehearsal

METHODS = ["ar", "orthrus", "pld", "dflash", "eagle3:tree=chain", "eagle3"]


@contextlib.contextmanager
def cycle_syncs():
    """Within the block, a `HostSyncs` counting inside decode cycles only, and the cycles run: yields
    (syncs, cycles) with cycles a one-element list."""
    syncs, cycles = HostSyncs(), [0]
    syncs.armed = False
    cycle = loop._cycle

    def counted(*args, **kwargs):
        cycles[0] += 1
        syncs.armed = True
        try:
            return cycle(*args, **kwargs)
        finally:
            syncs.armed = False

    with mock.patch.object(loop, "_cycle", counted), syncs:
        yield syncs, cycles


def count_syncs(target, method: str, prompts, *, rows: int, temperature: float, max_new_tokens: int) -> dict:
    """`method` over `prompts`, `rows` at a time (continuous batching), seeded: its cycles, the syncs inside
    them, and where in the project's code they are."""
    decoder = make_decoder(method, target)
    params = SamplingParams(temperature=temperature)  # 0, or below its floor: greedy
    queue = [loop.Request(p, max_new_tokens, [], decoder.generator(i), key=i) for i, p in enumerate(prompts)][
        ::-1
    ]
    with cycle_syncs() as (syncs, cycles):
        for _ in decoder.decode(lambda: queue.pop() if queue else None, params, rows=rows, continuous=True):
            pass
    return {
        "method": method,
        "rows": rows,
        "temperature": temperature,
        "cycles": cycles[0],
        "syncs": syncs.total,
        "per_cycle": syncs.total / max(cycles[0], 1),
        "where": dict(syncs.where.most_common()),
    }


def bench_syncs(
    model, dtype, device, suite, *, methods, rows, temperatures, max_new_tokens: int, progress=None
) -> list[dict]:
    """Every method x rows x temperature (greedy-only methods at 0 only) over `suite`'s prompts, on the CUDA
    route: the GPU's on a CUDA device, else rehearsed on this CPU (the target loaded inside the rehearsal, so
    that its engine is the GPU's default, cudagraph). `progress` (harness.progress.Reporter, default silent)
    shows the decodes done on stderr."""
    from harness.methods import is_greedy_only
    from harness.methods.target import load_target

    route = contextlib.nullcontext() if torch.device(device).type == "cuda" else rehearsal()
    results = []
    with route:
        target = load_target(model, dtype, device, "auto")
        prompts = [suite.render(target.tokenizer, item, []) for item in suite.items(target.tokenizer)]
        runs = [
            (t, m, r)
            for t in temperatures
            for m in methods
            if SamplingParams(temperature=t).greedy or not is_greedy_only(m)
            for r in rows
        ]
        for temperature, method, r in (progress or SILENT).bar(runs, "bench-syncs", unit="decodes"):
            results.append(
                count_syncs(
                    target, method, prompts, rows=r, temperature=temperature, max_new_tokens=max_new_tokens
                )
            )
    return results


def print_syncs(results: list[dict], route: str) -> None:
    from rich.table import Table

    from harness.console import console

    t = Table(title=f"host syncs per decode cycle, on {route}")
    for name, justify in (("method", "left"), ("rows", "right"), ("T", "right"), ("cycles", "right"),
                          ("syncs / cycle", "right"), ("where (per cycle)", "left")):  # fmt: skip
        t.add_column(name, justify=justify)
    for r in results:
        where = "; ".join(f"{site} {n / max(r['cycles'], 1):.2g}" for site, n in list(r["where"].items())[:4])
        t.add_row(
            r["method"],
            str(r["rows"]),
            f"{r['temperature']:g}",
            str(r["cycles"]),
            f"{r['per_cycle']:.2f}",
            where,
        )
    console().print(t)


def route_name(device) -> str:
    return "a GPU" if torch.device(device).type == "cuda" else "the CUDA route rehearsed on this CPU"
