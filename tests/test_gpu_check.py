"""The prepared GPU check runs end to end on a CPU at the small shape, so it cannot rot before a GPU is lent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_step_on_cpu_and_writes_its_summary(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--out", str(tmp_path), "--quick", "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["failed"] == []
    small = result["engine"]["small"]
    assert small["modes"]["eager"]["forwards"][0]["ar_ms"] > 0
    assert all(row["identical_to_ar"] for row in small["modes"]["eager"]["end_to_end"].values())
    assert all(r["identical"] == r["prompts"] > 0 for r in result["identity"].values())
    assert {m: r["verdict"] for m, r in result["bf16"]["methods"].items()} == {
        "orthrus": "PASS",
        "pld": "PASS",
    }
    assert result["telemetry"]["generations"] > 0 and result["telemetry"]["nvml_measured"] is False
    assert result["pipeline"]["verdicts"] == {"orthrus": "PASS"}
    assert Path(result["pipeline"]["report"]).exists()
    assert [r["batch_size"] for r in result["batch"]["passes"]] == [1, 2]
    assert all(r["identical"] == r["prompts"] > 0 for r in result["batch"]["identity"].values())
    long = result["long_context"]["rows"]
    assert [(r["context"], r["method"]) for r in long] == [
        (256, "ar"),
        (256, "orthrus"),
        (1024, "ar"),
        (1024, "orthrus"),
    ]
    for r in long:
        prompt = r["context"] - 8
        kernels = r["kernels"]
        # the prefill: is_causal over the prompt, no mask; masks (the CPU's verify passes) only over a block
        prefill = {"queries": prompt, "keys": [prompt, prompt], "kernel": "sdpa, is_causal"}
        assert prefill | {"backend": "flash_attention", "calls": 4} in kernels  # 4 layers, one call each
        assert all(c["queries"] <= r["K"] for c in kernels if c["kernel"] == "sdpa, mask")
        assert r["plan_bytes"] > 0 and r["step_ms"] > 0 and r["peak_bytes"] is None  # CPU: no allocator peak
    summary = (tmp_path / "gpu_check.md").read_text()
    for heading in (
        "## Engine, small",
        "## float32 identity",
        "## bf16 divergences",
        "## run -> verify -> report",
        "## Batched passes, small",
        "## Long context, small",
    ):
        assert heading in summary


def test_a_step_cut_short_keeps_the_steps_before_it(tmp_path, monkeypatch):
    """Each step's results are written as it finishes: a kill in the middle of the plan keeps what finished."""
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "long_context", killed)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(
            ["--out", str(tmp_path), "--quick", "--device", "cpu", "--steps", "identity,long_context"]
        )
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert all(r["identical"] == r["prompts"] > 0 for r in result["identity"].values())
    assert "long_context" not in result and result["plan"]["identity"]["seconds"] > 0
    assert "| long_context | 150 | not run |" in (tmp_path / "gpu_check.md").read_text()
    assert list(gpu_check.PLAN) == ["identity", "long_context", "engine", "bf16", "batch", "pipeline"]
    assert (
        sum(gpu_check.PLAN.values()) <= 8 * 60
    )  # the default plan fits an 8-minute window, by its estimates
