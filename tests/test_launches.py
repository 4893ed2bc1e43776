"""What `orthrus-bench bench-syncs` counts per decode cycle on the CUDA route (rehearsed on this CPU): kernels
launched outside graphs (orthrus_core.host.Launches, a dispatch counter), calls into graphs, host syncs."""

from __future__ import annotations

import json
from unittest import mock

import pytest
import torch

from harness.bench.syncs import METHODS, count_cycles
from harness.cli import main
from harness.methods import BATCHED, make_decoder
from harness.methods.target import load_target
from orthrus_core import loop
from orthrus_core.compiled import Compiled
from orthrus_core.host import HostSyncs, Launches
from orthrus_core.params import SamplingParams
from orthrus_core.rehearsal import rehearsal

PROMPT = list(range(5, 40))


def test_the_dispatch_counter_counts_kernels_and_calls_into_graphs_as_a_whole():
    """Compute, copies and a tensor made from host values are one launch each; views, metadata and allocations
    none. A compiled call is one call with its ops apart, a replay one graph launch plus the copies beside it
    and nothing inside, a call that is one kernel on a GPU one launch."""
    x = torch.randn(4, 8)
    with Launches("cpu") as launches:
        x.view(32).expand(2, 32).detach()
        x.t().unsqueeze(0)[0, 1:]
        torch.empty(3)
        assert launches.total == 0
        x @ x.t()
        x.clone()
        torch.tensor([1, 2])
        assert launches.total == 3 and launches.where == {"loop.py": 3}  # no module of the cycle: the loop's
        with launches.graph("kernel"):
            (x + 1).relu().sum()
        assert launches.total == 4
        with launches.graph("replay", copies=2):
            (x + 1).relu().sum()
            with launches.graph("compiled"):  # a compiled function inside a graph is the graph's
                x * 2
        assert (launches.total, launches.replays, launches.compiled_calls) == (6, 1, 0)
        with rehearsal(), launches.graph("compiled"):  # Dynamo compiles it, and its ops run under the counter
            Compiled(lambda a: (a @ a.t()).relu().sum(-1) + 1, "test")(x)
        assert (launches.total, launches.compiled_calls, launches.compiled_ops) == (6, 1, 4)
        launches.armed = False
        x + 1
    assert launches.total == 6
    with pytest.raises(ValueError, match="compiled, replay or kernel"), launches.graph("fused"):
        pass


@pytest.fixture(scope="module")
def targets():
    with rehearsal():
        yield {mode: load_target(None, "float32", "cpu", mode) for mode in ("eager", "compile", "cudagraph")}


def counted(targets, mode, method, rows=1, temperature=0.0, prompts=(PROMPT,), new=8):
    with rehearsal():
        return count_cycles(
            targets[mode], method, list(prompts), rows=rows, temperature=temperature, max_new_tokens=new
        )


def test_an_eager_ar_cycle_launches_each_layer_and_a_graph_mode_calls_one_graph(targets):
    """At one row an eager AR cycle launches the target's pass kernel by kernel (several per layer, from the
    engine); under cudagraph the pass is one replay and what is left outside it is a handful of copies and the
    argmax, a tenth of eager's or less; under compile it is one compiled call holding the pass's ops. Each cycle reads back once."""
    layers = targets["eager"].model.config.num_hidden_layers
    eager = counted(targets, "eager", "ar")
    graph = counted(targets, "cudagraph", "ar")
    compiled = counted(targets, "compile", "ar")
    assert eager["cycles"] == graph["cycles"] == compiled["cycles"] > 0
    assert eager["per_cycle"]["replays"] == eager["per_cycle"]["compiled_calls"] == 0
    assert eager["launches_where"]["engine.py"] >= 4 * layers
    assert graph["per_cycle"]["replays"] == 1 and graph["per_cycle"]["compiled_calls"] == 0
    assert 10 * graph["per_cycle"]["launches"] < eager["per_cycle"]["launches"]
    assert compiled["per_cycle"]["compiled_calls"] == 1 and compiled["per_cycle"]["replays"] == 0
    assert 10 * compiled["per_cycle"]["launches"] < eager["per_cycle"]["launches"]
    assert compiled["per_cycle"]["compiled_ops"] >= 4 * layers
    for r in (eager, graph, compiled):
        (where,) = r["syncs_where"]  # the one read-back of the cycle's tokens, in the loop
        assert r["per_cycle"]["syncs"] == 1 and where.startswith("loop.py:") and where.endswith(" tolist")
    assert graph["launch_ms"][1] < eager["launch_ms"][0]


