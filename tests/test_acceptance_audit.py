"""T5, the acceptance audit: the Poisson-binomial law it uses, its size on events from the real consensus rule,
its power against planted rule bugs, its rounding tolerance, the decoder's acceptance trace it reads (aligned
with the tokens and equal to a recomputation of the diffusion view's q), and its place in the verdict."""

import itertools

import numpy as np
import pytest
import torch
from scipy import stats

from harness.methods import make_decoder
from harness.methods.target import Target
from harness.verify.calibrate import decoder, mutants
from harness.verify.equivalence import AUDIT_TOLERANCE, acceptance_audit, poisson_binomial_pmf
from harness.verify.fp32_reference import Reference
from harness.verify.sampling_verdict import sampling_family
from orthrus_core.engine import Engine
from orthrus_core.loop import generate
from orthrus_core.micro import micro_model
from orthrus_core.orthrus import OrthrusDrafter
from orthrus_core.params import SamplingParams
from orthrus_core.prompt_lookup import PromptLookupDrafter
from orthrus_core.sampling import EXACT, AcceptanceRule, probs, sample

ALPHA = 0.01


def test_poisson_binomial_pmf_is_the_law_of_the_sum():
    pi = np.array([0.1, 0.5, 0.9, 0.3, 0.7, 0.05, 0.95])
    brute = np.zeros(len(pi) + 1)
    for outcome in itertools.product([0, 1], repeat=len(pi)):
        brute[sum(outcome)] += np.prod(np.where(outcome, pi, 1 - pi))
    np.testing.assert_allclose(poisson_binomial_pmf(pi), brute, atol=1e-15)
    # Long inputs go through the FFT: still the binomial when the probabilities are equal.
    np.testing.assert_allclose(
        poisson_binomial_pmf(np.full(3000, 0.2)), stats.binom.pmf(np.arange(3001), 3000, 0.2), atol=1e-12
    )
    assert poisson_binomial_pmf(np.array([])).tolist() == [1.0]


def single_draft_events(positions: int, seed: int, *, vocab: int = 6, sharpen: float = 1.0, rule=EXACT):
    """(accepted, q(x), p(x)) of one-draft speculative steps by `rule` (the exact one unless a bug is planted)
    on random p and q over a small vocabulary; `sharpen` > 1 makes q overconfident."""
    g = torch.Generator().manual_seed(seed)
    events = []
    for _ in range(positions):
        logits = torch.randn(vocab, generator=g) * 1.5
        p = torch.softmax(logits, -1)
        q = torch.softmax(sharpen * (logits + torch.randn(vocab, generator=g) * 0.7), -1)
        draft = sample(q, g)
        n, token = rule.chain(draft[None], q[None], torch.stack([p, p]), g)
        x = int(draft) if int(n) else int(token)
        events.append((int(n), float(q[x]), float(p[x])))
    return np.array(events)


def audit(events):
    return acceptance_audit(events[:, 0], events[:, 1], events[:, 2], ALPHA)


def test_the_real_rule_passes_the_audit_at_its_level():
    pvalues = np.array([audit(single_draft_events(200, seed)).pvalue for seed in range(100)])
    # Discrete, so conservative: the rejection count at 0.05 stays within the binomial's 99.9% range.
    assert (pvalues < 0.05).sum() <= stats.binom.ppf(0.999, 100, 0.05)
    assert 0.3 < np.median(pvalues) < 0.8


def test_a_residual_drawn_from_p_is_impossible_events():
    result = audit(single_draft_events(300, seed=1, rule=AcceptanceRule(residual=lambda p, q: p)))
    assert result.pvalue == 0.0 and "impossible events" in result.detail


def test_an_inflated_acceptance_ratio_accepts_too_often():
    inflated = AcceptanceRule(ratio_scale=1.1)  # min(1, 1.1 p/q)
    mutated = audit(single_draft_events(4000, seed=2, sharpen=2.0, rule=inflated))
    assert EXACT == AcceptanceRule() and EXACT.ratio_scale == 1.0  # the exact rule is untouched
    assert mutated.statistic > 0 and mutated.pvalue < ALPHA
    assert audit(single_draft_events(4000, seed=2, sharpen=2.0)).pvalue > ALPHA


def test_rounding_is_not_an_impossible_correction():
    near = np.array([[0, 0.5 * (1 + AUDIT_TOLERANCE / 10), 0.5], [1, 0.2, 0.4], [0, 0.1, 0.4]])
    result = audit(near)
    assert (
        result.pvalue > 0
        and result.n == 2
        and "1 corrections at q = p within rounding dropped" in result.detail
    )
    beyond = near.copy()
    beyond[0, 1] = 0.5 * (1 + 10 * AUDIT_TOLERANCE)
    assert audit(beyond).pvalue == 0.0
    assert audit(np.array([[1, 0.0, 0.3]])).pvalue == 0.0  # accepted a draft q could not have drawn
    assert audit(np.zeros((0, 3))) is None


