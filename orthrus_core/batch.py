"""Batched decoding: AR and the draft-verify loop over many requests at once, with ragged rows.

    for done in decode_batch(model, OrthrusBatchDrafter(model), requests.pop, batch_size=8):
        done.request.key, done.result.tokens

Layout: row b of the batch owns row b of a `BatchKVCache`, its committed positions 0..lengths[b]-1 contiguous
from slot 0 (no padding inside a row), so a token's cache slot is its RoPE position. A pass over R rows feeds
every row the same number of tokens T, each row at its own slots lengths[b]..lengths[b]+T-1, under a per-row
mask [R, 1, T, end] over the first `end` slots of every row (end = the furthest slot any row reaches): keys a
row must not see (its own scratch beyond its block, the unwritten tail) get exactly zero weight. So each row
computes what it would alone, up to float rounding of the longer reduction, and a greedy row emits its batch-1
tokens (tests/test_batch.py holds every batched method to that at B = 1, 2, 4, 8).

Per cycle, for the R active rows: the drafter proposes a chain per row (ragged: `lengths` says how many drafts
of each row are real; a padded draft sits after a row's real ones, where the causal verify mask hides it), one
target pass verifies every row, acceptance is per row (greedy: vectorised, one host transfer for the batch;
sampling: each row with its own generator, in the order its batch-1 decode draws), and each row's length moves
by what it accepted + 1. A row that finishes leaves: with `continuous`, the next request is prefilled into its
row right away (continuous batching); otherwise, or when no request is left, the row is dropped and the cache
compacted. A static batch admits requests only when it is empty.

A new request is prefilled alone, into its own row (a batch-1 prefill: the same pass as the batch-1 decoders),
then joins the batch's next cycle. Batched passes run eager: the static engines (engine.py) are batch-1.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from .engine import bucket
from .generation import Clock, GenerationResult, Output, check_prompt
from .model import KVCache, OrthrusForCausalLM, cache_shape
from .sampling import SamplingParams, greedy_accept, sample
from .speculative import sampled_chain_accept
from .tree import DraftTree, accept_sampled


class BatchKVCache:
    """K/V for R rows of every layer: k, v [layers, R, kv_heads, capacity, head_dim]; `lengths` [R] (host ints)
    counts each row's committed positions. Row b's K/V are contiguous at slots 0..lengths[b]-1."""

    def __init__(self, config, rows: int, capacity: int, *, dtype=None, device=None):
        # Zeros, not garbage: masked slots get zero weight, but a NaN left in one would still poison the sum.
        self.k = torch.zeros(cache_shape(config, rows, capacity), dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.lengths = [0] * rows

    @property
    def rows(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes

    def row(self, b: int) -> KVCache:
        """Row b as a batch-1 `KVCache` (views: what a pass writes there lands in the batch)."""
        return KVCache.view(self.k[:, b : b + 1], self.v[:, b : b + 1])

    def starts(self) -> torch.Tensor:
        return torch.tensor(self.lengths, device=self.k.device)

    def slots(self, T: int, offset: int = 0) -> tuple[torch.Tensor, int]:
        """Slots [R, T] of T new tokens per row, `offset` after each row's committed positions, and the number
        of slots a pass over them attends to (from the host lengths: no device round trip)."""
        start = self.starts()[:, None] + offset
        return start + torch.arange(T, device=self.k.device), max(self.lengths) + offset + T

    def kv_context(self, slots: torch.Tensor, end: int):
        """kv_context(layer, k, v) for a pass writing k, v [R, kv_heads, T, D] at `slots` [R, T] that attends to
        each row's first `end` slots."""
        rows = torch.arange(self.rows, device=slots.device)[:, None].expand_as(slots)

        def kv(layer, k, v):
            self.k[layer][rows, :, slots] = k.transpose(1, 2)
            self.v[layer][rows, :, slots] = v.transpose(1, 2)
            return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

        return kv

    def keep(self, rows: Sequence[int]) -> None:
        """Only these rows (ascending) stay, as rows 0..len(rows)-1: each kept row is moved down in place, one
        row at a time (a source is never overwritten before it is read), and the buffers are narrowed to a
        view, so leaving rows costs no second cache."""
        for i, b in enumerate(rows):
            if b != i:
                self.k[:, i].copy_(self.k[:, b])
                self.v[:, i].copy_(self.v[:, b])
        self.k, self.v = self.k[:, : len(rows)], self.v[:, : len(rows)]
        self.lengths = [self.lengths[b] for b in rows]

    def ensure(self, capacity: int) -> None:
        """Room for `capacity` positions per row (a request longer than any before), grown to the next
        capacity bucket (engine.bucket: at most half again), so that a run of longer requests reallocates
        rarely."""
        if capacity > self.capacity:
            pad = (0, 0, 0, bucket(capacity) - self.capacity)
            self.k = torch.nn.functional.pad(self.k, pad)
            self.v = torch.nn.functional.pad(self.v, pad)


