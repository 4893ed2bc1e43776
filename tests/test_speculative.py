"""The shared draft-verify loop: greedy identity with AR for chains and trees of every shape, cache compaction,
stop and length edge cases, and the tree acceptance rules."""

import pytest
import torch
from conftest import random_model, random_prompts

from orthrus_core.decoding import generate_ar
from orthrus_core.prompt_lookup import PromptLookupDrafter
from orthrus_core.speculative import Drafter, generate_speculative
from orthrus_core.tree import DraftTree, accept_greedy


class OracleTreeDrafter(Drafter):
    """Random trees (`branching` children per node, `depth` levels) that contain the known continuation's
    next tokens on one path, each right with probability 1 - error_rate; the other siblings are random."""

    def __init__(self, sequence, depth, branching=1, error_rate=0.0, vocab=300, seed=0):
        self.sequence, self.depth, self.branching = sequence, depth, branching
        self.error_rate, self.vocab = error_rate, vocab
        self.g = torch.Generator().manual_seed(seed)

    @property
    def max_nodes(self):
        return 1 + sum(self.branching**d for d in range(1, self.depth + 1))

    def start(self, prompt, features, capacity):
        self.position = len(prompt)  # absolute position of the next root

    def propose(self, root):
        tokens, parents = [root], [-1]
        frontier = [(0, self.position)]  # (node, its absolute position)
        for _ in range(self.depth):
            nxt = []
            for node, pos in frontier:
                truth = self.sequence[pos + 1] if pos + 1 < len(self.sequence) else 0
                right = torch.rand((), generator=self.g) >= self.error_rate
                kids = [truth] if right else []
                while len(kids) < self.branching:
                    t = int(torch.randint(4, self.vocab, (), generator=self.g))
                    if t not in kids and t != truth:
                        kids.append(t)
                order = torch.randperm(len(kids), generator=self.g).tolist()
                for k in order:
                    tokens.append(kids[k])
                    parents.append(node)
                    nxt.append((len(tokens) - 1, pos + 1))
            frontier = nxt
        # Breadth-first order keeps parents before children; shuffle siblings' subtrees only through order.
        return DraftTree(torch.tensor(tokens), torch.tensor(parents)), self.depth

    def accept(self, tokens, features):
        self.position += len(tokens)


@pytest.fixture(scope="module")
def references(model):
    prompts = random_prompts(12, seed=3)
    return [(p, generate_ar(model, p, 30, stop_token_ids=[]).tokens) for p in prompts]


@pytest.mark.parametrize(
    "depth,branching,error_rate",
    [(1, 1, 0.0), (4, 1, 0.3), (7, 1, 0.1), (2, 3, 0.3), (3, 2, 0.5), (4, 2, 0.2), (3, 3, 1.0)],
)
def test_oracle_trees_greedy_identical_to_ar(model, references, depth, branching, error_rate):
    accepted = []
    for i, (prompt, ar) in enumerate(references):
        drafter = OracleTreeDrafter(prompt + ar, depth, branching, error_rate, seed=i)
        r = generate_speculative(model, drafter, prompt, 30, stop_token_ids=[])
        assert r.tokens == ar, f"prompt {i}"
        assert r.draft_forwards == depth * r.cycles and r.ar_forwards == r.cycles
        accepted += r.accepted
    assert max(accepted) <= depth
    if error_rate < 1:
        assert max(accepted) >= min(depth, 2)
    else:
        assert set(accepted) == {0}


def test_perfect_chain_accepts_everything_and_counts_forwards(model):
    prompt = [5, 6, 7]
    ar = generate_ar(model, prompt, 41 + 8, stop_token_ids=[]).tokens
    r = generate_speculative(model, OracleTreeDrafter(prompt + ar, 4), prompt, 41, stop_token_ids=[])
    assert r.tokens == ar[:41]
    assert r.accepted == [4] * 8 and r.tau == 5
    assert (r.prefill_forwards, r.ar_forwards, r.draft_forwards) == (1, 8, 32)


