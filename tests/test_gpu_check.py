"""The prepared GPU check, rehearsed on this CPU through the CUDA route (orthrus_core.rehearsal), so that it
cannot rot before a GPU is lent: every step runs, compiles what its plan says, and each call's plan fits the
device tool's window."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from harness.bench.engine_bench import SHAPES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # as when run: its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_check"]


def test_the_rehearsal_groups_the_contexts_into_capacity_buckets_as_the_gpu_does(gpu_check):
    """What compiles depends on which caches share a capacity bucket, not on their sizes: the rehearsal's small
    contexts must group as the GPU's do, call by call, at each shape's own block size."""
    gpu_K, small_K = (
        SHAPES[gpu_check.GPU.shape]["block_size"],
        SHAPES[gpu_check.REHEARSAL.shape]["block_size"],
    )
    assert gpu_check.capacity_groups(gpu_check.GPU, gpu_K) == gpu_check.capacity_groups(
        gpu_check.REHEARSAL, small_K
    )
    assert (
        max(gpu_check.capacity_groups(gpu_check.GPU, gpu_K)[1]) == 1
    )  # call 1: the 1K bucket and the 32-40K one


def test_the_tiny_familys_steps_need_one_capacity_bucket_at_either_scale(gpu_check):
    """The identity, bf16 and batched-identity steps decode the tiny family at its own size in both; the
    rehearsal decodes fewer prompts, fewer tokens, in the same bucket for every method."""
    from harness.methods.target import load_target
    from harness.suites.suite import load_suite
    from orthrus_core.engine import bucket

    tokenizer = load_target(None).tokenizer
    nodes = [1, 11, 16, 60]  # ar; prompt lookup; Orthrus' and DFlash's block; EAGLE-3's tree
    for scale in (gpu_check.GPU, gpu_check.REHEARSAL):
        suite = load_suite("tiny-math", limit=scale.tiny_prompts)
        lengths = [len(suite.render(tokenizer, item, [])) for item in suite.items(tokenizer)]
        assert {bucket(n + scale.tiny_new_tokens + k) for n in lengths for k in nodes} == {256}


def test_each_call_plans_to_fit_its_window_and_call_2_plans_with_call_1s_measured_compiles(
    gpu_check, tmp_path
):
    counts = gpu_check.load_plan()
    assert set(counts) >= {step for steps in gpu_check.CALLS.values() for step in steps}
    for steps in gpu_check.CALLS.values():
        planned = gpu_check.plan(steps, gpu_check.COMPILE_S, counts)
        assert sum(p["estimate_s"] for p in planned.values()) <= gpu_check.CALL_LIMIT_S, planned
    # Call 1's ledger says a FlexAttention kernel took 45 s: call 2's plan costs its kernels at that.
    first = {"steps": {"smoke": {"compiled": {"flex_attention": [2, 90.0], "cudagraph": [3, 1.5]}}}}
    measured = gpu_check.measured_compile_s(first)
    assert measured == {"flex_attention": 45.0, "cudagraph": 0.5}
    planned = gpu_check.plan(["identity"], {**gpu_check.COMPILE_S, **measured}, counts)["identity"]
    flex = counts["identity"].get("flex_attention", 0)
    assert planned["compile_s"] >= 45.0 * flex and planned["estimate_s"] >= gpu_check.WORK_S["identity"]


def test_the_rehearsed_check_runs_every_step_and_compiles_what_its_plan_says(gpu_check, tmp_path, capsys):
    assert (
        gpu_check.main(["--rehearse", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("gpu_check plan (")  # the plan comes first
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["failed"] == [] and result["rehearsal"]
    compiled = {
        name: {k: n for k, (n, _) in step["compiled"].items()} for name, step in result["steps"].items()
    }
    assert compiled == gpu_check.load_plan()  # benchmarks/gpu_check_plan.json is what the rehearsal compiles

    smoke = result["smoke"]["passes"]
    for row in smoke:  # recorded at capture: the static passes took FlexAttention, compiled
        assert any(k["kernel"] == "flex" and k["backend"] == "compiled" for k in row["kernels"]), row
        assert row["cycles"] > 0 and row["host_syncs"] == row["cycles"]  # one read-back per cycle
    for row in result["long_context"]["rows"]:
        assert "error" not in row and row["plan_bytes"] > 0 and row["step_ms"] > 0
        kernels = {(k["kernel"], k["backend"]) for k in row["kernels"]}
        assert ("sdpa, is_causal", "flash_attention") in kernels and ("flex", "compiled") in kernels
    engine = result["engine"]["modes"]
    assert set(engine) == {"eager", "cudagraph"}
    # eager holds to itself; in bf16 the cudagraph route's kernels round otherwise, and a near-tie may flip
    # (the bf16 step's verdict is what judges such divergences)
    assert all(r["identical_to_ar"] for r in engine["eager"]["end_to_end"].values())
    identity = result["identity"]["methods"]
    assert result["identity"]["engine"] == "cudagraph" and set(identity) == set(gpu_check.LOSSLESS)
    assert all(
        r["identical"] == r["prompts"] == gpu_check.REHEARSAL.tiny_prompts for r in identity.values()
    ), identity
    assert {m: r["verdict"] for m, r in result["bf16"]["methods"].items()} == {
        m: "PASS" for m in ("orthrus", "eagle3", "dflash")
    }
    batch = result["batch"]
    assert batch["batch_sizes"] == [8, 64]  # the smallest and the largest an H200 fits at 4K
    assert {r["batch_size"] for r in batch["passes"]} == {8, 64}
    assert all(r["identical"] == r["prompts"] for r in batch["identity"].values()), batch["identity"]
    summary = (tmp_path / "out" / "gpu_check.md").read_text()
    for heading in (
        "## Smoke",
        "## Long context",
        "## Engine",
        "## float32 identity",
        "## bf16",
        "## Batched",
    ):
        assert heading in summary


def test_a_step_cut_short_keeps_the_steps_before_it(gpu_check, tmp_path, monkeypatch):
    """Each step's results are written as it finishes: a kill in the middle keeps what finished."""

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "long_context", killed)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--rehearse", "--out", str(tmp_path), "--steps", "smoke,long_context"])
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["smoke"]["passes"] and "long_context" not in result
    assert "| long_context |" in (tmp_path / "gpu_check.md").read_text()


