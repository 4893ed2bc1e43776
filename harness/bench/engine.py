"""`orthrus-bench bench-engine`: what one AR step, one diffusion pass and one verify pass cost, against the
memory-bandwidth roofline, and end to end against a straightforward implementation.

Prints figures; asserts nothing. Random weights at a named shape (the real model's cost does not depend on
its weights), or a real checkpoint with --model.

* Roofline: at batch size 1 a forward must read every weight once, so no AR step can be faster than
  weight bytes / device copy bandwidth; the bandwidth is measured in the same run (a device-to-device copy
  of a buffer far larger than the caches). On CPU the same figure is printed but means little.
* The comparison point end to end is `generate_orthrus_dynamic_cache`: the same algorithm written the
  obvious way on transformers' DynamicCache (K/V appended with torch.cat, the draft pass's entries cropped
  off again, acceptance checked token by token on the host). Outputs must be identical; the speed ratio is
  what the static cache and single-sync cycle buy.
"""

from __future__ import annotations

import platform
import statistics
import time
from functools import partial

import torch
from rich.table import Table
from transformers import Qwen3Config

from harness.console import console as make_console
from harness.methods.checkpoints import QWEN3_SHAPES
from harness.methods.target import check_device, load_target, torch_dtype
from orthrus_core.decoding import generate_ar, generate_orthrus
from orthrus_core.generation import default_stop_ids
from orthrus_core.model import OrthrusForCausalLM, causal_mask

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
    **QWEN3_SHAPES,
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


def weight_bytes(model: OrthrusForCausalLM) -> int:
    """Bytes one AR-view forward must read: every parameter except the diffusion view's (tied counted once)."""
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if "_diff" not in name and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Measured bytes/s of a device-to-device copy (read + write counted), the roofline's denominator."""
    if device.type != "cuda":
        nbytes = 1 << 26
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device, repeats)
    return 2 * nbytes / seconds


@torch.inference_mode()
def generate_orthrus_dynamic_cache(
    model: OrthrusForCausalLM, prompt_ids, max_new_tokens: int, block_size: int
):
    """Greedy Orthrus decoding written straightforwardly on transformers' DynamicCache (the comparison
    point, see the module docstring). Returns the new tokens."""
    from transformers import DynamicCache

    K, device = block_size, model.lm_head.weight.device
    stop = set(default_stop_ids(model))
    cache = DynamicCache()

    def context(layer, k, v):
        return cache.update(k, v, layer)

    prompt = torch.tensor([list(prompt_ids)], device=device)
    T = prompt.shape[1]
    logits = model.run(
        prompt, torch.arange(T, device=device)[None], causal_mask(0, T, device), False, context
    )
    tokens = [int(logits[0, -1].argmax())]
    while len(tokens) < max_new_tokens and tokens[-1] not in stop:
        start = cache.get_seq_length()
        positions = torch.arange(start, start + K, device=device)[None]
        block = torch.tensor([[tokens[-1]] + [model.mask_token_id] * (K - 1)], device=device)
        drafts = model.run(block, positions, None, True, context)[0, :-1].argmax(-1)
        cache.crop(-K)  # the draft pass's K/V are not part of the sequence
        block = torch.cat([block[:, :1], drafts[None]], dim=1)
        predicted = model.run(block, positions, causal_mask(start, K, device), False, context)[0].argmax(-1)
        n = 0
        while n < K - 1 and drafts[n].item() == predicted[n].item():
            n += 1
        cache.crop(-(K - 1 - n))  # keep the anchor and the n accepted drafts
        for t in drafts[:n].tolist() + [predicted[n].item()]:
            tokens.append(t)
            if t in stop or len(tokens) == max_new_tokens:
                break
    return tokens


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


def suite_prompts(model_path, count: int) -> list[list[int]] | None:
    """The first prompts of the tiny-math suite in the checkpoint's chat template, or None without a tokenizer."""
    from harness.suites.suite import load_suite
    from orthrus_core.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    if tokenizer is None:
        return None
    suite = load_suite("tiny-math", limit=count)
    return [suite.render(tokenizer, item, []) for item in suite.items(tokenizer)]


