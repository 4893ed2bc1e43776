"""The draft-verify loop every speculative method shares (Orthrus, EAGLE-3, DFlash, prompt lookup).

Per cycle:
1. the drafter proposes a `DraftTree` rooted at the last committed token (the root is not in the target's
   cache yet; a chain is a tree);
2. one target forward over all N nodes at cache slots start..start+N-1, with tree positions and an ancestor
   mask, also returning the hidden states the drafter reads (`Drafter.capture`);
3. exact acceptance (greedy; sampling: Leviathan's rule for a chain drawn from a draft distribution q, the
   multi-draft rule of `tree.accept_sampled` for deterministic drafts) gives the accepted path and one more
   token from the target (the correction, or the bonus after a leaf); sampling from a q also records, per
   emitted draft position, accepted or corrected and q there (`GenerationResult.acceptance_trace`, which
   verify audits);
4. the cache keeps the root and the accepted nodes: for a chain that is moving its length, for a tree the
   accepted rows are compacted to contiguous slots (`KVCache.compact`); the drafter is told what was committed,
   with its target features, and the extra token becomes the next root.

The target is any `OrthrusForCausalLM` (its AR view). Orthrus' drafter is the target's own diffusion view
(`OrthrusDrafter`), whose pass writes scratch K/V into the target cache at the slots the verify pass overwrites.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch

from .generation import Clock, GenerationResult, Output, StreamCallback, check_prompt, default_stop_ids
from .model import KVCache, OrthrusForCausalLM
from .sampling import SamplingParams, sample, speculative_accept
from .tree import DraftTree, accept_greedy, accept_sampled


class Drafter(ABC):
    """Proposes drafts for one generation at a time; `start` resets it for a new prompt."""

    # Target hidden states the drafter reads, as transformers' `output_hidden_states` indices.
    capture: tuple[int, ...] = ()

    @property
    @abstractmethod
    def max_nodes(self) -> int:
        """The most nodes (root included) a proposed tree can have: the verify pass's room in the cache."""

    @abstractmethod
    def start(self, prompt: torch.Tensor, features: torch.Tensor | None, cache: KVCache) -> None:
        """A new generation: prompt [T] and its target features [T, F] (None without `capture`); the target's
        cache, whose capacity bounds the positions the generation will reach."""

    @abstractmethod
    def propose(self, root: int) -> tuple[DraftTree, int]:
        """The draft tree after `root` (the newest token, at the position right after the committed ones) and
        the number of drafter forwards it took."""

    @abstractmethod
    def accept(self, tokens: torch.Tensor, features: torch.Tensor | None) -> None:
        """What the last cycle committed: tokens [n+1] (the root, then the accepted drafts) and their target
        features [n+1, F]."""


