"""The report's first screen says one thing once ("The first ten minutes"): one heading per section (a table's
title does not repeat its section's), a note that tables share shown once, the methods in one order everywhere
(the AR baselines, the drafting methods, the other lossless ones, the lossy last; option values as numbers), and
Table 1's speedup over `ar-hf` (the paper's baseline) tied to the headline's over the fastest AR baseline."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from synthetic_runs import make_run

from harness.methods import BACKEND, REGISTRY
from harness.report.page import build_report, one_at_a_time, under
from harness.report.runs import generations, load_runs, units
from harness.report.stats import ratio_of_means
from harness.report.style import LOSSY, REGISTRY_ORDER, method_order
from harness.report.tables import Table, paired_units

# Labels beyond synthetic_runs.METHODS, as it defines them: (name, lossless, speed over ar, accepted per cycle)
SPECS = {
    "pld": ("pld", True, 1.1, 0.8),
    "orthrus:block_size=16": ("orthrus", True, 4.0, 6.0),
    "orthrus:block_size=4": ("orthrus", True, 2.0, 1.5),
    "orthrus:block_size=8": ("orthrus", True, 3.0, 3.0),
}
# Given out of every sensible order, so that the report's order is its own.
GIVEN = ("diffusion", "pld", "orthrus:block_size=16", "orthrus:block_size=4", "orthrus:block_size=8", "eagle3",
         "ar-hf", "ar")  # fmt: skip
ORDERED = ["ar", "ar-hf", "eagle3", "orthrus:block_size=4", "orthrus:block_size=8", "orthrus:block_size=16",
           "pld", "diffusion"]  # fmt: skip


def test_one_method_order():
    assert method_order(GIVEN) == ORDERED
    mixed = ["diffusion", "vllm-orthrus", "vllm-eagle3", "somebody-else", "pld", "vllm-ar", "dflash", "orthrus",
             "vllm-dflash", "eagle3", "ar"]  # fmt: skip
    assert method_order(mixed) == ["ar", "vllm-ar", "eagle3", "vllm-eagle3", "dflash", "vllm-dflash", "orthrus",
                                   "vllm-orthrus", "pld", "somebody-else", "diffusion"]  # fmt: skip
    depths = [
        "eagle3:tree=chain:depth=10",
        "eagle3:tree=chain:depth=2",
        "eagle3",
        "eagle3:tree=chain:depth=4",
    ]
    assert method_order(depths) == ["eagle3", "eagle3:tree=chain:depth=2", "eagle3:tree=chain:depth=4",
                                    "eagle3:tree=chain:depth=10"]  # fmt: skip


def test_the_order_repeats_the_registry():
    """The report needs no torch, so style.py repeats the registry's names; they must stay the registry's."""
    own = [m for m in REGISTRY if m.backend == BACKEND]
    assert REGISTRY_ORDER == [m.name for m in own]
    assert {m.name for m in own if not m.lossless} == LOSSY


def test_a_title_under_its_heading():
    assert under("Headline", "Headline (embedded tiny family (int8 weights), T=0)") == (
        "Embedded tiny family (int8 weights), T=0"
    )
    assert under("Table 1", "Table 1 — Orthrus TPF") == "Orthrus TPF"
    assert under("Table 1", "Table 1, other averaging") == "Other averaging"
    assert under("Provenance", "Provenance") == ""
    assert under("Equivalence verdicts", "Equivalence verdicts (results/tiny)") == "results/tiny"
    assert under("Independent reproduction", "Independent reproduction (GSM8K), beside this run") == (
        "Independent reproduction (GSM8K), beside this run"  # the rest does not stand alone
    )
    assert under("Latency", "Latency percentiles per method and suite") == "Percentiles per method and suite"
    assert under("Summary", "Per method and suite, T=0") == "Per method and suite, T=0"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("order")
    t0 = make_run(root / "t0", methods=GIVEN, specs=SPECS, seed=5)
    t1 = make_run(
        root / "t1", methods=GIVEN[1:], specs=SPECS, temperature=1.0, seed=6
    )  # diffusion: greedy only
    built = build_report([str(t0), str(t1)], root / "out")
    return built, built.markdown(), built.html()


def sections(markdown: str) -> dict[str, str]:
    return dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", markdown, flags=re.M | re.S))


def rows(block: str) -> list[list[str]]:
    """The rows of the first table in `block`."""
    lines = ("| " + block.split("\n\n| ", 1)[1]).split("\n\n", 1)[0].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def table_after(markdown: str, title: str) -> list[list[str]]:
    return rows(markdown.split(f"**{title}**", 1)[1])


def test_one_heading_per_section(report):
    built, markdown, page = report
    for heading, text in sections(markdown).items():
        for title in re.findall(r"^\*\*(.+)\*\*$", text, flags=re.M):
            assert not re.match(rf"{re.escape(heading)}\b", title), (heading, title)
    assert "**Embedded tiny family, T=0**" in markdown and "**Headline (" not in markdown
    assert not sections(markdown)["Provenance"].strip().startswith("**")  # the table under its heading alone
    for heading, body in re.findall(r"<h2>(.+?)</h2>(.*?)(?=<h2>|</body>)", page, flags=re.S):
        for caption in re.findall(r"<caption>(.+?)</caption>", body):
            assert not re.match(rf"{re.escape(heading)}\b", caption), (heading, caption)
    # the tables keep their full titles for whoever reads them as data
    titles = [t.title for _, items in built.sections() for t in items if isinstance(t, Table)]
    assert "Headline (embedded tiny family, T=0)" in titles and "Provenance" in titles


def test_a_note_the_tables_share_is_shown_once(report):
    _, markdown, _ = report
    headline = sections(markdown)["Headline"]
    note = "Speedup: mean per-item tokens/s over that of `ar`, the fastest AR baseline in the run"
    assert headline.count(note) == 1
    assert headline.index("**Embedded tiny family, T=1**") < headline.index(note)  # under the last table


def test_methods_in_one_order_and_option_values_as_numbers(report):
    _, markdown, _ = report
    for t in ("T=0", "T=1"):
        methods = [r[0] for r in table_after(markdown, f"Embedded tiny family, {t}")]
        expected = [m for m in ORDERED if m != "ar" and (t == "T=0" or m != "diffusion")]
        assert methods == [f"{m} (lossy)" if m == "diffusion" else m for m in expected]
    summary = [r for r in table_after(markdown, "Per method and suite, T=0") if r[1] == "tiny-math"]
    assert [r[2] for r in summary] == ORDERED
    table1 = [r for r in rows(sections(markdown)["Table 1"]) if r[2] == "Average"]
    assert [r[1] for r in table1] == ["orthrus:block_size=4", "orthrus:block_size=8", "orthrus:block_size=16"]


def test_table1_says_its_denominator_and_ties_it_to_the_headline(report):
    built, markdown, _ = report
    table1 = sections(markdown)["Table 1"]
    assert table1.lstrip().startswith(
        "**Orthrus TPF and wall-clock speedup over `ar-hf`, the paper's baseline**"
    )
    note = next(t for t in built.table1 if t.title.startswith("Table 1 —")).note
    assert "`ar-hf`, transformers' AR decoding, the paper's denominator" in note
    assert "Against the headline: its speedups are over `ar`, the fastest AR baseline in the run" in note
    u = units(generations(load_runs([r.directory for r in built.runs])))
    for t, temperature in (("T=0", 0.0), ("T=1", 1.0)):
        g = u[u.temperature == temperature]

        def ratio(a, b, g=g):
            pairs = paired_units(g, a, b)
            return ratio_of_means(pairs.tokens_per_s, pairs.tokens_per_s_base)

        headline = {r[0]: r[1] for r in table_after(markdown, f"Embedded tiny family, {t}")}
        label = "orthrus:block_size=16"
        assert headline[label].startswith(f"{ratio(label, 'ar'):.2f}×")
        assert headline["ar-hf"].startswith(f"{ratio('ar-hf', 'ar'):.2f}×")
        assert (
            f"{ratio(label, 'ar'):.2f}× over `ar` and {ratio(label, 'ar-hf'):.2f}× over `ar-hf` at {t} "
            f"(`ar-hf` runs at {ratio('ar-hf', 'ar'):.2f}× `ar`'s rate)"
        ) in note


def test_no_tie_where_the_headline_divides_by_ar_hf_too(tmp_path):
    run = make_run(tmp_path / "t0", methods=("ar", "ar-hf", "orthrus"), slowdown={"ar": 1.5}, seed=2)
    built = build_report([str(run)], tmp_path / "out")
    note = built.table1[0].note
    assert "`ar-hf`" in note and "Against the headline" not in note
    assert "speedup over ar-hf" in built.headline[0].columns


def test_the_batching_note_says_what_is_true():
    every = pd.DataFrame({"method": ["ar"] * 5, "batch_size": [1, 1, 4, 4, 16]})
    read, (note,) = one_at_a_time(every)
    assert list(read.batch_size) == [1, 1]
    assert note.startswith("every run here was decoded with a batch size (B = 1, 4, 16)")
    assert "those at the smallest, B=1 (a batch of one: one prompt at a time)" in note
    assert "the verdicts cover every run" in note and "batched" not in note
    _, (note,) = one_at_a_time(every[every.batch_size > 1])
    assert "the smallest, B=4, and" in note and "batch of one" not in note
    mixed = pd.DataFrame({"method": ["ar"] * 3, "batch_size": [None, 4, 4]})
    read, notes = one_at_a_time(mixed)
    assert len(read) == 1 and notes == []  # prompts decoded alone: the batched runs are Batching's alone
