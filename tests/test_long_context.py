"""Long context on one GPU, shown on a CPU: what a prefill asks of the attention kernel (no [T, T] mask: SDPA's
is_causal, which CUDA serves with a fused flash kernel under GQA) and of the vocabulary projection (the last
position's logits only), with outputs unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from conftest import random_model

from orthrus_core.engine import Engine
from orthrus_core.loop import generate
from orthrus_core.model import KVCache


def recorded_attention(monkeypatch) -> list[dict]:
    """Every SDPA call of the model's attention: the mask it was given and whether it asked for is_causal."""
    calls = []
    real = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        calls.append({"queries": q.shape[2], "keys": k.shape[2], "mask": attn_mask, "is_causal": is_causal})
        return real(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa)
    return calls


def test_a_prefill_asks_for_is_causal_and_no_mask_and_keeps_the_last_logits(monkeypatch):
    model = random_model()
    engine = Engine(model, "eager")
    prompt = torch.arange(5, 69)
    cache = engine.new_cache(1, 80)
    calls = recorded_attention(monkeypatch)
    logits = engine.prefill(cache, 0, prompt)
    # [1, V], not [T, V]: the vocabulary's T x V transient is gone
    assert logits.shape == (1, model.config.vocab_size)
    layers = model.config.num_hidden_layers
    assert len(calls) == layers
    assert all(c["mask"] is None and c["is_causal"] and c["queries"] == c["keys"] == 64 for c in calls)


def test_is_causal_prefill_equals_the_dense_mask_it_replaces():
    model = random_model()
    prompt = torch.arange(5, 69)[None]
    dense, causal = model.new_cache(64), model.new_cache(64)  # an explicit mask covers exactly the keys given
    expected = model(prompt, 0, dense, visible=torch.ones(64, 64, dtype=torch.bool).tril())
    got = model(prompt, 0, causal, logits_to_keep=1)
    torch.testing.assert_close(got, expected[:, -1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(causal.k, dense.k, rtol=1e-5, atol=1e-5)


def test_decoding_after_an_is_causal_prefill_is_unchanged(monkeypatch):
    model = random_model()
    engine = Engine(model, "eager")
    prompt = list(range(5, 40))
    tokens = generate(engine, None, prompt, 16).tokens
    # The same greedy tokens from a reference loop that prefills with the dense mask and full logits.
    cache = model.new_cache(64)
    dense = KVCache.view(cache.k[:, :, :, : len(prompt)], cache.v[:, :, :, : len(prompt)])
    logits = model(
        torch.tensor([prompt]), 0, dense, visible=torch.ones(len(prompt), len(prompt)).tril().bool()
    )
    expected = [int(logits[0, -1].argmax())]
    for i in range(15):
        step = model(torch.tensor([[expected[-1]]]), len(prompt) + i, cache)
        expected.append(int(step[0, -1].argmax()))
    assert tokens[: len(expected)] == expected[: len(tokens)]
