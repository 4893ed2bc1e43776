"""Greedy verdicts on constructed cases: identity, near-tie and algorithmic flips, EOS and length limits,
re-synchronisation, the verdict rules, the noise model of a benign flip's margin, and the benign AR-vs-AR
study on a real (random) model."""

import numpy as np
import pytest
import torch
from conftest import random_model, random_prompts
from scipy import stats

from harness.verify.forensics import (
    ALGORITHMIC,
    NEAR_TIE,
    BenignStudy,
    NoiseModel,
    benign_study,
    compare_pair,
    first_divergence,
    label,
    teacher_forced_logits,
    token_location,
)
from harness.verify.greedy import verify_greedy
from orthrus_core.engine import Engine
from orthrus_core.loop import generate

V = 16
PROMPT = [1, 2]


def table_logits(ar_tokens, overrides=None):
    """Reference logits along an AR path: the AR token at 5.0, every other token at 0.0, except `overrides`
    {(position, token): logit}."""
    overrides = overrides or {}

    def logits(prompt_ids, tokens):
        rows = torch.zeros(len(tokens), V)
        for i, t in enumerate(ar_tokens[: len(tokens)]):
            rows[i, t] = 5.0
        for (i, t), value in overrides.items():
            if i < len(tokens):
                rows[i, t] = value
        return rows

    return logits


def record(tokens, stop="length", accepted=(), prompt=PROMPT, item="i0"):
    return {
        "suite": "s",
        "item_id": item,
        "sample": 0,
        "turn": 0,
        "prompt_ids": list(prompt),
        "output_ids": list(tokens),
        "stop_reason": stop,
        "accepted": list(accepted),
    }


class StubReference:
    def __init__(self, logits):
        self.logits = logits


def normal_noise(sd=0.01, corr=0.5, mean=(0.0, 0.0), positions=1000):
    """The noise model of two sides whose margin errors are normal with this sd and correlation."""
    moments = [[m, sd**2 + m**2, m**3 + 3 * m * sd**2, m**4 + 6 * m**2 * sd**2 + 3 * sd**4] for m in mean]
    return NoiseModel("verify width 8", positions, moments, corr * sd**2 + mean[0] * mean[1])


def benign(flips=1, positions=1000, sd=0.01):
    """A study whose flips are rare and whose noise keeps a benign flip's margin within a few sd."""
    return BenignStudy("bfloat16", ["verify width 8"], positions, flips, [sd] * flips, [normal_noise(sd)])


AR = [5, 6, 7, 8, 9, 10, 11, 12]


def test_first_divergence_and_token_location():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 4, 3]) == 1
    assert first_divergence([1, 2, 3], [1, 2]) == 2
    # Cycles accepting 2, 0 and 3 drafts: token 0 from the prefill, then drafts and the verifier's own token.
    where = [token_location(i, [2, 0, 3]) for i in range(9)]
    assert where == [
        "prefill",
        "block offset 1",
        "block offset 2",
        "block boundary",
        "block boundary",
        "block offset 1",
        "block offset 2",
        "block offset 3",
        "block boundary",
    ]
    assert token_location(3, []) == "step"


def test_identical_streams_pass_in_float32():
    pair = compare_pair(PROMPT, record(AR), record(AR, accepted=[3, 3]), table_logits(AR))
    assert pair.identical and pair.first_divergence is None and pair.events == []
    assert pair.positions == len(AR)
    verdict = verify_greedy(
        [record(AR)],
        {("s", "i0", 0, 0): record(AR)},
        StubReference(table_logits(AR)),
        benign(),
        dtype="float32",
        alpha=0.01,
    )
    assert verdict["verdict"] == "PASS" and verdict["identical"] == 1
    # Rule of three: nothing algorithmic in one prompt bounds the rate by 0.95 only.
    assert verdict["algorithmic_rate_upper95"] == pytest.approx(0.95)


