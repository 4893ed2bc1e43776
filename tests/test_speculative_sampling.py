"""Speculative sampling over chains and trees follows the target's distribution (randomized PIT), and a planted
bug in the sibling-rejection rule is caught."""

import pytest
import torch
from conftest import random_model, random_prompts

import orthrus_core.sampling as sampling
from harness.verify.equivalence import randomized_pit, uniformity_pvalues
from orthrus_core.model import causal_mask
from orthrus_core.sampling import SamplingParams
from orthrus_core.speculative import Drafter, generate_speculative
from orthrus_core.tree import DraftTree

ALPHA = 0.01


class TopKDrafter(Drafter):
    """Deterministic trees from a draft model: each node's children are that model's `branching` most likely
    next tokens (what EAGLE's top-k expansion does), `depth` levels."""

    def __init__(self, model, branching, depth):
        self.model, self.branching, self.depth = model, branching, depth

    @property
    def max_nodes(self):
        return 1 + sum(self.branching**d for d in range(1, self.depth + 1))

    def start(self, prompt, features, cache):
        self.context = prompt.tolist()

    def accept(self, tokens, features):
        self.context += tokens.tolist()

    def propose(self, root):
        tokens, parents, paths = [root], [-1], [[root]]
        frontier = [0]
        for _ in range(self.depth):
            seqs = torch.tensor([self.context + paths[n] for n in frontier])
            T = seqs.shape[1]
            logits = self.model.run(
                seqs, torch.arange(T)[None], causal_mask(0, T, "cpu"), False, lambda i, k, v: (k, v)
            )
            children = logits[:, -1].topk(self.branching).indices.tolist()
            nxt = []
            for node, kids in zip(frontier, children, strict=True):
                for t in kids:
                    tokens.append(t)
                    parents.append(node)
                    paths.append(paths[node] + [t])
                    nxt.append(len(tokens) - 1)
            frontier = nxt
        return DraftTree(torch.tensor(tokens), torch.tensor(parents)), self.depth


@pytest.fixture(scope="module")
def target():
    return random_model(seed=0, num_hidden_layers=1)


@pytest.fixture(scope="module")
def drafter_model(target):
    """The target plus noise: its top-k drafts are often, not always, what the target samples."""
    model = random_model(seed=0, num_hidden_layers=1)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def pit_of_stream(target, drafter, params, n_tokens, seed):
    gen, gen_u = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    us, total, accepted = [], 0, []
    for prompt in random_prompts(10_000, seed=seed):
        r = generate_speculative(target, drafter, prompt, 60, params, generator=gen, stop_token_ids=[])
        accepted += r.accepted
        ids = torch.tensor(prompt + r.tokens)[None]
        with torch.inference_mode():
            logits = target(ids, 0, target.new_cache(ids.shape[1]))[0, len(prompt) - 1 : -1]
        us.append(randomized_pit(params.probs(logits), torch.tensor(r.tokens), gen_u))
        total += len(r.tokens)
        if total >= n_tokens:
            return torch.cat(us), accepted


@pytest.mark.parametrize(
    "branching,depth,params",
    [
        (1, 4, SamplingParams(0.4)),
        (3, 2, SamplingParams(0.6)),
        (2, 3, SamplingParams(0.5, top_k=40, top_p=0.9)),
    ],
)
def test_speculative_sampling_follows_the_target(target, drafter_model, branching, depth, params):
    # The planted-bug test below, at the same size, shows the test's power there.
    u, accepted = pit_of_stream(target, TopKDrafter(drafter_model, branching, depth), params, 3000, seed=0)
    pvalues = uniformity_pvalues(u)
    print("correct:", branching, depth, params, pvalues, sum(accepted) / len(accepted))
    assert sum(accepted) > len(accepted) / 4 and 0 in accepted  # drafts were accepted, and rejected
    assert min(pvalues.values()) > ALPHA


def test_pit_rejects_a_tree_that_forgets_rejected_siblings(target, drafter_model, monkeypatch):
    """Planted bug: after rejecting a sibling, keep sampling from p instead of p without that sibling."""
    monkeypatch.setattr(sampling, "residual_distribution", lambda p, q: p)
    u, _ = pit_of_stream(target, TopKDrafter(drafter_model, 3, 2), SamplingParams(0.7), 3000, seed=0)
    pvalues = uniformity_pvalues(u)
    print("planted bug:", pvalues)
    assert max(pvalues.values()) < ALPHA
