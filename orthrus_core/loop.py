"""The decode loop: every exact method (plain AR, Orthrus, EAGLE-3 chain and tree, DFlash, prompt lookup)
decodes R >= 1 ragged rows through it, and batch size 1 is a batch of one row.

    for done in decode(engine, drafter, requests.pop, rows=8, continuous=True):
        done.request.key, done.result.tokens
    result = generate(engine, drafter, prompt_ids, 256)          # one request: decode with rows=1

Layout: the R active rows are rows 0..R-1 of the engine's `KVCache`, row b's committed positions contiguous
from slot 0, so a token's slot is its RoPE position. A pass feeds every row the same number of tokens, each row
at its own next slots (engine.Engine.step).

Per cycle, for the R active rows:
1. the drafter proposes, per row, a chain or a tree rooted at the row's last emitted token (the root, not in
   the target's cache yet): `Proposal` (ragged: a row's padding drafts sit after its real ones). Without a
   drafter the proposal is the root alone: an AR step;
2. one target pass verifies every row (causal for chains; tree positions and ancestor masks for trees),
   returning the hidden states the drafter reads (`Drafter.capture`);
3. acceptance is per row: greedy is vectorised over chains and read back in one host transfer; sampling runs
   row by row with each row's own generator, in the order a row alone draws (so a seeded row samples the same
   tokens at every R), by the `AcceptanceRule` passed in (the exact one unless a calibration plants a bug):
   Leviathan's rule for a chain drawn from a draft distribution q, which also records per emitted draft
   position accepted or corrected and q there (`GenerationResult.acceptance_trace`, which verify audits), and
   the multi-draft rule for deterministic drafts;
4. the cache keeps each row's root and accepted nodes (a chain moves the row's length; a tree's accepted nodes
   are compacted to contiguous slots), the drafter is told what was committed, with its target features, and
   the extra token (the correction, or the bonus after a leaf) becomes the row's next root.

Each cycle hands every active row its accepted drafts and the extra token at once: one emission, stamped
(`GenerationResult.emit_offsets_s`) with perf_counter when step 3 has the tokens on the host. No
synchronisation is added for it: that read-back (the tokens as Python ints) already waits for the cycle's
passes, queued in order on the stream, so the stamp is when a streaming server could send them.

A new request is prefilled alone into the row after the active ones, and joins the next cycle. A row that
finishes leaves (the rows after it move down). With `continuous`, requests are admitted as soon as rows free up
(continuous batching); otherwise only into an empty batch.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from .engine import Engine
from .generation import Clock, GenerationResult, Output, StreamCallback, check_prompt, offsets, stop_ids
from .host import upload
from .memory import PassBytes, Sizing, kv_bytes
from .model import KVCache
from .params import GREEDY, SamplingParams
from .sampling import EXACT, AcceptanceRule, greedy_accept, next_token, probs, sample
from .tree import accept_greedy, ancestors


@dataclass
class Request:
    """One generation. `key` is the caller's, handed back with the result; stop tokens default to the model's
    eos_token_id; `generator` seeds this request's draws (each row samples from its own). `capacity`: positions
    its row reserves at least (default: what it can need), so that a short warm-up request meets the cache
    bucket, and so the pass shapes, of a longer one."""

    prompt_ids: Sequence[int]
    max_new_tokens: int
    stop_token_ids: Iterable[int] | None = None
    generator: torch.Generator | None = None
    key: object = None
    on_tokens: StreamCallback | None = None
    capacity: int | None = None


@dataclass
class Proposal:
    """Drafts for every active row: tokens [R, N] (each row's root, then its drafts; padding after a row's
    `drafts[b]` real ones), the drafter forwards it took, q [R, N-1, V] when the drafts were sampled from q, and
    parents [R, N] for trees (None: chains, verified by the plain causal pass)."""

    tokens: torch.Tensor
    drafts: list[int]
    passes: int
    q: torch.Tensor | None = None
    parents: torch.Tensor | None = None


class Drafter(ABC):
    """A method's drafts for a batch of rows. Made once per decoder with its options checked; `bind` starts
    a decode (per-decode state), `admit` fills a row, `propose` drafts for every active row and `accept` says
    what each row committed. Rows leave by `keep`, in step with the target cache."""

    capture: tuple[int, ...] = ()  # target hidden states the drafter reads, as `output_hidden_states` indices

    @property
    @abstractmethod
    def max_nodes(self) -> int:
        """The most nodes (root included) a row's proposal has: its room beyond its committed positions."""

    def bind(self, engine: Engine, cache: KVCache) -> None:
        """A new decode over the target's `cache` (whose rows bound the batch), run by `engine`."""
        self.engine, self.cache = engine, cache

    @abstractmethod
    def admit(self, b: int, prompt: torch.Tensor, features: torch.Tensor | None) -> None:
        """Row b holds a new request: prompt [T] and its target features [T, F] (None without `capture`)."""

    @abstractmethod
    def propose(self, roots: torch.Tensor, params: SamplingParams, generators: list) -> Proposal:
        """Drafts after each active row's root [R]; sampled drafts draw from the row's generator."""

    def accept(self, counts: list[int], tokens: torch.Tensor, features: torch.Tensor | None) -> None:  # noqa: B027
        """Row b committed tokens[b, :counts[b]] (its root, then its accepted drafts), whose target features
        are features[b, :counts[b]]. A hook: drafters that keep no context skip it."""

    def emitted(self, b: int, tokens: list[int]) -> None:  # noqa: B027
        """Row b emitted these tokens (host ints): its first token at admission, then each cycle's accepted
        drafts and the next root. A hook for drafters that read the text on the host (prompt lookup), which
        then need nothing read back from the device."""

    def keep(self, rows: list[int]) -> None:  # noqa: B027 (a hook: drafters without row state skip it)
        """Only these active rows stay, renumbered 0..len(rows)-1 (after the target cache's own `keep`)."""

    def grow(self, cache: KVCache) -> None:
        """The target cache grew for a longer request (`cache` may be a new object holding the same rows)."""
        self.cache = cache

    def release(self) -> None:
        """The decode is over: drop what `bind` holds, so that a drafter kept between decodes does not keep a
        finished decode's caches alive beside the next one's (orthrus_core.memory plans one of each)."""
        self.cache = None

    @property
    def nbytes(self) -> int:
        """The drafter's own cache, beside the target's."""
        return 0

    # Its cost, as the memory planner (orthrus_core.memory.plan) asks it: figures in bytes for a `Sizing` (the
    # target's config, rows, capacity, dtype, device), following the code that allocates them. The defaults are
    # a drafter that keeps nothing on the device and runs no pass of its own (prompt lookup).

    def state_bytes(self, sizing: Sizing) -> dict[str, int]:
        """What it keeps on the device through a decode beside the target's cache, by item (its cache, the
        target features it holds for rows not drafted from yet)."""
        return {}

    def prefill_bytes(self, sizing: Sizing) -> int:
        """The transient bytes of its own prefill over a prompt of `sizing.prompt_tokens` (`admit`)."""
        return 0

    def draft_pass_bytes(self, sizing: Sizing, verify: PassBytes) -> PassBytes:
        """The transient bytes of its largest pass in a cycle (`propose`); `verify` is the target's verify pass
        over as many tokens, for a drafter whose pass is the target's."""
        return PassBytes(0, 0)

    def proposal_bytes(self, sizing: Sizing) -> int:
        """What its proposal holds beside the drafts through the verify pass (counted with the logits)."""
        return 0

    def engine_passes(self) -> list[int]:
        """Tokens per row of each kind of pass it has the engine run per cycle, the verify pass included: a
        static engine compiles each kind, and a CUDA graph keeps each kind's outputs per row bucket. A chain's
        or a tree's verify pass runs at the drafter's full width in a static engine."""
        return [self.max_nodes]