def test_near_tie_flip_is_classified_and_located():
    method = AR[:3] + [13] + AR[4:]
    logits = table_logits(AR, {(3, 13): 4.99})  # the method's token trails AR's by 0.01
    pair = compare_pair(PROMPT, record(AR), record(method, accepted=[1, 2, 3]), logits)
    label(pair.events, 0.05)
    (event,) = pair.events
    assert (event.index, event.kind, event.location) == (3, NEAR_TIE, "block offset 1")
    assert event.gap == pytest.approx(0.01, abs=1e-5) and event.margin == pytest.approx(0.01, abs=1e-5)
    assert event.method_rank == 2 and event.ar_token == 8 and event.method_token == 13
    assert pair.positions == 4  # no re-sync: observed up to and including the divergence


def test_algorithmic_flip():
    method = AR[:5] + [14] + AR[6:]
    logits = table_logits(AR, {(5, 14): 1.0})
    (event,) = compare_pair(PROMPT, record(AR), record(method, accepted=[1, 3]), logits).events
    label([event], 0.05)
    assert event.kind == ALGORITHMIC and event.location == "block offset 3"
    assert event.margin == pytest.approx(4.0) and event.method_rank == 2


@pytest.mark.parametrize(
    "ar, method, location, kind",
    [
        # The method emits EOS (3) where AR goes on, a near-tie in the reference logits.
        ((AR, "length"), (AR[:2] + [3], "stop"), "EOS", NEAR_TIE),
        # AR stopped on EOS; the method emitted the same EOS but did not stop.
        ((AR[:4] + [3], "stop"), (AR[:4] + [3, 9, 9], "length"), "EOS", ALGORITHMIC),
        # The method stopped at a length limit AR did not have.
        ((AR, "length"), (AR[:5], "length"), "length limit", ALGORITHMIC),
        # The method went past AR's length limit.
        ((AR[:5], "length"), (AR, "length"), "length limit", ALGORITHMIC),
    ],
)
def test_eos_and_length_limit_edge_cases(ar, method, location, kind):
    logits = table_logits(ar[0], {(2, 3): 4.98})
    (event,) = compare_pair(PROMPT, record(*ar), record(*method), logits).events
    label([event], 0.05)
    assert (event.location, event.kind) == (location, kind)


def test_resync_counts_independent_events():
    """After each divergence the method continues from the AR prefix: two separate flips are two events."""
    method = AR[:2] + [13] + [14] * 5  # after the first flip the stream is the method's own
    logits = table_logits(AR, {(2, 13): 4.99, (6, 15): 4.99})
    calls = []

    def continue_fn(prompt, max_new):
        calls.append((prompt, max_new))
        done = len(prompt) - len(PROMPT)
        tokens = [15 if done + i == 6 else AR[done + i] for i in range(max_new)]
        return tokens, "length", []

    pair = compare_pair(
        PROMPT, record(AR), record(method), logits, continue_fn=continue_fn, max_new_tokens=len(AR)
    )
    label(pair.events, 0.05)
    assert [e.index for e in pair.events] == [2, 6]
    assert all(e.kind == NEAR_TIE for e in pair.events)
    assert pair.resynced and pair.positions == len(AR)
    assert calls[0] == (PROMPT + AR[:3], len(AR) - 3)


def greedy_case(n_prompts, flips, margin, dtype, benign_study):
    """n_prompts prompts, the first `flips` of them with one flip at position 3 by `margin`."""
    methods, refs = [], {}
    overrides = {(3, 13): 5.0 - margin}
    for k in range(n_prompts):
        item = f"i{k}"
        refs[("s", item, 0, 0)] = record(AR, item=item)
        methods.append(record(AR[:3] + [13] + AR[4:] if k < flips else AR, item=item))
    ref = StubReference(table_logits(AR, overrides))
    return verify_greedy(methods, refs, ref, benign_study, dtype=dtype, alpha=0.01)


