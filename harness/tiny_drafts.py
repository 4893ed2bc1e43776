"""Train the tiny family's EAGLE-3 head and DFlash drafter for the tiny Orthrus base, write them in their public
formats next to it, and measure them on the held-out prompts.

    python -m harness.tiny_drafts [--base models/tiny/orthrus] [--out models/tiny]

Training data: the base's own greedy answers (float32) to the first user turn of training conversations
(`tinydata.conversations`, training seeds, disjoint from the held-out problems). Both drafters are trained in
float32 and saved in bfloat16 (`<out>/eagle3`, `<out>/dflash`). The evaluation reloads them as every decoder
does and prints, per method, tau and tokens/s next to AR on held-out math and code prompts (greedy, float32,
CPU), checking on the way that every lossless method reproduces AR's tokens.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from orthrus_core import tinydata
from orthrus_core.checkpoint import load_model
from orthrus_core.decoding import generate_ar, generate_orthrus
from orthrus_core.dflash import DFlashDrafter, load_dflash, save_dflash
from orthrus_core.eagle3 import Eagle3Drafter, load_eagle3, save_eagle3
from orthrus_core.speculative import generate_speculative
from orthrus_core.tokenizer import load_tokenizer
from orthrus_core.train_dflash import train_dflash
from orthrus_core.train_eagle3 import train_eagle3

from .paths import DEFAULT_MODEL, TINY_DIR


def chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
    )


def training_sequences(model, tokenizer, count: int, max_new_tokens: int) -> list[tuple[list[int], int]]:
    """(prompt + the base's greedy answer, prompt length) for the first user turn of `count` conversations."""
    out = []
    for messages in tinydata.conversations(tinydata.TRAIN_SEED, count):
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        prompt = chat_prompt(tokenizer, messages[: first_user + 1])
        answer = generate_orthrus(model, prompt, max_new_tokens).tokens  # greedy: AR's tokens, faster
        out.append((prompt + answer, len(prompt)))
    return out


def heldout_prompts(tokenizer, n_math: int, n_code: int) -> list[list[int]]:
    math = [chat_prompt(tokenizer, tinydata.math_messages(p)) for p in tinydata.heldout_math(n_math)]
    code = [chat_prompt(tokenizer, tinydata.code_messages(p)) for p in tinydata.heldout_code(n_code)]
    return math + code


def evaluate(model, eagle3_dir: Path, dflash_dir: Path, prompts, max_new_tokens: int) -> dict[str, dict]:
    head, draft = load_eagle3(eagle3_dir, model), load_dflash(dflash_dir, model)
    methods = {
        "ar": lambda p: generate_ar(model, p, max_new_tokens),
        "orthrus": lambda p: generate_orthrus(model, p, max_new_tokens),
        "eagle3 chain (depth 7)": lambda p: generate_speculative(
            model, Eagle3Drafter.chain(head, model, 7), p, max_new_tokens
        ),
        "eagle3 tree (10/7/60)": lambda p: generate_speculative(
            model, Eagle3Drafter(head, model, 10, 7, 60), p, max_new_tokens
        ),
        "eagle3 tree 16": lambda p: generate_speculative(
            model, Eagle3Drafter(head, model, 10, 7, 16), p, max_new_tokens
        ),
        "dflash": lambda p: generate_speculative(model, DFlashDrafter(draft, model), p, max_new_tokens),
    }
    reference = [generate_ar(model, p, max_new_tokens).tokens for p in prompts]
    table = {}
    for name, run in methods.items():
        tokens, seconds, accepted, mismatches = 0, 0.0, [], 0
        for prompt, ref in zip(prompts, reference, strict=True):
            r = run(prompt)
            mismatches += r.tokens != ref
            tokens += r.new_tokens
            seconds += r.total_s
            accepted += r.accepted
        tau = 1 + sum(accepted) / len(accepted) if accepted else None
        table[name] = {"tau": tau, "tokens_per_s": tokens / seconds, "mismatches": mismatches}
        tau_text = f"{tau:5.2f}" if tau else "    -"
        print(
            f"{name:24s} tau {tau_text}  {tokens / seconds:7.1f} tok/s  differs from AR on {mismatches} prompts"
        )
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.tiny_drafts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=DEFAULT_MODEL, help="the tiny Orthrus checkpoint")
    ap.add_argument("--out", type=Path, default=TINY_DIR, help="writes <out>/eagle3 and <out>/dflash")
    ap.add_argument("--train-prompts", type=int, default=600)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-math", type=int, default=20)
    ap.add_argument("--eval-code", type=int, default=10)
    ap.add_argument("--draft-vocab", type=int, default=1024, help="EAGLE-3 draft vocabulary size")
    ap.add_argument("--dflash-layers", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=16, help="DFlash block size")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    model = load_model(args.base)
    tokenizer = load_tokenizer(args.base)
    t0 = time.perf_counter()
    sequences = training_sequences(model, tokenizer, args.train_prompts, args.max_new_tokens)
    n_tokens = sum(len(s) - start for s, start in sequences)
    print(
        f"{len(sequences)} training answers, {n_tokens} tokens, in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    draft_vocab = min(args.draft_vocab, model.config.vocab_size)
    head = train_eagle3(model, sequences, draft_vocab_size=draft_vocab, steps=args.steps, seed=args.seed)
    save_eagle3(head, args.out / "eagle3", dtype=torch.bfloat16)
    draft = train_dflash(
        model,
        sequences,
        num_layers=args.dflash_layers,
        block_size=args.block_size,
        mask_token_id=model.mask_token_id,
        steps=args.steps,
        seed=args.seed,
    )
    save_dflash(draft, args.out / "dflash", dtype=torch.bfloat16)
    print(f"trained and saved in {time.perf_counter() - t0:.0f} s", flush=True)

    evaluate(
        model,
        args.out / "eagle3",
        args.out / "dflash",
        heldout_prompts(tokenizer, args.eval_math, args.eval_code),
        args.max_new_tokens,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
