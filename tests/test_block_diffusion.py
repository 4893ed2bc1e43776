"""Lossy block-diffusion decoding: runs, emits the right number of tokens, counts forwards, and unmasks by
confidence."""

import pytest
from conftest import random_model

from orthrus_core.block_diffusion import BlockDiffusionLM, generate_block_diffusion
from orthrus_core.engine import Engine
from orthrus_core.loop import generate


@pytest.mark.parametrize("max_new", [1, 5, 8, 17, 40])
def test_orthrus_diffusion_only_length_and_forwards(model, max_new):
    lm = BlockDiffusionLM.orthrus(model)
    r = generate_block_diffusion(lm, [5, 6, 7], max_new, block_size=8, threshold=1.0, stop_token_ids=[])
    assert len(r.tokens) == max_new and r.stop_reason == "length"
    blocks = -(-(max_new - 1) // 8)  # the prefill gives the first token, each block 8 more
    assert r.ar_forwards == blocks and r.accepted == [7] * blocks
    # Threshold 1 unmasks one token per denoising pass: 7 masked positions per block.
    assert r.draft_forwards == 7 * blocks


def test_low_threshold_unmasks_in_parallel_and_changes_the_output(model):
    lm = BlockDiffusionLM.orthrus(model)
    outs = [
        generate_block_diffusion(
            lm, [5, 6, 7], 33, block_size=8, sub_block_size=4, threshold=t, stop_token_ids=[]
        )
        for t in (1.0, 0.0)
    ]
    assert outs[1].draft_forwards == 2 * 4 < outs[0].draft_forwards  # one pass per sub-block at threshold 0
    ar = generate(Engine(model), None, [5, 6, 7], 33, stop_token_ids=[])
    assert outs[0].tokens != ar.tokens  # lossy: not AR


def test_sdar_layout_aligned_blocks_in_place(model):
    plain = random_model(seed=0)
    lm = BlockDiffusionLM.sdar(plain, mask_token_id=plain.config.mask_token_id)
    prompt = list(range(10, 21))  # 11 tokens: prefill 8, the first block opens with the last 3
    r = generate_block_diffusion(lm, prompt, 20, block_size=8, threshold=0.9, stop_token_ids=[])
    assert len(r.tokens) == 20 and r.prefill_forwards == 1
    assert r.accepted[0] == 5 - 1  # the first block held 3 prompt tokens, so it produced 5
    assert r.ar_forwards == len(r.accepted) == 3  # 5 + 8 + 8 >= 20


def test_stop_token_ends_the_output(model):
    lm = BlockDiffusionLM.orthrus(model)
    free = generate_block_diffusion(lm, [4, 5], 40, block_size=8, threshold=0.5, stop_token_ids=[]).tokens
    stop = free[11]
    r = generate_block_diffusion(lm, [4, 5], 40, block_size=8, threshold=0.5, stop_token_ids=[stop])
    assert r.tokens == free[: free.index(stop) + 1] and r.stop_reason == "stop"


def test_bad_arguments(model):
    lm = BlockDiffusionLM.orthrus(model)
    with pytest.raises(ValueError, match="sub_block_size"):
        generate_block_diffusion(lm, [1], 5, block_size=4, sub_block_size=8)
    with pytest.raises(ValueError, match="threshold"):
        generate_block_diffusion(lm, [1], 5, block_size=4, threshold=1.5)
