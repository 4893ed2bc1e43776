"""The decode loop (orthrus_core.loop): greedy identity with AR for chains and trees of every shape, cache
compaction, stop and length edge cases, the tree helpers; and batches of rows: every batched method gives each
row its own batch-1 output, whatever shares the batch, at R = 1, 2, 4, 8, static and continuous, with prompts
of different lengths, rows that stop at different times and rows that accept different numbers of drafts in
the same cycle; sampled rows follow their own seeded streams."""

import numpy as np
import pytest
import torch
from conftest import check_emissions, heldout_prompts, random_model, random_prompts
from test_drafters import random_dflash, random_head

from harness.method_spec import MethodSpec
from harness.methods import BATCHED, load_target, make_decoder
from harness.paths import DEFAULT_MODEL
from orthrus_core.dflash import DFlashDrafter
from orthrus_core.eagle3 import Eagle3Drafter
from orthrus_core.engine import Engine, pass_visibility
from orthrus_core.loop import Drafter, Proposal, Request, decode, generate
from orthrus_core.orthrus import OrthrusDrafter
from orthrus_core.params import GREEDY, SamplingParams
from orthrus_core.prompt_lookup import PromptLookupDrafter, Text
from orthrus_core.tree import accept_greedy, ancestors


class OracleTreeDrafter(Drafter):
    """Random trees (`branching` children per node, `depth` levels) that contain the known continuation's
    next tokens on one path, each right with probability 1 - error_rate; the other siblings are random.
    `sequences`: one per request in admission order (a single sequence: every request's); the n-th request
    admitted draws its trees from its own generator, seeded seed + n. branching 1 proposes chains (no parents:
    the loop's causal verify pass), wider trees their parents (the tree verify pass and compaction)."""

    def __init__(self, sequences, depth, branching=1, error_rate=0.0, vocab=300, seed=0):
        self.sequences = [sequences] if isinstance(sequences[0], int) else sequences
        self.depth, self.branching = depth, branching
        self.error_rate, self.vocab, self.seed = error_rate, vocab, seed

    @property
    def max_nodes(self):
        return 1 + sum(self.branching**d for d in range(1, self.depth + 1))

    def bind(self, engine, cache):
        super().bind(engine, cache)
        self.admitted, self.rows = 0, []  # per active row: (its sequence, its generator)

    def admit(self, b, prompt, features):
        g = torch.Generator().manual_seed(self.seed + self.admitted)
        self.rows.append((self.sequences[self.admitted % len(self.sequences)], g))
        self.admitted += 1

    def keep(self, rows):
        self.rows = [self.rows[b] for b in rows]

    def tree(self, root, position, sequence, g):
        tokens, parents = [root], [-1]
        frontier = [(0, position)]  # (node, its absolute position)
        for _ in range(self.depth):
            nxt = []
            for node, pos in frontier:
                truth = sequence[pos + 1] if pos + 1 < len(sequence) else 0
                right = torch.rand((), generator=g) >= self.error_rate
                kids = [truth] if right else []
                while len(kids) < self.branching:
                    t = int(torch.randint(4, self.vocab, (), generator=g))
                    if t not in kids and t != truth:
                        kids.append(t)
                order = torch.randperm(len(kids), generator=g).tolist()
                for k in order:
                    tokens.append(kids[k])
                    parents.append(node)
                    nxt.append((len(tokens) - 1, pos + 1))
            frontier = nxt
        # Breadth-first order keeps parents before children; shuffle siblings' subtrees only through order.
        return tokens, parents

    def propose(self, roots, params, generators):
        trees = [
            self.tree(root, self.cache.lengths[b], *self.rows[b]) for b, root in enumerate(roots.tolist())
        ]
        tokens = torch.tensor([t for t, _ in trees], device=roots.device)
        parents = torch.tensor([p for _, p in trees], device=roots.device) if self.branching > 1 else None
        return Proposal(tokens, [tokens.shape[1] - 1] * len(trees), self.depth, parents=parents)


@pytest.fixture(scope="module")
def engine(model):
    return Engine(model)


@pytest.fixture(scope="module")
def references(engine):
    prompts = random_prompts(12, seed=3)
    return [(p, generate(engine, None, p, 30, stop_token_ids=[]).tokens) for p in prompts]


