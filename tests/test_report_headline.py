"""The report opens with its answer (issue 29): per method, the speedup over the strongest AR baseline with
its CI and the losslessness verdict with its evidence; verdicts and calibration as readable tables (no JSON in
a cell, no absolute path of the machine that rendered it); token identity with ar named for what it is."""

from __future__ import annotations

import json
import re

import pytest
from browser import CHROMIUM, load_page
from synthetic_runs import make_run

from harness.records import UNIT
from harness.report.page import write_report
from harness.report.runs import generations, load_runs, units
from harness.report.stats import ratio_of_means
from harness.report.verdicts import display_path, readable

TARGET = "/somewhere/on/the/renderer/models/tiny/orthrus"


def greedy_verdict(method: str, suite: str, passed: bool, prompts: int = 12) -> dict:
    reason = (
        f"{prompts}/{prompts} prompts token-identical"
        if passed
        else f"3/{prompts} prompts token-identical (float32 requires 100%); 0 near-tie and 9 algorithmic divergences"
    )
    return {
        "method": method,
        "method_name": method,
        "lossless": method != "diffusion",
        "suite": suite,
        "dtype": "float32",
        "temperature": 0.0,
        "reference": "ar",
        "mode": "greedy",
        "greedy": {
            "verdict": "PASS" if passed else "FAIL",
            "reason": reason,
            "prompts": prompts,
            "identical": prompts if passed else 3,
            "first_divergences": [{"item_id": "x", "position": 4}],
            "algorithmic_rate_upper95": 0.22,
            "ar_vs_ar": {"positions": 10, "flips": 0},
        },
        "verdict": "PASS" if passed else "FAIL",
        "reason": reason,
        "accuracy": {
            "items": prompts,
            "method_accuracy": 0.5,
            "reference_accuracy": 0.5,
            "difference": 0.0,
            "ci95": [-0.1, 0.1],
            "conclusion": "same per-item correctness",
        },
        "summary": f"{method} on {suite}: {reason}.",
    }


def sampling_verdict(method: str, suite: str) -> dict:
    reason = "no test rejects at alpha 0.01 (Holm, 7 tests); smallest adjusted p 0.5 (T1 PIT KS)"
    return {
        "method": method,
        "method_name": method,
        "lossless": True,
        "suite": suite,
        "dtype": "float32",
        "temperature": 1.0,
        "reference": "ar",
        "mode": "sampling",
        "sampling": {
            "verdict": "PASS",
            "reason": reason,
            "sequences": 12,
            "min_detectable_tv": 0.123 if suite == "tiny-math" else 0.2,
            "tests": [{"name": "T1 PIT KS", "pvalue": 0.5}],
        },
        "verdict": "PASS",
        "reason": reason,
        "accuracy": None,
        "summary": f"{method} on {suite}: {reason}.",
    }


def verify_document(run: str, verdicts: list[dict]) -> dict:
    return {
        "run": run,
        "alpha": 0.01,
        "accuracy_margin": 0.02,
        "dtype": "float32",
        "target": TARGET,
        "reference": "ar",
        "decoders_available": True,
        "verdicts": verdicts,
    }


