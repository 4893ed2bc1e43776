"""The drafts stage of `orthrus-bench train-tiny`: the tiny family's EAGLE-3 head and DFlash drafter for the
tiny Orthrus base, written in their public formats beside it (`eagle3/`, `dflash/`, where the method registry
finds them), and measured on the held-out prompts.

    orthrus-bench train-tiny --stage drafts [--out models/tiny/orthrus] [--eval-only]

Training data: the base's own greedy answers (float32) to the first user turn of training conversations
(`tiny_corpus.conversations`, training seeds, disjoint from the held-out problems). Both drafters are trained in
float32 on the CPU and saved in bfloat16. The evaluation reloads them as every decoder does and prints, for every method of the registry, tau, TPF and tokens/s next to AR on held-out math and code
prompts (greedy, float32, CPU), on how many prompts its output differs from AR's (0 for every lossless method)
and its math accuracy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.methods import make_decoder
from harness.methods.target import Target
from harness.scoring.math_answers import last_boxed
from orthrus_core import metrics
from orthrus_core.dflash import save_dflash
from orthrus_core.eagle3 import save_eagle3
from orthrus_core.training import tiny_corpus
from orthrus_core.training.dflash import train_dflash
from orthrus_core.training.eagle3 import train_eagle3


@dataclass(frozen=True)
class DraftRecipe:
    """How the shipped drafts were trained and are measured."""

    train_prompts: int = 2000  # training conversations answered by the base
    max_new_tokens: int = 256  # per training answer, and per evaluation generation
    steps: int = 800  # optimiser steps, each drafter
    draft_vocab: int = 1024  # EAGLE-3 draft vocabulary size
    dflash_layers: int = 2
    dflash_block_size: int = 16
    eval_math: int = 20  # held-out problems of the evaluation
    eval_code: int = 10
    seed: int = 0


def draft_dirs(base: str | Path) -> dict[str, Path]:
    """Where the drafts of the checkpoint at `base` go: sibling directories named after their methods."""
    return {name: Path(base).parent / name for name in ("eagle3", "dflash")}


def chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
    )


def training_sequences(target: Target, count: int, max_new_tokens: int) -> list[tuple[list[int], int]]:
    """(prompt + the base's greedy answer, prompt length) for the first user turn of `count` conversations."""
    out = []
    orthrus = make_decoder("orthrus", target)  # greedy: AR's tokens, faster
    for messages in tiny_corpus.conversations(tiny_corpus.TRAIN_SEED, count):
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        prompt = chat_prompt(target.tokenizer, messages[: first_user + 1])
        answer = orthrus.generate(prompt, max_new_tokens).tokens
        out.append((prompt + answer, len(prompt)))
    return out


def heldout_problems(tokenizer, n_math: int, n_code: int) -> list[tuple[list[int], str | None]]:
    """(prompt ids, the math answer or None for code) for held-out math and code problems."""
    math = [
        (chat_prompt(tokenizer, tiny_corpus.math_messages(p)), p["answer"])
        for p in tiny_corpus.heldout_math(n_math)
    ]
    code = [
        (chat_prompt(tokenizer, tiny_corpus.code_messages(p)), None) for p in tiny_corpus.heldout_code(n_code)
    ]
    return math + code


# Every method at its defaults, the EAGLE-3 chain and "tree 16" variants, and the lossy diffusion-only decoder.
EVAL_SPECS = [
    "ar",
    "orthrus",
    "eagle3:tree=chain",
    "eagle3",
    "eagle3:total_tokens=16",
    "dflash",
    "pld",
    "diffusion",
]


def evaluate(target: Target, problems, max_new_tokens: int) -> dict[str, dict]:
    """Per method: tau, TPF, tokens/s, prompts whose output differs from AR's, and math accuracy (the last
    \\boxed{} equals the answer)."""
    drafts = draft_dirs(target.path)
    reference = None
    table = {}
    for spec in EVAL_SPECS:
        name = spec.split(":")[0]
        decoder = make_decoder(spec, target, **({"draft": str(drafts[name])} if name in drafts else {}))
        results = [decoder.generate(prompt, max_new_tokens) for prompt, _ in problems]
        reference = reference or [r.tokens for r in results]
        accepted = [n for r in results for n in r.accepted]
        forwards = sum(r.ar_forwards + r.draft_forwards for r in results)
        tokens = sum(r.new_tokens for r in results)
        math = [(r, answer) for r, (_, answer) in zip(results, problems, strict=True) if answer is not None]
        correct = sum(last_boxed(target.tokenizer.decode(r.tokens)) == answer for r, answer in math)
        row = {
            "tau": metrics.tau(sum(accepted), len(accepted)),
            "tpf": metrics.tpf(tokens, forwards),
            "tokens_per_s": tokens / sum(r.total_s for r in results),
            "differs_from_ar": sum(r.tokens != ref for r, ref in zip(results, reference, strict=True)),
            "math_accuracy": correct / len(math) if math else None,
        }
        table[spec] = row
        tau = f"{row['tau']:5.2f}" if row["tau"] else "    -"
        print(
            f"{spec:24s} {'lossless' if decoder.lossless else 'LOSSY   '} tau {tau}  tpf {row['tpf']:5.2f}  "
            f"{row['tokens_per_s']:7.1f} tok/s  differs from AR on {row['differs_from_ar']}/{len(problems)}  "
            f"math {correct}/{len(math)}",
            flush=True,
        )
    return table


def train_drafts(target: Target, recipe: DraftRecipe) -> None:
    """Train both drafters on the base's answers and write them beside it."""
    model, out = target.model, draft_dirs(target.path)
    t0 = time.perf_counter()
    sequences = training_sequences(target, recipe.train_prompts, recipe.max_new_tokens)
    n_tokens = sum(len(s) - start for s, start in sequences)
    print(
        f"{len(sequences)} training answers, {n_tokens} tokens, in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    draft_vocab = min(recipe.draft_vocab, model.config.vocab_size)
    head = train_eagle3(model, sequences, draft_vocab_size=draft_vocab, steps=recipe.steps, seed=recipe.seed)
    save_eagle3(head, out["eagle3"], dtype=torch.bfloat16)
    draft = train_dflash(
        model,
        sequences,
        num_layers=recipe.dflash_layers,
        block_size=recipe.dflash_block_size,
        mask_token_id=model.mask_token_id,
        steps=recipe.steps,
        seed=recipe.seed,
    )
    save_dflash(draft, out["dflash"], dtype=torch.bfloat16)
    print(f"trained and saved in {time.perf_counter() - t0:.0f} s", flush=True)


def drafts_stage(
    target: Target, recipe: DraftRecipe, *, eval_only: bool = False, eval_limit: int | None = None
):
    """Train (unless `eval_only`) and measure the drafts of `target`; -> the evaluation table."""
    if not eval_only:
        train_drafts(target, recipe)
    n_math, n_code = recipe.eval_math, recipe.eval_code
    if eval_limit is not None:
        n_math, n_code = min(n_math, eval_limit), min(n_code, eval_limit)
    return evaluate(target, heldout_problems(target.tokenizer, n_math, n_code), recipe.max_new_tokens)