def run_rows(engine, drafter, reqs, rows, params=GREEDY, continuous=False):
    """The requests through `decode`, `rows` at a time -> {key: Finished}."""
    queue = list(reversed(reqs))
    done = decode(
        engine, drafter, lambda: queue.pop() if queue else None, rows, params, continuous=continuous
    )
    return {d.request.key: d for d in done}


@pytest.mark.parametrize(
    "depth,branching,error_rate",
    [(1, 1, 0.0), (4, 1, 0.3), (7, 1, 0.1), (2, 3, 0.3), (3, 2, 0.5), (4, 2, 0.2), (3, 3, 1.0)],
)
def test_oracle_trees_greedy_identical_to_ar(engine, references, depth, branching, error_rate):
    accepted, alone = [], []
    for i, (prompt, ar) in enumerate(references):
        drafter = OracleTreeDrafter(prompt + ar, depth, branching, error_rate, seed=i)
        r = generate(engine, drafter, prompt, 30, stop_token_ids=[])
        assert r.tokens == ar, f"prompt {i}"
        assert r.draft_forwards == depth * r.cycles and r.ar_forwards == r.cycles
        accepted += r.accepted
        alone.append(r.accepted)
    assert max(accepted) <= depth
    if error_rate < 1:
        assert max(accepted) >= min(depth, 2)
    else:
        assert set(accepted) == {0}
    # The same trees at R = 4 (the n-th request's trees come from seed n, as prompt i's did alone): each row
    # computes and accepts what it did alone.
    drafter = OracleTreeDrafter([p + ar for p, ar in references], depth, branching, error_rate)
    reqs = [Request(p, 30, [], key=i) for i, (p, _) in enumerate(references)]
    done = run_rows(engine, drafter, reqs, 4, continuous=True)
    for i, (_, ar) in enumerate(references):
        assert (done[i].result.tokens, done[i].result.accepted) == (ar, alone[i]), f"prompt {i} at R = 4"


def test_perfect_chain_accepts_everything_and_counts_forwards(engine):
    prompt = [5, 6, 7]
    ar = generate(engine, None, prompt, 41 + 8, stop_token_ids=[]).tokens
    r = generate(engine, OracleTreeDrafter(prompt + ar, 4), prompt, 41, stop_token_ids=[])
    assert r.tokens == ar[:41]
    assert r.accepted == [4] * 8 and r.tau == 5
    assert (r.prefill_forwards, r.ar_forwards, r.draft_forwards) == (1, 8, 32)


@pytest.mark.parametrize("max_new", [1, 2, 5, 6, 13])
def test_length_limit_is_exact(engine, max_new):
    prompt = [9, 10]
    ar = generate(engine, None, prompt, max_new, stop_token_ids=[])
    drafter = OracleTreeDrafter(prompt + generate(engine, None, prompt, 40, stop_token_ids=[]).tokens, 4, 2)
    r = generate(engine, drafter, prompt, max_new, stop_token_ids=[])
    assert (r.tokens, r.stop_reason) == (ar.tokens, "length")


def test_stop_token_inside_an_accepted_tree_path(engine):
    prompt = [7, 8, 9]
    free = generate(engine, None, prompt, 60, stop_token_ids=[]).tokens
    stop = free[13]
    ar = generate(engine, None, prompt, 60, stop_token_ids=[stop])
    r = generate(engine, OracleTreeDrafter(prompt + free, 5, 2), prompt, 60, stop_token_ids=[stop])
    assert (r.tokens, r.stop_reason) == (ar.tokens, "stop")
    assert r.tokens[-1] == stop and len(r.tokens) == free.index(stop) + 1


def test_prompt_lookup_greedy_identical_to_ar(engine):
    total = 0
    for prompt in random_prompts(10, seed=4, min_len=8):
        # Repetitive prompts so that lookups hit.
        prompt = prompt + prompt[:6] + prompt
        ar = generate(engine, None, prompt, 40)
        r = generate(engine, PromptLookupDrafter(3, 5), prompt, 40)
        assert (r.tokens, r.stop_reason) == (ar.tokens, ar.stop_reason)
        assert r.draft_forwards == 0
        total += sum(r.accepted)
    assert total > 0