SAMPLING_CALIBRATION = {
    "config": {"replicates": 20, "prompts": 4, "alpha": 0.01, "arms": ["aa", "mutants"]},
    "meta": {"model": TARGET, "machine": "x86_64 CPU", "torch": "2.13.0+cpu"},
    "arms": [
        {
            "name": "A/A: AR vs AR",
            "requirement": "<= alpha",
            "replicates": 20,
            "rejections": 0,
            "rejected_by": {},
            "rate": 0.0,
            "ci95": [0.0, 0.168],
            "met": True,
        },
        {
            "name": "mutant: off by one",
            "requirement": ">= 0.8",
            "replicates": 10,
            "rejections": 9,
            "rejected_by": {"T1 PIT KS": 9, "T5 acceptance audit": 4},
            "rate": 0.9,
            "ci95": [0.555, 0.997],
            "met": True,
        },
    ],  # fmt: skip
    "replicate_t3_z": {"aa": [0.1, -0.3]},
}
GREEDY_CALIBRATION = {
    "config": {"dtype": "bfloat16", "replicates": 50, "alpha": 0.01},
    "meta": {"model": TARGET, "machine": "x86_64 CPU"},
    "arms": [
        {
            "name": "mutant: +0.3 on a logit",
            "requirement": ">= 0.8",
            "by_margin": 30,
            "by_combined": 37,
            "by_rate": 0,
            "replicates": 50,
            "fail": 37,
            "rate": 0.74,
            "ci95": [0.6, 0.85],
            "met": False,
        },
    ],  # fmt: skip
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("headline")
    methods = ("ar", "ar-hf", "orthrus", "eagle3", "diffusion")
    # ar-hf is made the fastest AR baseline: the headline divides by it, not by ar
    make_run(root / "t0", methods=methods, seed=3, slowdown={"ar": 1.5})
    make_run(root / "t1", methods=methods[:4], temperature=1.0, seed=4)
    greedy = [
        greedy_verdict(m, s, passed=not (m == "diffusion" and s == "tiny-math"))
        for m in methods[1:]
        for s in ("tiny-code", "tiny-math")
    ]
    (root / "t0" / "verdicts.json").write_text(json.dumps(verify_document("t0", greedy)))
    sampled = [sampling_verdict(m, s) for m in methods[1:4] for s in ("tiny-code", "tiny-math")]
    (root / "t1" / "verdicts.json").write_text(json.dumps(verify_document("t1", sampled)))
    (root / "calibration.json").write_text(json.dumps(SAMPLING_CALIBRATION))
    (root / "calibration-greedy-bfloat16.json").write_text(json.dumps(GREEDY_CALIBRATION))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the run directories as a user gives them: relative
        out = write_report(["t0", "t1"], "out", calibration="calibration.json")
    return root, root / out


def table(markdown: str, title: str) -> tuple[list[str], list[list[str]]]:
    block = markdown.split(f"**{title}**", 1)[1].strip().split("\n\n", 1)[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return lines[0], lines[2:]


def all_cells(markdown: str) -> list[str]:
    return [
        c.strip()
        for line in markdown.splitlines()
        if line.startswith("|") and not line.startswith("|---")
        for c in line.strip("|").split("|")
    ]


def test_the_report_opens_with_the_headline(rendered):
    _, out = rendered
    markdown = (out / "report.md").read_text()
    sections = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert sections[:2] == ["Headline", "Table 1"]
    page = (out / "report.html").read_text()
    assert page.index("<h2>Headline</h2>") < page.index("<h2>Table 1</h2>")
    assert "<caption>Embedded tiny family, T=0</caption>" in page


def test_headline_speedup_is_over_the_strongest_ar_baseline(rendered):
    root, out = rendered
    markdown = (out / "report.md").read_text()
    columns, rows = table(markdown, "Embedded tiny family, T=0")
    assert columns[:3] == ["method", "speedup over ar-hf", "lossless?"]
    by_method = {row[0]: row for row in rows}
    assert "ar-hf" not in by_method and "ar" in by_method  # the baseline is the denominator, not a row
    u = units(generations(load_runs([root / "t0"])))
    keys = [c for c in UNIT if c != "method"]
    for method in ("orthrus", "eagle3", "ar"):
        a = u[u.method == method].set_index(keys)
        b = u[u.method == "ar-hf"].set_index(keys)
        pairs = a.merge(b, left_index=True, right_index=True, suffixes=("", "_base"))
        expected = ratio_of_means(pairs.tokens_per_s, pairs.tokens_per_s_base)
        cell = re.fullmatch(r"([\d.]+)× \(([\d.]+)–([\d.]+)\)", by_method[method][1])
        value, low, high = (float(x) for x in cell.groups())
        assert value == pytest.approx(expected, abs=0.005)
        assert low <= value <= high
    assert float(by_method["orthrus"][1].split("×")[0]) > 3  # synthetic orthrus: 4× ar, ar-hf 0.9/1.5 × ar's


def test_table1_ties_its_speedup_to_the_headlines_where_their_denominators_differ(rendered):
    """At T=0 ar-hf is the fastest AR baseline: the headline and Table 1 divide by it alike. At T=1 ar is: Table 1
    still divides by ar-hf, the paper's baseline, and its note says what the headline's speedup is over it."""
    _, out = rendered
    markdown = (out / "report.md").read_text()
    note = markdown.split("## Table 1", 1)[1].split("\n\n")[3]
    assert (
        markdown.split("## Table 1", 1)[1]
        .split("\n\n")[1]
        .startswith("**Orthrus TPF and wall-clock speedup over `ar-hf`, the paper's baseline**")
    )
    assert "Against the headline: its speedups are over `ar`, the fastest AR baseline in the run" in note
    headline = {row[0]: row[1] for row in table(markdown, "Embedded tiny family, T=1")[1]}
    over_ar = headline["orthrus"].split("×")[0]
    assert f"`orthrus`: {over_ar}× over `ar` and " in note and "at T=1 (`ar-hf` runs at " in note
    assert "at T=0" not in note  # the same denominator there


def test_headline_verdicts_carry_their_evidence(rendered):
    _, out = rendered
    markdown = (out / "report.md").read_text()
    _, rows = table(markdown, "Embedded tiny family, T=0")
    by_method = {row[0]: row for row in rows}
    orthrus = by_method["orthrus"]
    # method, speedup, verdict, N, smallest detectable, then the evidence (the long cell last)
    assert orthrus[2] == "PASS"
    assert orthrus[3] == "24 prompts (2 suites)"
    assert orthrus[4] == "divergence on > 22% of prompts"
    assert orthrus[5] == "24/24 prompts token-identical"  # summed over the suites it passed in
    diffusion = by_method["diffusion (lossy)"]  # lossy, as verify's table says
    assert "orthrus (lossy)" not in by_method
    assert diffusion[2] == "FAIL"
    assert diffusion[5].startswith("tiny-math: 3/12 prompts token-identical (float32 requires 100%)")
    assert "tiny-code" not in diffusion[5]  # the failing suite's evidence only
    assert diffusion[4] == "–"
    assert by_method["ar"][2] == "not verified"  # verify holds the reference to no verdict
    note = markdown.split("**Embedded tiny family, T=0**", 1)[1].split("\n\n")[2]
    assert "`ar-hf` against `ar`: a cross-engine check of the project's AR" in note
    _, sampled = table(markdown, "Embedded tiny family, T=1")
    eagle3 = {row[0]: row for row in sampled}["eagle3"]
    assert eagle3[2] == "PASS" and eagle3[3] == "24 sequences (2 suites)"
    assert eagle3[4] == "TV 0.123–0.200"
    assert eagle3[5] == "no sampling test rejects in 2 suites"


def test_no_json_and_no_absolute_path_anywhere(rendered):
    root, out = rendered
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for cell in all_cells(markdown):
        assert not cell.startswith(("{", "[")) and '":' not in cell, cell
    assert "&quot;" not in page.split("<body>", 1)[1]  # no JSON string in the page's text
    assert str(root) not in markdown and str(root) not in page
    assert "/somewhere/on/the/renderer" not in markdown
    assert "target models/tiny/orthrus" in markdown


def test_verdict_tables_are_readable(rendered):
    _, out = rendered
    markdown = (out / "report.md").read_text()
    columns, rows = table(markdown, "t0")
    assert columns == ["method", "kind", "suite", "T", "mode", "verdict", "evidence", "N",
                       "smallest detectable", "accuracy vs reference"]  # fmt: skip
    row = next(r for r in rows if r[0] == "diffusion" and r[2] == "tiny-math")
    assert row[1:6] == ["lossy", "tiny-math", "T=0", "greedy", "FAIL"]
    assert row[7] == "12 prompts"
    assert row[9] == "50.0% vs 50.0% (difference 95% CI -10.0 to +10.0 points): same per-item correctness"
    _, rows = table(markdown, "t1")
    assert rows[0][5:9] == [
        "PASS",
        "no test rejects at alpha 0.01 (Holm, 7 tests); smallest adjusted p 0.5 (T1 PIT KS)",
        "12 sequences",
        "TV 0.200",
    ]


def test_calibrations_are_tables(rendered):
    _, out = rendered
    markdown = (out / "report.md").read_text()
    columns, rows = table(markdown, "calibration.json")
    assert columns == ["arm", "requirement", "replicates", "rejected", "rate", "met", "rejected by"]
    assert rows[1] == ["mutant: off by one", ">= 0.8", "10", "9", "90.0% (55.5%–99.7%)", "yes",
                       "T1 PIT KS ×9, T5 acceptance audit ×4"]  # fmt: skip
    assert "replicate_t3_z" not in markdown
    _, rows = table(markdown, "calibration-greedy-bfloat16.json")
    assert rows == [["mutant: +0.3 on a logit", ">= 0.8", "50", "37", "74.0% (60.0%–85.0%)", "no",
                     "margin ×30, combined ×37"]]  # fmt: skip


def test_identity_with_ar_is_named_for_what_it_is(rendered):
    _, out = rendered
    markdown = (out / "report.md").read_text()
    greedy_columns, _ = table(markdown, "Per method and suite, T=0")
    sampled_columns, _ = table(markdown, "Per method and suite, T=1")
    assert greedy_columns[-1] == "identical to ar"
    assert sampled_columns[-1] == "same draws as ar (same seeds)"
    assert "identical to ar" not in sampled_columns


def test_plain_words_for_any_value():
    assert readable({"a": 1, "b": [0.1, 0.25]}) == "a: 1; b: 0.1–0.25"
    assert readable([{"x": 1}, {"x": 2}]) == "2 entries"
    assert readable(True) == "yes" and readable(None) == "–"
    assert display_path("Qwen/Qwen3-1.7B") == "Qwen/Qwen3-1.7B"
    assert display_path("/home/u/ckpt/orthrus-4b") == "orthrus-4b"
    assert display_path("/home/u/repo/models/tiny/orthrus") == "models/tiny/orthrus"


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium)"
)
def test_the_headline_fits_the_window_however_long_its_evidence(tmp_path):
    """A method failing in three suites has three reasons in its evidence cell: prose wraps there, so the
    headline never scrolls sideways in a 1400-pixel window."""
    make_run(tmp_path / "t0", methods=("ar", "orthrus", "diffusion"), seed=3)
    suites = ("tiny-code", "tiny-math", "tiny-chat")
    verdicts = [greedy_verdict("diffusion", s, passed=False) for s in suites]
    (tmp_path / "t0" / "verdicts.json").write_text(json.dumps(verify_document("t0", verdicts)))
    out = write_report([str(tmp_path / "t0")], tmp_path / "out")
    markdown = (out / "report.md").read_text()
    evidence = {row[0]: row[5] for row in table(markdown, "Embedded tiny family, T=0")[1]}
    assert len(evidence["diffusion (lossy)"]) > 250
    page = load_page(out / "report.html")
    assert page.errors == []
    assert not [caption for caption in page.overflowing_tables if caption.startswith("Embedded tiny family")]
