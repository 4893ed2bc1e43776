"""Speculative sampling over chains and trees follows the target's distribution (randomized PIT), and a planted
bug in the sibling-rejection rule is caught. The acceptance rule is an argument of the decode loop: the exact
one is the rule as written out here independently, draw for draw, and a planted rule changes what is sampled."""

import pytest
import torch
import torch.nn.functional as F
from conftest import random_model, random_prompts

from harness.methods import make_decoder
from harness.methods.target import Target
from harness.verify.equivalence import randomized_pit, uniformity_pvalues
from orthrus_core.attention import CAUSAL
from orthrus_core.engine import Engine
from orthrus_core.host import HostSyncs
from orthrus_core.loop import Drafter, Proposal, Request, decode, generate
from orthrus_core.micro import micro_model
from orthrus_core.orthrus import OrthrusDrafter
from orthrus_core.params import SamplingParams
from orthrus_core.sampling import EXACT, RESIDUAL_EPS, AcceptanceRule, probs, residual_distribution

ALPHA = 0.01


class TopKDrafter(Drafter):
    """Deterministic trees from a draft model: each node's children are that model's `branching` most likely
    next tokens (what EAGLE's top-k expansion does), `depth` levels; branching 1 proposes chains."""

    def __init__(self, model, branching, depth):
        self.model, self.branching, self.depth = model, branching, depth

    @property
    def max_nodes(self):
        return 1 + sum(self.branching**d for d in range(1, self.depth + 1))

    def bind(self, engine, cache):
        super().bind(engine, cache)
        self.contexts = []

    def admit(self, b, prompt, features):
        self.contexts.append(prompt.tolist())

    def accept(self, counts, tokens, features):
        for b, n in enumerate(counts):
            self.contexts[b] += tokens[b, :n].tolist()

    def keep(self, rows):
        self.contexts = [self.contexts[b] for b in rows]

    def tree(self, context, root):
        tokens, parents, paths = [root], [-1], [[root]]
        frontier = [0]
        for _ in range(self.depth):
            seqs = torch.tensor([context + paths[n] for n in frontier])
            T = seqs.shape[1]
            logits = self.model.run(seqs, torch.arange(T)[None], CAUSAL, False, lambda i, k, v: (k, v))
            children = logits[:, -1].topk(self.branching).indices.tolist()
            nxt = []
            for node, kids in zip(frontier, children, strict=True):
                for t in kids:
                    tokens.append(t)
                    parents.append(node)
                    paths.append(paths[node] + [t])
                    nxt.append(len(tokens) - 1)
            frontier = nxt
        return tokens, parents

    def propose(self, roots, params, generators):
        trees = [self.tree(c, root) for c, root in zip(self.contexts, roots.tolist(), strict=True)]
        tokens = torch.tensor([t for t, _ in trees])
        parents = torch.tensor([p for _, p in trees]) if self.branching > 1 else None
        return Proposal(tokens, [tokens.shape[1] - 1] * len(trees), self.depth, parents=parents)


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


def pit_of_stream(target, drafter, params, n_tokens, seed, rule=EXACT):
    gen, gen_u = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    engine = Engine(target)
    us, total, accepted = [], 0, []
    for prompt in random_prompts(10_000, seed=seed):
        r = generate(engine, drafter, prompt, 60, params, generator=gen, stop_token_ids=[], rule=rule)
        accepted += r.accepted
        ids = torch.tensor(prompt + r.tokens)[None]
        with torch.inference_mode():
            logits = target(ids, 0, target.new_cache(ids.shape[1]))[0, len(prompt) - 1 : -1]
        us.append(randomized_pit(probs(params, logits), torch.tensor(r.tokens), gen_u))
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


def test_pit_rejects_a_tree_that_forgets_rejected_siblings(target, drafter_model):
    """Planted bug: after rejecting a sibling, keep sampling from p instead of p without that sibling."""
    bug = AcceptanceRule(residual=lambda p, q: p)
    u, _ = pit_of_stream(
        target, TopKDrafter(drafter_model, 3, 2), SamplingParams(0.7), 3000, seed=0, rule=bug
    )
    pvalues = uniformity_pvalues(u)
    print("planted bug:", pvalues)
    assert max(pvalues.values()) < ALPHA


# ------------------------------------------------------------------------------- the rule as an argument