def causal(slots: torch.Tensor, end: int) -> torch.Tensor:
    """[R, 1, T, end]: each query sees its row's keys up to its own slot."""
    keys = torch.arange(end, device=slots.device)
    return (keys[None, None] <= slots[:, :, None])[:, None]


def target_pass(model: OrthrusForCausalLM, cache: BatchKVCache, ids, *, diffusion=False, capture=()):
    """ids [R, T] at each row's next T slots (also their RoPE positions) -> logits [R, T, V] (and features with
    `capture`). AR view: causal per row; diffusion view: each row's prefix and its whole block."""
    slots, end = cache.slots(ids.shape[1])
    if diffusion:
        keys = torch.arange(end, device=slots.device)
        mask = (keys[None] <= slots[:, -1:])[:, None, None].expand(-1, 1, ids.shape[1], -1)
    else:
        mask = causal(slots, end)
    return model.run(ids, slots, mask, diffusion, cache.kv_context(slots, end), capture=capture)


@dataclass
class Request:
    """One generation in a batch. `key` is the caller's, handed back with the result."""

    prompt_ids: Sequence[int]
    max_new_tokens: int
    stop_token_ids: Iterable[int]
    generator: torch.Generator | None = None
    key: object = None


@dataclass
class BatchResult:
    """A finished request: its result and how it shared the batch. Times are Clock() readings (seconds): when
    the request entered the batch, its first token came, and it finished; `result.prefill_s` is first - admitted
    (time to first token, the wait for rows prefilled before it included) and `result.decode_s` the rest."""

    request: Request
    result: GenerationResult
    admitted_at: float
    finished_at: float
    forwards: int  # batched passes (target and drafter, prefill excluded) the request took part in
    forward_share: float  # sum over those passes of 1 / rows in the pass: its share of the batch's compute
    mean_rows: float  # rows per pass, averaged over its passes (the co-scheduled rows, itself included)
    kv_bytes_per_position: (
        float  # the batch's KV caches (the target's and the drafter's own) per row, position
    )
    kv_scratch_positions: int  # positions a row holds beyond its committed ones (the largest proposal)
    kv_row_bytes: int  # what its row needs: bytes per position x (prompt + new tokens + scratch positions)


class BatchDrafter(ABC):
    """Proposes a chain of drafts for every active row of a batch at once."""

    capture: tuple[int, ...] = ()  # target hidden states the drafter reads, as in speculative.Drafter

    @property
    @abstractmethod
    def max_nodes(self) -> int:
        """The most nodes (root included) a proposed chain has: a row's room beyond its committed positions."""

    def bind(self, cache: BatchKVCache, rows: int) -> None:
        """A new batch of `rows` rows over the target's `cache`."""
        self.cache = cache

    @abstractmethod
    def admit(self, b: int, prompt: torch.Tensor, features: torch.Tensor | None) -> None:
        """Row b holds a new request: prompt [T] and its target features [T, F] (None without `capture`)."""

    @abstractmethod
    def propose(
        self, roots: torch.Tensor, generators: list
    ) -> tuple[torch.Tensor, list[int], torch.Tensor | None, int]:
        """Drafts after each row's root [R] -> (drafts [R, n], real drafts per row, q [R, n, V] if the drafts
        were sampled from q, else None, drafter passes)."""

    @abstractmethod
    def accept(self, counts: list[int], tokens: torch.Tensor, features: torch.Tensor | None) -> None:
        """Row b committed tokens[b, :counts[b]] (its root, then its accepted drafts), with target features
        [R, n+1, F]."""

    def keep(self, rows: Sequence[int]) -> None:  # noqa: B027 (a hook: drafters without row state skip it)
        """Only these rows stay, renumbered 0..len(rows)-1 (after the target cache's own `keep`)."""

    def ensure(self, capacity: int) -> None:  # noqa: B027 (a hook: drafters without a cache skip it)
        """The target's rows grew to `capacity` positions: grow the drafter's own cache to match."""

    @property
    def nbytes(self) -> int:
        """The drafter's own cache, beside the target's."""
        return 0