def test_a_failing_method_keeps_the_others_rows(gpu_check, tmp_path, monkeypatch):
    """One method that cannot decode fails its own row of the identity step; the others' rows are kept and the
    step is reported failed, naming it."""
    real = gpu_check.make_decoder

    def make_decoder(spec, target):
        if spec == "dflash":
            raise RuntimeError("no DFlash today")
        return real(spec, target)

    monkeypatch.setattr(gpu_check, "make_decoder", make_decoder)
    monkeypatch.setattr(gpu_check, "LOSSLESS", ["orthrus", "dflash", "pld"])
    monkeypatch.setattr(gpu_check, "REHEARSAL", dataclasses.replace(gpu_check.REHEARSAL, tiny_new_tokens=8))
    assert gpu_check.main(["--rehearse", "--out", str(tmp_path), "--steps", "identity"]) == 1
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    methods = result["identity"]["methods"]
    assert "no DFlash today" in methods["dflash"]["error"]
    assert methods["orthrus"]["identical"] == methods["pld"]["identical"] == gpu_check.REHEARSAL.tiny_prompts
    assert result["failed"] == ["identity"] and "dflash" in result["errors"]["identity"]


def test_the_batch_step_plans_its_batch_sizes_for_the_device_it_finds(gpu_check, monkeypatch):
    """B = 64 at 4K needs about 86 GiB at the 8B shape: an H200 runs it, an H100 runs the largest it fits."""
    assert gpu_check.batch_sizes_that_fit("cpu", 4096 + 32)[0] == [8, 64]  # a rehearsal plans for an H200
    monkeypatch.setattr(gpu_check, "H200_BYTES", 80 * 2**30)  # an H100's memory
    sizes, gib = gpu_check.batch_sizes_that_fit("cpu", 4096 + 32)
    assert sizes[0] == 8 and 8 < sizes[-1] < 64 and gib == 80


def test_bad_arguments_are_refused_before_any_step_runs(gpu_check, tmp_path, capsys):
    for argv, says in (
        (["--rehearse", "--after", str(tmp_path / "nowhere")], "no gpu_check.json there"),
        (["--steps", "smoke,nonsense", "--rehearse"], "unknown steps nonsense"),
        (["--write-plan", "--steps", "smoke"], "add --rehearse"),
        (["--call", "1"], "no GPU here"),
    ):
        with pytest.raises(SystemExit) as exit_:
            gpu_check.main(["--out", str(tmp_path / "out"), *argv])
        assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written
