"""Exactness and bookkeeping of the AR and Orthrus decoders (float32, greedy)."""

import pytest
import torch
from conftest import OracleDraftView, random_model, random_prompts

from orthrus_core.decoding import generate_ar, generate_orthrus

BLOCK_SIZES = [2, 3, 5, 8, 16]


def test_random_model_outputs_are_not_degenerate(model):
    outs = [generate_ar(model, p, 40, stop_token_ids=[]).tokens for p in random_prompts(10)]
    assert all(len(set(o)) >= 10 for o in outs)
    assert len({tuple(o) for o in outs}) == 10


@pytest.fixture(scope="module")
def ar_references(model):
    """50 prompts of 1..24 tokens and their AR greedy outputs (no stop token, so every cycle is exercised)."""
    prompts = random_prompts(50, seed=1)
    return [(p, generate_ar(model, p, 29, stop_token_ids=[]).tokens) for p in prompts]


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_orthrus_greedy_identical_to_ar(model, ar_references, block_size):
    """50 prompts per block size. Even prompts use the model's own untrained diffusion view (drafts almost
    never accepted); odd ones an oracle draft view that is right 90/70/40% of the time, which exercises every
    acceptance length and the cache rollback."""
    accepted = []
    for i, (prompt, ar_tokens) in enumerate(ar_references):
        if i % 2 == 0:
            draft_model = model
        else:
            draft_model = OracleDraftView(
                model, prompt + ar_tokens, error_rate=[0.1, 0.3, 0.6][i % 3], seed=i
            )
        r = generate_orthrus(draft_model, prompt, 29, block_size=block_size, stop_token_ids=[])
        assert r.tokens == ar_tokens, f"prompt {i} diverges at block size {block_size}"
        accepted += r.accepted
    assert len(set(accepted)) >= min(block_size, 4)


def test_orthrus_greedy_identical_to_ar_with_default_stop_token(model):
    for prompt in random_prompts(20, seed=2):
        ar = generate_ar(model, prompt, 40)
        orthrus = generate_orthrus(model, prompt, 40)
        assert (orthrus.tokens, orthrus.stop_reason) == (ar.tokens, ar.stop_reason)


def test_stop_token_inside_an_accepted_block_ends_output_right_after_it(model):
    prompt = [7, 8, 9]
    free = generate_ar(model, prompt, 60, stop_token_ids=[]).tokens
    stop = free[13]
    first = free.index(stop)
    ar = generate_ar(model, prompt, 60, stop_token_ids=[stop])
    oracle = OracleDraftView(model, prompt + free)
    orthrus = generate_orthrus(oracle, prompt, 60, block_size=8, stop_token_ids=[stop])
    assert ar.tokens == free[: first + 1] == orthrus.tokens
    assert orthrus.stop_reason == ar.stop_reason == "stop"
    # Position of the stop token inside its block: it was an accepted draft, not the correction token.
    assert first % 8 != 0


@pytest.mark.parametrize("max_new", [1, 2, 7, 9, 37])
def test_max_new_tokens_respected_exactly(model, max_new):
    prompt = [11]  # a one-token prompt
    ar = generate_ar(model, prompt, max_new, stop_token_ids=[])
    oracle = OracleDraftView(
        model, prompt + generate_ar(model, prompt, max_new + 16, stop_token_ids=[]).tokens
    )
    orthrus = generate_orthrus(oracle, prompt, max_new, block_size=8, stop_token_ids=[])
    assert len(ar.tokens) == len(orthrus.tokens) == max_new
    assert orthrus.tokens == ar.tokens
    assert ar.stop_reason == orthrus.stop_reason == "length"


def test_perfect_draft_view_accepts_every_draft(model):
    K, max_new = 8, 8 * 6 + 1
    prompt = [5, 6, 7, 8]
    continuation = generate_ar(model, prompt, max_new + K, stop_token_ids=[]).tokens
    r = generate_orthrus(
        OracleDraftView(model, prompt + continuation), prompt, max_new, block_size=K, stop_token_ids=[]
    )
    assert r.tokens == continuation[:max_new]
    assert r.accepted == [K - 1] * 6  # 1 token from prefill + 6 cycles x K tokens
    assert (r.prefill_forwards, r.ar_forwards, r.draft_forwards) == (1, 6, 6)
    assert r.tau == K
    assert r.tpf == pytest.approx(max_new / 12)


def test_always_wrong_draft_view_accepts_nothing(model):
    prompt = [5, 6, 7, 8]
    continuation = generate_ar(model, prompt, 40, stop_token_ids=[]).tokens
    r = generate_orthrus(
        OracleDraftView(model, prompt + continuation, error_rate=1.0),
        prompt,
        30,
        block_size=8,
        stop_token_ids=[],
    )
    assert r.tokens == continuation[:30]
    assert r.accepted == [0] * 29  # every cycle yields only the correction token
    assert (r.ar_forwards, r.draft_forwards) == (29, 29)
    assert r.tau == 1.0


def test_ar_bookkeeping_and_timings(model):
    r = generate_ar(model, [1, 2, 3], 20, stop_token_ids=[])
    assert (r.prefill_forwards, r.ar_forwards, r.draft_forwards) == (1, 19, 0)
    assert r.accepted == [] and r.tau is None and r.tpf == pytest.approx(20 / 19)
    assert r.prefill_s > 0 and r.decode_s > 0 and r.tokens_per_s > 0


def test_streaming_callback_sees_exactly_the_output(model):
    chunks = []
    r = generate_orthrus(model, [4, 5], 30, block_size=4, on_tokens=chunks.append, stop_token_ids=[])
    assert sum(chunks, []) == r.tokens


def test_untied_embeddings_and_multi_eos():
    model = random_model(seed=3, tie_word_embeddings=False, eos_token_id=[3, 4])
    for prompt in random_prompts(10, seed=9):
        assert generate_orthrus(model, prompt, 30).tokens == generate_ar(model, prompt, 30).tokens


def test_bad_arguments_are_rejected(model):
    with pytest.raises(ValueError, match="non-empty"):
        generate_ar(model, [], 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_orthrus(model, [1], 0)
    with pytest.raises(ValueError, match="block size"):
        generate_orthrus(model, [1], 5, block_size=1)
    ar_only = random_model(seed=1)
    ar_only.config.architectures = ["Qwen3ForCausalLM"]
    from orthrus_core.model import OrthrusForCausalLM

    plain = OrthrusForCausalLM(ar_only.config, diffusion_view=False)
    with pytest.raises(ValueError, match="diffusion view"):
        generate_orthrus(plain, [1, 2], 5)
    assert torch.is_tensor(plain.lm_head.weight)
