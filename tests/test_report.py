"""`orthrus-bench report`: every figure and table present, Table 1 consistent with the run summary, verdicts
and calibration rendered (or "not verified"), and the HTML page clean in headless Chromium."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from browser import CHROMIUM, load_page
from synthetic_runs import make_run

from harness.cli import main
from harness.records import ErrorRecord
from harness.report.figures import FIGURES
from harness.report.page import write_report
from harness.report.stats import bootstrap_ci, ratio_of_means
from harness.report.summary import summarize
from harness.store import load_run, open_run, read_records, save_run

VERDICTS = {
    "verdicts": [
        {
            "method": "orthrus",
            "test": "greedy identity",
            "n": 24,
            "detectable_deviation": 0.124,
            "verdict": "pass",
        },
        {
            "method": "diffusion",
            "test": "greedy identity",
            "n": 24,
            "detectable_deviation": 0.124,
            "verdict": "fail",
        },
    ]
}
CALIBRATION = {"rows": [{"test": "pit-ks", "alpha": 0.01, "false_positive_rate": 0.0125, "power": 0.93}]}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    greedy = make_run(root / "t0", temperature=0.0, seed=1)
    (greedy / "verdicts.json").write_text(json.dumps(VERDICTS))
    sampled = make_run(root / "t1", temperature=1.0, seed=2, gpu=True)
    (root / "calibration.json").write_text(json.dumps(CALIBRATION))
    args = [
        "report",
        str(greedy),
        str(sampled),
        "--out",
        str(root / "out"),
        "--calibration",
        str(root / "calibration.json"),
    ]
    assert main(args) == 0
    return root


def table_rows(markdown: str, title: str | None) -> list[list[str]]:
    """The rows of the table titled `title` (None: the first table of `markdown`, which has no title)."""
    block = markdown.split(f"**{title}**", 1)[1] if title is not None else markdown
    block = block.strip().split("\n\n", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()[2:]]


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next section."""
    return markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_every_figure_is_written_and_linked(report):
    out = report / "out"
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for figure in FIGURES:
        png = out / "figures" / f"{figure.name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](figures/{figure.name}.png)" in markdown
        assert f'<figure id="fig-{figure.name}"><img src="data:image/png;base64,' in page
    assert "<script" not in page and 'src="http' not in page  # self-contained: nothing fetched


def test_table1_matches_the_run_summary(report):
    markdown = (report / "out" / "report.md").read_text()
    rows = table_rows(markdown, "Orthrus TPF and wall-clock speedup over `ar-hf`, the paper's baseline")
    by_suite = {row[2]: row for row in rows}
    assert set(by_suite) == {"tiny-math", "tiny-code", "Average"}
    # columns: model, method, suite, T=0 TPF, T=0 speedup, T=1 TPF, T=1 speedup (t0 ran T=0, t1 T=1)
    for run, tpf_col, speedup_col in (("t0", 3, 4), ("t1", 5, 6)):
        records = [r for r in read_records(report / run) if r["suite"] == "tiny-math"]
        summary = summarize(records).set_index("method").loc["orthrus"]
        cell = re.fullmatch(r"([\d.]+) \(([\d.]+)–([\d.]+)\)", by_suite["tiny-math"][tpf_col])
        tpf, low, high = (float(x) for x in cell.groups())
        assert tpf == pytest.approx(summary.tpf, abs=0.005)
        assert low <= tpf <= high
        speedup = float(by_suite["tiny-math"][speedup_col].split("×")[0])
        # The paper's denominator: transformers generate (ar-hf) when the run has it.
        assert speedup == pytest.approx(summary.speedup_vs_ar_hf, abs=0.005)
        average = float(by_suite["Average"][speedup_col].rstrip("×"))
        suites = [float(by_suite[s][speedup_col].split("×")[0]) for s in ("tiny-math", "tiny-code")]
        assert average == pytest.approx(np.mean(suites), abs=0.01)
    assert "per-question" in markdown and "token-weighted" in markdown  # the averaging is stated


