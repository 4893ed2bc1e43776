"""Option sweeps (issue 29): `run --sweep 'orthrus:block_size=4,8,16'` expands into one method per value, bad
sweeps are refused before anything runs, and the report's Sweeps section shows τ, TPF and the speedup over the
strongest AR baseline against the value, on synthetic runs with known figures."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from synthetic_runs import make_run

from harness.cli import main
from harness.cli.args import UsageError
from harness.cli.run import sweep_methods
from harness.methods import expand_sweep
from harness.report.page import write_report
from harness.report.sweeps import find_sweeps
from harness.store import read_records
from orthrus_core import metrics

# label -> (method name, lossless, tokens/s relative to ar, mean accepted drafts per cycle); given out of the
# values' order, so that the report's numeric order (4, 8, 16; 2, 10) is its own and not the run's.
SPECS = {
    "orthrus:block_size=16": ("orthrus", True, 4.0, 6.0),
    "orthrus:block_size=4": ("orthrus", True, 2.0, 1.5),
    "orthrus:block_size=8": ("orthrus", True, 3.0, 3.0),
    "pld:num_draft_tokens=10": ("pld", True, 1.2, 1.0),
    "pld:num_draft_tokens=2": ("pld", True, 1.5, 0.8),
}
ORTHRUS = ["orthrus:block_size=4", "orthrus:block_size=8", "orthrus:block_size=16"]


def verdict(method: str, suite: str, passed: bool) -> dict:
    return {
        "method": method,
        "suite": suite,
        "temperature": 0.0,
        "mode": "greedy",
        "greedy": {"prompts": 12, "identical": 12 if passed else 9},
        "verdict": "PASS" if passed else "FAIL",
        "reason": "12/12 prompts token-identical" if passed else "9/12 prompts token-identical",
    }


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweeps")
    run = make_run(root / "run", methods=("ar", "ar-hf", *SPECS), specs=SPECS, seed=3)
    verdicts = [
        verdict(label, suite, passed=label != "orthrus:block_size=16" or suite != "tiny-code")
        for label in ORTHRUS
        for suite in ("tiny-math", "tiny-code")
    ]
    (run / "verdicts.json").write_text(json.dumps({"verdicts": verdicts}))
    return run, write_report([str(run)], root / "out")


def table(markdown: str, title: str) -> tuple[list[str], list[list[str]]]:
    block = markdown.split(f"**{title}**", 1)[1].strip().split("\n\n", 1)[0]
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines()]
    return lines[0], lines[2:]


def expected(records: list[dict], label: str) -> dict:
    """τ, TPF and the speedup over ar of one label, from the records alone."""
    own = [r for r in records if r["method"] == label]
    accepted = [n for r in own for n in r["accepted"]]
    rate = defaultdict(dict)
    for r in records:
        rate[r["method"]][(r["suite"], r["item_id"])] = r["new_tokens"] / r["wall_s"]
    items = sorted(rate[label])
    return {
        "tau": metrics.tau(sum(accepted), len(accepted)),
        "tpf": metrics.tpf(
            sum(r["new_tokens"] for r in own), sum(r["ar_forwards"] + r["draft_forwards"] for r in own)
        ),
        "speedup": np.mean([rate[label][i] for i in items]) / np.mean([rate["ar"][i] for i in items]),
    }


def test_find_sweeps_groups_labels_differing_in_one_option():
    labels = [
        "ar",
        "orthrus",  # leaves block_size at its default: says no value
        "orthrus:block_size=16",
        "orthrus:block_size=4",
        "eagle3:tree=chain:depth=4",
        "eagle3:depth=2:tree=chain",  # the same fixed option, written in another order
        "eagle3:tree=dynamic:depth=7",  # another tree: not in the chain's sweep
        "dflash:block_size=4:draft=a",
        "dflash:block_size=8:draft=b",  # two options differ: no sweep
        "pld:num_draft_tokens=5",  # one value: no sweep
    ]
    sweeps = find_sweeps(labels)
    assert [(s.method, s.option, s.fixed) for s in sweeps] == [
        ("eagle3", "depth", (("tree", "chain"),)),
        ("orthrus", "block_size", ()),
    ]
    assert sweeps[0].values == (("2", "eagle3:depth=2:tree=chain"), ("4", "eagle3:tree=chain:depth=4"))
    assert [v for v, _ in sweeps[1].values] == ["4", "16"]  # numeric, not text, order
    assert sweeps[0].name == "eagle3 depth (tree=chain)"
    assert find_sweeps(["ar", "orthrus", "eagle3:tree=chain", "pld"]) == []
    # values that are not numbers come in text order, after any number
    (cache,) = find_sweeps(["ar-hf:cache=static", "ar-hf:cache=dynamic", "ar-hf:cache=10"])
    assert [v for v, _ in cache.values] == ["10", "dynamic", "static"]


def test_sweep_table_holds_the_values_figures_in_numeric_order(swept):
    run, out = swept
    markdown = (out / "report.md").read_text()
    assert "## Sweeps" in markdown
    title = "Sweep: orthrus block_size (embedded tiny family, T=0)"
    columns, rows = table(markdown, title)
    assert columns == ["block_size", "method", "items", "τ", "TPF", "speedup over ar", "lossless?", "N"]
    assert [r[0] for r in rows] == ["4", "8", "16"] and [r[1] for r in rows] == ORTHRUS
    records = read_records(run)
    for row in rows:
        e = expected(records, row[1])
        assert row[2] == "24"  # 12 items in each of 2 suites
        assert row[3].startswith(f"{e['tau']:.2f} (")
        assert row[4].startswith(f"{e['tpf']:.2f} (")
        assert row[5].startswith(f"{e['speedup']:.2f}× (")  # over ar, the fastest AR baseline (ar-hf: 0.9×)
    # planted: τ and the speedup rise with the block size
    taus = [float(r[3].split()[0]) for r in rows]
    speedups = [float(r[5].split("×")[0]) for r in rows]
    assert taus == sorted(taus) and speedups == sorted(speedups)
    # the verdict over every suite: block 16 fails on tiny-code
    assert [r[6] for r in rows] == ["PASS", "PASS", "FAIL"]
    assert rows[0][7] == "24 prompts (2 suites)"


def test_sweep_per_suite_table_and_other_sweeps(swept):
    run, out = swept
    markdown = (out / "report.md").read_text()
    columns, rows = table(
        markdown, "Sweep per suite: orthrus block_size, τ / TPF / speedup over ar (embedded tiny family, T=0)"
    )
    assert columns == ["block_size", "tiny-code", "tiny-math"]  # suite_order: the report's order
    records = read_records(run)
    for row in rows:
        for suite, cell in zip(columns[1:], row[1:], strict=True):
            e = expected([r for r in records if r["suite"] == suite], f"orthrus:block_size={row[0]}")
            assert cell == f"{e['tau']:.2f} / {e['tpf']:.2f} / {e['speedup']:.2f}×"
    _, rows = table(markdown, "Sweep: pld num_draft_tokens (embedded tiny family, T=0)")
    assert [r[0] for r in rows] == ["2", "10"]
    assert {r[6] for r in rows} == {"not verified"}


def test_sweep_figure_is_drawn_and_linked(swept):
    _, out = swept
    markdown = (out / "report.md").read_text()
    sweeps = markdown.split("## Sweeps", 1)[1].split("\n## ", 1)[0]
    assert "![τ, TPF and speedup against each swept option](figures/sweeps.png)" in sweeps
    assert (out / "figures" / "sweeps.png").stat().st_size > 10_000
    assert 'id="fig-sweeps"' in (out / "report.html").read_text()


def test_no_sweep_no_section(tmp_path):
    run = make_run(tmp_path / "run", methods=("ar", "orthrus", "eagle3"), items=4)
    out = write_report([str(run)], tmp_path / "out")
    assert "## Sweeps" not in (out / "report.md").read_text()
    assert not (out / "figures" / "sweeps.png").exists()


# ------------------------------------------------------------------------------------------------ the CLI


def test_expand_sweep_keeps_the_fixed_options_and_the_order_given():
    assert expand_sweep("eagle3:tree=chain:depth=2, 4,6") == (
        "eagle3",
        "depth",
        ["eagle3:tree=chain:depth=2", "eagle3:tree=chain:depth=4", "eagle3:tree=chain:depth=6"],
    )
    assert expand_sweep("orthrus:block_size=32,8")[2] == ["orthrus:block_size=32", "orthrus:block_size=8"]


def test_sweep_methods_adds_ar_unless_an_ar_baseline_is_listed():
    assert sweep_methods(None, ["orthrus:block_size=4,8", "pld:num_draft_tokens=2,5"], None, "float32") == [
        "ar",
        "orthrus:block_size=4",
        "orthrus:block_size=8",
        "pld:num_draft_tokens=2",
        "pld:num_draft_tokens=5",
    ]
    assert sweep_methods(["ar-hf", "eagle3"], ["dflash:block_size=4,8"], None, "float32") == [
        "ar-hf",
        "eagle3",
        "dflash:block_size=4",
        "dflash:block_size=8",
    ]


@pytest.mark.parametrize(
    "sweeps, methods, message",
    [
        (["orthrus:block_size=8"], None, "sweeps nothing: give one option a comma-separated list"),
        (["orthrus:block_size=8"], None, "; one value runs as --methods orthrus:block_size=8"),
        (["orthrus:block_size=4,8:cache=static,dynamic"], None, "a sweep varies one option; give one --sweep"),
        (["orthrus:blocksize=4,8"], None, "unknown option(s) blocksize; known options: block_size"),
        (["orthrus:block_size=4,eight"], None, "option block_size must be int, got 'eight'"),
        (["orthrus:block_size=4,8,4"], None, "block_size=4 is the same value as block_size=4; list each"),
        (["orthrus:block_size=4,"], None, "needs two or more values"),
        (["orthrus:block_size=4,8"], ["orthrus:block_size=8"], "already in the run (--methods"),
        (["pld:num_draft_tokens=2,5", "pld:num_draft_tokens=5,10"], None, "already in the run (--sweep"),
        (["nope:k=1,2"], None, "unknown method 'nope'"),
        # what the method itself refuses, from the model's config before any weight is loaded
        (["orthrus:block_size=1,4,8"], None, "block size must be >= 2, got 1); drop it: --sweep "
         "'orthrus:block_size=4,8'"),
        (["dflash:block_size=1,4"], None, "drop it: --methods dflash:block_size=4"),
        (["eagle3:tree=chain:depth=0,3"], None, "eagle3:tree=chain:depth=0: need top_k >= 1, depth >= 1"),
        (["pld:num_draft_tokens=0,-1"], None, "no value runs"),
    ],
)  # fmt: skip
def test_bad_sweeps_are_refused_naming_the_sweep(sweeps, methods, message):
    with pytest.raises(UsageError, match="--sweep") as refused:
        sweep_methods(methods, sweeps, None, "float32")
    assert message in str(refused.value)


def test_run_with_sweeps_runs_the_grid_in_one_directory(tmp_path, monkeypatch):
    ran = []

    def execute(spec, out, **kwargs):  # the runner itself is tested elsewhere: the spec is what matters
        ran.append((spec, out))
        raise KeyboardInterrupt

    monkeypatch.setattr("harness.run.runner.execute", execute)
    argv = ["run", "--suite", "tiny-math", "--limit", "1", "--out", str(tmp_path / "out")]
    assert main([*argv, "--sweep", "orthrus:block_size=4,16", "--sweep", "pld:num_draft_tokens=2,5"]) == 130
    (spec, out), = ran  # fmt: skip
    assert str(out) == str(tmp_path / "out")
    assert spec.methods == [
        "ar",
        "orthrus:block_size=4",
        "orthrus:block_size=16",
        "pld:num_draft_tokens=2",
        "pld:num_draft_tokens=5",
    ]


def test_a_bad_sweep_exits_2_before_anything_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("harness.run.runner.execute", lambda *a, **k: pytest.fail("the run started"))
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--sweep", "orthrus:block_size=1,4,8"]) == 2
    err = capsys.readouterr().err
    assert "orthrus-bench run: error: --sweep 'orthrus:block_size=1,4,8': block_size=1 refused" in err
    assert not out.exists()


def test_a_swept_run_is_verified_and_reported_per_value(tmp_path, capsys):
    """The whole path on the tiny family: the grid runs in one directory, every value is verified against ar,
    and the report's Sweeps section reads the values from the labels."""
    out = tmp_path / "run"
    argv = ["run", "--suite", "tiny-math", "--limit", "2", "--max-new-tokens", "12", "--warmup", "0"]
    assert main([*argv, "--sweep", "orthrus:block_size=3,6", "--out", str(out)]) == 0
    records = read_records(out)
    assert {r["method"] for r in records} == {"ar", "orthrus:block_size=3", "orthrus:block_size=6"}
    verdicts = json.loads((out / "verdicts.json").read_text())["verdicts"]
    assert {(v["method"], v["verdict"]) for v in verdicts} == {
        ("orthrus:block_size=3", "PASS"),
        ("orthrus:block_size=6", "PASS"),
    }
    markdown = (write_report([str(out)], tmp_path / "report") / "report.md").read_text()
    _, rows = table(markdown, "Sweep: orthrus block_size (embedded tiny family, T=0)")
    assert [(r[0], r[6]) for r in rows] == [("3", "PASS"), ("6", "PASS")]
    for row in rows:
        e = expected(records, row[1])
        assert row[3].startswith(f"{e['tau']:.2f}") and row[4].startswith(f"{e['tpf']:.2f}")
