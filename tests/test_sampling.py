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
from orthrus_core.sampling import EXACT, AcceptanceRule, greedy_accept, next_token, probs

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


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(temperature=float("inf")),
        dict(temperature=float("-inf")),
        dict(temperature=float("nan")),
        dict(top_k=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(top_p=float("inf")),
        dict(top_p=float("nan")),
    ],
)
def test_bad_sampling_params_are_rejected(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        (SamplingParams(0.0), "temperature 0"),
        (SamplingParams(1.0, top_k=1), "top_k 1"),
        (SamplingParams(1e-9), "temperature 1e-09 below 1e-06"),
        (SamplingParams(5e-324), "temperature 4.94066e-324 below 1e-06"),  # logits / T would be inf: NaN
        (SamplingParams(1.0, top_p=1e-12), "top_p 1e-12 below 1e-06"),
        (SamplingParams(1e-6), None),  # the floors themselves sample
        (SamplingParams(1.0, top_p=1e-6), None),
        (SamplingParams(1.0, top_k=2), None),
        (SamplingParams(0.7, top_k=50, top_p=0.9), None),
    ],
)
def test_greedy_is_temperature_0_or_a_one_token_setting(params, reason):
    assert params.greedy_reason == reason
    assert params.greedy == (reason is not None)
    assert params.degenerate == (reason is not None and params.temperature > 0)


def test_the_floors_leave_one_token():
    """Why the floors are where they are (orthrus_core/params.py): just above them a second token has
    probability; just below, the distribution is greedy's token."""
    # top_p: a uniform distribution over 10^6 tokens, the largest vocabulary the floor is stated for, keeps
    # its first token alone below 1e-6 (argmax's first maximum), and more tokens as top_p passes 1/V.
    flat = torch.zeros(10**6)
    assert probs(SamplingParams(1.0, top_p=0.99e-6), flat).nonzero().flatten().tolist() == [0]
    assert probs(SamplingParams(1.0, top_p=2.5e-6), flat).count_nonzero() == 3
    # temperature: two float16 logits of magnitude 1/8 one ulp apart (2^-13, 1.2e-4; bfloat16's is 9.8e-4) are
    # more than 104 T apart below the floor: the second token has float32 probability 0. Just above the floor a
    # float32 logit 1e-4 below the top still has some.
    for dtype, ulp in ((torch.float16, 2**-13), (torch.bfloat16, 2**-10)):
        half = torch.tensor([0.125 + ulp, 0.125], dtype=dtype)
        assert (
            half[0] != half[1] and torch.tensor([0.125 + ulp / 2, 0.125], dtype=dtype).unique().numel() == 1
        )
        assert probs(SamplingParams(0.99e-6), half.float()).nonzero().flatten().tolist() == [0]
    assert probs(SamplingParams(1e-6), torch.tensor([10.0, 10.0 - 1e-4])).count_nonzero() == 2
    # Below the floor the decoder never computes probs: next_token is the argmax, whatever the seed.
    logits = torch.tensor([[0.3, 2.0, 2.0 - 1e-7, -1.0]])
    for params in (SamplingParams(1e-9), SamplingParams(1.0, top_k=1), SamplingParams(1.0, top_p=1e-12)):
        draws = {int(next_token(params, logits, torch.Generator().manual_seed(s))) for s in range(20)}
        assert draws == {1}


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
