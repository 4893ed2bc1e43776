"""The sampling and accuracy tests on constructed data: pooling, Holm, T1/T3 against known distributions, T4,
the minimal-detectable-TV claim, T2 on a real decoder, and the accuracy comparisons."""

import numpy as np
import pytest
import torch
from scipy import stats

from harness.methods.target import Target
from harness.verify.calibrate import decoder
from harness.verify.equivalence import (
    GTest,
    StatResult,
    acceptance_audit,
    combined_g_test,
    compare_accuracy,
    g_test,
    g_test_min_tv,
    holm,
    pit_test,
    pooled_cells,
    randomized_pit,
    surprisal_terms,
    surprisal_test,
    two_sample_tests,
)
from harness.verify.fp32_reference import Reference
from harness.verify.sampling_verdict import draw_fixed_context, fixed_context_tests
from orthrus_core.micro import micro_model
from orthrus_core.params import SamplingParams

ALPHA = 0.01


def test_cells_are_pooled_to_an_expected_count_of_five():
    obs, exp = pooled_cells(np.array([9, 9, 4, 1, 2]), np.array([10.0, 8.0, 3.0, 2.0, 1.0]))
    assert exp.tolist() == [10.0, 8.0, 6.0] and obs.tolist() == [9, 9, 7]
    # A pool still under 5 takes in the smallest kept cell; one cell left is nothing to test.
    obs, exp = pooled_cells(np.array([8, 7, 3, 1]), np.array([10.0, 6.0, 2.0, 1.0]))
    assert exp.tolist() == [10.0, 9.0] and obs.tolist() == [8, 11]
    assert pooled_cells(np.array([10, 3, 1]), np.array([10.0, 3.0, 1.0])) is None


def test_a_zero_probability_draw_fails_the_g_test():
    probs = np.array([0.5, 0.5, 0.0])
    test = g_test(np.array([40, 50, 1]), probs)
    assert test.impossible == 1
    assert combined_g_test("T2", [test], ALPHA).pvalue == 0.0


def test_holm_step_down():
    family = [StatResult(f"t{i}", p, 1) for i, p in enumerate([0.01, 0.04, 0.03, 0.005])]
    assert holm(family, 0.05)
    assert [r.adjusted_pvalue for r in family] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [r.reject for r in family] == [True, False, False, True]
    assert not holm([StatResult("a", 0.004, 1), StatResult("b", 0.5, 1), StatResult("c", 0.6, 1)], 0.01)


def contexts(n, vocab=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, vocab, generator=g) * 2.0, -1)


def draws(probs, temperature=1.0, seed=1):
    g = torch.Generator().manual_seed(seed)
    tilted = torch.softmax(probs.log() / temperature, -1)
    return torch.multinomial(tilted, 1, generator=g)[:, 0]


def test_t1_and_t3_accept_exact_draws_and_reject_a_temperature_change():
    p = contexts(4000)
    exact = draws(p)
    g = torch.Generator().manual_seed(2)
    assert min(t.pvalue for t in pit_test(randomized_pit(p, exact, g).numpy(), ALPHA)) > ALPHA
    assert surprisal_test(surprisal_terms(p, exact), ALPHA).pvalue > ALPHA
    flat = surprisal_test(surprisal_terms(p, draws(p, 1.2)), ALPHA)
    sharp = surprisal_test(surprisal_terms(p, draws(p, 0.8)), ALPHA)
    assert flat.pvalue < 1e-6 and flat.statistic > 0
    assert sharp.pvalue < 1e-6 and sharp.statistic < 0
    assert min(t.pvalue for t in pit_test(randomized_pit(p, draws(p, 1.2), g).numpy(), ALPHA)) < 1e-6


def test_t3_fails_outright_on_an_impossible_token():
    p = torch.tensor([[0.5, 0.5, 0.0]])
    assert surprisal_test(surprisal_terms(p, torch.tensor([2])), ALPHA).pvalue == 0.0


def test_t4_two_sample_tests():
    rng = np.random.default_rng(0)
    same = two_sample_tests(
        rng.normal(size=300), rng.normal(size=300), rng.poisson(50, 300), rng.poisson(50, 300), ALPHA
    )
    assert [t.name for t in same] == ["T4 log-prob KS", "T4 log-prob AD", "T4 length permutation"]
    assert min(t.pvalue for t in same) > ALPHA
    shifted = two_sample_tests(
        rng.normal(0.5, size=300), rng.normal(size=300), rng.poisson(60, 300), rng.poisson(50, 300), ALPHA
    )
    assert all(t.pvalue < ALPHA for t in shifted)