def end_to_end(model, prompts, new_tokens: int, K: int) -> dict:
    """Greedy over the prompts (the model's own stop tokens), per decoder: tokens/s, whether every output
    equals AR's, and tau. Decoders: `ar` and `orthrus` (this project's) and `orthrus-dynamic-cache`."""

    def ours(decode, **kwargs):
        def run(prompt, max_new):
            r = decode(model, prompt, max_new, **kwargs)
            return r.tokens, r.total_s, r.accepted

        return run

    def dynamic(prompt, max_new):
        t0 = time.perf_counter()
        tokens = generate_orthrus_dynamic_cache(model, prompt, max_new, K)
        return tokens, time.perf_counter() - t0, None

    decoders = {
        "ar": ours(generate_ar),
        "orthrus": ours(generate_orthrus, block_size=K),
        "orthrus-dynamic-cache": dynamic,
    }
    outputs = {}
    for name, decode in decoders.items():
        decode(prompts[0], 8)  # warm-up
        outputs[name] = [decode(p, new_tokens) for p in prompts]
    summary = {}
    for name, out in outputs.items():
        accepted = [n for _, _, a in out if a for n in a]
        summary[name] = {
            "tokens_per_s": sum(len(t) for t, _, _ in out) / sum(s for _, s, _ in out),
            "identical": all(o[0] == a[0] for o, a in zip(out, outputs["ar"], strict=True)),
            "tau": 1 + sum(accepted) / len(accepted) if accepted else None,
        }
    return summary


def bench_engine(
    shape="tiny",
    *,
    model_path=None,
    dtype="float32",
    device="cpu",
    contexts=None,
    block_sizes=None,
    new_tokens=128,
    repeats=20,
    prompts=None,
) -> None:
    dtype = torch_dtype(dtype)
    tokenizer = None
    if model_path:
        target = load_target(model_path, dtype, device)
        model, tokenizer, label = target.model, target.tokenizer, str(model_path)
    else:
        model, label = random_model(shape, dtype, check_device(device)), f"{shape} shape, random weights"
    device = torch.device(device)
    block_sizes = block_sizes or ([16, 32] if device.type == "cuda" else [model.block_size])
    if contexts is None:
        contexts = [1024, 4096, 16384, 32768, 40000] if device.type == "cuda" else [64, 256, 1024]
    contexts = [c for c in contexts if c + max(block_sizes) <= model.config.max_position_embeddings]
    console = make_console()
    console.print(f"[bold]bench-engine[/]: {label}, {str(dtype).removeprefix('torch.')}, on {machine()}")
    bandwidth = copy_bandwidth(device)
    floor = weight_bytes(model) / bandwidth
    console.print(
        f"roofline: {weight_bytes(model) / 1e9:.3f} GB of AR-view weights / {bandwidth / 1e9:.0f} GB/s "
        f"measured copy bandwidth = {floor * 1e3:.3f} ms per AR step at batch size 1"
    )
    for K in block_sizes:
        table = Table(
            "context",
            "AR ms",
            "roofline %",
            "diffusion ms",
            "verify ms",
            "cycle / AR",
            title=f"per-forward medians over {repeats} repeats, K = {K}",
        )
        for ctx, ar, diffusion, verify in forward_costs(model, contexts, K, repeats, device):
            table.add_row(
                str(ctx),
                f"{ar * 1e3:.3f}",
                f"{100 * floor / ar:.0f}%",
                f"{diffusion * 1e3:.3f}",
                f"{verify * 1e3:.3f}",
                f"{(diffusion + verify) / ar:.2f}",
            )
        console.print(table)

    if prompts is None and tokenizer is not None:
        prompts = suite_prompts(tokenizer, 8)
    if prompts is None:  # random weights or no tokenizer: random prompts (acceptance is then meaningless)
        g = torch.Generator().manual_seed(1)
        prompts = [
            torch.randint(0, model.config.vocab_size - 1, (32,), generator=g).tolist() for _ in range(4)
        ]
    K = model.block_size
    summary = end_to_end(model, prompts, new_tokens, K)
    table = Table(
        "decoder",
        "tokens/s",
        "tau",
        "speedup vs ar",
        "identical to ar",
        title=f"end to end: {len(prompts)} prompts, up to {new_tokens} new tokens, greedy, K = {K}",
    )
    for name, row in summary.items():
        table.add_row(
            name,
            f"{row['tokens_per_s']:.1f}",
            "–" if row["tau"] is None else f"{row['tau']:.2f}",
            f"{row['tokens_per_s'] / summary['ar']['tokens_per_s']:.2f}x",
            "yes" if row["identical"] else "NO",
        )
    console.print(table)
    ratio = summary["orthrus"]["tokens_per_s"] / summary["orthrus-dynamic-cache"]["tokens_per_s"]
    console.print(f"orthrus vs orthrus-dynamic-cache: {ratio:.2f}x")