class CachedBatchDrafter(BatchDrafter):
    """A batch drafter with a KV cache of its own, `draft_cache` (rows as the target's, `extra` positions more
    each), and per row what was committed since its last cycle and is not in that cache yet, `pending`.
    A subclass sets `cache_config` (its model's config) and `extra` before the batch binds it."""

    cache_config: object
    extra: int

    def bind(self, cache, rows):
        super().bind(cache, rows)
        k = cache.k
        self.draft_cache = BatchKVCache(
            self.cache_config, rows, cache.capacity + self.extra, dtype=k.dtype, device=k.device
        )
        self.pending: list = [None] * rows

    def ensure(self, capacity):
        self.draft_cache.ensure(capacity + self.extra)

    def keep(self, rows):
        self.draft_cache.keep(rows)
        self.pending = [self.pending[b] for b in rows]

    @property
    def nbytes(self) -> int:
        return self.draft_cache.nbytes


@dataclass
class _Row:
    request: Request
    out: Output
    root: int
    admitted_at: float
    first_at: float
    accepted: list[int] = field(default_factory=list)
    trace: list = field(default_factory=lambda: [None])
    verify_forwards: int = 0
    draft_forwards: int = 0
    forwards: int = 0
    share: float = 0.0
    rows_sum: int = 0


@torch.inference_mode()
def decode_batch(
    model: OrthrusForCausalLM,
    drafter: BatchDrafter | None,
    next_request: Callable[[], Request | None],
    batch_size: int,
    params: SamplingParams = SamplingParams(),
    *,
    continuous: bool = False,
) -> Iterator[BatchResult]:
    """Decode requests (pulled from `next_request` until it returns None) `batch_size` rows at a time, yielding
    each as it finishes: plain AR with `drafter` None, else exact speculative decoding with a batch drafter.
    The rows are sized by the requests as they come (BatchKVCache.ensure)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    device = model.lm_head.weight.device
    clock = Clock(device)
    nodes = drafter.max_nodes if drafter else 1
    capture = drafter.capture if drafter else ()
    p = model.lm_head.weight
    cache = BatchKVCache(model.config, batch_size, 0, dtype=p.dtype, device=device)
    if drafter:
        drafter.bind(cache, batch_size)
    rows: list[_Row | None] = []

    def admit(b: int) -> bool:
        """Prefill the next request into row b; False when there is none (for now: a caller may queue more
        as results come back, say a conversation's next turn)."""
        request = next_request()
        if request is None:
            return False
        admitted_at = clock()
        prompt = check_prompt(request.prompt_ids, request.max_new_tokens, device)
        cache.ensure(prompt.shape[1] + request.max_new_tokens + nodes)
        if drafter:
            drafter.ensure(cache.capacity)
        result = model(prompt, 0, cache.row(b), capture=capture)
        logits, features = result if capture else (result, None)
        cache.lengths[b] = prompt.shape[1]
        last = logits[0, -1]
        token = int(last.argmax() if params.greedy else sample(params.probs(last), request.generator))
        out = Output(request.max_new_tokens, request.stop_token_ids, None)
        out.emit([token])
        if drafter:
            drafter.admit(b, prompt[0], None if features is None else features[0])
        row = _Row(request, out, token, admitted_at, clock())
        if b < len(rows):
            rows[b] = row
        else:
            rows.append(row)
        return True

    def finish(row: _Row) -> BatchResult:
        now = clock()
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
        )
        mean_rows = row.rows_sum / row.forwards if row.forwards else 1.0
        per_position = (cache.nbytes + (drafter.nbytes if drafter else 0)) / (cache.rows * cache.capacity)
        positions = len(row.request.prompt_ids) + len(row.out.tokens) + nodes
        return BatchResult(
            row.request, result, row.admitted_at, now, row.forwards, row.share, mean_rows, per_position, nodes,
            int(per_position * positions),
        )  # fmt: skip

    while True:
        if not rows:  # a new batch (static) or the first one
            cache.lengths = [0] * cache.rows
            while len(rows) < batch_size and admit(len(rows)):
                pass
            if not rows:
                return
            if len(rows) < cache.rows:
                cache.keep(range(len(rows)))
                if drafter:
                    drafter.keep(range(len(rows)))
        # Rows whose first token already ended them (a stop token, max_new_tokens 1) never enter a cycle.
        finished = [b for b, row in enumerate(rows) if row.out.stop_reason is not None]
        if not finished:
            R = len(rows)
            roots = torch.tensor([row.root for row in rows], device=device)
            generators = [row.request.generator for row in rows]
            passes = 1
            if drafter is None:
                drafts, real, q = roots.new_zeros(R, 0), [0] * R, None
            else:
                drafts, real, q, passes = drafter.propose(roots, generators)
                passes += 1
            tokens = torch.cat([roots[:, None], drafts], dim=1)  # [R, n + 1]
            result = target_pass(model, cache, tokens, capture=capture)
            logits, features = result if capture else (result, None)
            counts, nxt, emitted, traces = accept_rows(tokens, real, q, logits, params, generators)
            for b, row in enumerate(rows):
                n = counts[b]
                cache.lengths[b] += n + 1
                row.verify_forwards += 1
                row.draft_forwards += passes - 1
                row.forwards += passes
                row.share += passes / R
                row.rows_sum += passes * R
                row.root = nxt[b]
                if drafter:
                    row.accepted.append(n)
                if traces:
                    row.trace += traces[b]
                row.out.emit(emitted[b][:n] + [nxt[b]])
            if drafter:
                drafter.accept([n + 1 for n in counts], tokens, features)
            finished = [b for b, row in enumerate(rows) if row.out.stop_reason is not None]
        if not finished:
            continue
        for b in finished:
            yield finish(rows[b])
            rows[b] = None
        if continuous:
            for b in finished:
                admit(b)
        kept = [b for b, row in enumerate(rows) if row is not None]
        if len(kept) < len(rows):
            rows = [rows[b] for b in kept]
            if rows:
                cache.keep(kept)
                if drafter:
                    drafter.keep(kept)
            else:  # every row finished: the next batch starts full size
                cache = BatchKVCache(model.config, batch_size, cache.capacity, dtype=p.dtype, device=device)
                if drafter:
                    drafter.bind(cache, batch_size)