def test_verdict_rules():
    # float32: one near-tie is already a FAIL; nothing is allowed but identity.
    assert greedy_case(20, 1, 0.01, "float32", benign())["verdict"] == "FAIL"
    # bf16: a near-tie at the AR-vs-AR rate passes ...
    ok = greedy_case(20, 1, 0.01, "bfloat16", benign(flips=10, positions=1000))
    assert ok["verdict"] == "PASS" and ok["near_tie_events"] == 1 and ok["algorithmic_events"] == 0
    # ... an algorithmic divergence does not ...
    bad = greedy_case(20, 1, 1.0, "bfloat16", benign(flips=10, positions=1000))
    assert bad["verdict"] == "FAIL" and bad["algorithmic_prompts"] == 1
    # ... nor do near-ties far more frequent than AR against itself (one-sided Fisher exact).
    frequent = greedy_case(20, 10, 0.01, "bfloat16", benign(flips=1, positions=10_000))
    assert frequent["verdict"] == "FAIL" and frequent["fisher_vs_ar_ar_pvalue"] < 1e-6


def test_margins_each_plausible_but_together_too_large_fail():
    """A bias that flips tokens only where they were already close: no single margin is past the near-tie
    threshold, but together they sit far out in the benign law (Fisher's method), at a benign rate."""
    study = benign(flips=300, positions=1000)  # short paths that diverge at token 3: rates alike
    margin = study.threshold(0.05)  # each flip as large as 1 benign flip in 20
    verdict = greedy_case(12, 12, margin, "bfloat16", study)
    assert verdict["algorithmic_events"] == 0 and verdict["fisher_vs_ar_ar_pvalue"] > 0.01
    assert verdict["margins_combined_pvalue"] < 0.01 / 3 and verdict["verdict"] == "FAIL"
    # The same margins a few at a time are what benign numerics give ...
    assert greedy_case(12, 2, margin, "bfloat16", study)["verdict"] == "PASS"
    # ... and so are flips where the method's token is the better one in float32 (one-sided: a bug in the
    # method leaves its tokens below AR's).
    better = greedy_case(12, 12, -margin, "bfloat16", study)
    assert better["margins_combined_pvalue"] > 0.5 and better["verdict"] == "PASS"


def test_the_near_tie_threshold_tightens_with_the_level_and_widens_with_the_noise():
    quiet, loud = benign(sd=0.01), benign(sd=0.04)
    assert 0 < quiet.threshold(0.01) < quiet.threshold(0.001) < quiet.threshold(1e-4)
    assert loud.threshold(0.001) == pytest.approx(4 * quiet.threshold(0.001), rel=0.05)  # the law scales
    # A margin of 0.1 is far out for noise of sd 0.01, plausible for sd 0.04.
    assert quiet.p_value(0.1) < 1e-6 and loud.p_value(0.1) > 1e-3


@pytest.mark.parametrize("sd, corr, mean", [(0.03, 0.6, (0.0, 0.0)), (0.03, 0.3, (0.0, 0.02))])
def test_the_flip_law_is_what_a_simulation_of_two_noisy_sides_gives(sd, corr, mean):
    """The generative story the noise model integrates: the pair's float32 margin m has a flat density near
    0, AR computes m + e_ar and the method m + e_method with correlated errors, a flip is where the signs
    differ, and the event's margin is AR's token minus the method's. The simulated flips follow
    NoiseModel.tail (|margin|) and upper_tail (signed), so benign flips' p-values are uniform; a method whose
    errors are biased (mean 0.02) leaves AR's token on top in most flips, and the signed law knows it."""
    model = normal_noise(sd, corr, mean)
    rng = np.random.default_rng(1)
    m = rng.uniform(-0.5, 0.5, 2_000_000)
    e = rng.multivariate_normal(mean, [[sd**2, corr * sd**2], [corr * sd**2, sd**2]], len(m))
    ar_picks_a = m + e[:, 0] > 0
    flips = ar_picks_a != (m + e[:, 1] > 0)
    margins = np.where(ar_picks_a, m, -m)[flips]
    assert len(margins) > 5000
    for t in (0.005, 0.02, 0.04):
        assert model.tail(t) == pytest.approx((np.abs(margins) >= t).mean(), abs=0.01)
    for t in (-0.03, -0.01, 0.0, 0.01, 0.03):
        assert model.upper_tail(t) == pytest.approx((margins >= t).mean(), abs=0.01)
    assert stats.kstest([model.tail(x) for x in margins[:400]], "uniform").pvalue > 0.01
    assert stats.kstest([model.upper_tail(x) for x in margins[:400]], "uniform").pvalue > 0.01


