"""Latency percentiles and acceptance by draft position in the report (issue 29), from the records alone."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_runs import make_run

from harness.report.distributions import acceptance_by_position
from harness.report.figures import FIGURES
from harness.report.page import write_report
from harness.store import read_records


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributions")
    run = make_run(root / "t0", methods=("ar", "orthrus", "eagle3", "diffusion"), seed=5)
    return run, write_report([str(run)], root / "out")


def table(markdown: str, title: str) -> tuple[list[str], list[list[str]]]:
    block = markdown.split(f"**{title}**", 1)[1].strip().split("\n\n", 1)[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return lines[0], lines[2:]


def test_acceptance_by_position_on_a_known_example():
    # cycles accepting 0, 2, 3 and 1 drafts
    out = acceptance_by_position([[0, 2, 3], [1]])
    assert out["cycles"] == 4
    assert out["histogram"] == [1, 1, 1, 1]
    assert out["reached"] == [4, 3, 2]  # cycles that accepted every draft before position i
    assert out["conditional"] == pytest.approx([3 / 4, 2 / 3, 1 / 2])
    assert acceptance_by_position([[], []]) == {
        "cycles": 0,
        "histogram": [0],
        "conditional": [],
        "reached": [],
    }


def test_latency_percentiles_follow_the_records(rendered):
    run, out = rendered
    markdown = (out / "report.md").read_text()
    columns, rows = table(markdown, "Percentiles per method and suite")
    assert columns[5:] == ["TTFT p50 (ms)", "TTFT p90 (ms)", "TTFT p99 (ms)",
                           "TPOT p50 (ms)", "TPOT p90 (ms)", "TPOT p99 (ms)",
                           "ITL gaps", "ITL p50 (ms)", "ITL p90 (ms)", "ITL p99 (ms)"]  # fmt: skip
    assert {(r[2], r[3]) for r in rows} == {
        (s, m) for s in ("tiny-code", "tiny-math") for m in ("ar", "orthrus", "eagle3", "diffusion")
    }
    records = read_records(run)
    for row in rows:
        own = [r for r in records if r["suite"] == row[2] and r["method"] == row[3]]
        assert row[4] == str(len(own))
        ttft = np.array([r["ttft_s"] for r in own]) * 1e3
        tpot = np.array([r["tpot_s"] for r in own if r["tpot_s"] is not None]) * 1e3
        expected = [np.percentile(ttft, q) for q in (50, 90, 99)] + [
            np.percentile(tpot, q) for q in (50, 90, 99)
        ]
        assert [float(c) for c in row[5:11]] == pytest.approx(expected, abs=0.051)  # shown to 0.1 ms
        assert float(row[5]) <= float(row[6]) <= float(row[7])
        # ITL: every gap between successive emissions (from the first token at 0), pooled over generations
        itl = np.concatenate([np.diff([0.0, *r["emit_offsets_s"]]) for r in own]) * 1e3
        assert row[11] == str(len(itl)) == str(sum(r["ar_forwards"] for r in own))
        assert [float(c) for c in row[12:]] == pytest.approx([np.percentile(itl, q) for q in (50, 90, 99)],
                                                             abs=0.0051)  # fmt: skip
    by = {(r[2], r[3]): r for r in rows}
    # a cycle's burst: orthrus' gaps (about 7 tokens each) are longer than its per-token TPOT, AR's equal it
    assert float(by[("tiny-math", "orthrus")][12]) > 2 * float(by[("tiny-math", "orthrus")][8])
    note = markdown.split("**Percentiles per method and suite**", 1)[1].split("\n\n")[2]
    assert "gap between successive emissions" in note and "pooled" in note
    assert "left out of ITL" not in note  # every record here holds its emission times


def test_records_without_emission_times_still_load_and_render(tmp_path):
    """Records from before emit_offsets_s (issue 29): they load, their ITL cells say –, and the note counts
    them where they sit beside newer ones."""
    import json

    from harness.store import RECORDS

    old = make_run(tmp_path / "old", methods=("ar", "orthrus"), items=3)
    lines = [json.loads(line) for line in (old / RECORDS).read_text().splitlines()]
    for r in lines:
        del r["emit_offsets_s"]
    (old / RECORDS).write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert all("emit_offsets_s" not in r for r in read_records(old))
    markdown = (write_report([str(old)], tmp_path / "out") / "report.md").read_text()
    columns, rows = table(markdown, "Percentiles per method and suite")
    assert len(rows) == 4 and all(r[11:] == ["–"] * 4 for r in rows)
    assert all(c != "–" for r in rows for c in r[5:8])  # TTFT as before
    assert "left out of ITL" in markdown


def test_acceptance_tables_follow_the_per_cycle_counts(rendered):
    run, out = rendered
    markdown = (out / "report.md").read_text()
    title = "P(draft i accepted | drafts 1 … i−1 accepted)"  # under ## Acceptance by draft position
    columns, rows = table(markdown, title)
    assert columns[:6] == ["model", "T", "suite", "method", "cycles", "i=1"]
    assert {r[3] for r in rows} == {
        "orthrus",
        "eagle3",
    }  # ar drafts nothing; diffusion's drafts are unverified
    records = read_records(run)
    for row in rows:
        cycles = [n for r in records if r["suite"] == row[2] and r["method"] == row[3] for n in r["accepted"]]
        assert row[4] == str(len(cycles))
        for i, cell in enumerate(row[5:], start=1):
            reached = sum(n >= i - 1 for n in cycles)
            if not any(n >= i for n in cycles):
                assert cell == "–"
                continue
            assert float(cell) == pytest.approx(sum(n >= i for n in cycles) / reached, abs=0.005)
    # orthrus (6 drafts accepted a cycle on average) keeps drafts longer than eagle3 (2.5): its rate at i=2
    by = {(r[2], r[3]): r for r in rows}
    assert float(by[("tiny-math", "orthrus")][6]) > float(by[("tiny-math", "eagle3")][6])
    _, histogram = table(markdown, "Accepted drafts per cycle: share of cycles accepting k")
    for row in histogram:
        shares = [float(c.rstrip("%")) for c in row[5:]]
        assert sum(shares) == pytest.approx(100, abs=0.1 * len(shares))
        cycles = [n for r in records if r["suite"] == row[2] and r["method"] == row[3] for n in r["accepted"]]
        assert shares[0] == pytest.approx(100 * cycles.count(0) / len(cycles), abs=0.05)


def test_acceptance_position_figure_is_drawn_and_linked(rendered):
    _, out = rendered
    assert "acceptance_position" in [f.name for f in FIGURES]
    assert (out / "figures" / "acceptance_position.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](figures/acceptance_position.png)" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "<h2>Latency</h2>" in page and "<h2>Acceptance by draft position</h2>" in page


def test_a_run_without_drafts_says_so(tmp_path):
    run = make_run(tmp_path / "ar-only", methods=("ar", "ar-hf"), items=3)
    markdown = (write_report([str(run)], tmp_path / "out") / "report.md").read_text()
    section = markdown.split("## Acceptance by draft position", 1)[1].split("\n## ", 1)[0]
    assert "_no method drafted tokens_" in section
    assert (tmp_path / "out" / "figures" / "acceptance_position.png").exists()