def accept_rows(tokens, real: list[int], q, logits, params: SamplingParams, generators):
    """Per row: drafts accepted, the next token, the drafts (host lists), and the acceptance trace entries when
    the drafts were sampled from a q (else None). Greedy is vectorised over the rows and read back in one
    transfer; sampling runs row by row with each row's generator."""
    drafts = tokens[:, 1:]
    if params.greedy:
        counts, nxt = greedy_accept(drafts, logits, torch.tensor(real, device=tokens.device))
        rows = torch.cat([counts[:, None], nxt[:, None], drafts], dim=1).tolist()
        return [r[0] for r in rows], [r[1] for r in rows], [r[2:] for r in rows], None
    counts, nxt, traces = [], [], []
    probs = params.probs(logits)
    for b in range(tokens.shape[0]):
        m = real[b]
        if q is not None:
            count, token, trace = sampled_chain_accept(
                drafts[b, :m], q[b, :m], probs[b, : m + 1], generators[b]
            )
        else:
            path, token = accept_sampled(
                DraftTree.chain(int(tokens[b, 0]), drafts[b, :m]), probs[b], generators[b]
            )
            count, trace = len(path) - 1, [None] * len(path)
        counts.append(count)
        nxt.append(token)
        traces.append(trace)
    return counts, nxt, drafts.tolist(), traces


class OrthrusBatchDrafter(BatchDrafter):
    """Orthrus over a batch: one diffusion-view pass over every row's [root, MASK x (K-1)] at its own position,
    writing scratch K/V into the rows' slots the verify pass overwrites (speculative.OrthrusDrafter, batched)."""

    def __init__(self, model: OrthrusForCausalLM, block_size: int | None, params: SamplingParams):
        from .speculative import OrthrusDrafter

        self.block_size = OrthrusDrafter(model, block_size, params).block_size  # validates the model and K
        self.model, self.params = model, params

    @property
    def max_nodes(self) -> int:
        return self.block_size

    def admit(self, b, prompt, features):
        pass

    def accept(self, counts, tokens, features):
        pass

    def propose(self, roots, generators):
        R, K = roots.shape[0], self.block_size
        block = torch.full((R, K), self.model.mask_token_id, dtype=torch.long, device=roots.device)
        block[:, 0] = roots
        logits = target_pass(self.model, self.cache, block, diffusion=True)[:, :-1]
        if self.params.greedy:
            return logits.argmax(-1), [K - 1] * R, None, 1
        q = self.params.probs(logits)
        drafts = torch.stack([sample(q[b], generators[b]) for b in range(R)])
        return drafts, [K - 1] * R, q, 1
