"""The report sets the published figures (harness/report/published.toml) beside the measured ones: Table 1 in
the paper's task order with the paper's cells and a flag where they fall outside the measured CI, Figure 4's
acceptance lengths, the independent reproduction, and Spec-Bench's leaderboard table."""

from __future__ import annotations

import re

import pytest
from synthetic_runs import make_run

from harness.report.page import build_report
from harness.report.published import published_figures
from harness.report.tables import SPECBENCH_COLUMNS, Table

PAPER_ORDER = ["gsm8k", "math500", "aime24", "aime25", "humaneval", "mbpp", "pseudo2code", "livecodebench"]


def table(report, title_start) -> Table:
    tables = [t for _, items in report.sections() for t in items if isinstance(t, Table)]
    found = [t for t in tables if t.title.startswith(title_start)]
    assert found, [t.title for t in tables]
    return found[0]


def interval(text: str) -> tuple[float, float]:
    low, high = re.search(r"\(([\d.]+)–([\d.]+)\)", text).groups()
    return float(low), float(high)


@pytest.fixture(scope="module")
def orthrus_1_7b(tmp_path_factory):
    root = tmp_path_factory.mktemp("published")
    runs = [
        make_run(
            root / f"t{t}",
            model="chiennv/Orthrus-Qwen3-1.7B",
            suites=("mbpp", "aime24", "gsm8k"),
            temperature=t,
            methods=("ar", "ar-hf", "orthrus"),
            items=16,
            seed=int(t),
        )  # fmt: skip
        for t in (0.0, 1.0)
    ]
    return build_report([str(r) for r in runs], root / "out")


def test_table1_is_in_the_papers_order_with_its_cells_and_flags(orthrus_1_7b):
    t1 = table(
        orthrus_1_7b,
        "Table 1 — Orthrus TPF and wall-clock speedup over `ar-hf`, the paper's baseline, beside the paper's figures",
    )
    assert [row[2] for row in t1.rows] == ["gsm8k", "aime24", "mbpp", "Average"]  # the paper's order
    columns = {name: i for i, name in enumerate(t1.columns)}
    paper = published_figures()
    for row in t1.rows[:-1]:
        for t in (0.0, 1.0):
            for quantity, column in (("tpf", "TPF"), ("speedup", "speedup")):
                label = f"T={t:g} {column}"
                published = paper.table1_cell("chiennv/Orthrus-Qwen3-1.7B", row[2], t, quantity)
                cell = row[columns[f"{label} paper"]]
                assert cell.startswith(f"{published.value:.2f}"), (row[2], label, cell)
                low, high = interval(row[columns[label]])
                assert cell.endswith("⚑") == (not low <= published.value <= high)
    average = t1.rows[-1]
    assert average[columns["T=0 speedup paper"]] == "4.25×" and average[columns["T=1 TPF paper"]] == "3.65"
    assert "FlowDraft" in t1.note  # the source is named


def test_a_checkpoint_the_paper_does_not_report_gets_no_paper_columns(tmp_path):
    run = make_run(
        tmp_path / "run", model="someone/Orthrus-Llama-3B", methods=("ar", "ar-hf", "orthrus"), items=4
    )
    t1 = table(build_report([str(run)], tmp_path / "out"), "Table 1")
    assert not any("paper" in c for c in t1.columns)


def test_figure4_and_the_reproduction_beside_the_run(tmp_path):
    run = make_run(tmp_path / "8b", model="chiennv/Orthrus-Qwen3-8B", suites=("math500", "gsm8k"),
                   methods=("ar", "ar-hf", "eagle3", "dflash", "orthrus"), items=16)  # fmt: skip
    small = make_run(tmp_path / "1.7b", model="chiennv/Orthrus-Qwen3-1.7B", suites=("gsm8k",),
                     methods=("ar", "ar-hf", "orthrus"), items=16)  # fmt: skip
    report = build_report([str(run), str(small)], tmp_path / "out")
    f4 = table(report, "Figure 4 — average acceptance length τ (chiennv/Orthrus-Qwen3-8B")
    assert f4.columns == [
        "suite",
        "eagle3",
        "eagle3 paper",
        "dflash",
        "dflash paper",
        "orthrus",
        "orthrus paper",
    ]
    gsm8k, math500 = f4.rows  # the paper's order
    assert (
        gsm8k[0] == "gsm8k" and gsm8k[6].startswith("10.60") and math500[6].startswith("12.70")
    )  # τ − 1 + 1
    assert gsm8k[2].startswith("4.70") and math500[4].startswith("8.90")
    reproduction = table(report, "Independent reproduction")
    rows = {(r[0], r[4]): r for r in reproduction.rows}
    assert rows["chiennv/Orthrus-Qwen3-1.7B", "tpf_per_question"][6].startswith("4.18")
    assert rows["chiennv/Orthrus-Qwen3-1.7B", "tau"][6].startswith("7.75")
    assert "Neukiru" in reproduction.note


def test_specbench_table_as_its_leaderboard(tmp_path):
    categories = [c for group in SPECBENCH_COLUMNS.values() for c in group]
    run = make_run(tmp_path / "spec", suites=("specbench",), methods=("ar", "ar-hf", "orthrus", "eagle3"),
                   items=len(categories) * 2, categories=tuple(categories), slowdown={"orthrus": 0.5})  # fmt: skip
    spec = table(build_report([str(run)], tmp_path / "out"), "Spec-Bench")
    assert spec.columns == ["method", *SPECBENCH_COLUMNS, "mean accepted tokens", "overall"]
    rows = {r[0]: r for r in spec.rows}
    assert rows["ar-hf"][1] == "1.00×" and rows["ar"][-2] == "–"  # the baseline; AR accepts nothing
    # synthetic orthrus runs 4× ar, here sped up 2× more; ar-hf runs at 0.9× ar: 8 / 0.9 ≈ 8.9×
    assert all(cell.startswith(("8.", "9.")) for cell in rows["orthrus"][1:7])
    assert float(rows["eagle3"][-2]) > 1