def leviathan(drafts, q, p, generator):
    """Speculative sampling as the papers write it (Leviathan et al. Algorithm 1), one draft at a time: drafts
    [n] drawn from q [n, V], target p [n+1, V]. One uniform per draft, drawn up front; draft i is accepted when
    u_i < p_i(x_i) / q_i(x_i); at the first rejection the next token is drawn from max(p_i - q_i, 0) (from p_i
    where that is zero to rounding), after the last draft from p_n."""
    u = torch.rand(len(drafts), generator=generator)
    for i, x in enumerate(drafts.tolist()):
        if not u[i] < p[i, x] / q[i, x]:
            residual = torch.clamp(p[i] - q[i], min=0)
            if residual.sum() <= RESIDUAL_EPS:
                residual = p[i]
            return torch.tensor(i), torch.multinomial(residual[None], 1, generator=generator)[0, 0]
    return torch.tensor(len(drafts)), torch.multinomial(p[-1][None], 1, generator=generator)[0, 0]


def multi_draft(tokens, parents, p, generator):
    """SpecInfer's multi-draft rule for deterministic drafts in a tree, as written there: from the root, try each
    child x in turn with probability r(x) / sum r, r starting as p at the node; a rejected child's token is
    removed from r; the first accepted child becomes the node; when all are rejected (or at a leaf) the next token
    is drawn from r (from p where r is zero to rounding)."""
    node, path = 0, [0]
    while True:
        r = p[node].clone()
        for child in [i for i, parent in enumerate(parents) if parent == node]:
            x = tokens[child]
            u = torch.rand((), generator=generator)
            if u < r[x] / r.sum():
                node = child
                path.append(child)
                break
            r[x] = 0.0
        else:
            residual = r if r.sum() > RESIDUAL_EPS else p[node]
            return path, int(torch.multinomial(residual[None], 1, generator=generator)[0, 0])


class AsWritten(AcceptanceRule):
    """The decode loop's acceptance rule replaced by the independent statements above."""

    def chain(self, drafts, q, p, generator):
        return leviathan(drafts, q, p, generator)

    def tree(self, tokens, parents, p, generator):
        return multi_draft(tokens, parents, p, generator)


def test_the_exact_rule_is_the_rule_as_written_draw_for_draw():
    """AcceptanceRule() against the straightforward statements, call for call from the same seed: the same
    accepted drafts, the same next token. Small vocabularies and sharp distributions, so that every outcome
    (all accepted, a rejection at each position, sibling after sibling rejected) occurs."""
    g = torch.Generator().manual_seed(0)
    outcomes = set()
    for _ in range(300):
        n, V = int(torch.randint(1, 5, (), generator=g)), int(torch.randint(2, 8, (), generator=g))
        q = torch.softmax(torch.randn(n, V, generator=g) * 2, -1)
        p = torch.softmax(torch.randn(n + 1, V, generator=g) * 2, -1)
        drafts = torch.multinomial(q, 1, generator=g)[:, 0]
        seed = int(torch.randint(0, 2**31, (), generator=g))
        exact = EXACT.chain(drafts, q, p, torch.Generator().manual_seed(seed))
        mine = leviathan(drafts, q, p, torch.Generator().manual_seed(seed))
        assert [int(x) for x in exact] == [int(x) for x in mine]
        outcomes.add(("chain", int(exact[0]) == n))
        N = int(torch.randint(1, 8, (), generator=g))
        parents = [-1] + [int(torch.randint(0, i, (), generator=g)) for i in range(1, N)]
        tokens = torch.randint(0, V, (N,), generator=g).tolist()
        p = torch.softmax(torch.randn(N, V, generator=g) * 2, -1)
        exact = EXACT.tree(tokens, parents, p, torch.Generator().manual_seed(seed))
        mine = multi_draft(tokens, parents, p, torch.Generator().manual_seed(seed))
        assert exact == mine
        outcomes.add(("tree", len(exact[0]) > 1))
    assert outcomes == {("chain", True), ("chain", False), ("tree", True), ("tree", False)}


@pytest.fixture(scope="module")
def near_ar():
    """The micro model (its diffusion view = AR view + noise: drafts often, not always, accepted)."""
    return micro_model(seed=1)


def sampled(engine, drafter, prompts, rule=None, rows=1):
    """Seeded samples of every prompt, with `rule` (None: the loop's default), `rows` at a time."""
    params = SamplingParams(1.0)
    queue = [Request(p, 40, [], torch.Generator().manual_seed(i), key=i) for i, p in enumerate(prompts)]
    queue.reverse()
    options = {} if rule is None else dict(rule=rule)
    done = decode(engine, drafter, lambda: queue.pop() if queue else None, rows, params, **options)
    results = {d.request.key: d.result for d in done}
    return [results[i].tokens for i in range(len(prompts))]


