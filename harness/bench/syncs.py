"""`orthrus-bench bench-syncs`: what each method's decode cycle costs the host in talking to the GPU: kernel
launches outside graphs, calls into graphs, and host syncs, per cycle, in each engine mode.

Where it is counted. Inside each decode cycle (`orthrus_core.loop._cycle`), on the CUDA route: on a GPU as it
runs, on a CPU in a rehearsal of it (orthrus_core.rehearsal), which chooses kernels and engine as a GPU would,
compiles with Dynamo's eager backend and simulates CUDA graphs. Under cudagraph a warm-up decode of the same
requests comes first (a capture runs its pass outside any replay); a compile is counted as the call that made
it (Dynamo traces unseen). Admission (prefill, first token) is not a cycle and is not counted. Every figure is
counted by what reaches torch, not by hooks in the drafters, so it follows a drafter's passes wherever they
run.

The figures, per cycle:

* launches: the kernels the host launches one by one (`orthrus_core.host.Launches`, a dispatch counter): each
  aten op that reaches the dispatcher outside a call into a graph and would run a kernel on the GPU, by
  `orthrus_core.host.launches_kernel`: compute and copies count one each (`copy_`, `clone`, `_to_copy`,
  `cat`, `arange`, ...; a tensor made from host values, `upload`, is one copy up), FlexAttention (a
  higher-order op) one, SDPA under a bottom-right causal bias one (a GPU's flash or memory-efficient kernel
  takes the bias; a CPU materialises it first); views and metadata (`is_view` ops: view, expand, slice,
  select, transpose, detach, ...; in-place views; `_unsafe_view`), allocations (`empty*`) and read-backs
  (`_local_scalar_dense`, `tolist`: host syncs, below) none. A GPU launches each of these as one kernel
  (cuBLAS may split a GEMM in two; a memcpy's launch costs the host what a kernel's does). `launches_where`
  says which orthrus_core module the cycle went through for them ("engine.py": the target's passes,
  "eagle3.py": the drafter's, "model.py": the cache's compaction, ...).
* replays (cudagraph): each a CUDA graph launch (`torch.cuda.CUDAGraph.replay`), its passes' kernels inside it;
  the copies a replay makes beside its graph (each new input into its static buffer, each output cloned out)
  are launches of the engine's.
* compiled calls (compile; and FlexAttention, compiled in every mode on a GPU): each a call into an inductor
  graph. A compiled call is counted as one call into a graph of N kernels, where N is not counted: inductor
  fuses on a GPU what the rehearsal cannot (its eager backend runs the graph unfused), so the ops the graph runs
  unfused are counted (`compiled_ops`), an upper bound on N; one kernel is the lower. Without CUDA graphs
  inductor launches each of its N kernels from the host. On a GPU `compiled_ops` sees only the library calls
  inductor's code makes through the dispatcher (a GEMM), not its Triton kernels: a lower bound there.
* host syncs (`orthrus_core.host.HostSyncs`): the host waiting for the GPU's queue to drain (a device value
  read on the host, a blocking copy up). The loop reads each cycle's accepted tokens back once; every other
  sync is overhead.

What a launch costs. Each launch costs the host 5-10 us (CUDA's launch is about 5 us; PyTorch's dispatch and
Python bring an eager op to about 10); while the GPU's kernels are short (batch 1, decode) it waits that out.
../shared/research/paper.md §8 measured 0.47 ms per layer of HF eager overhead beyond weight streaming; this
counter puts an eager Qwen3 layer at about 50 launches (7 GEMMs, 4 RMSNorms of 4 ops, RoPE, the cache write,
attention), about 9 us a launch. Beside each row the table sets the launches (kernels, replays and compiled
calls: each compiled call one kernel at least, `compiled_ops` at most) at 5-10 us against the target step they
would add to: a Qwen3-8B step at batch 1 on an H200, 3.5-4 ms (its 16.4 GB of bf16 weights streamed at 4.8
TB/s take 3.4 ms). The tiny family's counts stand in for the 8B's where they do not grow with the model's
depth: the graphs' count and the drafters' and the loop's bookkeeping; an eager target pass launches per
layer (6 here, 36 for 8B), and a drafter's eager passes per drafter layer (the tiny DFlash has 2, the
published 8B one 5; an EAGLE-3 head has 1).

`--json` writes per row: `per_cycle` {launches, replays, compiled_calls, compiled_ops, syncs}, `launch_ms`
[fewest, most] and `of_step` [fewest, most] (the launches' time and its share of the step), `launches_where`
and `syncs_where` (per cycle), beside the method, engine mode, rows, temperature and cycles counted.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from unittest import mock

import torch
from torch.nn.attention.bias import CausalBias
from torch.utils._python_dispatch import _disable_current_modes

from harness.methods import make_decoder
from harness.progress import SILENT
from orthrus_core import engine, loop
from orthrus_core.compiled import Compiled
from orthrus_core.host import HostSyncs, Launches
from orthrus_core.params import SamplingParams
from orthrus_core.rehearsal import rehearsal

METHODS = ["ar", "orthrus", "pld", "dflash", "eagle3:tree=chain", "eagle3"]
LAUNCH_US = (5.0, 10.0)  # the host's cost of one launch on a GPU (the module docstring)
STEP_MS = (3.5, 4.0)  # a Qwen3-8B target step at batch 1 on an H200 (the module docstring)


@dataclass
class CycleCounts:
    """What the decode cycles of a block did: their number, their host syncs and their launches."""

    syncs: HostSyncs
    launches: Launches
    cycles: int = 0

    def arm(self, on: bool) -> None:
        self.syncs.armed = self.launches.armed = on


@contextlib.contextmanager
def cycle_counts(device):
    """Within the block, the syncs and launches (on `device`'s kind) inside decode cycles only, and the
    cycles run: yields a `CycleCounts`. The calls counted as a whole are told apart where every one is made: a
    compiled function's call (`Compiled`, the one way the project compiles), a CUDA graph's replay (the
    engine's `_Graph`) and SDPA under a bottom-right causal bias (`CausalBias`: the CUDA route's eager verify
    passes), one flash or memory-efficient kernel on a GPU, which a CPU runs by materialising the mask."""
    counts = CycleCounts(HostSyncs(), Launches(device))
    counts.arm(False)
    cycle, call, replay = loop._cycle, Compiled.__call__, engine._Graph.replay
    make_bias, biased_sdpa = CausalBias.__new__, CausalBias._dispatch

    def counted_cycle(*args, **kwargs):
        counts.cycles += 1
        counts.arm(True)
        try:
            return cycle(*args, **kwargs)
        finally:
            counts.arm(False)

    def counted_call(compiled, *args, **kwargs):
        with counts.launches.graph("compiled"):
            return call(compiled, *args, **kwargs)

    def counted_replay(graph, args):
        outputs = graph.outputs if isinstance(graph.outputs, tuple) else (graph.outputs,)
        with counts.launches.graph("replay", copies=sum(b is not None for b in graph.inputs) + len(outputs)):
            return replay(graph, args)

    def counted_sdpa(*args, **kwargs):
        with counts.launches.graph("kernel"):
            return biased_sdpa(*args, **kwargs)

    def new_bias(
        cls, *args, **kwargs
    ):  # a tensor subclass cannot be made under a dispatch mode; it holds no data
        with _disable_current_modes():
            return make_bias(cls, *args, **kwargs)

    with (
        mock.patch.object(loop, "_cycle", counted_cycle),
        mock.patch.object(Compiled, "__call__", counted_call),
        mock.patch.object(engine._Graph, "replay", counted_replay),
        mock.patch.object(CausalBias, "__new__", new_bias),
        mock.patch.object(CausalBias, "_dispatch", counted_sdpa),
        counts.syncs,
        counts.launches,
    ):
        yield counts


def count_cycles(target, method: str, prompts, *, rows: int, temperature: float, max_new_tokens: int) -> dict:
    """`method` over `prompts`, `rows` at a time (continuous batching), seeded, counted (under cudagraph after a
    warm-up decode that captures every shape): its cycles, and per cycle its launches, calls into graphs and
    syncs, and where they are."""
    decoder = make_decoder(method, target)
    params = SamplingParams(temperature=temperature)  # 0, or below its floor: greedy

    def decode():
        queue = [
            loop.Request(p, max_new_tokens, [], decoder.generator(i), key=i) for i, p in enumerate(prompts)
        ]
        queue.reverse()
        for _ in decoder.decode(lambda: queue.pop() if queue else None, params, rows=rows, continuous=True):
            pass

    if target.engine.mode == "cudagraph":  # a capture runs its pass outside any replay: captured first
        decode()
    with cycle_counts(target.engine.device) as counts:
        decode()
    n, launches = max(counts.cycles, 1), counts.launches
    figures = {
        "launches": launches.total / n,
        "replays": launches.replays / n,
        "compiled_calls": launches.compiled_calls / n,
        "compiled_ops": launches.compiled_ops / n,
        "syncs": counts.syncs.total / n,
    }
    fewest = figures["launches"] + figures["replays"] + figures["compiled_calls"]
    most = figures["launches"] + figures["replays"] + figures["compiled_ops"]
    launch_ms = [fewest * LAUNCH_US[0] / 1000, most * LAUNCH_US[1] / 1000]
    return {
        "method": method,
        "engine": target.engine.mode,
        "rows": rows,
        "temperature": temperature,
        "cycles": counts.cycles,
        "per_cycle": figures,
        "launch_ms": launch_ms,
        "of_step": [launch_ms[0] / STEP_MS[1], launch_ms[1] / STEP_MS[0]],
        "launches_where": {m: k / n for m, k in launches.where.most_common()},
        "syncs_where": {site: k / n for site, k in counts.syncs.where.most_common()},
    }


def bench_syncs(
    model, dtype, device, suite, *, methods, engines, rows, temperatures, max_new_tokens: int, progress=None
) -> list[dict]:
    """Every engine mode x method x rows x temperature (greedy-only methods at 0 only) over `suite`'s prompts,
    on the CUDA route: the GPU's on a CUDA device, else rehearsed on this CPU (each target loaded inside the
    rehearsal). `progress` (harness.progress.Reporter, default silent) shows the decodes done on stderr."""
    from harness.methods import is_greedy_only
    from harness.methods.target import load_target

    route = contextlib.nullcontext() if torch.device(device).type == "cuda" else rehearsal()
    runs = [
        (e, t, m, r)
        for e in engines
        for t in temperatures
        for m in methods
        if SamplingParams(temperature=t).greedy or not is_greedy_only(m)
        for r in rows
    ]
    results, targets = [], {}
    with route:
        for mode, temperature, method, r in (progress or SILENT).bar(runs, "bench-syncs", unit="decodes"):
            if mode not in targets:
                targets[mode] = load_target(model, dtype, device, mode)
            target = targets[mode]
            prompts = [suite.render(target.tokenizer, item, []) for item in suite.items(target.tokenizer)]
            results.append(
                count_cycles(
                    target, method, prompts, rows=r, temperature=temperature, max_new_tokens=max_new_tokens
                )
            )
    return results


def print_syncs(results: list[dict], route: str) -> None:
    from rich.table import Table

    from harness.console import console

    t = Table(
        title=f"per decode cycle, on {route}: kernels launched outside graphs, calls into graphs, host syncs; "
        f"the launches at {LAUNCH_US[0]:g}-{LAUNCH_US[1]:g} us against a {STEP_MS[0]:g}-{STEP_MS[1]:g} ms "
        "Qwen3-8B step on an H200 (bench-syncs --help, harness/bench/syncs.py)"
    )
    for name in ("method", "engine", "rows", "T", "cycles", "launches", "graph calls", "syncs", "launch time (of a step)",
                 "launches by module", "syncs where"):  # fmt: skip
        t.add_column(
            name,
            justify="left" if name in ("method", "engine") or "where" in name or " by " in name else "right",
        )
    for r in results:
        f = r["per_cycle"]
        graphs = [f"{f['replays']:.3g} replays"] if f["replays"] else []
        if f["compiled_calls"]:
            graphs.append(f"{f['compiled_calls']:.3g} compiled (<= {f['compiled_ops']:.4g} kernels)")
        t.add_row(
            r["method"],
            r["engine"],
            str(r["rows"]),
            f"{r['temperature']:g}",
            str(r["cycles"]),
            f"{f['launches']:.4g}",
            ", ".join(graphs) or "-",
            f"{f['syncs']:.3g}",
            f"{r['launch_ms'][0]:.2g}-{r['launch_ms'][1]:.2g} ms ({r['of_step'][0]:.0%}-{r['of_step'][1]:.0%})",
            "; ".join(f"{m} {n:.3g}" for m, n in list(r["launches_where"].items())[:3]),
            "; ".join(f"{site} {n:.2g}" for site, n in list(r["syncs_where"].items())[:3]),
        )
    console().print(t)


def route_name(device) -> str:
    return "a GPU" if torch.device(device).type == "cuda" else "the CUDA route rehearsed on this CPU"
