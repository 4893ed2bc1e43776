"""Orthrus written the way the official `OrthrusLM.generate` writes it (chiennv2000/orthrus@65f665f, paper.md
§1.5): transformers' DynamicCache, K/V appended with torch.cat, the draft pass's entries cropped off again,
the accepted prefix cropped to after verification. The comparison point for this project's decode loop and
engine (`orthrus:cache=dynamic`, `bench-engine`); greedy, one prompt at a time. Its tokens equal plain AR's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from .attention import ALL, CAUSAL, Visibility
from .generation import Clock, GenerationResult, Output, StreamCallback, check_prompt, offsets, stop_ids
from .model import OrthrusForCausalLM


@torch.inference_mode()
def generate_orthrus_dynamic_cache(
    model: OrthrusForCausalLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    *,
    block_size: int | None = None,
    stop_token_ids: Iterable[int] | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    from transformers import DynamicCache

    K, device = model.block_size if block_size is None else block_size, model.lm_head.weight.device
    prompt = check_prompt(prompt_ids, max_new_tokens, device)[None]
    out = Output(max_new_tokens, stop_ids(model, stop_token_ids), on_tokens)
    cache = DynamicCache()

    def context(layer, k, v):
        return cache.update(k, v, layer)

    clock = Clock(device)
    t0 = clock()
    T = prompt.shape[1]
    logits = model.run(prompt, torch.arange(T, device=device)[None], CAUSAL, False, context, logits_to_keep=1)
    token = int(logits[0, -1].argmax())
    done = out.emit([token])
    t1 = clock()
    accepted: list[int] = []
    emitted_at: list[float] = []  # per cycle, once its tokens are on the host (no synchronisation added)
    while not done:
        start = cache.get_seq_length()
        positions = torch.arange(start, start + K, device=device)[None]
        block = torch.tensor([[token] + [model.mask_token_id] * (K - 1)], device=device)
        drafts = model.run(block, positions, ALL, True, context)[0, :-1].argmax(-1)
        cache.crop(-K)  # the draft pass's K/V are not part of the sequence
        block = torch.cat([block[:, :1], drafts[None]], dim=1)
        verify = Visibility.after([start], K, "causal", device)
        predicted = model.run(block, positions, verify, False, context)[0].argmax(-1)
        n = int((drafts == predicted[:-1]).int().cumprod(0).sum())  # the longest agreeing prefix
        cache.crop(-(K - 1 - n))  # keep the anchor and the n accepted drafts
        token = int(predicted[n])
        accepted.append(n)
        done = out.emit(drafts[:n].tolist() + [token])
        emitted_at.append(time.perf_counter())
    return GenerationResult(
        out.tokens, out.stop_reason, accepted, 1, len(accepted), len(accepted), t1 - t0, clock() - t1,
        emit_offsets_s=offsets(emitted_at, t1),
    )  # fmt: skip
