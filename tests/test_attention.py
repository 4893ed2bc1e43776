"""What every pass asks of the attention kernels, on this CPU and as a CUDA run would ask it (attention.planned_on):
the prefill, AR steps, diffusion blocks, verify passes, trees, ragged rows, static passes over a cache bucket, the
EAGLE-3 and DFlash drafters, the DynamicCache reference loop, the block-diffusion decoder, verify's float32
reference. A CUDA run must never hand SDPA a mask tensor (flash refuses one; under GQA that falls to the math
kernel), and a FlexAttention block mask must list every tile a query sees and none past its row's window; on a
CPU, masks are fine (its fused kernel takes them) but never one over a prompt."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from conftest import random_model, random_prompts
from torch.nn.attention.bias import CausalBias

import orthrus_core.attention as attention
import orthrus_core.block_diffusion as block_diffusion
from orthrus_core.attention import ALL, CAUSAL, FLEX_BLOCK, Visibility, kernel, planned_on
from orthrus_core.block_diffusion import BlockDiffusionLM
from orthrus_core.compiled import compilations
from orthrus_core.engine import Engine
from orthrus_core.loop import Request, decode
from orthrus_core.official_loop import generate_orthrus_dynamic_cache
from orthrus_core.params import GREEDY
from orthrus_core.rehearsal import rehearsal


@dataclass
class Call:
    kernel: str  # "sdpa" or "flex"
    queries: int
    keys: int
    gqa: bool  # fewer K/V heads than query heads
    mask: str  # "none", "tensor" or "lower-right" (sdpa); "blocks" (flex)
    is_causal: bool = False
    block_mask: object = None


def recorded(monkeypatch) -> list[Call]:
    """Every attention call from here on, as the kernel receives it."""
    calls: list[Call] = []
    real_sdpa, real_flex = F.scaled_dot_product_attention, attention._flex

    def sdpa(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        kind = (
            "none" if attn_mask is None else "lower-right" if isinstance(attn_mask, CausalBias) else "tensor"
        )
        calls.append(Call("sdpa", q.shape[2], k.shape[2], q.shape[1] != k.shape[1], kind, is_causal))
        if isinstance(attn_mask, CausalBias):  # what CUDA's flash computes, materialised on a CPU
            attn_mask = attn_mask._materialize(q.device)
        return real_sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    def flex(q, k, v, block_mask, **kwargs):
        calls.append(
            Call("flex", q.shape[2], k.shape[2], q.shape[1] != k.shape[1], "blocks", False, block_mask)
        )
        return real_flex(q, k, v, block_mask=block_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa)
    monkeypatch.setattr(attention, "_flex", flex)
    return calls


# ------------------------------------------------------------------------------------------------ the table


def test_each_structure_takes_a_fused_kernel_on_each_device():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    bf16, fp32 = torch.bfloat16, torch.float32
    one_row = lambda shape: Visibility.after([40], 4, shape)  # noqa: E731
    ragged = Visibility.after([40, 7], 4, "causal")
    static = Visibility.after(torch.tensor([40, 7]), 4, "whole")
    tree = Visibility.after([40], 3, "pattern", window=torch.eye(3, dtype=torch.bool)[None])
    expected = [
        (CAUSAL, cuda, bf16, "sdpa-causal"),
        (CAUSAL, cuda, fp32, "sdpa-causal+kv"),
        (CAUSAL, cpu, fp32, "sdpa-causal"),
        (ALL, cuda, bf16, "sdpa"),
        (one_row("whole"), cuda, bf16, "sdpa"),
        (one_row("whole"), cpu, fp32, "sdpa"),
        (Visibility.after([40], 1, "causal"), cuda, bf16, "sdpa"),  # a T = 1 step sees its whole row
        (one_row("causal"), cuda, bf16, "sdpa-lower-right"),
        (one_row("causal"), cuda, fp32, "sdpa-lower-right+kv"),
        (one_row("causal"), cpu, fp32, "sdpa-mask"),
        (ragged, cuda, bf16, "flex"),
        (ragged, cuda, fp32, "flex"),
        (ragged, cpu, fp32, "sdpa-mask"),
        (static, cuda, bf16, "flex"),  # a static pass: the host knows no bounds
        (static, cpu, bf16, "sdpa-mask"),
        (tree, cuda, bf16, "flex"),
        (torch.ones(2, 2, dtype=torch.bool), cuda, bf16, "sdpa-mask"),  # a trainer's explicit mask
    ]
    for visible, device, dtype, choice in expected:
        assert kernel(visible, device, dtype) == choice, (visible, device, dtype)
    with planned_on("cuda"):
        assert kernel(ragged, cpu, bf16) == "flex"
    assert kernel(ragged, cpu, bf16) == "sdpa-mask"
    with pytest.raises(ValueError, match="causal window is made here"):
        Visibility.after([3], 2, "causal", window=torch.ones(1, 2, 2, dtype=torch.bool))


# -------------------------------------------------------------------------------------- the block mask itself


def tiles(block_mask, r: int, qb: int) -> tuple[set[int], set[int]]:
    """(full tiles, partial tiles) a block mask lists for row r's query tile qb."""
    full = block_mask.full_kv_indices[r, 0, qb, : block_mask.full_kv_num_blocks[r, 0, qb]].tolist()
    partial = block_mask.kv_indices[r, 0, qb, : block_mask.kv_num_blocks[r, 0, qb]].tolist()
    return set(full), set(partial)