def test_prompt_lookup_finds_the_first_longest_match():
    d = PromptLookupDrafter(max_ngram=3, num_draft_tokens=4)
    seq = np.array([1, 2, 3, 4, 5, 9, 2, 3, 6, 7, 1, 2, 3])
    assert d.lookup(seq) == [4, 5, 9, 2]  # the 3-gram 1 2 3 at index 0
    assert d.lookup(np.array([5, 1, 2, 8, 2])) == [8, 2]  # only the 1-gram 2 matches
    assert d.lookup(np.array([1, 2, 3])) == []


def test_a_row_text_grows_past_its_buffer():
    text = Text([1, 2])
    for i in range(10):
        text.extend([i, i + 1])
    assert text.tokens.tolist() == [1, 2] + [t for i in range(10) for t in (i, i + 1)]


def test_tree_ancestors_depth_and_greedy_walk():
    #        0
    #      1   2
    #     3 4   5
    #           6
    tokens, parents = torch.tensor([0, 10, 11, 12, 13, 14, 15]), torch.tensor([-1, 0, 0, 1, 1, 2, 5])
    anc = ancestors(parents)
    assert (anc.sum(-1) - 1).tolist() == [0, 1, 1, 2, 2, 2, 3]  # depth
    assert anc[6].nonzero()[:, 0].tolist() == [0, 2, 5, 6]
    chain = torch.arange(-1, 6)  # node i's parent is i - 1
    # Batched: one [R, N, N] per row; a chain's ancestors are the causal mask.
    both = ancestors(torch.stack([parents, chain]))
    assert torch.equal(both[0], anc) and torch.equal(both[1], torch.ones(7, 7, dtype=torch.bool).tril())
    mask = pass_visibility([2], 7, False, anc[None]).dense(9)[0, 0]  # the verify pass at slot 2
    assert mask.shape == (7, 9) and mask[:, :2].all() and not mask[3, 2 + 2]
    assert torch.equal(mask[:, 2:], anc)
    argmax = {0: 11, 2: 14, 5: 15, 6: 99}  # the target follows 0 -> 2 -> 5 -> 6, then says 99
    logits = torch.zeros(7, 100)
    for node, tok in argmax.items():
        logits[node, tok] = 1.0
    first = logits.clone()
    logits[2] = 0
    logits[2, 13] = 1.0  # the target wants 13 after node 2, which is drafted only under node 1
    # Both trees as two rows of one batch: each row's path and next token.
    path, nxt = accept_greedy(tokens.expand(2, -1), parents.expand(2, -1), anc.expand(2, -1, -1),
                              torch.stack([first, logits]))  # fmt: skip
    assert [row.nonzero()[:, 0].tolist() for row in path] == [[0, 2, 5, 6], [0, 2]]
    assert nxt.tolist() == [99, 13]


def test_untied_multi_eos_model():
    model = random_model(seed=3, tie_word_embeddings=False, eos_token_id=[3, 4])
    engine = Engine(model)
    for i, prompt in enumerate(random_prompts(6, seed=9)):
        ar = generate(engine, None, prompt, 30)
        free = generate(engine, None, prompt, 40, stop_token_ids=[]).tokens
        r = generate(engine, OracleTreeDrafter(prompt + free, 3, 2, 0.2, seed=i), prompt, 30)
        assert (r.tokens, r.stop_reason) == (ar.tokens, ar.stop_reason)


@pytest.mark.parametrize("rows", [1, 3])
def test_every_cycle_is_one_emission_of_each_of_its_rows(engine, references, rows):
    """Per row, one emission offset per cycle it took part in (AR: per token after the first), chains and
    trees, alone and in a continuous batch; rows done at their first token have none."""
    seqs = [p + ar for p, ar in references[:5]]
    limits = [30, 1, 17, 9, 25]
    reqs = [Request(p, n, [], key=i) for i, ((p, _), n) in enumerate(zip(references, limits, strict=False))]
    for drafter in (None, OracleTreeDrafter(seqs, 4, 1, 0.3), OracleTreeDrafter(seqs, 3, 2, 0.3)):
        done = run_rows(engine, drafter, reqs, rows, continuous=True)
        for i, d in done.items():
            r = d.result
            assert len(r.tokens) == limits[i]
            check_emissions(r, r.ar_forwards)
            assert r.ar_forwards == (r.cycles if drafter else limits[i] - 1)
            if drafter and limits[i] > 9:
                assert r.cycles < limits[i] - 1


