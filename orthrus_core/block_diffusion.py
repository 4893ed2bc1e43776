"""Lossy block-diffusion decoding (the dLLM baseline): Fast-dLLM v2 / SDAR-style confidence-threshold parallel
unmasking, with no verification against an AR model, so the output may differ from AR decoding.

Per block of B positions (split into sub-blocks, left to right): run the denoiser over the block against the
committed prefix, take the argmax and its probability at every masked position of the current sub-block,
unmask every position whose probability exceeds `threshold` and always at least the most confident one; repeat
until the sub-block is clean. A finished block is committed with one more forward that writes its exact K/V
into the cache. Generation stops as soon as a stop token is unmasked with nothing masked before it (the output
ends at the stop token; that block is not committed), as Fast-dLLM v2's `generate` does.

Three layouts (`BlockDiffusionLM`):
* Orthrus' diffusion view: block row i predicts position i + 1 (shift), so a block opens with a known token;
  blocks start anywhere, at [last token, MASK x (B-1)]; the commit pass is the AR view, whose last logit gives
  the next block's first token.
* Fast-dLLM v2: shift too, but blocks sit at multiples of B (the first one opens with the prompt's tail, or
  with the prefill's next token when the prompt fills whole blocks); denoising and commit passes see the prefix
  and the whole block (block-causal), and the commit pass's last logit gives the next block's first token.
* SDAR: row i predicts position i in place (no shift); blocks at multiples of B, the first one opening with
  the prompt's tail; block-causal passes as Fast-dLLM v2's.

Forwards: `draft_forwards` counts denoising passes, `ar_forwards` commit passes; `accepted` holds, per block,
the tokens it produced minus one, so `tau` reads as tokens per commit and `tpf` as tokens per forward.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .attention import FLEX_BLOCK, Visibility
from .engine import bucket
from .generation import Clock, GenerationResult, Output, StreamCallback, check_prompt, offsets, stop_ids
from .model import OrthrusForCausalLM

PREFILL_CHUNK = 2048  # tokens of a block-causal prefill per pass (whole blocks)


def prefill_passes(tokens: int, block_size: int) -> list[tuple[int, int, int]]:
    """The passes of a block-causal prefill of `tokens` (whole blocks): (start, real tokens, width) each, a chunk
    of whole blocks per pass (at most PREFILL_CHUNK tokens) run at the next power of two from FLEX_BLOCK up, at
    most the chunk. On a GPU each pass is a FlexAttention kernel compiled per shape: at the prompt's own length
    every prompt would compile one (hours over a suite, and past Dynamo's limit); at these widths a run compiles
    a handful."""
    chunk = block_size * max(1, PREFILL_CHUNK // block_size)
    passes = []
    for start in range(0, tokens, chunk):
        real, width = min(chunk, tokens - start), FLEX_BLOCK
        while width < real:
            width *= 2
        passes.append((start, real, min(width, chunk)))
    return passes


def cache_capacity(prompt_tokens: int, max_new_tokens: int, block_size: int, aligned: bool) -> int:
    """Positions a generation's cache holds: the prompt, the new tokens and two blocks, or the padded prefill if
    that is more, in a capacity bucket as the engine's (orthrus_core.engine.bucket): a pass's shape is its
    cache's."""
    prefill = (prompt_tokens // block_size) * block_size if aligned else prompt_tokens
    prefilled = max((start + width for start, _, width in prefill_passes(prefill, block_size)), default=0)
    return bucket(max(prompt_tokens + max_new_tokens + 2 * block_size, prefilled))


@dataclass
class BlockDiffusionLM:
    model: OrthrusForCausalLM
    mask_token_id: int
    diffusion_view: bool  # denoise with the `*_diff` projections (Orthrus) or the model's only ones (SDAR)
    shift: bool  # row i predicts position i + 1 (Orthrus, Fast-dLLM v2) rather than position i (SDAR)
    aligned: bool  # blocks at absolute multiples of the block size (as block-diffusion LMs are trained)

    @classmethod
    def orthrus(cls, model: OrthrusForCausalLM) -> BlockDiffusionLM:
        if not model.has_diffusion_view:
            raise ValueError("orthrus-diffusion-only needs a checkpoint with a diffusion view (OrthrusLM)")
        return cls(model, model.mask_token_id, diffusion_view=True, shift=True, aligned=False)

    @classmethod
    def sdar(cls, model: OrthrusForCausalLM, mask_token_id: int) -> BlockDiffusionLM:
        return cls(model, mask_token_id, diffusion_view=False, shift=False, aligned=True)

    @classmethod
    def fast_dllm_v2(cls, model: OrthrusForCausalLM, mask_token_id: int) -> BlockDiffusionLM:
        return cls(model, mask_token_id, diffusion_view=False, shift=True, aligned=True)

    def denoise(self, block: torch.Tensor, start: int, cache) -> torch.Tensor:
        """block [1, B] at positions start.. -> logits [B, V] for the block's own positions (shift applied)."""
        logits = self._block_forward(block, start, cache, self.diffusion_view)[0]
        if self.shift:  # the row before a position predicts it; position 0 of a shifted block is always known
            logits = torch.cat([logits[:1], logits[:-1]])
        return logits

    def prefill(self, ids: torch.Tensor, cache, block_size: int) -> torch.Tensor:
        """Write the prompt's K/V -> the last position's logits. Orthrus prefills with its AR view; a
        block-diffusion LM sees committed blocks as it was trained to, block-causally (each block
        bidirectionally, earlier blocks fully), as Fast-dLLM v2's prefill does."""
        if self.diffusion_view:
            return self.model(ids, 0, cache, logits_to_keep=1)[0, -1]
        # A chunk of whole blocks per pass, each seeing the chunks before it and itself block-causally: the same
        # attention as one pass, with no pattern larger than a chunk's [C, C]. A pass runs at its width
        # (`prefill_passes`): its padding comes after the real tokens, which never see it, and its K/V land in
        # slots the first block overwrites before any pass reads them.
        for start, real, width in prefill_passes(ids.shape[1], block_size):
            width = max(real, min(width, cache.capacity - start))  # a cache not sized by `cache_capacity`
            piece = torch.cat([ids[:, start : start + real], ids.new_zeros(1, width - real)], dim=1)
            positions = torch.arange(width, device=ids.device)
            blocks = positions // block_size
            window = ((blocks[:, None] >= blocks[None, :]) & (positions < real)[None, :])[None]
            visible = Visibility.after([start], width, "pattern", ids.device, window=window)
            logits = self.model(piece, start, cache, visible=visible, logits_to_keep=width - real + 1)
        return logits[0, 0]  # the last real position's

    def commit(self, block: torch.Tensor, start: int, cache) -> torch.Tensor:
        """Write the finished block's K/V; -> the last position's logits (the next token, with shift)."""
        if self.diffusion_view:  # Orthrus: the committed cache holds AR-view K/V only
            return self.model(block, start, cache)[0, -1]
        return self._block_forward(block, start, cache, False)[0, -1]

    def _block_forward(self, block, start, cache, diffusion):
        if diffusion:
            return self.model(block, start, cache, diffusion=True)
        # Block-causal: every row sees the prefix and the whole block.
        visible = Visibility.after([start], block.shape[1], "whole", block.device)
        return self.model(block, start, cache, visible=visible)


@torch.inference_mode()
def generate_block_diffusion(
    lm: BlockDiffusionLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    *,
    block_size: int,
    sub_block_size: int | None = None,
    threshold: float = 0.9,
    stop_token_ids: Iterable[int] | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Greedy block-diffusion decoding (argmax unmasking); see the module docstring."""
    B, S = block_size, sub_block_size or block_size
    check_unmasking(B, S, threshold)
    model = lm.model
    device = model.lm_head.weight.device
    prompt = check_prompt(prompt_ids, max_new_tokens, device)[None]
    out = Output(max_new_tokens, stop_ids(model, stop_token_ids), on_tokens)
    n = prompt.shape[1]
    clock = Clock(device)
    t0 = clock()
    prefill = (n // B) * B if lm.aligned else n
    cache = model.new_cache(cache_capacity(n, max_new_tokens, B, lm.aligned))
    prefill_forwards = 0
    if prefill:
        logits = lm.prefill(prompt[:, :prefill], cache, B)
        prefill_forwards = 1
    known = prompt[0, prefill:].tolist()  # tokens opening the first block (already in the prompt or output)
    t1 = None
    if lm.shift and not known:  # the prefill gives the first token, which opens the first block
        known = [int(logits.argmax())]
        out.emit(known)
        t1 = clock()
    accepted: list[int] = []
    emitted_at: list[float] = []  # per block after the one holding the first token, once it is on the host
    draft_forwards = ar_forwards = 0
    done = out.stop_reason is not None
    start = prefill  # the committed positions
    while not done:
        block = torch.full((1, B), lm.mask_token_id, dtype=torch.long, device=device)
        block[0, : len(known)] = torch.tensor(known, dtype=torch.long, device=device)
        stop_at, passes = unmask_block(lm, block, len(known), start, cache, S, threshold, out.stop_ids)
        draft_forwards += passes
        if stop_at is not None:  # the output is decided: no commit
            new = block[0, len(known) : stop_at + 1].tolist()
            accepted.append(len(new) - 1)
            out.emit(new)
            done = True
        else:
            last = lm.commit(block, start, cache)
            ar_forwards += 1
            start += B
            new = block[0, len(known) :].tolist()
            known = [int(last.argmax())] if lm.shift else []
            accepted.append(len(new) + len(known) - 1)
            done = out.emit(new + known)
        if t1 is None:
            t1 = clock()
        else:
            emitted_at.append(time.perf_counter())
    return GenerationResult(
        out.tokens,
        out.stop_reason,
        accepted,
        prefill_forwards,
        ar_forwards,
        draft_forwards,
        t1 - t0,
        clock() - t1,
        emit_offsets_s=offsets(emitted_at, t1),
    )


def check_unmasking(block_size: int, sub_block_size: int, threshold: float) -> None:
    """A ValueError unless 2 <= block_size, 1 <= sub_block_size <= block_size and threshold is in [0, 1]."""
    if block_size < 2 or not 1 <= sub_block_size <= block_size:
        raise ValueError(
            f"need block_size >= 2 and 1 <= sub_block_size <= block_size, got {block_size}, {sub_block_size}"
        )
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")


def unmask_block(
    lm: BlockDiffusionLM,
    block: torch.Tensor,
    first: int,
    start: int,
    cache,
    sub_block_size: int,
    threshold: float,
    stop_ids,
) -> tuple[int | None, int]:
    """Denoise `block` (its positions from `first` on masked) in place, one sub-block at a time, left to right,
    until it is clean or a stop token is decided -> (the block position of a stop token with nothing masked
    before it, or None; the denoising passes run)."""
    B, device = block.shape[1], block.device
    masked = torch.arange(B, device=device) >= first
    stop_at, passes = None, 0
    for s0 in range(0, B, sub_block_size):
        in_sub = torch.zeros(B, dtype=torch.bool, device=device)
        in_sub[s0 : s0 + sub_block_size] = True
        while stop_at is None and bool((masked & in_sub).any()):
            probs = torch.softmax(lm.denoise(block, start, cache), -1)
            passes += 1
            confidence, tokens = probs.max(-1)
            confidence = torch.where(masked & in_sub, confidence, -1.0)
            unmask = confidence > threshold
            unmask[confidence.argmax()] = True
            block[0, unmask] = tokens[unmask]
            masked &= ~unmask
            stop_at = decided_stop(block[0].tolist(), masked.tolist(), first, stop_ids)
    return stop_at, passes


def decided_stop(block: list[int], masked: list[bool], first: int, stop_ids) -> int | None:
    """The first position >= first of a stop token in the block with no masked position before it, or None."""
    for i in range(first, len(block)):
        if masked[i]:
            return None
        if block[i] in stop_ids:
            return i
    return None