class CachedDrafter(Drafter):
    """A drafter with a KV cache of its own, `draft_cache` (as many rows as the target's, `extra` positions more
    each), and per active row what was committed since its last cycle and is not in that cache yet, `pending`.
    A subclass sets `cache_config` (its model's config) and `extra`."""

    cache_config: object
    extra: int

    def bind(self, engine, cache):
        super().bind(engine, cache)
        self.draft_cache = None  # the last decode's, freed before the new one is allocated
        self.draft_cache = engine.draft_cache(self.cache_config, cache.rows, cache.capacity + self.extra)
        self.pending: list = []

    def grow(self, cache):
        super().grow(cache)
        if cache.capacity + self.extra > self.draft_cache.capacity:
            grown = self.engine.draft_cache(self.cache_config, cache.rows, cache.capacity + self.extra)
            grown.copy_rows_from(self.draft_cache)
            self.draft_cache = grown

    def keep(self, rows):
        self.draft_cache.keep(rows)
        self.pending = [self.pending[b] for b in rows]

    def release(self) -> None:
        super().release()
        self.draft_cache, self.pending = None, []

    @property
    def nbytes(self) -> int:
        return self.draft_cache.nbytes

    def state_bytes(self, sizing):
        """Its own cache (`draft_cache`: the target's rows and capacity, `extra` positions more) and each row's
        pending target features: the last prompt feature of an admitted row, a copy, until its first cycle."""
        b = sizing.itemsize
        return {
            "draft cache": kv_bytes(self.cache_config, sizing.rows, sizing.capacity + self.extra, b),
            "pending features": sizing.rows * sizing.features * b,
        }