@pytest.mark.parametrize("rows", [1, 3])
def test_the_acceptance_rule_is_an_argument_of_the_loop(near_ar, rows):
    """Orthrus' sampled chains (Leviathan's rule) and deterministic trees (the multi-draft rule), R = 1 and 3:
    the default, EXACT, a fresh AcceptanceRule() and the rule as written above sample the same tokens; reading p
    one position off or resampling from p after a rejection samples others."""
    engine, prompts = Engine(near_ar), random_prompts(4, seed=6, min_len=3)
    for drafter in (OrthrusDrafter(near_ar, 4), TopKDrafter(near_ar, 2, 2)):
        default = sampled(engine, drafter, prompts, rows=rows)
        for rule in (EXACT, AcceptanceRule(), AsWritten()):
            assert sampled(engine, drafter, prompts, rule, rows) == default, (drafter, rule)
        bugs = [AcceptanceRule(residual=lambda p, q: p)]
        if isinstance(drafter, OrthrusDrafter):  # position_shift is a chain rule's (p read at i + shift)
            bugs.append(AcceptanceRule(position_shift=1))
        for bug in bugs:
            assert sampled(engine, drafter, prompts, bug, rows) != default, (drafter, bug)
    # The same through a method's decoder.
    orthrus = make_decoder("orthrus", Target.of(near_ar, "micro"), block_size=4)
    params = SamplingParams(1.0)
    exact = orthrus.generate(prompts[0], 40, params, seed=0, stop_token_ids=[])
    assert (
        orthrus.generate(prompts[0], 40, params, seed=0, stop_token_ids=[], rule=AsWritten()).tokens
        == exact.tokens
    )
    shifted = orthrus.generate(
        prompts[0], 40, params, seed=0, stop_token_ids=[], rule=AcceptanceRule(position_shift=1)
    )
    assert shifted.tokens != exact.tokens


def walk_child_by_child(tokens, parents, p, generator):
    """The multi-draft rule walked with a read of the device per child tried (the rule's arithmetic: u times the
    mass left against the child's share), as the loop walked it before the walk read the device once."""
    node, path = 0, [0]
    while True:
        dist = p[node]
        for child in [i for i, parent in enumerate(parents) if parent == node]:
            u = torch.rand((), generator=generator)
            if u * dist.sum() < dist[tokens[child]]:
                node = child
                path.append(child)
                break
            dist = residual_distribution(
                dist, F.one_hot(torch.tensor(tokens[child]), dist.shape[-1]).to(dist.dtype)
            )
        else:
            residual = dist if dist.sum() > RESIDUAL_EPS else p[node]
            return path, int(torch.multinomial(residual, 1, generator=generator)[0])


@pytest.mark.parametrize("vocab", [6, 151_936])
def test_the_tree_walk_reads_the_device_once_and_leaves_the_stream_where_a_child_by_child_walk_does(vocab):
    """The tree rule's walk, computed from one read-back (the uniforms a longest walk can draw and every node's
    tests), accepts what a walk reading the device per child accepts, draws the same next token, and leaves the
    generator where that walk leaves it, so the row's later draws are the same too; at a vocabulary as large as
    Qwen3's too, where a [N, V] tensor's row sums round otherwise than each row's own sum; and whatever rows of p
    follow the tree's nodes."""
    g = torch.Generator().manual_seed(1)
    for _ in range(40 if vocab < 100 else 4):
        N = int(torch.randint(1, 9, (), generator=g))
        parents = [-1] + [int(torch.randint(0, i, (), generator=g)) for i in range(1, N)]
        p = torch.softmax(torch.randn(N, vocab, generator=g) * (2 if vocab < 100 else 8), -1)
        tokens = p.argmax(-1)[torch.tensor(parents).clamp_min(0)].tolist()  # often accepted
        tokens = [
            int(torch.randint(0, vocab, (), generator=g)) if i % 3 == 2 else t for i, t in enumerate(tokens)
        ]
        seed = int(torch.randint(0, 2**31, (), generator=g))
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        syncs = HostSyncs()
        # a static engine verifies a chain at its full width: rows of p after the real nodes are never walked
        padded = torch.cat([p, torch.softmax(torch.randn(2, vocab, generator=g), -1)])
        with syncs:
            walked = EXACT.tree(tokens, parents, padded, ours)
        assert walked == walk_child_by_child(tokens, parents, p, theirs)
        assert torch.equal(ours.get_state(), theirs.get_state())
        assert syncs.total <= 2  # the walk's one read-back and the next token
