"""`orthrus-bench compare`: an A/A pair passes; each planted regression is flagged, by the right rule."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from synthetic_runs import make_run

from harness.cli import main
from harness.report.compare import REGRESSION, compare_runs, min_mannwhitney_p
from harness.report.runs import load_runs

METHODS = ("ar", "orthrus", "eagle3")


def verdicts(base, new, **kwargs) -> dict[tuple[str, str], str]:
    rows = compare_runs(*load_runs([base, new]), **kwargs)
    return {(r.method, r.metric): r.verdict for r in rows}


def run_cli(base, new, *options) -> int:
    return main(["compare", str(base), str(new), *map(str, options)])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("base") / "run", methods=METHODS, seed=1)


def test_a_a_pair_passes(base, tmp_path):
    again = make_run(tmp_path / "again", methods=METHODS, seed=2)  # same outputs, fresh timing noise
    assert REGRESSION not in verdicts(base, again).values()
    assert run_cli(base, again, "--out", tmp_path / "summary.md") == 0
    assert "✅ no regression" in (tmp_path / "summary.md").read_text()


def test_throughput_regression_is_flagged(base, tmp_path):
    slower = make_run(tmp_path / "slower", methods=METHODS, seed=3, slowdown={"orthrus": 1.15})
    v = verdicts(base, slower)
    assert v[("orthrus", "tokens/s")] == REGRESSION
    assert v[("orthrus", "TPOT")] == REGRESSION
    assert v[("ar", "tokens/s")] != REGRESSION and v[("orthrus", "τ (greedy)")] != REGRESSION
    assert run_cli(base, slower) == 1
    assert run_cli(base, slower, "--no-timing-gate") == 0  # a baseline from another machine


def test_slowdown_below_threshold_passes(base, tmp_path):
    # 3% slower is significant with this little noise but under asv's relative threshold of 5%.
    slightly = make_run(tmp_path / "slightly", methods=METHODS, seed=4, slowdown={"orthrus": 1.03})
    assert verdicts(base, slightly)[("orthrus", "tokens/s")] != REGRESSION
    assert verdicts(base, slightly, threshold=0.01)[("orthrus", "tokens/s")] == REGRESSION


def test_one_changed_token_and_one_lost_draft_fail_with_zero_tolerance(base, tmp_path):
    planted = make_run(
        tmp_path / "planted",
        methods=METHODS,
        seed=5,
        changed_outputs={"eagle3": 1},
        accepted_drop={"orthrus": 1},
    )
    v = verdicts(base, planted, gate_timing=False)
    assert v[("eagle3", "greedy token identity")] == REGRESSION
    assert v[("orthrus", "τ (greedy)")] == REGRESSION
    assert v[("orthrus", "greedy token identity")] != REGRESSION


def test_missing_method_is_a_regression(base, tmp_path):
    fewer = make_run(tmp_path / "fewer", methods=("ar", "orthrus"), seed=6)
    assert verdicts(base, fewer)[("eagle3", "coverage")] == REGRESSION


def test_too_few_prompts_are_undecidable_not_passed(tmp_path):
    small_base = make_run(tmp_path / "a", methods=("ar",), suites=("tiny-math",), items=3, seed=1)
    small_new = make_run(
        tmp_path / "b", methods=("ar",), suites=("tiny-math",), items=3, seed=2, slowdown={"ar": 2}
    )
    assert verdicts(small_base, small_new)[("ar", "tokens/s")] == "undecidable"
    assert min_mannwhitney_p(6, 6) > 0.002 > min_mannwhitney_p(7, 7)


# ------------------------------------------------------------------ what the two runs' run.json say, first

# Four units (2 items x 2 methods), a few tokens each, as tests/test_faults.py runs them.
RUN_ARGS = ["--suite", "tiny-math", "--methods", "ar,pld", "--limit", "2", "--warmup", "0"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """The command line in-process -> (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> dict[str, Path]:
    """Runs of the tiny family that differ in one setting each from `base` (`again`: none)."""
    root = tmp_path_factory.mktemp("configs")
    variants = {
        "base": ["--max-new-tokens", "8"],
        "again": ["--max-new-tokens", "8"],
        "int4": ["--max-new-tokens", "8", "--quantize", "int4-group"],
        "longer": ["--max-new-tokens", "12"],
        "batched": ["--max-new-tokens", "8", "--engine", "eager", "--batch-size", "2"],
    }
    for name, extra in variants.items():
        assert main(["run", *RUN_ARGS, *extra, "--no-verify", "--out", str(root / name)]) == 0, name
    return {name: root / name for name in variants}


def test_a_quantized_run_is_refused_then_compared_saying_so(real_runs, capsys, tmp_path):
    base, int4 = real_runs["base"], real_runs["int4"]
    code, out, err = cli(capsys, "compare", base, int4, "--out", tmp_path / "summary.md")
    assert code == 2 and out == ""
    assert err.startswith(f"orthrus-bench compare: error: BASE {base} and NEW {int4} were generated with")
    assert "(quantization: --quantize none (full precision) → int4-group)" in err.splitlines()[0]
    assert "--allow-config-change" in err.splitlines()[0] and "Traceback" not in err
    assert "refused, the configurations differ" in (tmp_path / "summary.md").read_text()  # the job summary

    code, out, _ = cli(capsys, "compare", base, int4, "--allow-config-change")
    assert code != 2
    lines = out.splitlines()
    assert "the configurations differ (quantization)" in lines[0]
    assert lines[2].startswith("**The configurations differ**, compared anyway (--allow-config-change)")
    assert lines[3] == "- quantization: --quantize none (full precision) → int4-group (changes tokens)"


def test_another_max_new_tokens_is_refused_then_compared_saying_so(real_runs, capsys):
    base, longer = real_runs["base"], real_runs["longer"]
    code, out, err = cli(capsys, "compare", base, longer)
    assert code == 2 and out == ""
    assert "(lengths: --max-new-tokens 8 → 12, tiny-math max_new_tokens 8 → 12)" in err.splitlines()[0]

    code, out, _ = cli(capsys, "compare", base, longer, "--allow-config-change")
    assert code == 1  # the longer outputs differ: a regression, now between runs that say why
    lines = out.splitlines()
    assert (
        lines[0].startswith("### orthrus-bench compare: ❌") and "configurations differ (lengths)" in lines[0]
    )
    assert "- lengths: --max-new-tokens 8 → 12; tiny-math max_new_tokens 8 → 12 (changes tokens)" in lines[:5]


def test_an_engine_and_batch_size_difference_is_listed_not_refused(real_runs, capsys):
    code, out, err = cli(capsys, "compare", real_runs["base"], real_runs["batched"])
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert (
        lines[0]
        == "### orthrus-bench compare: ✅ no regression; the configurations differ (engine, batch size)"
    )
    assert lines[2] == "**The configurations differ** in how the runs ran, not in what they generate:"
    assert lines[3] == "- engine: --engine auto → eager"  # resolved: eager on a CPU either way
    assert lines[4] == "- batch size: --batch-size none (one prompt at a time) → 2"


def test_a_rerun_has_the_same_configuration(real_runs, capsys):
    code, out, err = cli(capsys, "compare", real_runs["base"], real_runs["again"])
    assert code == 0 and err == ""
    assert out.splitlines()[:3] == [
        "### orthrus-bench compare: ✅ no regression",
        "",
        "The two runs' configurations are the same.",
    ]


@pytest.mark.parametrize(
    "info, group, why",
    [
        ({"hardware": {"cpu": "another CPU", "gpus": []}}, "machine", "the processor differs"),
        ({"versions": {"torch": "2.14.0", "transformers": "5.24.0"}}, "software", "torch differs"),
        ({"engine": "compile"}, "engine", "the engine differs"),
    ],
)
def test_timing_is_not_gated_across_machines_or_software(base, tmp_path, capsys, info, group, why):
    slower = make_run(tmp_path / "slower", methods=METHODS, seed=3, slowdown={"orthrus": 1.15}, info=info)
    code, out, _ = cli(capsys, "compare", base, slower)
    assert code == 0  # gated, the same slowdown fails: test_throughput_regression_is_flagged
    first = out.splitlines()[0]
    assert first == (
        f"### orthrus-bench compare: ✅ no regression; the configurations differ ({group}); timing not gated ({why})"
    )
    assert "**Timing and memory are not gated**: BASE and NEW ran on different machines or software" in out
    rows = {(r.method, r.metric): r for r in table(out)}
    assert rows[("orthrus", "tokens/s")].verdict.startswith("info (worse: p < 0.002")
    assert rows[("orthrus", "tokens/s")].verdict.endswith(f"not gated: {why})")
    assert rows[("orthrus", "τ (greedy)")].verdict == "ok"  # the deterministic rows are gated as ever


def test_timing_is_not_gated_without_a_run_json(base, tmp_path, capsys):
    bare = make_run(tmp_path / "bare", methods=METHODS, seed=3, slowdown={"orthrus": 1.15})
    (bare / "run.json").unlink()
    code, out, _ = cli(capsys, "compare", base, bare)
    lines = out.splitlines()
    assert code == 0
    assert lines[0] == (
        "### orthrus-bench compare: ✅ no regression; configuration of NEW unknown (no run.json); "
        "timing not gated (no run.json in NEW)"
    )
    assert lines[2].startswith("NEW has no run.json: the configurations cannot be compared")


def test_checkpoints_compare_by_their_weights_not_their_paths(base, tmp_path, capsys):
    def drafter_run(name, clone, weights):
        draft = f"{clone}/models/tiny/eagle3"
        eagle3 = {
            "name": "eagle3",
            "lossless": True,
            "config": {"draft": draft},
            "checkpoints": {"draft": draft},
        }
        info = {
            "methods": {m: {"name": m, "lossless": True, "config": {}} for m in METHODS} | {"eagle3": eagle3},
            "models": [{"role": "eagle3:draft", "path": draft, "weights": {"model.safetensors": weights}}],
        }
        return make_run(tmp_path / name, methods=METHODS, seed=2, info=info)

    here = drafter_run("here", "/home/a/orthrus-bench", "ab" * 32)
    elsewhere = drafter_run("elsewhere", "/srv/ci/orthrus-bench", "ab" * 32)
    retrained = drafter_run("retrained", "/home/a/orthrus-bench", "cd" * 32)
    code, out, _ = cli(capsys, "compare", here, elsewhere)
    assert code == 0 and out.splitlines()[2] == "The two runs' configurations are the same."
    code, _, err = cli(capsys, "compare", here, retrained)
    assert code == 2
    assert "(model: eagle3:draft weights sha256 abababababab → sha256 cdcdcdcdcdcd" in err.splitlines()[0]


def test_every_figure_in_the_table_has_its_unit(tmp_path, capsys):
    # A GPU run has every timing row (memory and energy too); one changed output and a lost draft give the
    # deterministic rows a change.
    gpu_base = make_run(tmp_path / "base", methods=METHODS, seed=1, gpu=True)
    gpu_new = make_run(
        tmp_path / "new",
        methods=METHODS,
        seed=2,
        gpu=True,
        changed_outputs={"eagle3": 1},
        accepted_drop={"orthrus": 1},
    )
    code, out, _ = cli(capsys, "compare", gpu_base, gpu_new)
    assert code == 1
    rows = table(out)
    units = {"tokens/s": "tok/s", "TTFT": "ms", "TPOT": "ms", "peak memory": "MiB", "energy/token": "mJ"}
    units |= {"τ (greedy)": "tokens/cycle", "TPF (greedy)": "tokens/forward", "accuracy": "%"}
    assert set(units) <= {r.metric for r in rows}
    number = re.compile(r"^[+-]?\d+(\.\d+)?(e[+-]?\d+)?$")
    for r in rows:
        for cell in (r.base, r.new, r.change, r.ci, r.n):
            assert not number.match(cell), (r, cell)  # a figure alone: no unit
        if r.metric in units:
            assert r.base.endswith(units[r.metric]) and r.new.endswith(units[r.metric]), r
        assert r.n.endswith(" work units" if r.metric == "tokens/s" else " prompts"), r
    assert ("eagle3", "greedy token identity") in {(r.method, r.metric) for r in rows}


def table(markdown: str) -> list:
    """The rows of compare's markdown table, cells by column name."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["method", "metric", "base", "new", "change", "95% CI", "p", "n", "verdict"]
    fields = ["method", "metric", "base", "new", "change", "ci", "p", "n", "verdict"]
    return [
        SimpleNamespace(**dict(zip(fields, (c.strip() for c in line.strip("|").split("|")), strict=True)))
        for line in lines[1:]
    ]
