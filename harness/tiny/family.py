"""The family stage of `orthrus-bench train-tiny`: train the tiny Orthrus model, measure it, and ship it with a
model card.

The checkpoint is written in the official Orthrus format (bf16 safetensors, config with
`architectures: ["OrthrusLM"]`, block_size, mask_token_id) with its tokenizer, then measured as users load it
(float32, from the bf16 weights) on the tiny suites with the harness's own AR and Orthrus decoders:
base-model accuracy, Orthrus τ at each block size tried, and token identity with AR on every prompt.
A new family replaces an old one only once it is complete.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch

from harness.methods import load_target, make_decoder
from harness.suites.conversation import Conversation, Turn, one_at_a_time, run_conversations
from harness.suites.suite import load_suite
from orthrus_core import metrics
from orthrus_core.checkpoint import save_model
from orthrus_core.jsonfile import write_json

TINY_SUITES = ("tiny-math", "tiny-code", "tiny-chat")
EVAL_BLOCK_SIZES = (8, 16, 32)


@dataclass
class SuiteFigures:
    suite: str
    prompts: int
    ar_accuracy: float | None  # None for an unscored suite
    ar_new_tokens: float  # mean per turn
    tau: dict[int, float] = field(default_factory=dict)  # block size -> tau over all cycles
    identical: dict[int, int] = field(default_factory=dict)  # block size -> turns token-identical to AR
    turns: int = 0


def evaluate(
    model_dir: str | Path,
    *,
    suites=TINY_SUITES,
    block_sizes=EVAL_BLOCK_SIZES,
    limit: int | None = None,
    data_dir=None,
    progress: bool = True,
) -> list[SuiteFigures]:
    """Greedy AR and Orthrus (at each block size) on the tiny suites, float32, as the issue's bars ask."""
    from tqdm import tqdm

    target = load_target(model_dir)
    tokenizer = target.tokenizer
    ar = make_decoder("ar", target)
    orthrus = {K: make_decoder("orthrus", target, block_size=K) for K in block_sizes}
    figures = []
    for name in suites:
        suite = load_suite(name, data_dir, limit=limit)
        items = suite.items(tokenizer)
        fig = SuiteFigures(name, len(items), None, 0.0)
        correct, scored, new_tokens = 0, 0, 0
        accepted: dict[int, list[int]] = {k: [] for k in block_sizes}
        identical = dict.fromkeys(block_sizes, 0)
        for item in tqdm(items, desc=f"evaluate {name}", disable=not progress):
            ar_turns = turns_of(suite, item, tokenizer, ar)
            score = suite.score(item, [t.text for t in ar_turns], tokenizer=tokenizer)
            if score.correct is not None:
                scored += 1
                correct += score.correct
            new_tokens += sum(t.result.new_tokens for t in ar_turns)
            fig.turns += len(ar_turns)
            for K in block_sizes:
                turns = turns_of(suite, item, tokenizer, orthrus[K])
                for ar_turn, turn in zip(ar_turns, turns, strict=True):
                    accepted[K] += turn.result.accepted
                    identical[K] += turn.result.tokens == ar_turn.result.tokens
        fig.ar_accuracy = correct / scored if scored else None
        fig.ar_new_tokens = new_tokens / max(1, fig.turns)
        fig.tau = {K: metrics.tau(sum(a), len(a)) for K, a in accepted.items() if a}
        fig.identical = identical
        figures.append(fig)
    return figures


def turns_of(suite, item, tokenizer, decoder) -> list[Turn]:
    """Every turn of `item` by `decoder` at the suite's settings, each decoded alone."""
    decode = one_at_a_time(partial(decoder.decode, params=suite.generation.sampling))
    (conversation,) = run_conversations(suite, [Conversation(item, 0)], tokenizer, decode)
    return conversation.turns


