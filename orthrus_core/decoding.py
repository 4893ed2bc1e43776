"""Exact decoders over the static KV cache: autoregressive (AR) and Orthrus (diffusion draft + AR verify).

Both take a prompt as token ids, batch size 1, and return a `GenerationResult`. The Orthrus decoder emits
exactly the tokens the AR decoder would under greedy decoding (up to floating-point ties) and follows the
same distribution under sampling.

Orthrus cycle (K = block size):
1. diffusion-view forward over [anchor, MASK x (K-1)] at positions start..start+K-1; block position i
   predicts position start+i+1, so positions 0..K-2 give K-1 drafts;
2. AR-view forward over [anchor, drafts] at the same positions, writing their K/V into the cache;
3. consensus (greedy prefix match, or speculative sampling) accepts n drafts and yields one more token
   (the correction, or the bonus when all K-1 are accepted), which becomes the next anchor;
4. the cache keeps anchor + n accepted drafts: rollback is moving its length, nothing is copied.

The result record and the bookkeeping both share are in generation.py; the draft-verify loop Orthrus runs in
(and every speculative baseline with it) is speculative.py.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from .generation import Clock, GenerationResult, Output, StreamCallback, check_prompt, default_stop_ids
from .model import OrthrusForCausalLM
from .sampling import SamplingParams, sample
from .speculative import OrthrusDrafter, generate_speculative


def _first_token(model, prompt, cache, params, generator) -> int:
    logits = model(prompt, 0, cache)[0, -1]
    cache.length = prompt.shape[1]
    if params.greedy:
        return int(logits.argmax())
    return int(sample(params.probs(logits), generator))


@torch.inference_mode()
def generate_ar(
    model: OrthrusForCausalLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    *,
    stop_token_ids: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Plain autoregressive decoding: one AR-view forward per new token after the prefill."""
    device = model.lm_head.weight.device
    prompt = check_prompt(prompt_ids, max_new_tokens, device)
    out = Output(
        max_new_tokens, default_stop_ids(model) if stop_token_ids is None else stop_token_ids, on_tokens
    )
    clock = Clock(device)
    t0 = clock()
    cache = model.new_cache(prompt.shape[1] + max_new_tokens)
    token = _first_token(model, prompt, cache, params, generator)
    done = out.emit([token])
    t1 = clock()
    ar_forwards = 0
    next_input = torch.empty(1, 1, dtype=torch.long, device=device)
    while not done:
        next_input.fill_(token)
        logits = model(next_input, cache.length, cache)[0, -1]
        ar_forwards += 1
        cache.length += 1
        nxt = logits.argmax() if params.greedy else sample(params.probs(logits), generator)
        token = int(nxt)
        done = out.emit([token])
    return GenerationResult(out.tokens, out.stop_reason, [], 1, ar_forwards, 0, t1 - t0, clock() - t1)


def generate_orthrus(
    model: OrthrusForCausalLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    *,
    block_size: int | None = None,
    stop_token_ids: Iterable[int] | None = None,
    generator: torch.Generator | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Orthrus decoding: per cycle one diffusion-view draft pass and one AR-view verify pass, in the draft-verify
    loop every speculative method shares (speculative.py)."""
    drafter = OrthrusDrafter(model, block_size, params, generator)
    return generate_speculative(
        model,
        drafter,
        prompt_ids,
        max_new_tokens,
        params,
        stop_token_ids=stop_token_ids,
        generator=generator,
        on_tokens=on_tokens,
    )


def generate(
    model: OrthrusForCausalLM,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    mode: str = "orthrus",
    *,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    block_size: int | None = None,
    stop_token_ids: Iterable[int] | None = None,
    on_tokens: StreamCallback | None = None,
) -> GenerationResult:
    """Generate with `mode="ar"` or `mode="orthrus"`; sampling when temperature > 0, seeded by `seed`."""
    if mode not in ("ar", "orthrus"):
        raise ValueError(f"unknown mode {mode!r}; choose 'ar' or 'orthrus'")
    generator = None
    if seed is not None:
        generator = torch.Generator(model.lm_head.weight.device).manual_seed(seed)
    params = SamplingParams(temperature, top_k, top_p)
    common = dict(stop_token_ids=stop_token_ids, generator=generator, on_tokens=on_tokens)
    if mode == "ar":
        return generate_ar(model, prompt_ids, max_new_tokens, params, **common)
    return generate_orthrus(model, prompt_ids, max_new_tokens, params, block_size=block_size, **common)