@pytest.mark.parametrize("T", [1, 5, 130])
def test_a_block_mask_lists_every_tile_a_query_sees_and_none_past_its_window(T):
    g = torch.Generator().manual_seed(T)
    keys = 896  # 7 tiles, a bucket with a tail no query may read
    prefixes = [0, 1, 127, 128, 300, 511]
    W = T + 9  # a window reaching past the pass's own tokens (a drafter's scratch rows)
    window = torch.rand(len(prefixes), T, W, generator=g) < 0.5
    visible = Visibility.after(prefixes, T, "pattern", window=window)
    dense = visible.dense(keys)[:, 0]  # [R, T, keys]
    block_mask = visible.block_mask(keys)
    n_q = -(-T // FLEX_BLOCK)
    for r, prefix in enumerate(prefixes):
        for qb in range(n_q):
            full, partial = tiles(block_mask, r, qb)
            assert not full & partial
            rows = dense[r, qb * FLEX_BLOCK : (qb + 1) * FLEX_BLOCK]
            for t in range(keys // FLEX_BLOCK):
                tile = rows[:, t * FLEX_BLOCK : (t + 1) * FLEX_BLOCK]
                if tile.any():
                    assert t in full | partial, (r, qb, t)
                if t in full:  # no mask is evaluated on a full tile: every query must see all of it
                    assert tile.all(), (r, qb, t)
                if t * FLEX_BLOCK >= prefix + W:  # past the window: never read
                    assert t not in full | partial, (r, qb, t)
    # Where a tile is visited, the mask evaluated there is the dense one.
    b, q, kv = torch.meshgrid(torch.arange(len(prefixes)), torch.arange(T), torch.arange(keys), indexing="ij")
    assert torch.equal(block_mask.mask_mod(b, 0, q, kv), dense)


def attention_inputs(R=3, T=5, keys=384, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(R, 4, T, 16, generator=g)
    k, v = torch.randn(2, R, 2, keys, 16, generator=g)
    window = torch.rand(R, T, T, generator=g) < 0.6
    window |= torch.eye(T, dtype=torch.bool)  # every query sees itself: no row is empty
    visible = Visibility.after([0, 130, 260], T, "pattern", window=window)
    return q, k, v, visible


def test_flex_attention_under_the_block_mask_equals_the_dense_mask():
    q, k, v, visible = attention_inputs()
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=visible.dense(k.shape[2]), enable_gqa=True)
    got = attention.flex_attention(q, k, v, block_mask=visible.block_mask(k.shape[2]), enable_gqa=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs g++")
def test_a_fused_flex_kernel_reads_only_the_listed_tiles_and_computes_the_dense_result():
    """Inductor's CPU FlexAttention kernel, like the CUDA one, visits only the tiles a block mask lists. Values
    past every row's window (a bucket's tail) are poisoned with NaN: a kernel that read those tiles would return
    NaN (a zero weight times NaN), one that skipped a tile a query sees would differ from the dense result."""
    q, k, v, visible = attention_inputs()  # rows' windows end at slots 5, 135 and 265: tiles 0, 1 and 2
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=visible.dense(k.shape[2]), enable_gqa=True)
    poisoned = v.clone()
    poisoned[0, :, FLEX_BLOCK:] = float("nan")
    poisoned[1, :, 2 * FLEX_BLOCK :] = float("nan")
    fused = torch.compile(attention.flex_attention, dynamic=False, fullgraph=True)
    got = fused(q, k, poisoned, block_mask=visible.block_mask(k.shape[2]), enable_gqa=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_the_float32_cuda_route_expands_kv_and_computes_the_same(monkeypatch):
    """In float32 a CUDA run expands K/V to the query heads (the memory-efficient kernel takes float32, not
    GQA): here the same route on a CPU, checked against the CPU's own."""
    q, k, v, _ = attention_inputs()
    visible = Visibility.after([100, 100, 100], 5, "causal")
    expected = attention.attend(q, k, v, visible)
    calls = recorded(monkeypatch)
    with planned_on("cuda"):
        got = attention.attend(q, k, v, visible)
        causal = attention.attend(q, k[:, :, :5], v[:, :, :5], CAUSAL)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(causal, attention.attend(q, k[:, :, :5], v[:, :, :5], CAUSAL))
    assert [(c.mask, c.gqa, c.keys) for c in calls[:2]] == [("lower-right", False, 105), ("none", False, 5)]
    assert calls[1].is_causal


# --------------------------------------------------------------------------- every pass of every decoder


def run(engine, drafter, rows: int) -> list[list[int]]:
    prompts = [p + p[:3] for p in random_prompts(3, seed=4, min_len=3, max_len=10)]
    queue = [
        Request(p, n, [], None, key=i) for i, (p, n) in enumerate(zip(prompts, [12, 7, 10], strict=True))
    ]
    queue.reverse()
    done = decode(engine, drafter, lambda: queue.pop() if queue else None, rows, GREEDY, continuous=True)
    return [d.result.tokens for d in sorted(done, key=lambda d: d.request.key)]


def check_cuda_calls(calls: list[Call], most_queries: int) -> None:
    """What a CUDA run may ask: SDPA without a mask tensor (is_causal only where queries are the keys), or a
    FlexAttention block mask; and what it must not: any mask tensor (with GQA, the math kernel)."""
    assert calls
    for c in calls:
        if c.kernel == "sdpa":
            assert c.mask != "tensor", c
            assert not c.is_causal or c.queries == c.keys, c
        else:
            assert c.queries <= most_queries, c


def check_cpu_calls(calls: list[Call], most_queries: int) -> None:
    """On a CPU a mask tensor is allowed (the fused kernel takes it) but only over a decode pass's few queries:
    a prefill is is_causal, never a [T, T] mask."""
    for c in calls:
        assert c.kernel == "sdpa", c
        if c.mask == "tensor":
            assert c.queries <= most_queries, c
        if c.queries > most_queries:
            assert c.is_causal and c.mask == "none" and c.queries == c.keys, c


@pytest.mark.parametrize("rows", [1, 3])
def test_every_method_asks_fused_kernels_on_cuda_and_decodes_the_same_tokens(micro, monkeypatch, rows):
    """Eager passes at one row (the model's plain pass: flash's own masks) and over ragged rows (FlexAttention);
    the CUDA route's tokens (its kernels run here: flex eagerly) equal the CPU route's and AR's."""
    target, drafters = micro
    engine = Engine(target)
    reference = run(engine, None, 1)
    for name, drafter in drafters.items():
        if rows > 1:  # the CPU route at one row is every other test's
            cpu_calls = recorded(monkeypatch)
            assert run(engine, drafter, rows) == reference, (name, "cpu")
            check_cpu_calls(cpu_calls, most_queries=16)
            monkeypatch.undo()
        cuda_calls = recorded(monkeypatch)
        with planned_on("cuda"):
            assert run(engine, drafter, rows) == reference, (name, "cuda")
        check_cuda_calls(cuda_calls, most_queries=16)
        monkeypatch.undo()
        if rows > 1:  # ragged rows: the masked passes are FlexAttention's
            assert any(c.kernel == "flex" for c in cuda_calls), name


def test_static_passes_read_the_cache_through_a_block_mask_on_cuda(micro, monkeypatch):
    """A static engine's passes (compile, cudagraph) attend to the whole cache bucket; on CUDA the block mask
    keeps each row to its own length, so a T = 1 step over a 256-slot bucket visits one tile, not two. Run here
    uncompiled (static_pass itself), with the tokens of eager decoding."""
    target, drafters = micro
    reference = run(Engine(target), None, 1)
    static = Engine(target, "compile", autotune=False)
    for name in ("ar", "orthrus", "eagle3"):
        calls = recorded(monkeypatch)
        # the static passes uncompiled (undone with the recorder below, so set again for each method)
        monkeypatch.setattr("orthrus_core.engine.Compiled", lambda fn, kind: fn)
        with planned_on("cuda"):
            assert run(static, drafters[name], 3) == reference, name
        check_cuda_calls(calls, most_queries=16)
        monkeypatch.undo()
        steps = [c for c in calls if c.kernel == "flex" and c.keys == 256 and c.queries == 1]
        if name == "ar":
            assert steps and all(len(set().union(*tiles(c.block_mask, 0, 0))) == 1 for c in steps)


def test_the_reference_loops_and_verify_reference_ask_fused_kernels_on_cuda(micro, monkeypatch):
    """The DynamicCache loop of the official code (prompt is_causal, draft pass unmasked, verify pass flash's
    bottom-right causal), the block-diffusion decoders (block-causal prefill and blocks) and the teacher-forced
    float32 reference of verify (is_causal; float32, so K/V expanded for the memory-efficient kernel)."""
    from harness.verify.forensics import teacher_forced_logits

    target, _ = micro
    prompt = random_prompts(1, seed=5, min_len=40, max_len=40)[0]
    expected = generate_orthrus_dynamic_cache(target, prompt, 12).tokens
    calls = recorded(monkeypatch)
    with planned_on("cuda"):
        assert generate_orthrus_dynamic_cache(target, prompt, 12).tokens == expected
    check_cuda_calls(calls, most_queries=8)
    assert {c.mask for c in calls} == {"none", "lower-right"}
    monkeypatch.undo()

    lm = BlockDiffusionLM.fast_dllm_v2(target, target.mask_token_id)
    cache = target.new_cache(64)
    with torch.inference_mode():  # as the decoder runs
        expected = lm.prefill(torch.tensor([prompt]), cache, 4)
        calls = recorded(monkeypatch)
        with planned_on("cuda"):
            got = lm.prefill(torch.tensor([prompt]), target.new_cache(64), 4)
            lm.denoise(torch.tensor([[1, 2, 3, 4]]), 40, cache)
    torch.testing.assert_close(got, expected)
    assert {c.kernel for c in calls} == {"flex", "sdpa"}  # the block-causal prefill, then a block: no mask
    # the prefill's 40 tokens padded towards a power of two (block_diffusion.prefill_passes), to the cache's 64
    assert [c.queries for c in calls if c.kernel == "flex"] == [64] * target.config.num_hidden_layers
    check_cuda_calls(calls, most_queries=64)
    monkeypatch.undo()

    reference = teacher_forced_logits(target)
    expected = reference(prompt, [5, 6, 7])
    calls = recorded(monkeypatch)
    with planned_on("cuda"):
        torch.testing.assert_close(reference(prompt, [5, 6, 7]), expected)
    assert calls and all(
        c.is_causal and c.mask == "none" and not c.gqa for c in calls
    )  # float32: K/V expanded


def test_a_block_causal_prefill_in_chunks_equals_one_pass(monkeypatch):
    """Fast-dLLM v2 / SDAR prefill block-causally; a long prompt goes in chunks of whole blocks, each seeing
    the chunks before it, which is the same attention as one pass with the [T, T] block-causal mask."""
    model = random_model(seed=1)
    lm = BlockDiffusionLM.fast_dllm_v2(model, model.mask_token_id)
    ids = torch.tensor([random_prompts(1, seed=3, min_len=37, max_len=37)[0]])
    blocks = torch.arange(37) // 4
    dense = model.new_cache(37)  # an explicit mask covers exactly the keys given
    expected = model(ids, 0, dense, visible=blocks[:, None] >= blocks[None, :])[0, -1]
    monkeypatch.setattr(block_diffusion, "PREFILL_CHUNK", 8)
    cache = model.new_cache(64)
    torch.testing.assert_close(lm.prefill(ids, cache, 4), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cache.k[:, :, :, :37], dense.k[:, :, :, :37], rtol=1e-5, atol=1e-5)


def test_a_compiled_static_pass_traces_the_block_mask_whole(micro):
    """The compile and cudagraph engines run `static_pass` as one graph (fullgraph): the visibility, the block
    mask built from the row prefixes and the FlexAttention call must trace without a break. Traced here by
    dynamo and AOT autograd as a CUDA run would trace them, in a rehearsal (inductor's own kernels are the
    GPU's)."""
    target, drafters = micro
    reference = run(Engine(target), None, 1)
    before = compilations()
    with rehearsal("aot_eager"):
        static = Engine(target, "compile", autotune=False)
        for name in ("ar", "orthrus"):
            assert run(static, drafters[name], 1) == reference, name
    assert compilations() - before == 3  # the AR step, the diffusion pass and the verify pass
