"""The report answers "Orthrus against DFlash and EAGLE-3, in vLLM and in the project's engine" (issue 40):
the headline opens with one row per engine (each drafter's speedup over the engine's AR baseline, and τ), and
`vllm-orthrus` is held against the project's `orthrus` in a cross-engine check per suite (token identity, the
same accepted drafts in every cycle, τ and its difference), named in the headline's note as `vllm-ar` is
against `ar`. Runs without them render as before."""

from __future__ import annotations

import re

import pytest
from synthetic_runs import make_run

from harness.records import prompt_key
from harness.report.engines import cross_engine_twin, fastest_label
from harness.report.page import build_report
from harness.report.runs import generations, load_runs, units
from harness.report.stats import pooled_tau, ratio_of_means
from harness.report.style import method_order
from harness.report.tables import paired_units
from harness.store import read_records

ENGINES = (
    "ar",
    "orthrus",
    "eagle3",
    "dflash",
    "vllm-ar",
    "vllm-pld",
    "vllm-eagle3",
    "vllm-dflash",
    "vllm-orthrus",
)
# Orthrus in both engines accepting few drafts a cycle: some items' first cycles all accept none, which the
# drop below leaves as they were
SPECS = {
    "vllm-pld": ("vllm-pld", True, 1.1, 0.8),
    "orthrus": ("orthrus", True, 4.0, 0.3),
    "vllm-orthrus": ("vllm-orthrus", True, 3.6, 0.3),
}
DRIFT = {"changed_outputs": {"vllm-orthrus": 2}, "accepted_drop": {"vllm-orthrus": 3}}  # a cross-engine gap


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    t0 = make_run(root / "t0", methods=ENGINES, specs=SPECS, items=8, seed=7, **DRIFT)
    t1 = make_run(root / "t1", methods=ENGINES, specs=SPECS, items=8, seed=8, temperature=1.0, **DRIFT)
    built = build_report([str(t0), str(t1)], root / "out")
    return built, built.markdown(), root


def sections(markdown: str) -> dict[str, str]:
    return dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S))