@dataclass
class Finished:
    """A finished request: its result and how it shared the batch. Times are Clock() readings (seconds): when
    the request was admitted, its first token came, and it finished; `result.prefill_s` is first - admitted
    (time to first token, the wait for rows prefilled before it included) and `result.decode_s` the rest."""

    request: Request
    result: GenerationResult
    admitted_at: float
    finished_at: float
    forwards: int  # passes (target and drafter, prefill excluded) the request took part in
    forward_share: float  # sum over those passes of 1 / rows in the pass: its share of the batch's compute
    mean_rows: float  # rows per pass, averaged over its passes (the co-scheduled rows, itself included)
    # The KV figures; None each where a decoder outside the loop decoded it alone in a cache of its own
    # (harness.methods.base). Bytes of the KV caches (the target's and the drafter's own) per row and position:
    kv_bytes_per_position: float | None
    kv_scratch_positions: int | None  # positions a row holds beyond its committed ones (the largest proposal)
    kv_row_bytes: int | None  # what its row needs: bytes per position x (prompt + new tokens + scratch)


class _Accepted(NamedTuple):
    """What a cycle accepted in one row."""

    count: int  # drafts accepted
    token: int  # the next token: the correction, or the bonus after the last accepted draft
    drafts: list[int]  # the accepted drafts
    path: list[int] | None = (
        None  # a tree's accepted nodes (root first); None for a chain: its first count + 1
    )
    trace: list | None = None  # sampling: the acceptance trace's entries for the emitted tokens


@dataclass
class _Row:
    request: Request
    out: Output
    root: int
    admitted_at: float
    first_at: float
    accepted: list[int] = field(default_factory=list)
    trace: list = field(default_factory=lambda: [None])  # the first token comes from the prefill
    emitted_at: list[float] = field(default_factory=list)  # perf_counter per cycle, when its tokens came
    verify_forwards: int = 0
    draft_forwards: int = 0
    forwards: int = 0
    share: float = 0.0
    rows_sum: int = 0

    def emit(self, verdict: _Accepted, draft_passes: int, rows: int, at: float, drafted: bool) -> list[int]:
        """One cycle's outcome for this row, in a pass over `rows` rows: its tokens (returned), counts and
        clock."""
        passes = draft_passes + 1
        self.verify_forwards += 1
        self.draft_forwards += draft_passes
        self.forwards += passes
        self.share += passes / rows
        self.rows_sum += passes * rows
        self.root = verdict.token
        if drafted:
            self.accepted.append(verdict.count)
        if verdict.trace is not None:
            self.trace += verdict.trace
        tokens = verdict.drafts + [verdict.token]
        self.out.emit(tokens)
        self.emitted_at.append(at)
        return tokens