def test_noise_models_pool_and_fit_heavy_tails():
    rng = np.random.default_rng(2)
    errors = rng.standard_t(6, (4000, 2)) * 0.02
    whole = NoiseModel.fit("w", errors)
    halves = NoiseModel.pooled([NoiseModel.fit("w", errors[:1000]), NoiseModel.fit("w", errors[1000:])])
    assert halves.positions == 4000
    np.testing.assert_allclose(halves.moments, whole.moments, rtol=1e-9)
    np.testing.assert_allclose(whole.cov, np.cov(errors.T, bias=True), rtol=1e-9)
    assert 4 < whole.dof < 20  # a t(6) sample's kurtosis: heavier tails than a normal's
    assert NoiseModel.fit("n", rng.normal(0, 0.02, (4000, 2))).dof > whole.dof
    # Heavy tails put more of a benign flip's law far out.
    normal = normal_noise(0.02 * np.sqrt(6 / 4), 0.0)  # the same variance as t(6) * 0.02
    assert whole.tail(0.15) > normal.tail(0.15)


def test_algorithmic_upper_bound_is_the_exact_binomial():
    v = greedy_case(100, 0, 0.0, "float32", benign())
    assert v["identical"] == 100
    assert v["algorithmic_rate_upper95"] == pytest.approx(1 - 0.05 ** (1 / 100))  # ~ 3/n


def test_benign_study_on_a_model():
    """Every perturbation is compared at every position and fits its noise model there; float32 rounding on
    a random model makes the near-tie threshold tiny."""
    model = random_model()
    paths = []
    for prompt in random_prompts(2, seed=3):
        paths.append((prompt, generate(Engine(model), None, prompt, 12, stop_token_ids=[]).tokens))
    study = benign_study(model, teacher_forced_logits(model), paths, verify_width=4, batch=3)
    assert study.positions == 3 * 24
    assert study.flips == len(study.flip_margins) <= 2  # float32 flips need a near-exact tie
    assert [m.positions for m in study.noise] == [24, 24, 24]
    assert 0 < study.threshold(0.01) < 1e-4
    bf16 = benign_study(
        model.to(torch.bfloat16), teacher_forced_logits(random_model()), paths, verify_width=4
    )
    assert bf16.threshold(0.01) > 100 * study.threshold(0.01)  # bf16 rounds 2^16 times coarser


def test_a_later_turn_after_a_divergence_is_not_compared_again():
    """Turn 1's prompt holds each decoder's own turn-0 answer: after a divergence it is not comparable."""
    ar_turn1 = {**record(AR, prompt=PROMPT + AR), "turn": 1}
    method_turn1 = {**record(AR, prompt=PROMPT + AR[:3] + [13]), "turn": 1}
    refs = {("s", "i0", 0, 0): record(AR), ("s", "i0", 0, 1): ar_turn1}
    methods = [record(AR[:3] + [13] + AR[4:]), method_turn1]
    verdict = verify_greedy(
        methods,
        refs,
        StubReference(table_logits(AR, {(3, 13): 4.99})),
        benign(flips=10, positions=100),
        dtype="bfloat16",
        alpha=0.01,
    )
    assert verdict["prompts"] == 1 and verdict["not_comparable"] == 1
    assert verdict["near_tie_events"] == 1 and verdict["verdict"] == "PASS"