@pytest.mark.parametrize("max_new", [1, 2, 5, 6, 13])
def test_length_limit_is_exact(model, max_new):
    prompt = [9, 10]
    ar = generate_ar(model, prompt, max_new, stop_token_ids=[])
    drafter = OracleTreeDrafter(prompt + generate_ar(model, prompt, 40, stop_token_ids=[]).tokens, 4, 2)
    r = generate_speculative(model, drafter, prompt, max_new, stop_token_ids=[])
    assert (r.tokens, r.stop_reason) == (ar.tokens, "length")


def test_stop_token_inside_an_accepted_tree_path(model):
    prompt = [7, 8, 9]
    free = generate_ar(model, prompt, 60, stop_token_ids=[]).tokens
    stop = free[13]
    ar = generate_ar(model, prompt, 60, stop_token_ids=[stop])
    r = generate_speculative(model, OracleTreeDrafter(prompt + free, 5, 2), prompt, 60, stop_token_ids=[stop])
    assert (r.tokens, r.stop_reason) == (ar.tokens, "stop")
    assert r.tokens[-1] == stop and len(r.tokens) == free.index(stop) + 1


def test_prompt_lookup_greedy_identical_to_ar(model):
    total = 0
    for prompt in random_prompts(10, seed=4, min_len=8):
        # Repetitive prompts so that lookups hit.
        prompt = prompt + prompt[:6] + prompt
        ar = generate_ar(model, prompt, 40)
        r = generate_speculative(model, PromptLookupDrafter(3, 5), prompt, 40)
        assert (r.tokens, r.stop_reason) == (ar.tokens, ar.stop_reason)
        assert r.draft_forwards == 0
        total += sum(r.accepted)
    assert total > 0


def test_prompt_lookup_finds_the_first_longest_match():
    d = PromptLookupDrafter(max_ngram=3, num_draft_tokens=4)
    seq = torch.tensor([1, 2, 3, 4, 5, 9, 2, 3, 6, 7, 1, 2, 3])
    assert d.lookup(seq).tolist() == [4, 5, 9, 2]  # the 3-gram 1 2 3 at index 0
    assert d.lookup(torch.tensor([5, 1, 2, 8, 2])).tolist() == [8, 2]  # only the 1-gram 2 matches
    assert d.lookup(torch.tensor([1, 2, 3])).tolist() == []


def test_tree_ancestors_depth_and_greedy_walk():
    #        0
    #      1   2
    #     3 4   5
    #           6
    tree = DraftTree(torch.tensor([0, 10, 11, 12, 13, 14, 15]), torch.tensor([-1, 0, 0, 1, 1, 2, 5]))
    assert tree.depth.tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert tree.ancestors[6].nonzero()[:, 0].tolist() == [0, 2, 5, 6]
    assert not tree.is_chain and DraftTree.chain(3, torch.tensor([4, 5])).is_chain
    mask = tree.verify_mask(2)
    assert mask.shape == (7, 9) and mask[:, :2].all() and not mask[3, 2 + 2]
    argmax = {0: 11, 2: 14, 5: 15, 6: 99}  # the target follows 0 -> 2 -> 5 -> 6, then says 99
    logits = torch.zeros(7, 100)
    for node, tok in argmax.items():
        logits[node, tok] = 1.0
    path, nxt = accept_greedy(tree, logits)
    assert path.tolist() == [0, 2, 5, 6] and nxt == 99
    logits[2] = 0
    logits[2, 13] = 1.0  # the target wants 13 after node 2, which is drafted only under node 1
    path, nxt = accept_greedy(tree, logits)
    assert path.tolist() == [0, 2] and nxt == 13


def test_untied_multi_eos_model():
    model = random_model(seed=3, tie_word_embeddings=False, eos_token_id=[3, 4])
    for i, prompt in enumerate(random_prompts(6, seed=9)):
        ar = generate_ar(model, prompt, 30)
        free = generate_ar(model, prompt, 40, stop_token_ids=[]).tokens
        r = generate_speculative(model, OracleTreeDrafter(prompt + free, 3, 2, 0.2, seed=i), prompt, 30)
        assert (r.tokens, r.stop_reason) == (ar.tokens, ar.stop_reason)