class _Batch:
    """A decode's rows: the target cache (made at the first request, grown for a longer one), the active rows
    in cache order, and how requests join (`fill`) and leave (`finish`, `keep`)."""

    def __init__(self, engine: Engine, drafter: Drafter | None, rows: int, params: SamplingParams):
        self.engine, self.drafter, self.rows, self.params = engine, drafter, rows, params
        self.clock = Clock(engine.device)
        self.nodes = drafter.max_nodes if drafter else 1
        self.capture = drafter.capture if drafter else ()
        self.cache: KVCache | None = None
        self.active: list[_Row] = []

    def fill(self, next_request: Callable[[], Request | None]) -> None:
        """Admit requests until every row is taken or `next_request` has none (for now: a caller may queue more
        as results come back, say a conversation's next turn)."""
        while len(self.active) < self.rows:
            request = next_request()
            if request is None:
                return
            self.admit(request)

    def admit(self, request: Request) -> None:
        """Prefill `request` into the row after the active ones."""
        admitted_at = self.clock()
        prompt = check_prompt(request.prompt_ids, request.max_new_tokens, self.engine.device)
        self._hold(max(len(prompt) + request.max_new_tokens + self.nodes, request.capacity or 0))
        cache, drafter = self.cache, self.drafter
        b = len(cache.lengths)
        result = self.engine.prefill(cache, b, prompt, self.capture)
        logits, features = result if self.capture else (result, None)
        cache.lengths.append(len(prompt))
        token = int(next_token(self.params, logits[-1], request.generator))
        stops = stop_ids(self.engine.model, request.stop_token_ids)
        out = Output(request.max_new_tokens, stops, request.on_tokens)
        out.emit([token])
        if drafter:
            drafter.admit(b, prompt, features)
            drafter.emitted(b, [token])
        self.active.append(_Row(request, out, token, admitted_at, self.clock()))

    def _hold(self, positions: int) -> None:
        """A cache whose rows hold `positions` each: the first request's, or the current one grown."""
        if self.cache is None:
            self.cache = self.engine.new_cache(self.rows, positions)
            if self.drafter:
                self.drafter.bind(self.engine, self.cache)
        elif positions > self.cache.capacity:
            self.cache = self.engine.grow(self.cache, positions)
            if self.drafter:
                self.drafter.grow(self.cache)

    def finish(self, row: _Row) -> Finished:
        now = self.clock()
        result = GenerationResult(
            row.out.tokens,
            row.out.stop_reason,
            row.accepted,
            1,
            row.verify_forwards,
            row.draft_forwards,
            row.first_at - row.admitted_at,
            now - row.first_at,
            row.trace[: len(row.out.tokens)] if any(row.trace) else [],
            offsets(row.emitted_at, row.first_at),
        )
        mean_rows = row.rows_sum / row.forwards if row.forwards else 1.0
        cache, nodes = self.cache, self.nodes
        per_position = (cache.nbytes + (self.drafter.nbytes if self.drafter else 0)) / (
            cache.rows * cache.capacity
        )
        positions = len(row.request.prompt_ids) + len(row.out.tokens) + nodes
        return Finished(
            row.request, result, row.admitted_at, now, row.forwards, row.share, mean_rows, per_position, nodes,
            int(per_position * positions),
        )  # fmt: skip

    def keep(self, kept: list[int]) -> None:
        """Only these active rows stay (the others finished), moved down in the cache and the drafter."""
        self.active = [self.active[i] for i in kept]
        self.cache.keep(kept)
        if self.drafter:
            self.drafter.keep(kept)


