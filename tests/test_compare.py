"""`orthrus-bench compare`: an A/A pair passes; each planted regression is flagged, by the right rule."""

from __future__ import annotations

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
