"""Exactness and bookkeeping of plain AR and Orthrus in the decode loop (float32, greedy, batch size 1)."""

import pytest
import torch
from conftest import OracleDrafter, check_emissions, random_model, random_prompts

from orthrus_core.engine import Engine
from orthrus_core.loop import decode, generate
from orthrus_core.model import OrthrusForCausalLM
from orthrus_core.official_loop import generate_orthrus_dynamic_cache
from orthrus_core.orthrus import OrthrusDrafter

BLOCK_SIZES = [2, 3, 5, 8, 16]


@pytest.fixture(scope="module")
def engine(model):
    return Engine(model)


def test_random_model_outputs_are_not_degenerate(engine):
    outs = [generate(engine, None, p, 40, stop_token_ids=[]).tokens for p in random_prompts(10)]
    assert all(len(set(o)) >= 10 for o in outs)
    assert len({tuple(o) for o in outs}) == 10


@pytest.fixture(scope="module")
def ar_references(engine):
    """50 prompts of 1..24 tokens and their AR greedy outputs (no stop token, so every cycle is exercised)."""
    prompts = random_prompts(50, seed=1)
    return [(p, generate(engine, None, p, 29, stop_token_ids=[]).tokens) for p in prompts]


@pytest.mark.parametrize("block_size", BLOCK_SIZES)
def test_orthrus_greedy_identical_to_ar(model, engine, ar_references, block_size):
    """50 prompts per block size. Even prompts use the model's own untrained diffusion view (drafts almost
    never accepted); odd ones an oracle draft view that is right 90/70/40% of the time, which exercises every
    acceptance length and the cache rollback."""
    accepted = []
    for i, (prompt, ar_tokens) in enumerate(ar_references):
        if i % 2 == 0:
            drafter = OrthrusDrafter(model, block_size)
        else:
            drafter = OracleDrafter(
                model, prompt + ar_tokens, block_size, error_rate=[0.1, 0.3, 0.6][i % 3], seed=i
            )
        r = generate(engine, drafter, prompt, 29, stop_token_ids=[])
        assert r.tokens == ar_tokens, f"prompt {i} diverges at block size {block_size}"
        accepted += r.accepted
    assert len(set(accepted)) >= min(block_size, 4)


def test_orthrus_greedy_identical_to_ar_with_default_stop_token(model, engine):
    for prompt in random_prompts(20, seed=2):
        ar = generate(engine, None, prompt, 40)
        orthrus = generate(engine, OrthrusDrafter(model), prompt, 40)
        assert (orthrus.tokens, orthrus.stop_reason) == (ar.tokens, ar.stop_reason)


def test_stop_token_inside_an_accepted_block_ends_output_right_after_it(model, engine):
    prompt = [7, 8, 9]
    free = generate(engine, None, prompt, 60, stop_token_ids=[]).tokens
    stop = free[13]
    first = free.index(stop)
    ar = generate(engine, None, prompt, 60, stop_token_ids=[stop])
    oracle = OracleDrafter(model, prompt + free, 8)
    orthrus = generate(engine, oracle, prompt, 60, stop_token_ids=[stop])
    assert ar.tokens == free[: first + 1] == orthrus.tokens
    assert orthrus.stop_reason == ar.stop_reason == "stop"
    # Position of the stop token inside its block: it was an accepted draft, not the correction token.
    assert first % 8 != 0


@pytest.mark.parametrize("max_new", [1, 2, 7, 9, 37])
def test_max_new_tokens_respected_exactly(model, engine, max_new):
    prompt = [11]  # a one-token prompt
    ar = generate(engine, None, prompt, max_new, stop_token_ids=[])
    oracle = OracleDrafter(
        model, prompt + generate(engine, None, prompt, max_new + 16, stop_token_ids=[]).tokens, 8
    )
    orthrus = generate(engine, oracle, prompt, max_new, stop_token_ids=[])
    assert len(ar.tokens) == len(orthrus.tokens) == max_new
    assert orthrus.tokens == ar.tokens
    assert ar.stop_reason == orthrus.stop_reason == "length"