@torch.inference_mode()
def decode(
    engine: Engine,
    drafter: Drafter | None,
    next_request: Callable[[], Request | None],
    rows: int = 1,
    params: SamplingParams = GREEDY,
    *,
    continuous: bool = False,
    rule: AcceptanceRule = EXACT,
) -> Iterator[Finished]:
    """Decode the requests `next_request` returns (until None), `rows` at a time, yielding each as it finishes:
    plain AR with `drafter` None, else exact speculative decoding (greedy output equals plain AR's; sampled
    output follows the target's transformed distribution). Rows are sized by the requests as they come."""
    if rows < 1:
        raise ValueError(f"the batch must have at least one row, got {rows}")
    batch = _Batch(engine, drafter, rows, params)
    try:
        while True:
            if not batch.active:  # a new batch (static), or the first one
                batch.fill(next_request)
                if not batch.active:
                    return
            # Rows whose first token already ended them (a stop token, max_new_tokens 1) never enter a cycle.
            if not any(row.out.stop_reason for row in batch.active):
                _cycle(engine, drafter, batch.cache, batch.active, params, rule, batch.capture)
            finished = [i for i, row in enumerate(batch.active) if row.out.stop_reason is not None]
            if not finished:
                continue
            for i in finished:
                yield batch.finish(batch.active[i])
            batch.keep([i for i, row in enumerate(batch.active) if row.out.stop_reason is None])
            if continuous:
                batch.fill(next_request)
    finally:  # the caches go with the decode: the next one's are not allocated beside them
        if drafter:
            drafter.release()


def _cycle(engine, drafter, cache, active: list[_Row], params, rule, capture) -> None:
    """One draft-verify cycle over the active rows (the module docstring's steps 1-4)."""
    generators = [row.request.generator for row in active]
    roots = upload([row.root for row in active], engine.device)
    if drafter is None:
        proposal = Proposal(roots[:, None], [0] * len(active), 0)
    else:
        proposal = drafter.propose(roots, params, generators)
        if proposal.parents is None and engine.static:
            proposal = replace(proposal, tokens=_fixed_width(proposal.tokens, drafter.max_nodes))
    starts = list(cache.lengths)
    logits, features, anc = _verify(engine, cache, proposal, capture)
    if rule.target_logits is not None:  # a planted bug (the calibration passes it)
        logits = rule.target_logits(logits)
    accepted = _accept(proposal, logits, anc, params, rule, generators)
    # The cycle's tokens are on the host (every acceptance reads them back): this is when they are emitted.
    emitted_at = time.perf_counter()
    for b, (row, verdict) in enumerate(zip(active, accepted, strict=True)):
        if verdict.path is not None and verdict.path != list(range(len(verdict.path))):
            cache.compact(b, starts[b], verdict.path)
        cache.lengths[b] = starts[b] + verdict.count + 1
        tokens = row.emit(verdict, proposal.passes, len(active), emitted_at, drafter is not None)
        if drafter:
            drafter.emitted(b, tokens)
    if drafter:
        _tell(drafter, proposal, features, accepted, engine.device)


def _fixed_width(tokens: torch.Tensor, width: int) -> torch.Tensor:
    """A chain proposal at the drafter's full width, so that a static engine meets one verify shape per method,
    whatever the drafts (padding after each row's real drafts, which the causal verify pass hides from them): a
    cycle of prompt lookup that found no draft verifies its root at full width, which on a GPU costs what an AR
    step costs, rather than a second shape that warm-up could miss (it depends on the data)."""
    if tokens.shape[1] == width:
        return tokens
    return torch.cat([tokens, tokens.new_zeros(tokens.shape[0], width - tokens.shape[1])], dim=1)


def _verify(engine, cache, proposal: Proposal, capture):
    """Step 2: the target pass over every row's proposal -> (logits, features or None, the tree's ancestors or
    None)."""
    if proposal.parents is None:
        anc = None
        result = engine.step(cache, proposal.tokens, capture=capture)
    else:
        anc = ancestors(proposal.parents)
        result = engine.step(cache, proposal.tokens, depth=anc.sum(-1) - 1, ancestors=anc, capture=capture)
    logits, features = result if capture else (result, None)
    return logits, features, anc


