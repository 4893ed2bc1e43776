"""What `run` prints says what it is ("The first ten minutes"): the run summary names its speedups per item and
shows the batch size and the weight quantization where a run has them; the batch sweep names its speedup the
batch's."""

from __future__ import annotations

import re

import pandas as pd
from synthetic_runs import make_run

from harness.report.batch import print_batch_figures
from harness.report.summary import print_run_summary, print_summary, summarize
from harness.store import read_records


def test_the_run_summary_names_its_speedups_and_shows_quantization(tmp_path, capsys):
    run = make_run(
        tmp_path / "q", methods=("ar", "orthrus"), items=2, info={"config": {"quantize": "int8-channel"}}
    )
    print_run_summary(run, "q (1 s)")
    out = capsys.readouterr().out
    assert "weights: int8-channel (simulated quantization, --quantize)" in out
    assert "× ar (per item)" in out and "tok/s (per item)" in out
    assert "per item: the mean over items of item tokens / item wall time" in " ".join(out.split())
    assert not re.search(r"┃ B ┃", out)  # decoded alone: no batch size column

    plain = make_run(tmp_path / "p", methods=("ar", "orthrus"), items=2)
    print_run_summary(plain, "p (1 s)")
    assert "weights:" not in capsys.readouterr().out  # full precision says nothing


def test_the_run_summary_shows_the_batch_size(tmp_path, capsys):
    run = make_run(tmp_path / "b", methods=("ar", "ar-hf", "orthrus"), items=2)
    records = [{**r, "batch_size": None if r["method"] == "ar-hf" else 4} for r in read_records(run)]
    table = summarize(records).set_index("method")
    assert table.loc["orthrus"].batch_size == 4 and pd.isna(table.loc["ar-hf"].batch_size)
    print_summary(table.reset_index(), "b")
    out = capsys.readouterr().out
    assert "┃ B ┃" in out
    rows = {
        line.split("│")[1].strip(): line.split("│")[3].strip() for line in out.splitlines() if "│" in line
    }
    assert rows == {"ar": "4", "ar-hf": "–", "orthrus": "4"}  # ar-hf decodes one prompt at a time
    assert "B: the batch size a method decoded at (–: one prompt at a time)" in " ".join(out.split())


def test_the_batch_sweep_names_its_speedup(capsys):
    figures = pd.DataFrame(
        [
            {"method": m, "batch_size": b, "requests": 4, "throughput": 10.0 * b, "speedup_vs_ar": 1.0}
            for m in ("pld", "orthrus", "ar")
            for b in (16, 4, 8)
        ]
    )
    print_batch_figures(figures, "sweep")
    out = capsys.readouterr().out
    assert "× ar (batch)" in out and "tok/s (batch)" in out
    assert "the per-item speedup of each B is in that run's summary above" in " ".join(out.split())  # wrapped
    order = [
        (line.split("│")[1].strip(), int(line.split("│")[2])) for line in out.splitlines() if "│" in line
    ]
    assert order == [(m, b) for m in ("ar", "orthrus", "pld") for b in (4, 8, 16)]
