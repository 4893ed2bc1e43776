"""`orthrus-bench bench-core`: what one AR step, one diffusion pass and one verify pass cost, and end to end.

Prints figures; asserts nothing. Random weights at a named shape (the real model's cost does not depend on
its weights), or a real checkpoint with --model.
"""

from __future__ import annotations

import platform
import statistics
import time
from functools import partial

import torch
from rich.console import Console
from rich.table import Table
from transformers import Qwen3Config

from orthrus_core.decoding import generate_ar, generate_orthrus
from orthrus_core.model import OrthrusForCausalLM

# Qwen3 dense shapes (config.json of Qwen/Qwen3-*), with Orthrus' block size and mask id.
_QWEN3 = dict(
    vocab_size=151936,
    max_position_embeddings=40960,
    rope_theta=1e6,
    head_dim=128,
    num_key_value_heads=8,
    block_size=32,
    mask_token_id=151669,
    eos_token_id=151645,
)
SHAPES = {
    "tiny": dict(
        vocab_size=4096,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        block_size=16,
        mask_token_id=4095,
        eos_token_id=0,
        tie_word_embeddings=True,
    ),
    "qwen3-1.7b": dict(
        _QWEN3,
        hidden_size=2048,
        intermediate_size=6144,
        num_hidden_layers=28,
        num_attention_heads=16,
        tie_word_embeddings=True,
    ),
    "qwen3-4b": dict(
        _QWEN3,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        tie_word_embeddings=True,
    ),
    "qwen3-8b": dict(
        _QWEN3,
        hidden_size=4096,
        intermediate_size=12288,
        num_hidden_layers=36,
        num_attention_heads=32,
        tie_word_embeddings=False,
    ),
}


def random_model(shape: str, dtype: torch.dtype, device: str) -> OrthrusForCausalLM:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    config = Qwen3Config(architectures=["OrthrusLM"], **SHAPES[shape])
    with torch.device(device):
        model = OrthrusForCausalLM(config).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def median_time(fn, device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn(): CUDA events on a GPU, perf_counter on CPU."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads (torch {torch.__version__})"


@torch.inference_mode()
def forward_costs(model, contexts, K, repeats, device):
    """Rows of (context, AR step s, diffusion pass s, verify pass s) at each context length."""
    rows = []
    g = torch.Generator().manual_seed(0)
    for ctx in contexts:
        cache = model.new_cache(ctx + K)
        ids = torch.randint(0, model.config.vocab_size - 1, (1, ctx), generator=g).to(device)
        for s in range(0, ctx, 2048):  # chunked prefill keeps activation memory bounded at long contexts
            model(ids[:, s : s + 2048], s, cache)
        cache.length = ctx
        one = ids[:, -1:]
        block = ids[:, -K:] if ctx >= K else ids.new_zeros(1, K)
        ar_step = partial(model, one, ctx, cache)
        diffusion_pass = partial(model, block, ctx, cache, diffusion=True)
        verify_pass = partial(model, block, ctx, cache)
        rows.append((ctx, *(median_time(f, device, repeats) for f in (ar_step, diffusion_pass, verify_pass))))
    return rows


def end_to_end(model, prompts, new_tokens, K):
    """(decoder, tokens/s, tau, all outputs identical to AR) over the prompts, greedy, no stop token."""
    results = {}
    for name, decode in (("ar", generate_ar), ("orthrus", generate_orthrus)):
        kwargs = {"block_size": K} if name == "orthrus" else {}
        decode(model, prompts[0], 8, stop_token_ids=[], **kwargs)  # warm-up
        results[name] = [decode(model, p, new_tokens, stop_token_ids=[], **kwargs) for p in prompts]
    ar, orthrus = results["ar"], results["orthrus"]
    identical = all(a.tokens == o.tokens for a, o in zip(ar, orthrus, strict=True))
    rate = {k: sum(r.new_tokens for r in v) / sum(r.total_s for r in v) for k, v in results.items()}
    accepted = [n for r in orthrus for n in r.accepted]
    tau = 1 + sum(accepted) / len(accepted)
    return rate, tau, identical


def bench_core(
    shape="tiny",
    *,
    model_path=None,
    dtype=torch.float32,
    device="cpu",
    contexts=None,
    block_size=None,
    new_tokens=128,
    repeats=20,
    prompts=None,
) -> None:
    device = torch.device(device)
    if model_path:
        from orthrus_core.checkpoint import load_model

        model, label = load_model(model_path, dtype=dtype, device=device), str(model_path)
    else:
        model, label = random_model(shape, dtype, device), f"{shape} shape, random weights"
    K = block_size or model.block_size
    if contexts is None:
        contexts = [1024, 4096, 16384, 32768] if device.type == "cuda" else [64, 256, 1024]
    console = Console()
    console.print(
        f"[bold]bench-core[/]: {label}, {str(dtype).removeprefix('torch.')}, K = {K}, on {machine()}"
    )

    table = Table("context", "AR step ms", "diffusion pass ms", "verify pass ms", "cycle / AR step")
    for ctx, ar, diffusion, verify in forward_costs(model, contexts, K, repeats, device):
        table.add_row(
            str(ctx),
            f"{ar * 1e3:.3f}",
            f"{diffusion * 1e3:.3f}",
            f"{verify * 1e3:.3f}",
            f"{(diffusion + verify) / ar:.2f}",
        )
    console.print(table)

    if prompts is None:
        g = torch.Generator().manual_seed(1)
        prompts = [
            torch.randint(0, model.config.vocab_size - 1, (32,), generator=g).tolist() for _ in range(4)
        ]
    rate, tau, identical = end_to_end(model, prompts, new_tokens, K)
    table = Table("decoder", "tokens/s", "tau", "speedup", "identical to AR")
    table.add_row("ar", f"{rate['ar']:.1f}", "1.00", "1.00x", "")
    table.add_row(
        "orthrus",
        f"{rate['orthrus']:.1f}",
        f"{tau:.2f}",
        f"{rate['orthrus'] / rate['ar']:.2f}x",
        "yes" if identical else "NO",
    )
    console.print(f"end to end: {len(prompts)} prompts x {new_tokens} new tokens, greedy")
    console.print(table)
