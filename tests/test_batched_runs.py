"""Batched runs through the runner and the CLI: the records carry the batch context, the report sweeps it, and
what cannot batch is refused (moved from test_batch.py unchanged)."""

import json

import pytest

from harness.cli import main
from harness.report.batch import batch_figures
from harness.report.page import build_report
from harness.report.runs import generations, load_runs
from harness.run.runner import execute
from harness.run.spec import RunError, RunSpec


def test_a_batched_run_records_the_batch_and_the_report_sweeps_it(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = [
        "run",
        "--suite",
        "tiny-math",
        "--methods",
        "ar,orthrus",
        "--limit",
        "3",
        "--max-new-tokens",
        "16",
    ]
    assert main([*argv, "--batch-sizes", "1,3", "--continuous", "--warmup", "0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "batch sweep (continuous batching)" in printed
    records = [json.loads(line) for line in (out / "batch-3" / "records.jsonl").read_text().splitlines()]
    assert {r["batch_size"] for r in records} == {3} and all(r["batch_continuous"] for r in records)
    assert all(0 <= r["batch_admitted_s"] < r["batch_finished_s"] for r in records)
    run = json.loads((out / "batch-3" / "run.json").read_text())
    assert run["settings"]["batch_size"] == 3 and run["engine"] == "eager"
    assert json.loads((out / "batch-3" / "verdicts.json").read_text())["verdicts"][0]["verdict"] == "PASS"

    figures = batch_figures(generations(load_runs([out / "batch-1", out / "batch-3"])))
    assert set(zip(figures.method, figures.batch_size, strict=True)) == {
        ("ar", 1),
        ("ar", 3),
        ("orthrus", 1),
        ("orthrus", 3),
    }
    assert (figures.identical_to_smallest_b == 1.0).all()
    assert (figures[figures.method == "ar"].speedup_vs_ar == 1.0).all()
    orthrus = figures[figures.method == "orthrus"]
    assert (orthrus.kv_per_position_vs_ar == 1.0).all()  # it shares the target's cache ...
    assert (orthrus.kv_vs_ar > 1.0).all() and (orthrus.kv_scratch_positions == 16).all()  # ... plus its block
    report = build_report([str(out / "batch-1"), str(out / "batch-3")], tmp_path / "report")
    text = report.markdown()
    assert "## Batching" in text and "B=1 | B=3" in text and "figures/batch.png" in text
    assert "every run here was batched" in text


def test_batched_runs_refuse_what_cannot_batch(tmp_path):
    spec = dict(suites=["tiny-math"], limit=1, warmup=0)
    with pytest.raises(RunError, match="eagle3: tree drafts decode one prompt at a time"):
        execute(RunSpec(methods=["eagle3"], batch_size=2, **spec), tmp_path / "a", progress=False)
    with pytest.raises(RunError, match="batched decoding runs eager"):
        execute(
            RunSpec(methods=["ar"], batch_size=2, engine="compile", **spec), tmp_path / "b", progress=False
        )
    with pytest.raises(RunError, match="--continuous needs --batch-size"):
        execute(RunSpec(methods=["ar"], continuous=True, **spec), tmp_path / "c", progress=False)
    with pytest.raises(RunError, match="does not decode in batches"):
        execute(RunSpec(methods=["ar-hf"], batch_size=2, **spec), tmp_path / "d", progress=False)
    assert not any((tmp_path / name).exists() for name in "abcd")
    assert main(["run", "--batch-sizes", "0,2", "--out", str(tmp_path / "e")]) == 2
