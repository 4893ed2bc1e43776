"""Batched runs through the runner and the CLI: the records carry the batch context, the report sweeps it, every
method of the decode loop batches in any engine, and what cannot batch is refused."""

import dataclasses
import json

import pytest
from test_telemetry import FakeNvml, fake_gpu_handle

import harness.run.telemetry as telemetry_module
from harness.cli import main
from harness.options import OptionError
from harness.records import BATCH_FIELDS, TELEMETRY_FIELDS
from harness.report.batch import batch_figures
from harness.report.page import build_report
from harness.report.runs import generations, load_runs
from harness.run.runner import execute, prepare
from harness.run.spec import RunError, RunSpec
from harness.store import read_records


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
    printed, err = capsys.readouterr()
    assert "batch sweep (continuous batching)" in printed
    assert err.strip().splitlines()[-2:] == [  # the sweep's last lines: its runs, and the report of them all
        f"wrote {out}: 2 runs (batch-1, batch-3), each with records.jsonl, run.json, verdicts.json",
        f"render it with: orthrus-bench report {out / 'batch-1'} {out / 'batch-3'} --out reports/sweep",
    ]
    records = [json.loads(line) for line in (out / "batch-3" / "records.jsonl").read_text().splitlines()]
    assert {r["batch_size"] for r in records} == {3} and all(r["batch_continuous"] for r in records)
    assert all(0 <= r["batch_admitted_s"] < r["batch_finished_s"] for r in records)
    for r in records:  # each row's emissions: one per cycle it took part in (AR: per token after the first)
        offsets = r["emit_offsets_s"]
        assert len(offsets) == r["ar_forwards"] and offsets == sorted(offsets)
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
    assert "every run here was decoded with a batch size (B = 1, 3)" in text
    assert "those at the smallest, B=1 (a batch of one: one prompt at a time)" in text
    assert "**Embedded tiny family, T=0, B=1**" in text  # the headline names the batch size it reads
    summary = text.split("**Per method and suite, T=0**", 1)[1].split("\n\n")[1].splitlines()
    assert summary[0].startswith("| model | suite | method | backend | B | gens |")
    assert all(row.split(" | ")[4] == "1" for row in summary[2:])


def test_batched_runs_refuse_what_cannot_batch(tmp_path):
    spec = dict(suites=["tiny-math"], limit=1, warmup=0)
    for i, method in enumerate(["ar-hf", "orthrus:cache=dynamic", "diffusion"]):
        with pytest.raises(
            RunError, match=f"{method} decodes one prompt at a time; the batched methods are ar"
        ):
            execute(RunSpec(methods=["ar", method], batch_size=2, **spec), tmp_path / f"a{i}", progress=False)
    with pytest.raises(OptionError, match="--continuous needs --batch-size"):
        execute(RunSpec(methods=["ar"], continuous=True, **spec), tmp_path / "c", progress=False)
    with pytest.raises(OptionError, match="--batch-size must be an integer >= 1, got 0"):
        execute(RunSpec(methods=["ar"], batch_size=0, **spec), tmp_path / "d", progress=False)
    assert not any(path.exists() for path in tmp_path.iterdir())
    assert main(["run", "--batch-sizes", "0,2", "--out", str(tmp_path / "e")]) == 2


def test_batched_runs_take_every_method_of_the_loop_in_any_engine(tmp_path):
    """EAGLE-3 trees batch (per-row tree masks) and verify like batch 1; a static engine serves batched passes
    too (its target is made with it: nothing is compiled before the first pass)."""
    spec = dict(suites=["tiny-math"], limit=2, warmup=0, max_new_tokens=12)
    out = execute(RunSpec(methods=["ar", "eagle3"], batch_size=2, **spec), tmp_path / "tree", progress=False)
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"ar", "eagle3"} and all(r["status"] == "ok" for r in records)
    by_item = {(r["method"], r["item_id"]): r["output_ids"] for r in records}
    assert all(by_item["eagle3", item] == by_item["ar", item] for _, item in by_item)
    prepared = prepare(
        RunSpec(methods=["ar", "eagle3", "dflash", "pld"], batch_size=4, engine="compile", **spec)
    )
    assert prepared.target.engine.mode == "compile" and all(d.batched for d in prepared.decoders.values())


def test_a_batched_record_has_the_telemetry_of_a_record_decoded_alone(tmp_path, monkeypatch):
    """The same units alone and in batches of two (a fake NVML standing in for a GPU): every batched record
    carries the telemetry fields a record decoded alone has, measured over its stay in the batch and marked
    shared; its passes are the batch's it took part in, and the batch's energy is split among its requests."""
    monkeypatch.setattr(telemetry_module, "nvml_handle", fake_gpu_handle)
    spec = RunSpec(suites=["tiny-math"], methods=["ar", "orthrus"], limit=3, max_new_tokens=12, warmup=0)
    prepared = dataclasses.replace(prepare(spec), nvml=FakeNvml())
    alone = read_records(execute(spec, tmp_path / "alone", prepared=prepared, progress=False))
    batched_spec = dataclasses.replace(spec, batch_size=2, continuous=True)
    batched = read_records(execute(batched_spec, tmp_path / "batched", prepared=prepared, progress=False))
    assert {tuple(r) for r in alone} == {tuple(k for k in r if k not in BATCH_FIELDS) for r in batched}
    assert all(set(TELEMETRY_FIELDS) <= set(r) and "batch_size" not in r for r in alone)
    for r in batched:
        assert r["batch_shared_telemetry"] is True and r["nvml_error"] is None
        assert (
            r["ar_forward_count"] == r["ar_forwards"] and r["diffusion_forward_count"] == r["draft_forwards"]
        )
        assert r["prefill_forward_ms"] > 0 and r["ar_forward_ms_mean"] > 0
        assert r["nvml_samples"] >= 2 and r["power_mean_w"] == 250 and r["energy_j"] > 0
        assert r["prompt_tokens"] + r["new_tokens"] <= r["kv_capacity"]
    for method in ("ar", "orthrus"):  # 5 J between two readings, one at each admission and finish
        energy = sum(r["energy_j"] for r in batched if r["method"] == method)
        assert energy <= 5 * (2 * 3 - 1)
    tokens = {(r["method"], r["item_id"]): r["output_ids"] for r in alone}
    assert {(r["method"], r["item_id"]): r["output_ids"] for r in batched} == tokens

    quiet = dataclasses.replace(batched_spec, telemetry=False)
    for r in read_records(execute(quiet, tmp_path / "quiet", prepared=prepared, progress=False)):
        assert r["batch_shared_telemetry"] is None and not set(TELEMETRY_FIELDS) & set(r)