@torch.inference_mode()
def generate_speculative(
    target: OrthrusForCausalLM,
    drafter: Drafter,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    *,
    stop_token_ids: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Lossless speculative decoding of `target` with `drafter`: greedy output equals `generate_ar`'s, and
    sampled output follows the target's (transformed) distribution."""
    device = target.lm_head.weight.device
    prompt = check_prompt(prompt_ids, max_new_tokens, device)
    out = Output(
        max_new_tokens, default_stop_ids(target) if stop_token_ids is None else stop_token_ids, on_tokens
    )
    capture = drafter.capture
    clock = Clock(device)
    t0 = clock()
    capacity = prompt.shape[1] + max_new_tokens + drafter.max_nodes
    cache = target.new_cache(capacity)
    logits, features = _forward(target, prompt, 0, cache, capture)
    cache.length = prompt.shape[1]
    last = logits[0, -1]
    token = int(last.argmax() if params.greedy else sample(params.probs(last), generator))
    drafter.start(prompt[0], None if features is None else features[0], cache)
    done = out.emit([token])
    t1 = clock()
    accepted: list[int] = []
    trace: list[list[float] | None] = [None]  # the first token comes from the prefill
    draft_forwards = 0
    while not done:
        start = cache.length
        tree, forwards = drafter.propose(token)
        draft_forwards += forwards
        if tree.is_chain:  # the default causal pass is the chain's tree mask
            logits, features = _forward(target, tree.tokens[None], start, cache, capture)
        else:
            positions = (start + tree.depth)[None]
            mask = tree.verify_mask(start)
            logits, features = _forward(target, tree.tokens[None], start, cache, capture, positions, mask)
        if params.greedy:
            path, token = accept_greedy(tree, logits[0])
        elif tree.q is not None:
            n, token, entries = sampled_chain_accept(
                tree.tokens[1:], tree.q, params.probs(logits[0]), generator
            )
            trace += entries
            path = torch.arange(n + 1, device=device)
        else:
            path, token = accept_sampled(tree, params.probs(logits[0]), generator)
            trace += [None] * len(path)  # deterministic drafts: no draft distribution to audit against
        if tree.is_chain:
            cache.length = start + len(path)
        else:
            cache.compact(start, path)
        drafter.accept(tree.tokens[path], None if features is None else features[0, path])
        accepted.append(len(path) - 1)
        done = out.emit(tree.tokens[path[1:]].tolist() + [token])
    return GenerationResult(
        out.tokens,
        out.stop_reason,
        accepted,
        1,
        len(accepted),
        draft_forwards,
        t1 - t0,
        clock() - t1,
        trace[: len(out.tokens)] if any(trace) else [],
    )


def sampled_chain_accept(drafts, q, probs, generator) -> tuple[int, int, list]:
    """Leviathan's rule on a chain of drafts [n] sampled from q [n, V] against the target's probs [n+1, V] ->
    (accepted drafts, next token, the acceptance trace's entries: [accepted (1) or corrected (0), q(token)] per
    draft position ruled on, then None for a bonus token). Read back in one transfer."""
    n, nxt = speculative_accept(drafts, q, probs, generator)
    rows = torch.arange(len(drafts), device=drafts.device)
    q_emitted = q[rows, torch.where(rows == n, nxt, drafts)]  # valid up to row n
    n, token, *q_at = torch.cat([torch.stack([n, nxt]).double(), q_emitted.double()]).tolist()
    n, token = int(n), int(token)
    return n, token, [[1, x] for x in q_at[:n]] + ([[0, q_at[n]]] if n < len(drafts) else [None])


class OrthrusDrafter(Drafter):
    """Orthrus: one diffusion-view pass over [root, MASK x (K-1)] at the root's position; block position i
    predicts position i+1, so K-1 drafts, argmax or sampled from the view's distribution q."""

    def __init__(
        self, model: OrthrusForCausalLM, block_size: int | None, params: SamplingParams, generator=None
    ):
        if not model.has_diffusion_view:
            raise ValueError(
                "Orthrus decoding needs a checkpoint with a diffusion view (architectures OrthrusLM)"
            )
        block_size = block_size or model.block_size  # None: the checkpoint's
        if block_size < 2:
            raise ValueError(f"block size must be >= 2, got {block_size}")
        self.model, self.block_size, self.params, self.generator = model, block_size, params, generator

    @property
    def max_nodes(self) -> int:
        return self.block_size

    def start(self, prompt, features, cache):
        self.cache = cache
        self.block = torch.empty(1, self.block_size, dtype=torch.long, device=prompt.device)

    def accept(self, tokens, features):
        pass

    def propose(self, root):
        self.block[0, 0] = root
        self.block[0, 1:] = self.model.mask_token_id
        # Scratch K/V at the cache slots the verify pass overwrites next: nothing committed is touched.
        logits = self.model(self.block, self.cache.length, self.cache, diffusion=True)[0, :-1]
        if self.params.greedy:
            return DraftTree.chain(root, logits.argmax(-1)), 1
        q = self.params.probs(logits)
        return DraftTree.chain(root, sample(q, self.generator), q), 1


def _forward(target, ids, start, cache, capture, positions=None, mask=None):
    """-> (logits, features or None)."""
    result = target(ids, start, cache, positions=positions, mask=mask, capture=capture)
    return result if capture else (result, None)
