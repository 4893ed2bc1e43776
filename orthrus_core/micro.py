"""Random micro Orthrus models: the one shape the calibration (harness.verify.calibrate) and the tests use.

The micro model is one Qwen3 layer (vocabulary 320, hidden 64) whose diffusion view is its AR view plus
noise, so that drafts are accepted often but not always; its weights are spread wider than Qwen3's so that
next-token distributions have a few nats of entropy and greedy ties are rare.
"""

from __future__ import annotations

import torch
from transformers import Qwen3Config

from .model import OrthrusForCausalLM, copy_ar_to_diffusion, init_weights


def micro_config(**overrides):
    """The random micro Orthrus shape of the calibration and of the tests: vocabulary 320, hidden 64, one layer."""
    fields = dict(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        eos_token_id=3,
        block_size=8,
        mask_token_id=319,
        architectures=["OrthrusLM"],
    )
    return Qwen3Config(**{**fields, **overrides})


def micro_model(seed: int = 0, std: float = 0.25, draft_noise: float = 0.05):
    """A one-layer random Qwen3-shaped Orthrus model whose diffusion view is its AR view plus noise, so that
    drafts are accepted often but not always (the near-AR model of tests/test_sampling.py)."""
    config = micro_config()
    # std 0.25 (not Qwen3's 0.02) so that next-token distributions have a few nats of entropy.
    model = init_weights(OrthrusForCausalLM(config), std=std, seed=seed).eval()
    copy_ar_to_diffusion(model)
    g = torch.Generator().manual_seed(seed + 5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "_diff" in name and "norm" not in name:
                p.add_(torch.randn(p.shape, generator=g) * draft_noise)
    return model