def test_figure4_table_matches_the_run_summary(report):
    markdown = (report / "out" / "report.md").read_text()
    rows = table_rows(markdown, "Average acceptance length τ (embedded tiny family, T=0)")
    header = markdown.split("Average acceptance length τ (embedded tiny family, T=0)**", 1)[1]
    assert header.strip().splitlines()[0] == "| suite | eagle3 | dflash | orthrus |"  # the paper's order
    records = [r for r in read_records(report / "t0") if r["suite"] == "tiny-code"]
    summary = summarize(records).set_index("method")
    cells = dict(zip(["suite", "eagle3", "dflash", "orthrus"], rows[0], strict=True))
    assert cells["suite"] == "tiny-code"
    for method in ("eagle3", "dflash", "orthrus"):
        assert float(cells[method].split()[0]) == pytest.approx(summary.loc[method].tau, abs=0.005)


def test_verdicts_calibration_and_provenance(report):
    markdown = (report / "out" / "report.md").read_text()
    assert "| orthrus | greedy identity | 24 | 0.124 | pass |" in markdown
    assert "not verified: no verdicts.json in " + str(report / "t1") in markdown
    assert "| pit-ks | 0.01 | 0.0125 | 0.93 |" in markdown
    provenance = section(markdown, "Provenance")
    # the heading says it once: the table has no title of its own
    assert not provenance.strip().startswith("**")
    provenance = table_rows(provenance, None)
    assert [row[4] for row in provenance] == ["0123456789", "0123456789"]  # commit
    assert provenance[1][6] == "synthetic GPU"


def test_a_bare_run_with_a_failure_still_gets_every_figure(tmp_path):
    run = make_run(tmp_path / "bare", methods=("ar", "orthrus"), items=3, telemetry=False)
    info = load_run(run)
    info.suites["tiny-math"]["items"]["tiny-math/99"] = 1  # an item the run selected, which failed
    info.status = "running"
    save_run(run, info)
    store = open_run(run, info, resume=True)
    failure = dict(suite="tiny-math", item_id="tiny-math/99", method="orthrus", method_name="orthrus")
    error = "RuntimeError: out of memory"
    unit = dict(lossless=True, sample=0, turn=0, turns=1, error=error, traceback="...", context_tokens=None)
    store.write_unit([ErrorRecord(**failure, **unit)])
    store.close()
    out = write_report([str(run)], tmp_path / "out")
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(f.name for f in FIGURES)
    markdown = (out / "report.md").read_text()
    assert "| embedded tiny family | orthrus | tiny-math |" in markdown
    assert f"| {run} | orthrus | tiny-math | 1 | RuntimeError: out of memory |" in markdown


def test_paired_bootstrap_ci():
    rng = np.random.default_rng(0)
    base = rng.lognormal(3, 0.3, 40)
    new = base * 2 * rng.lognormal(0, 0.02, 40)  # paired: the item effect cancels in the ratio
    low, high = bootstrap_ci(ratio_of_means, new, base)
    assert low < new.mean() / base.mean() < high
    assert high - low < 0.05  # pairing keeps the CI narrow despite the 30% spread between items
    assert bootstrap_ci(ratio_of_means, [1.0], [2.0]) is None


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_html_loads_in_chromium_without_errors(report):
    page = load_page(report / "out" / "report.html")
    assert page.errors == []
    assert page.figure_ids == [f"fig-{f.name}" for f in FIGURES]
    assert [image["loaded"] for image in page.images] == [True] * len(FIGURES)
    assert min(image["width"] for image in page.images) > 100


def test_the_provenance_says_which_methods_ran_outside_a_static_engine():
    from harness.report.tables import engine_cell
    from harness.store import RunInfo

    methods = {
        "orthrus": {"outside_engine": None},
        "eagle3": {"outside_engine": "the EAGLE-3 head's passes (depth per cycle)"},
        "ar": {},  # a run.json from before the field
    }
    static = RunInfo(config={}, config_hash="x", engine="cudagraph", methods=methods)
    assert engine_cell(static) == "cudagraph (eager: eagle3: the EAGLE-3 head's passes (depth per cycle))"
    assert engine_cell(RunInfo(config={}, config_hash="x", engine="eager", methods=methods)) == "eager"
    inside = RunInfo(
        config={}, config_hash="x", engine="compile", methods={"orthrus": {"outside_engine": None}}
    )
    assert engine_cell(inside) == "compile"