def test_the_batch_shrinks_as_rows_finish_and_continuous_refills_them():
    model = random_model(seed=1)
    engine = Engine(model)
    prompts = random_prompts(6, seed=2)
    limits = [2, 9, 4, 9, 1, 6]
    reqs = [Request(p, n, [], key=i) for i, (p, n) in enumerate(zip(prompts, limits, strict=True))]
    for continuous, expect_full in ((False, False), (True, True)):
        rows = {key: d.mean_rows for key, d in run_rows(engine, None, reqs, 3, continuous=continuous).items()}
        assert sorted(rows) == list(range(6))
        # Static: the first batch's longest row ends alone; continuous keeps 3 rows busy while requests last.
        assert (rows[1] == 3.0) == expect_full
    with pytest.raises(ValueError, match="at least one row"):
        list(decode(engine, None, lambda: None, 0))


def test_a_longer_request_grows_the_cache_under_the_rows_decoding(monkeypatch):
    """A request longer than the cache holds joins rows already decoding: the cache (and a drafter's own) grows
    to the next bucket with their rows in it, eager and in a static engine's own buffers (its passes run
    uncompiled here), for every drafter, greedy and seeded-sampled; every row is still its batch-1 output."""
    target = random_model(seed=0, num_hidden_layers=3)
    head = random_head(target, aux=[1, 2, 3])
    drafters = [None, OrthrusDrafter(target), PromptLookupDrafter(), Eagle3Drafter(head, target, 3, 3, 10),
                Eagle3Drafter.chain(head, target, 4), DFlashDrafter(random_dflash(target, layers=1), target)]  # fmt: skip
    short = random_prompts(3, seed=1, min_len=5, max_len=10)
    prompts = [short[0], short[1], random_prompts(1, seed=2, min_len=300, max_len=300)[0], short[2]]
    limits = [30, 12, 20, 25]
    # the static engine's own caches, padding and growth; no compilation
    monkeypatch.setattr("orthrus_core.engine.Compiled", lambda fn, kind: fn)
    eager, static = Engine(target), Engine(target, "compile", autotune=False)
    grown = []
    for engine in (eager, static):
        grow = engine.grow
        engine.grow = lambda cache, n, grow=grow: grown.append(len(cache.lengths)) or grow(cache, n)
    for drafter in drafters:
        for params in (GREEDY, SamplingParams(1.0)):

            def reqs(params=params):
                seeds = [None if params.greedy else torch.Generator().manual_seed(i) for i in range(4)]
                return [
                    Request(p, n, [], seeds[i], key=i)
                    for i, (p, n) in enumerate(zip(prompts, limits, strict=True))
                ]

            alone = [generate(eager, drafter, r.prompt_ids, r.max_new_tokens, params, stop_token_ids=[],
                              generator=r.generator).tokens for r in reqs()]  # fmt: skip
            for engine in (eager, static):
                grown.clear()
                done = run_rows(engine, drafter, reqs(), 2, params, continuous=True)
                assert [done[i].result.tokens for i in range(4)] == alone, (drafter, params, engine.mode)
                assert grown and grown[0] == 1  # it grew with a row decoding
    assert sorted(static.caches) == [256, 384] and static.caches[384].rows == 2


# ------------------------------------------------------------------------------- batches on the tiny family

SPECS = ["ar", "orthrus", "pld", "eagle3:tree=chain", "eagle3", "dflash"]  # eagle3: dynamic trees


def test_the_specs_here_cover_every_batched_method():
    assert {MethodSpec.parse(s).name for s in SPECS} == set(BATCHED)