@pytest.fixture(scope="module")
def model():
    return micro_model(seed=3)


def test_the_trace_is_aligned_with_the_tokens_and_holds_the_drafters_q(model):
    params, engine = SamplingParams(1.0), Engine(model)
    prompt = [5, 17, 33, 2, 90]
    r = generate(
        engine,
        OrthrusDrafter(model),
        prompt,
        120,
        params,
        stop_token_ids=[],
        generator=torch.Generator().manual_seed(4),
    )
    K = model.block_size
    assert len(r.acceptance_trace) == len(r.tokens) == 120 and r.acceptance_trace[0] is None
    # Recompute each cycle's draft distribution from the committed prefix and compare event by event.
    offset, checked = 1, 0
    for n in r.accepted:
        committed = prompt + r.tokens[: offset - 1]
        cache = model.new_cache(len(committed) + K)
        with torch.inference_mode():
            model(torch.tensor([committed]), 0, cache)
            block = torch.tensor([[r.tokens[offset - 1]] + [model.mask_token_id] * (K - 1)])
            q = probs(params, model(block, len(committed), cache, diffusion=True)[0, :-1])
        for i in range(min(n + 1, K - 1)):
            if offset + i >= len(r.tokens):
                break
            flag, q_x = r.acceptance_trace[offset + i]
            assert flag == (1 if i < n else 0)
            assert q_x == pytest.approx(float(q[i, r.tokens[offset + i]]), rel=1e-4)
            checked += 1
        if n == K - 1 and offset + n < len(r.tokens):
            assert r.acceptance_trace[offset + n] is None  # the bonus token was not a draft position
        offset += n + 1
    assert checked >= len(r.tokens) - len(r.accepted)
    assert generate(engine, OrthrusDrafter(model), prompt, 20, SamplingParams(0.0)).acceptance_trace == []
    # Deterministic drafts (prompt lookup) have no q: no trace, even when sampling.
    repetitive = [5, 6, 7, 8] * 6
    lookup = generate(
        engine, PromptLookupDrafter(), repetitive, 40, params, generator=torch.Generator().manual_seed(0)
    )
    assert lookup.cycles > 0 and lookup.acceptance_trace == []
    ar = generate(engine, None, prompt, 20, params, generator=torch.Generator().manual_seed(0))
    assert ar.acceptance_trace == []


def test_the_verdict_runs_the_audit_and_it_catches_the_residual_bug(model):
    reference, target = Reference(model), Target.of(model, "micro")
    params = SamplingParams(1.0)
    prompts = [[3 + i, 40 + i, 7] for i in range(6)]

    def records(generate, offset):
        out = []
        for i, prompt in enumerate(prompts):
            r = generate(prompt, 64, params, seed=offset + i, stop_token_ids=[])
            out.append({"prompt_ids": prompt, "output_ids": r.tokens, "acceptance_trace": r.acceptance_trace})
        return out

    ar = records(make_decoder("ar", target).generate, 100)
    family, rejected = sampling_family(reference, records(decoder(target, None), 0), ar, params,
                                       alpha=ALPHA, seed=0)  # fmt: skip
    t5 = next(t for t in family if t.name == "T5 acceptance audit")
    assert not rejected and t5.n > 200 and not t5.reject
    buggy = mutants(target, None)["residual drawn from p, not max(p - q, 0)"]
    family, rejected = sampling_family(reference, records(buggy, 0), ar, params, alpha=ALPHA, seed=0)
    t5 = next(t for t in family if t.name == "T5 acceptance audit")
    assert rejected and t5.reject and t5.pvalue == 0.0
    # AR records have no trace: no T5 in their family.
    family, _ = sampling_family(reference, ar, ar, params, alpha=ALPHA, seed=0)
    assert "T5 acceptance audit" not in [t.name for t in family]


def test_a_trace_that_does_not_match_its_tokens_is_named(model):
    record = {
        "method": "orthrus",
        "suite": "s",
        "item_id": "7",
        "prompt_ids": [3, 4],
        "output_ids": [5, 6, 7],
    }
    record["acceptance_trace"] = [None, [1, 0.5]]
    with pytest.raises(ValueError, match="orthrus/s/7 has 2 acceptance trace entries for 3 tokens"):
        sampling_family(Reference(model), [record], [record], SamplingParams(1.0), alpha=ALPHA, seed=0)