def test_an_orthrus_cycle_replays_its_two_passes_and_the_drafters_launches_are_theirs(targets):
    """Under cudagraph an Orthrus cycle is two replays (the diffusion pass, the verify pass); a drafter that
    runs its passes eagerly launches them from its own module, counted by dispatch wherever they run."""
    orthrus = counted(targets, "cudagraph", "orthrus")
    assert orthrus["cycles"] > 0 and orthrus["per_cycle"]["replays"] == 2
    dflash = counted(targets, "cudagraph", "dflash")
    assert dflash["per_cycle"]["replays"] >= 1
    assert max(dflash["launches_where"], key=dflash["launches_where"].get) == "dflash.py"


def test_the_launch_counter_leaves_the_host_syncs_as_a_counter_alone_counts_them(targets):
    """Sampled prompt lookup at two rows (syncs beyond the read-back: the multi-draft rule's draws): the syncs
    per cycle and their sites are what `HostSyncs` alone counts in the same cycles."""
    prompts = (PROMPT, PROMPT[::-1])
    both = counted(targets, "eager", "pld", rows=2, temperature=1.0, prompts=prompts)
    alone, cycles, cycle = HostSyncs(), [0], loop._cycle
    alone.armed = False

    def armed_cycle(*args, **kwargs):
        cycles[0] += 1
        alone.armed = True
        try:
            return cycle(*args, **kwargs)
        finally:
            alone.armed = False

    decoder, params = make_decoder("pld", targets["eager"]), SamplingParams(temperature=1.0)
    queue = [loop.Request(list(p), 8, [], decoder.generator(i), key=i) for i, p in enumerate(prompts)][::-1]
    with rehearsal(), mock.patch.object(loop, "_cycle", armed_cycle), alone:
        for _ in decoder.decode(lambda: queue.pop() if queue else None, params, rows=2, continuous=True):
            pass
    assert cycles[0] == both["cycles"]
    assert both["per_cycle"]["syncs"] == alone.total / cycles[0] > 1
    assert both["syncs_where"] == {site: n / cycles[0] for site, n in alone.where.most_common()}


def test_bench_syncs_counts_every_method_in_each_mode_and_refuses_bad_input(tmp_path, data_dir, capsys):
    """On the CUDA route (rehearsed), a greedy cycle of every batched method reads its accepted tokens back and
    makes the host wait for nothing else, at one row and several, in each mode; under cudagraph the target's
    passes are a fixed number of replays per cycle. Bad input is refused before a model loads."""
    out = tmp_path / "syncs.json"
    args = ["bench-syncs", "--engines", "eager,cudagraph", "--rows", "1,2", "--temperatures", "0", "--prompts",
            "2", "--max-new-tokens", "8", "--data-dir", str(data_dir), "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    results = json.loads(out.read_text())
    assert sorted(METHODS) == sorted(BATCHED + ["eagle3:tree=chain"])
    assert {(r["method"], r["engine"], r["rows"]) for r in results} == {
        (m, e, r) for m in METHODS for e in ("eager", "cudagraph") for r in (1, 2)
    }
    for r in results:
        f = r["per_cycle"]
        assert r["cycles"] > 0 and f["syncs"] == 1.0, r  # the one read-back: loop.py's tolist
        assert all(site.endswith("tolist") for site in r["syncs_where"]), r["syncs_where"]
        assert f["launches"] > 0 and r["launch_ms"][0] <= r["launch_ms"][1]
        replays = {"ar": 1, "orthrus": 2}.get(r["method"])
        if r["engine"] == "eager":
            assert f["replays"] == 0
        elif replays is not None:
            assert f["replays"] == replays, r
    assert "kernels launched outside graphs" in capsys.readouterr().out
    for bad, says in (
        (["--methods", "ar-hf"], "is not one of"),
        (["--rows", "0"], "at least 1"),
        (["--engines", "eager,warp"], "not warp"),
    ):
        assert main(["bench-syncs", *bad]) == 2
        assert says in capsys.readouterr().err