@pytest.fixture(scope="module")
def tiny():
    return load_target(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def prompts(tiny):
    """Held-out tiny-family prompts of different lengths, a one-token prompt among them."""
    rendered = heldout_prompts(tiny.tokenizer, 5, 2)
    return rendered + [rendered[0][-1:]]


# Rows stop at different times: by their own stop token, or at limits from 1 (done at the prefill) to 20.
LIMITS = [20, 12, 1, 16, 7, 20, 10, 3]


def requests(prompts, generator_seed=None, device="cpu"):
    out = []
    for i, (p, limit) in enumerate(zip(prompts, LIMITS, strict=True)):
        g = None if generator_seed is None else torch.Generator(device).manual_seed(generator_seed + i)
        out.append(Request(p, limit, [4092], g, key=i))
    return out


def run_batch(decoder, reqs, rows, params=GREEDY, continuous=False):
    queue = list(reversed(reqs))
    done = decoder.decode(lambda: queue.pop() if queue else None, params, rows=rows, continuous=continuous)
    return {d.request.key: d for d in done}


def ragged_cycle(done, rows):
    """Whether, in a static batch (requests admitted `rows` at a time, in key order, cycling in lockstep), some
    cycle had rows accepting different numbers of drafts."""
    keys = sorted(done)
    for first in range(0, len(keys), rows):
        batch = [done[k].result.accepted for k in keys[first : first + rows]]
        for c in range(max(map(len, batch))):
            if len({a[c] for a in batch if c < len(a)}) > 1:
                return True
    return False


@pytest.mark.parametrize("spec", SPECS)
def test_every_row_is_its_own_batch_1_output(tiny, prompts, spec):
    decoder = make_decoder(spec, tiny)
    assert decoder.batched
    alone = [
        decoder.generate(p, n, stop_token_ids=[4092]).tokens for p, n in zip(prompts, LIMITS, strict=True)
    ]
    assert len({len(a) for a in alone}) > 3, "the rows should stop at different times"
    for rows, continuous in [(1, False), (2, False), (4, False), (8, False), (4, True)]:
        done = run_batch(decoder, requests(prompts), rows, continuous=continuous)
        assert sorted(done) == list(range(len(prompts)))
        for i, d in done.items():
            assert d.result.tokens == alone[i], f"{spec} R={rows} continuous={continuous}: row {i}"
            assert d.mean_rows <= rows
        if spec != "ar" and rows in (4, 8) and not continuous:
            # Ragged acceptance: rows of one pass accept different numbers of drafts.
            assert ragged_cycle(done, rows), f"{spec} R={rows}"


@pytest.mark.parametrize("spec", SPECS)
def test_sampled_rows_follow_their_own_seeded_streams(tiny, prompts, spec):
    """Each row draws from its own generator in the order its batch-1 decode draws, so a seeded row samples
    exactly what it samples alone (the sampling verdicts then apply per row as they do to batch-1 records)."""
    decoder = make_decoder(spec, tiny)
    params = SamplingParams(temperature=1.0, top_p=0.95)
    alone = [
        decoder.generate(p, n, params, seed=100 + i, stop_token_ids=[4092])
        for i, (p, n) in enumerate(zip(prompts, LIMITS, strict=True))
    ]
    done = run_batch(decoder, requests(prompts, generator_seed=100), 4, params, continuous=True)
    assert [done[i].result.tokens for i in range(len(prompts))] == [a.tokens for a in alone]
    assert [done[i].result.accepted for i in range(len(prompts))] == [a.accepted for a in alone]
    if spec == "orthrus":  # sampled drafts leave the acceptance trace that verify audits
        assert any(done[i].result.acceptance_trace for i in done)
        # The same events, row by row; q to float rounding (a batched pass rounds its own way).
        for i, a in enumerate(alone):
            trace, expected = done[i].result.acceptance_trace, a.acceptance_trace
            assert [e and e[0] for e in trace] == [e and e[0] for e in expected]
            q = [-1.0 if e is None else e[1] for e in trace]
            assert q == pytest.approx([-1.0 if e is None else e[1] for e in expected], rel=1e-4)
    if spec != "ar":  # static R = 4: rows accept different numbers of drafts in one cycle
        static = run_batch(decoder, requests(prompts, generator_seed=100), 4, params)
        assert [static[i].result.tokens for i in range(len(prompts))] == [a.tokens for a in alone]
        assert ragged_cycle(static, 4), spec
