"""Sampling: the transforms, the acceptance rules, and the Orthrus token stream's distribution."""

import pytest
import torch
from conftest import random_model, random_prompts

from harness.verify.equivalence import randomized_pit, uniformity_pvalues
from orthrus_core.engine import Engine
from orthrus_core.loop import generate
from orthrus_core.model import copy_ar_to_diffusion
from orthrus_core.orthrus import OrthrusDrafter
from orthrus_core.params import SamplingParams
from orthrus_core.sampling import EXACT, AcceptanceRule, greedy_accept, probs

ALPHA = 0.01


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]))
    assert probs(SamplingParams(1.0, top_k=2), logits).nonzero().flatten().tolist() == [1, 3]
    # Nucleus 0.75: 0.4 + 0.3 = 0.7 < 0.75, so the 0.15 token is needed too.
    kept = probs(SamplingParams(1.0, top_p=0.75), logits)
    assert kept.nonzero().flatten().tolist() == [1, 3, 4]
    assert kept.sum().item() == pytest.approx(1.0)
    assert kept[1].item() == pytest.approx(0.4 / 0.85)
    # Temperature sharpens before truncation.
    assert probs(SamplingParams(0.5), logits)[1] > probs(SamplingParams(1.0), logits)[1]
    assert SamplingParams(0.0).greedy and not SamplingParams(0.5).greedy


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5)])
def test_bad_sampling_params_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_greedy_accept_prefix_and_correction():
    target_logits = torch.nn.functional.one_hot(torch.tensor([4, 5, 6, 7]), 10).float()
    assert [int(x) for x in greedy_accept(torch.tensor([4, 5, 9]), target_logits)] == [2, 6]
    assert [int(x) for x in greedy_accept(torch.tensor([4, 5, 6]), target_logits)] == [3, 7]  # bonus
    assert [int(x) for x in greedy_accept(torch.tensor([0, 5, 6]), target_logits)] == [0, 4]
    # Ragged rows: only a row's first `lengths` drafts are real; a padded draft is never accepted.
    rows = torch.tensor([[4, 5, 6], [4, 5, 6], [4, 9, 9]])
    n, nxt = greedy_accept(rows, target_logits.expand(3, -1, -1), torch.tensor([3, 1, 3]))
    assert n.tolist() == [3, 1, 1] and nxt.tolist() == [7, 5, 5]


def test_speculative_accept_is_exact_on_a_single_step():
    """One draft from q, verified against p: the emitted first token is distributed as p (chi-square)."""
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
    q = torch.tensor([[0.1, 0.1, 0.4, 0.4]])
    counts = torch.zeros(4)
    n = 20000
    for _ in range(n):
        draft = torch.multinomial(q, 1, generator=g)[:, 0]
        k, token = EXACT.chain(draft, q, p, g)
        counts[int(draft[0]) if int(k) == 1 else int(token)] += 1
    assert counts[3] == 0
    assert stats.chisquare(counts[:3].numpy(), (p[0, :3] * n).numpy()).pvalue > ALPHA


def pit_of_stream(model, params, n_tokens, seed, block_size=4, rule=EXACT):
    """Orthrus samples until n_tokens, then the randomized PIT of every token under the AR model's exact
    (transformed) next-token distribution at its realised prefix, by teacher forcing."""
    gen, gen_u = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    engine, drafter = Engine(model), OrthrusDrafter(model, block_size)
    us, total, accepted = [], 0, []
    for prompt in random_prompts(10_000, seed=seed):
        r = generate(engine, drafter, prompt, 100, params, generator=gen, stop_token_ids=[], rule=rule)
        accepted += r.accepted
        ids = torch.tensor(prompt + r.tokens)[None]
        with torch.inference_mode():
            logits = model(ids, 0, model.new_cache(ids.shape[1]))[0, len(prompt) - 1 : -1]
        us.append(randomized_pit(probs(params, logits), torch.tensor(r.tokens), gen_u))
        total += len(r.tokens)
        if total >= n_tokens:
            return torch.cat(us), accepted


@pytest.fixture(scope="module")
def near_ar_model():
    """One layer; diffusion view = AR view + noise, so drafts are accepted often but not always."""
    model = random_model(seed=0, num_hidden_layers=1)
    copy_ar_to_diffusion(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_diff" in name and "norm" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


@pytest.mark.parametrize("params", [SamplingParams(1.0), SamplingParams(1.0, top_k=40, top_p=0.9)])
def test_orthrus_samples_follow_the_ar_distribution(near_ar_model, params):
    # The planted-bug test below, at the same size, shows the test's power there.
    u, accepted = pit_of_stream(near_ar_model, params, 5000, seed=0)
    assert len(u) >= 5000
    assert sum(accepted) > len(accepted) / 2  # drafts really were accepted, and rejected
    assert 0 in accepted
    pvalues = uniformity_pvalues(u)
    print("correct decoder:", params, pvalues)
    assert min(pvalues.values()) > ALPHA


def test_pit_rejects_residual_drawn_from_p(near_ar_model):
    """Planted bug: resample from p instead of max(p - q, 0) after a rejection."""
    bug = AcceptanceRule(residual=lambda p, q: p)
    u, _ = pit_of_stream(
        near_ar_model, SamplingParams(1.0), 5000, seed=0, rule=bug
    )  # p ~ 1e-10 at 10_000 tokens
    pvalues = uniformity_pvalues(u)
    print("planted residual bug:", pvalues)
    assert max(pvalues.values()) < ALPHA


def test_ar_sampling_is_seeded(model):
    params, engine = SamplingParams(0.8, top_k=50), Engine(model)
    a = generate(engine, None, [1, 2], 30, params, generator=torch.Generator().manual_seed(7))
    b = generate(engine, None, [1, 2], 30, params, generator=torch.Generator().manual_seed(7))
    c = generate(engine, None, [1, 2], 30, params, generator=torch.Generator().manual_seed(8))
    assert a.tokens == b.tokens != c.tokens