def test_perfect_draft_view_accepts_every_draft(model, engine):
    K, max_new = 8, 8 * 6 + 1
    prompt = [5, 6, 7, 8]
    continuation = generate(engine, None, prompt, max_new + K, stop_token_ids=[]).tokens
    r = generate(engine, OracleDrafter(model, prompt + continuation, K), prompt, max_new, stop_token_ids=[])
    assert r.tokens == continuation[:max_new]
    assert r.accepted == [K - 1] * 6  # 1 token from prefill + 6 cycles x K tokens
    assert (r.prefill_forwards, r.ar_forwards, r.draft_forwards) == (1, 6, 6)
    assert r.tau == K
    assert r.tpf == pytest.approx(max_new / 12)


def test_always_wrong_draft_view_accepts_nothing(model, engine):
    prompt = [5, 6, 7, 8]
    continuation = generate(engine, None, prompt, 40, stop_token_ids=[]).tokens
    oracle = OracleDrafter(model, prompt + continuation, 8, error_rate=1.0)
    r = generate(engine, oracle, prompt, 30, stop_token_ids=[])
    assert r.tokens == continuation[:30]
    assert r.accepted == [0] * 29  # every cycle yields only the correction token
    assert (r.ar_forwards, r.draft_forwards) == (29, 29)
    assert r.tau == 1.0


def test_ar_bookkeeping_and_timings(engine):
    r = generate(engine, None, [1, 2, 3], 20, stop_token_ids=[])
    assert (r.prefill_forwards, r.ar_forwards, r.draft_forwards) == (1, 19, 0)
    assert r.accepted == [] and r.tau is None and r.tpf == pytest.approx(20 / 19)
    assert r.prefill_s > 0 and r.decode_s > 0 and r.tokens_per_s > 0


def test_each_step_is_one_emission_after_the_first_token(model, engine):
    """AR emits each token after the first alone (new tokens − 1 emissions, one per forward); a speculative
    cycle emits its accepted drafts and its bonus token at once (one emission per cycle); the official Orthrus
    loop the same; a one-token generation has none."""
    ar = generate(engine, None, [1, 2, 3], 20, stop_token_ids=[])
    check_emissions(ar, ar.new_tokens - 1)
    assert ar.ar_forwards == 19
    continuation = generate(engine, None, [4, 5], 40, stop_token_ids=[]).tokens
    oracle = generate(
        engine, OracleDrafter(model, [4, 5] + continuation, 4, 0.3), [4, 5], 30, stop_token_ids=[]
    )
    check_emissions(oracle, oracle.cycles)
    assert oracle.cycles == oracle.ar_forwards < oracle.new_tokens - 1  # bursts: fewer emissions than tokens
    r = generate(engine, OrthrusDrafter(model, 4), [4, 5], 30, stop_token_ids=[])
    check_emissions(r, r.cycles)
    official = generate_orthrus_dynamic_cache(model, [4, 5], 30, block_size=4, stop_token_ids=[])
    check_emissions(official, official.cycles)
    check_emissions(generate(engine, None, [1, 2, 3], 1, stop_token_ids=[]), 0)


def test_streaming_callback_sees_exactly_the_output(model, engine):
    chunks = []
    r = generate(engine, OrthrusDrafter(model, 4), [4, 5], 30, on_tokens=chunks.append, stop_token_ids=[])
    assert sum(chunks, []) == r.tokens


def test_untied_embeddings_and_multi_eos():
    model = random_model(seed=3, tie_word_embeddings=False, eos_token_id=[3, 4])
    engine = Engine(model)
    for prompt in random_prompts(10, seed=9):
        orthrus = generate(engine, OrthrusDrafter(model), prompt, 30)
        assert orthrus.tokens == generate(engine, None, prompt, 30).tokens


def test_bad_arguments_are_rejected(model, engine):
    with pytest.raises(ValueError, match="non-empty"):
        generate(engine, None, [], 5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(engine, OrthrusDrafter(model), [1], 0)
    with pytest.raises(ValueError, match="block size"):
        OrthrusDrafter(model, 1)
    with pytest.raises(ValueError, match="at least one row"):
        list(decode(engine, None, lambda: None, 0))
    ar_only = random_model(seed=1)
    ar_only.config.architectures = ["Qwen3ForCausalLM"]
    plain = OrthrusForCausalLM(ar_only.config, diffusion_view=False)
    with pytest.raises(ValueError, match="diffusion view"):
        OrthrusDrafter(plain)
    assert torch.is_tensor(plain.lm_head.weight)
