"""The shipped tiny family: loadable in the official format, lossless, and with a diffusion view that learned."""

from __future__ import annotations

import json

import pytest

from harness.methods import load_target
from harness.paths import DEFAULT_MODEL, TINY_DIR
from harness.tiny.family import evaluate


def test_the_family_is_in_the_official_format_and_small():
    config = json.loads((DEFAULT_MODEL / "config.json").read_text())
    assert config["architectures"] == ["OrthrusLM"] and config["model_type"] == "qwen3"
    target = load_target(DEFAULT_MODEL)
    model, tokenizer = target.model, target.tokenizer
    assert model.has_diffusion_view
    assert tokenizer.convert_ids_to_tokens(model.mask_token_id) == "<|mask|>"
    assert tokenizer.convert_ids_to_tokens(model.config.eos_token_id) == "<|im_end|>"
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, enable_thinking=False, tokenize=False
    )
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    # Hidden folders are training work directories (git-ignored), not part of the family.
    shipped = [f for f in TINY_DIR.rglob("*") if f.is_file() and not any(p.startswith(".") for p in f.parts)]
    size = sum(f.stat().st_size for f in shipped)
    assert size < 25e6


@pytest.fixture(scope="module")
def sample_figures():
    return {f.suite: f for f in evaluate(DEFAULT_MODEL, block_sizes=(16,), limit=6, progress=False)}


def test_orthrus_equals_ar_on_held_out_prompts(sample_figures):
    for figures in sample_figures.values():
        assert figures.identical[16] == figures.turns, figures.suite


def test_the_diffusion_view_was_trained(sample_figures):
    # An untrained (AR-copied) view accepts almost nothing: tau stays near 1.
    for figures in sample_figures.values():
        assert figures.tau[16] > 1.5, figures.suite


def test_the_base_model_answers_some_arithmetic(sample_figures):
    assert sample_figures["tiny-math"].ar_accuracy > 0
