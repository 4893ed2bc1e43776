"""The engine benchmark's comparison point must decode exactly what the project's decoders decode."""

from __future__ import annotations

import pytest
import torch
from conftest import random_model, random_prompts

from harness.bench.engine import generate_orthrus_dynamic_cache, weight_bytes
from orthrus_core import generate_ar


@pytest.mark.parametrize("block_size", [2, 5, 16])
def test_the_dynamic_cache_orthrus_equals_ar(block_size):
    model = random_model(seed=3)
    for prompt in random_prompts(8, seed=5):
        ar = generate_ar(model, prompt, 40)
        assert generate_orthrus_dynamic_cache(model, prompt, 40, block_size) == ar.tokens


def test_weight_bytes_counts_the_ar_view_once():
    model = random_model()
    ar_params = sum(p.numel() for n, p in model.named_parameters() if "_diff" not in n)
    assert weight_bytes(model) == 4 * ar_params
    assert weight_bytes(model.to(torch.bfloat16)) == 2 * ar_params