def _accept(proposal: Proposal, logits, anc, params, rule, generators) -> list[_Accepted]:
    """Step 3, per row: greedy vectorised over the rows and read back in one host transfer; sampling row by row,
    each row from its own generator."""
    tokens, parents = proposal.tokens, proposal.parents
    if tokens.shape[1] == 1:  # AR steps
        if params.greedy:
            return [_Accepted(0, t, []) for t in logits[:, 0].argmax(-1).tolist()]
        dist = probs(params, logits)
        drawn = torch.stack([sample(dist[b, 0], g) for b, g in enumerate(generators)]).tolist()
        return [_Accepted(0, t, [], trace=[None]) for t in drawn]
    if params.greedy and parents is None:
        counts, nxt = greedy_accept(tokens[:, 1:], logits, upload(proposal.drafts, tokens.device))
        host = torch.cat([counts[:, None], nxt[:, None], tokens[:, 1:]], dim=1).tolist()
        return [_Accepted(h[0], h[1], h[2 : 2 + h[0]]) for h in host]
    if params.greedy:
        return _accept_greedy_trees(tokens, parents, anc, logits)
    return _accept_sampled(proposal, probs(params, logits), rule, generators)


def _accept_greedy_trees(tokens, parents, anc, logits) -> list[_Accepted]:
    """Greedy acceptance of trees, vectorised over the rows, one host transfer."""
    N = tokens.shape[1]
    on_path, nxt = accept_greedy(tokens, parents, anc, logits)
    host = torch.cat([nxt[:, None], on_path.long(), tokens], dim=1).tolist()
    accepted = []
    for h in host:
        path = [i for i in range(N) if h[1 + i]]
        accepted.append(_Accepted(len(path) - 1, h[0], [h[1 + N + i] for i in path[1:]], path))
    return accepted


def _accept_sampled(proposal: Proposal, dist, rule, generators) -> list[_Accepted]:
    """Sampling, row by row, each row drawing from its own generator in the order it draws alone: Leviathan's
    rule for drafts drawn from q (one host transfer per row: the count, the next token, the trace and the
    drafts), else the multi-draft rule for deterministic drafts, a chain or a tree."""
    tokens, parents, q = proposal.tokens, proposal.parents, proposal.q
    N = tokens.shape[1]
    drawn = parents is None and q is not None
    host = None if drawn else (tokens if parents is None else torch.cat([tokens, parents], dim=1)).tolist()
    accepted = []
    for b, generator in enumerate(generators):
        m = proposal.drafts[b]
        if drawn:
            n, token, trace, drafted = rule.chain_with_trace(tokens[b, 1 : 1 + m], q[b, :m], dist[b, : m + 1],
                                                             generator)  # fmt: skip
            accepted.append(_Accepted(n, token, drafted[:n], trace=trace))
            continue
        row_parents = list(range(-1, m)) if parents is None else host[b][N:]
        path, token = rule.tree(host[b][: len(row_parents)], row_parents, dist[b], generator)
        drafts = [host[b][i] for i in path[1:]]
        tree_path = None if parents is None else path
        accepted.append(
            _Accepted(len(path) - 1, token, drafts, tree_path, [None] * len(path))
        )  # no q to audit
    return accepted


def _tell(drafter: Drafter, proposal: Proposal, features, accepted: list[_Accepted], device) -> None:
    """Step 4's last part: the drafter hears each row's committed tokens and their target features (a tree's
    accepted paths gathered to the front of each row)."""
    counts = [a.count + 1 for a in accepted]
    if proposal.parents is None:
        drafter.accept(counts, proposal.tokens, features)
        return
    index = upload([a.path + [0] * (max(counts) - len(a.path)) for a in accepted], device)
    gathered = (
        None if features is None else features.gather(1, index[..., None].expand(-1, -1, features.shape[-1]))
    )
    drafter.accept(counts, proposal.tokens.gather(1, index), gathered)


def generate(
    engine: Engine,
    drafter: Drafter | None,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    params: SamplingParams = GREEDY,
    *,
    stop_token_ids: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    on_tokens: StreamCallback | None = None,
    rule: AcceptanceRule = EXACT,
) -> GenerationResult:
    """One request through `decode` (a batch of one row)."""
    requests = iter(
        [Request(list(prompt_ids), max_new_tokens, stop_token_ids, generator, on_tokens=on_tokens)]
    )
    (done,) = decode(engine, drafter, lambda: next(requests, None), 1, params, rule=rule)
    return done.result