def table_after(markdown: str, title: str) -> tuple[list[str], list[list[str]]]:
    block = markdown.split(f"**{title}**", 1)[1].strip().split("\n\n", 1)[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return lines[0], lines[2:]


def speedup(u, method: str, baseline: str) -> float:
    pairs = paired_units(u, method, baseline)
    return float(ratio_of_means(pairs.tokens_per_s, pairs.tokens_per_s_base))


def test_the_headline_opens_with_orthrus_against_dflash_and_eagle3_per_engine(report):
    built, markdown, root = report
    headline = sections(markdown)["Headline"]
    title = "Orthrus against DFlash and EAGLE-3 (embedded tiny family, T=0)"
    assert headline.lstrip().startswith(f"**{title}**")  # before the per-method table
    assert headline.index(title) < headline.index("**Embedded tiny family, T=0**")
    columns, rows = table_after(markdown, title)
    assert columns == ["engine", "methods", "speedup over", "Orthrus ×", "DFlash ×", "EAGLE-3 ×", "Orthrus τ",
                       "DFlash τ", "EAGLE-3 τ"]  # fmt: skip
    by_engine = {row[0]: row for row in rows}
    assert list(by_engine) == ["orthrus-bench", "vLLM"]
    u = units(generations(load_runs([root / "t0"])))
    fastest = max(("ar", "vllm-ar"), key=lambda m: u[u.method == m].tokens_per_s.mean())
    engines = {
        "orthrus-bench": (fastest, ["orthrus", "dflash", "eagle3"]),
        "vLLM": ("vllm-ar", ["vllm-orthrus", "vllm-dflash", "vllm-eagle3"]),
    }
    for engine, (baseline, methods) in engines.items():
        row = by_engine[engine]
        assert row[1] == ", ".join(methods) and row[2] == baseline
        for method, cell, tau in zip(methods, row[3:6], row[6:9], strict=True):
            value, low, high = (
                float(x) for x in re.fullmatch(r"([\d.]+)× \(([\d.]+)–([\d.]+)\)", cell).groups()
            )
            assert value == pytest.approx(speedup(u, method, baseline), abs=0.005) and low <= value <= high
            own = u[u.method == method]
            assert float(tau) == pytest.approx(float(pooled_tau(own.accepted, own.cycles)), abs=0.005)
    # the synthetic drafters' speeds (synthetic_runs.METHODS): Orthrus fastest in each engine
    assert float(by_engine["vLLM"][3].split("×")[0]) > float(by_engine["vLLM"][4].split("×")[0])
    assert "**Orthrus against DFlash and EAGLE-3 (embedded tiny family, T=1)**" in headline


def test_vllm_orthrus_is_held_against_orthrus_per_suite(report):
    built, markdown, root = report
    check = sections(markdown)["Cross-engine check"]
    assert "**vllm-orthrus against orthrus (embedded tiny family, T=0)**" in check
    assert "T=1" not in check  # greedy only: sampled draws differ by construction
    columns, rows = table_after(markdown, "vllm-orthrus against orthrus (embedded tiny family, T=0)")
    assert columns == ["suite", "prompts", "identical to each other", "same accepted drafts in every cycle",
                       "orthrus identical to ar", "vllm-orthrus identical to ar", "orthrus τ",
                       "vllm-orthrus τ", "τ difference"]  # fmt: skip
    records = [r for r in read_records(root / "t0") if r["status"] == "ok"]
    assert [row[0] for row in rows] == ["tiny-code", "tiny-math"]  # no paper suite among them: by name
    for row in rows:
        by = {
            m: {prompt_key(r): r for r in records if r["method"] == m and r["suite"] == row[0]}
            for m in ("ar", "orthrus", "vllm-orthrus")
        }
        n = len(by["orthrus"])
        same = sum(by["orthrus"][k]["accepted"] == by["vllm-orthrus"][k]["accepted"] for k in by["orthrus"])
        assert 0 < same < n  # the drop changed some items' cycles, not all (a cycle accepting 0 stays)
        assert row[1:6] == [str(n), f"{n - 2}/{n}", f"{same}/{n}", f"{n}/{n}", f"{n - 2}/{n}"]

        def tau(method, by=by):
            accepted = [a for r in by[method].values() for a in r["accepted"]]
            return 1 + sum(accepted) / len(accepted)

        assert float(row[6]) == pytest.approx(tau("orthrus"), abs=0.005)
        assert float(row[7]) == pytest.approx(tau("vllm-orthrus"), abs=0.005)
        assert (
            float(row[8]) == pytest.approx(tau("vllm-orthrus") - tau("orthrus"), abs=0.01)
            and row[8][0] == "-"
        )
    note = built.cross_engine[0].note
    assert "a disagreement between the engines (a near-tie of the diffusion pass's logits" in note
    assert "not a method's fault" in note
    headline_note = next(t for t in built.headline if t.title.endswith("T=0)")).note
    assert "`vllm-ar` against `ar`: a cross-engine check of the project's AR" in headline_note
    assert "`vllm-orthrus` against `orthrus`: a cross-engine check of the project's Orthrus" in headline_note


def test_the_vllm_methods_sort_beside_the_projects(report):
    _, markdown, _ = report
    _, rows = table_after(markdown, "Per method and suite, T=0")
    assert [row[2] for row in rows if row[1] == "tiny-math"] == [
        "ar", "vllm-ar", "eagle3", "vllm-eagle3", "dflash", "vllm-dflash", "orthrus", "vllm-orthrus", "vllm-pld"
    ]  # fmt: skip


def test_runs_without_them_render_as_before(tmp_path):
    plain = make_run(tmp_path / "plain", methods=("ar", "ar-hf", "orthrus", "diffusion"), items=4, seed=1)
    built = build_report([str(plain)], tmp_path / "out")
    assert built.drafters == [] and built.cross_engine == []
    markdown = built.markdown()
    assert "Orthrus against DFlash" not in markdown and "## Cross-engine check" not in markdown
    assert sections(markdown)["Headline"].lstrip().startswith("**Embedded tiny family, T=0**")
    assert "vllm-orthrus" not in built.headline[0].note
    # one engine with Orthrus and one other drafter: its row alone; vLLM's Orthrus alone is no comparison
    one = make_run(tmp_path / "one", methods=("ar", "orthrus", "eagle3", "vllm-orthrus"), items=4, seed=1)
    built = build_report([str(one)], tmp_path / "out-one")
    (table,) = built.drafters
    assert [row[:3] for row in table.rows] == [["orthrus-bench", "orthrus, eagle3", "ar"]]
    assert table.rows[0][4] == "–" and table.rows[0][7] == "–"  # no DFlash
    assert len(built.cross_engine) == 1  # vllm-orthrus is still held against orthrus


def test_a_method_run_with_several_options_counts_by_its_fastest(tmp_path):
    specs = {
        "orthrus:block_size=4": ("orthrus", True, 2.0, 1.5),
        "orthrus:block_size=16": ("orthrus", True, 5.0, 7.0),
    }
    run = make_run(tmp_path / "sweep", methods=("ar", *specs, "dflash"), specs=specs, items=4, seed=2)
    u = units(generations(load_runs([run])))
    assert fastest_label(u, "orthrus", "ar") == "orthrus:block_size=16"
    assert fastest_label(u, "orthrus", None) == method_order(specs)[0]  # no baseline: the report's order
    assert fastest_label(u, "eagle3", "ar") is None
    (table,) = build_report([str(run)], tmp_path / "out").drafters
    assert table.rows[0][1] == "orthrus:block_size=16, dflash"


def test_the_projects_label_a_vllm_label_is_checked_against():
    assert cross_engine_twin("vllm-orthrus", {"orthrus", "orthrus:cache=dynamic"}) == "orthrus"
    assert (
        cross_engine_twin("vllm-orthrus:block_size=8", {"orthrus:block_size=8", "orthrus"})
        == "orthrus:block_size=8"
    )
    assert cross_engine_twin("vllm-orthrus:num_speculative_tokens=7", {"orthrus"}) == "orthrus"
    assert (
        cross_engine_twin("vllm-orthrus:num_speculative_tokens=7", {"orthrus:block_size=8"})
        == "orthrus:block_size=8"
    )
    assert cross_engine_twin("vllm-orthrus", {"orthrus:block_size=4", "orthrus:block_size=8"}) is None