def figures_table(figures: list[SuiteFigures]) -> str:
    """Markdown table: one row per suite."""
    sizes = sorted({K for f in figures for K in f.tau})
    head = ["suite", "prompts", "AR accuracy", "AR tokens/turn"] + [f"τ K={K}" for K in sizes]
    head += [f"identical K={K}" for K in sizes]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in figures:
        acc = "–" if f.ar_accuracy is None else f"{100 * f.ar_accuracy:.1f}%"
        cells = [f.suite, str(f.prompts), acc, f"{f.ar_new_tokens:.1f}"]
        cells += [f"{f.tau[K]:.2f}" for K in sizes]
        cells += [f"{f.identical[K]}/{f.turns}" for K in sizes]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot_losses(log: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, stage, ylabel in (
        (axes[0], "base", "next-token cross-entropy"),
        (axes[1], "diffusion", "KL(AR ‖ diffusion view)"),
    ):
        losses = torch.tensor(log[stage]["losses"])
        window = min(25, len(losses))
        smooth = losses.unfold(0, window, 1).mean(1) if window else losses
        ax.plot(losses.numpy(), alpha=0.3, label="per step")
        ax.plot(range(window - 1, len(losses)), smooth.numpy(), label=f"mean of {window}")
        ax.set(title=f"{stage} stage", xlabel="step", ylabel=ylabel, yscale="log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MODEL_CARD = """\
---
license: apache-2.0
tags: [orthrus, qwen3, tiny, orthrus-bench]
---
# orthrus-bench tiny Orthrus ({params_m:.1f}M base parameters + {diff_m:.1f}M diffusion view)

The embedded default of [orthrus-bench](../../../README.md): a Qwen3-architecture causal LM trained from
scratch, plus an Orthrus diffusion view (per-layer `q/k/v/o_proj_diff`, `q/k_norm_diff`) trained on top of
the frozen base by self-distillation. Same format as `chiennv/Orthrus-Qwen3-*`
(`architectures: ["OrthrusLM"]`, `block_size` {block_size}, `mask_token_id` {mask_token_id}); weights in
bfloat16. Reproduce with `orthrus-bench train-tiny` (recipe: `orthrus_core/training/tiny.py`, `Recipe`).

## Model
{layers} layers, hidden {hidden}, {heads} query / {kv_heads} key-value heads of {head_dim}, MLP {mlp},
vocabulary {vocab} (byte-level BPE with Qwen3's special tokens and a mask token, Qwen3-like chat template:
`apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)`), tied embeddings.

## Data
{corpus_tokens:,} tokens, documents rendered through the chat template, each followed by `<|endoftext|>`:
{generated:,} generated conversations (45% arithmetic word problems with worked solutions ending in
`\\boxed{{}}`, 25% one-line Python functions with asserts, 30% templated chat; `orthrus_core/training/tiny_corpus.py`)
plus real training-split text from the data folder: {gsm8k} GSM8K train solutions, {math} MATH train
solutions and {mbpp} MBPP train programs (tasks 601–974). No benchmarked split and none of the
non-commercial instruction sets were used. The evaluation prompts come from disjoint seeds, and any
whose prompt occurs in training was dropped.

## Training ({device})
| stage | steps | batch × sequence | peak lr | final loss (mean of last 50) | wall time |
|---|---|---|---|---|---|
| base (next-token) | {base_steps} | {base_batch} × {seq_len} | {base_lr} | {base_loss:.3f} | {base_min:.1f} min |
| diffusion view (KL to AR, {blocks} blocks of K={block_size} per sequence) | {diff_steps} | {diff_batch} × {seq_len} | {diff_lr} | {diff_loss:.4f} | {diff_min:.1f} min |

![losses](loss.png)

## Measured (greedy, float32 from these weights, harness decoders; `orthrus-bench train-tiny --eval-only`)
{table}

τ = accepted drafts + 1 per cycle, over all cycles of the suite; "identical" counts turns whose Orthrus tokens
equal AR's exactly. Evaluation took {eval_min:.1f} min.
"""


def write_model_card(directory: Path, model, log: dict, figures: list[SuiteFigures], eval_s: float) -> None:
    r = log["recipe"]
    n_diff = sum(p.numel() for n, p in model.named_parameters() if "_diff" in n)
    n_base = sum(p.numel() for n, p in model.named_parameters() if "_diff" not in n)
    sizes = {"gsm8k": r["gsm8k_train"], "math": r["math_train"], "mbpp": r["mbpp_train"] or "all 374"}
    if not log.get("real_data", True):  # trained without a data folder: generated text only
        sizes = dict.fromkeys(sizes, 0)
    text = MODEL_CARD.format(
        params_m=n_base / 1e6,
        diff_m=n_diff / 1e6,
        block_size=r["block_size"],
        mask_token_id=model.config.mask_token_id,
        layers=r["num_hidden_layers"],
        hidden=r["hidden_size"],
        heads=r["num_attention_heads"],
        kv_heads=r["num_key_value_heads"],
        head_dim=r["head_dim"],
        mlp=r["intermediate_size"],
        vocab=r["vocab_size"],
        corpus_tokens=log["corpus_tokens"],
        generated=r["generated_conversations"],
        device=log["device"],
        base_steps=r["base_steps"],
        base_batch=r["base_batch"],
        seq_len=r["seq_len"],
        base_lr=r["base_lr"],
        base_loss=sum(log["base"]["losses"][-50:]) / len(log["base"]["losses"][-50:]),
        base_min=log["base"]["wall_s"] / 60,
        blocks=r["blocks_per_seq"],
        diff_steps=r["diff_steps"],
        diff_batch=r["diff_batch"],
        diff_lr=r["diff_lr"],
        diff_loss=sum(log["diffusion"]["losses"][-50:]) / len(log["diffusion"]["losses"][-50:]),
        diff_min=log["diffusion"]["wall_s"] / 60,
        table=figures_table(figures),
        eval_min=eval_s / 60,
        **sizes,
    )
    (directory / "README.md").write_text(text)


def save_family(out_dir: Path, model, tokenizer, log: dict, *, evaluate_limit: int | None = None) -> list:
    """Write the checkpoint into a staging directory, evaluate it from there, add the card, then swap it in."""
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(model, staging, dtype=torch.bfloat16)
    tokenizer.save_pretrained(staging)
    write_json(staging / "training_log.json", log, indent=None)
    plot_losses(log, staging / "loss.png")
    t0 = time.perf_counter()
    figures = evaluate(staging, limit=evaluate_limit)
    eval_s = time.perf_counter() - t0
    write_model_card(staging, model, log, figures, eval_s)
    write_json(staging / "evaluation.json", {"figures": [asdict(f) for f in figures], "eval_s": eval_s})
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
    return figures