def test_degenerate_data_has_defined_outcomes():
    """Constant data, as a setting that leaves one token at every position gives: no test may crash. Equal
    constants are no evidence of a difference (p = 1); different constants are two distinct values and are
    tested as such; one token is tested by KS alone; all-degenerate positions give T3 z = 0, T5 p = 1, a
    one-cell G-test nothing to test."""
    zeros, eights = np.zeros(4), np.full(4, 8)
    same = two_sample_tests(zeros, zeros, eights, eights, ALPHA)
    assert [(t.name, t.pvalue, t.statistic) for t in same] == [
        ("T4 log-prob KS", 1.0, 0.0),
        ("T4 log-prob AD", 1.0, 0.0),
        ("T4 length permutation", 1.0, 0.0),
    ]
    assert "every sequence has log-probability 0: no evidence of a difference" in same[0].detail
    assert "log-probability 0:" in two_sample_tests(-zeros, -zeros, eights, eights, ALPHA)[1].detail  # not -0
    apart = two_sample_tests(zeros, np.full(4, -3.0), eights, np.full(4, 5), ALPHA)
    assert all(0 < t.pvalue < 0.1 and np.isfinite(t.statistic) for t in apart), apart
    assert not holm(same, ALPHA)
    (one,) = pit_test(np.array([0.3]), ALPHA)
    assert one.name == "T1 PIT KS" and 0 < one.pvalue <= 1
    assert pit_test(np.array([]), ALPHA) == []
    certain = torch.tensor([[0.0, 1.0, 0.0]] * 5)
    t3 = surprisal_test(surprisal_terms(certain, torch.ones(5, dtype=torch.long)), ALPHA)
    assert (t3.pvalue, t3.statistic) == (1.0, 0.0)
    audit = acceptance_audit(np.ones(6), np.ones(6), np.ones(6), ALPHA)  # q = p = 1: every draft accepted
    assert audit.pvalue == 1.0 and audit.n == 6
    assert g_test(np.array([0, 30, 0]), np.array([0.0, 1.0, 0.0])) is None
    assert combined_g_test("T2", [None, None], ALPHA) is None


def test_g_test_detects_the_tv_it_claims():
    """A deviation at 1.2 x the stated minimal detectable TV is caught in at least 80% of simulations."""
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(8))
    n = 1000
    probe = g_test(np.round(n * p).astype(int), p)
    tv = 1.2 * g_test_min_tv(n, probe.df, ALPHA)
    # Move mass tv from the smaller half of the cells to the larger half: TV(p, q) = tv exactly.
    order = np.argsort(p)
    q = p.copy()
    low, high = order[: len(p) // 2], order[len(p) // 2 :]
    q[low] -= tv * p[low] / p[low].sum()
    q[high] += tv * p[high] / p[high].sum()
    assert 0.5 * np.abs(q - p).sum() == pytest.approx(tv)
    rejections = sum(
        combined_g_test("T2", [g_test(rng.multinomial(n, q), p)], ALPHA).pvalue < ALPHA for _ in range(200)
    )
    assert rejections >= 160
    null = sum(
        combined_g_test("T2", [g_test(rng.multinomial(n, p), p)], ALPHA).pvalue < ALPHA for _ in range(200)
    )
    assert null <= 8


def test_t2_on_a_decoder():
    model = micro_model()
    reference = Reference(model)
    params = SamplingParams(1.0)
    prompt = [5, 6, 7, 8]

    def t2(generate):
        sequences = draw_fixed_context(
            generate, prompt, params, samples=600, depth=2, stop_token_ids=[], seed=0
        )
        return fixed_context_tests(sequences, reference, prompt, params, depth=2, alpha=ALPHA)

    target = Target.of(model, "micro")
    exact = t2(decoder(target, 4))
    assert [t.name for t in exact] == ["T2 G-test position 0", "T2 G-test position 1"]
    assert all(t.pvalue > ALPHA and t.n > 0 for t in exact)
    hot = t2(decoder(target, 4, temperature_scale=1.5))
    assert hot[0].pvalue < 1e-6


def test_combined_g_test_sums_statistics():
    tests = [GTest(10.0, 4, 100), GTest(5.0, 3, 50), None]
    combined = combined_g_test("T2", tests, ALPHA)
    assert combined.statistic == 15.0 and combined.n == 150
    assert combined.pvalue == pytest.approx(stats.chi2.sf(15.0, 7))


def test_accuracy_greedy_mcnemar():
    same = {f"i{k}": [k % 2 == 0] for k in range(10)}
    result = compare_accuracy(same, dict(same), greedy=True, lossy=False, margin=0.02, alpha=ALPHA)
    assert result.test == "exact McNemar" and result.discordant == (0, 0) and result.pvalue == 1.0
    assert result.difference == 0.0 and result.conclusion == "same per-item correctness"
    worse = {k: [False] for k in same}
    result = compare_accuracy(same, worse, greedy=True, lossy=False, margin=0.02, alpha=ALPHA)
    assert result.discordant == (5, 0) and result.pvalue == pytest.approx(0.0625)


def test_accuracy_tost_and_non_inferiority():
    rng = np.random.default_rng(0)
    items = [f"i{k}" for k in range(200)]
    reference = {i: list(rng.random(8) < 0.6) for i in items}
    equivalent = compare_accuracy(
        reference, dict(reference), greedy=False, lossy=False, margin=0.02, alpha=ALPHA
    )
    assert equivalent.conclusion.startswith("equivalent") and equivalent.tost_ci90 == (0.0, 0.0)
    worse = {i: [c and rng.random() < 0.6 for c in v] for i, v in reference.items()}
    lossy = compare_accuracy(reference, worse, greedy=True, lossy=True, margin=0.02, alpha=ALPHA)
    assert lossy.test == "paired bootstrap" and lossy.difference < -0.15
    assert lossy.conclusion == "not shown non-inferior at margin 2 points"
    assert lossy.ci95[1] < 0
    different = compare_accuracy(reference, worse, greedy=False, lossy=False, margin=0.02, alpha=ALPHA)
    assert different.conclusion.startswith("accuracy differs")
