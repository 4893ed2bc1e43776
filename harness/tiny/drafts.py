"""Train the tiny family's EAGLE-3 head and DFlash drafter for the tiny Orthrus base, write them in their public
formats next to it, and measure them on the held-out prompts.

    python -m harness.tiny_drafts [--base models/tiny/orthrus] [--out models/tiny]

Training data: the base's own greedy answers (float32) to the first user turn of training conversations
(`tiny_corpus.conversations`, training seeds, disjoint from the held-out problems). Both drafters are trained in
float32 and saved in bfloat16 (`<out>/eagle3`, `<out>/dflash`). The evaluation reloads them as every decoder
does and prints, for every method of the registry, tau, TPF and tokens/s next to AR on held-out math and code
prompts (greedy, float32, CPU), on how many prompts its output differs from AR's (0 for every lossless method)
and its math accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from harness.methods import Target, make_decoder
from harness.paths import DEFAULT_MODEL, TINY_DIR
from harness.scoring.math_answers import last_boxed
from orthrus_core.checkpoint import load_model
from orthrus_core.decoding import generate_orthrus
from orthrus_core.dflash import save_dflash
from orthrus_core.eagle3 import save_eagle3
from orthrus_core.tokenizer import load_tokenizer
from orthrus_core.training import tiny_corpus
from orthrus_core.training.dflash import train_dflash
from orthrus_core.training.eagle3 import train_eagle3


def chat_prompt(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, enable_thinking=False, tokenize=True, return_dict=False
    )


def training_sequences(model, tokenizer, count: int, max_new_tokens: int) -> list[tuple[list[int], int]]:
    """(prompt + the base's greedy answer, prompt length) for the first user turn of `count` conversations."""
    out = []
    for messages in tiny_corpus.conversations(tiny_corpus.TRAIN_SEED, count):
        first_user = next(i for i, m in enumerate(messages) if m["role"] == "user")
        prompt = chat_prompt(tokenizer, messages[: first_user + 1])
        answer = generate_orthrus(model, prompt, max_new_tokens).tokens  # greedy: AR's tokens, faster
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


def evaluate(target: Target, out: Path, problems, max_new_tokens: int) -> dict[str, dict]:
    """Per method: tau, TPF, tokens/s, prompts whose output differs from AR's, and math accuracy (the last
    \\boxed{} equals the answer)."""
    drafts = {"eagle3": out / "eagle3", "dflash": out / "dflash"}
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
            "tau": 1 + sum(accepted) / len(accepted) if accepted else None,
            "tpf": tokens / forwards,
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


def train(model, tokenizer, args) -> None:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.tiny_drafts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=Path, default=DEFAULT_MODEL, help="the tiny Orthrus checkpoint")
    ap.add_argument("--out", type=Path, default=TINY_DIR, help="writes <out>/eagle3 and <out>/dflash")
    ap.add_argument("--train-prompts", type=int, default=2000)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--eval-math", type=int, default=20)
    ap.add_argument("--eval-code", type=int, default=10)
    ap.add_argument("--draft-vocab", type=int, default=1024, help="EAGLE-3 draft vocabulary size")
    ap.add_argument("--dflash-layers", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=16, help="DFlash block size")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--evaluate-only", action="store_true", help="measure the drafts already in --out")
    args = ap.parse_args(argv)

    model = load_model(args.base)
    tokenizer = load_tokenizer(args.base)
    if not args.evaluate_only:
        train(model, tokenizer, args)
    target = Target(model, str(args.base), tokenizer)
    evaluate(
        target, args.out, heldout_problems(tokenizer, args.eval_math, args.eval_code), args.max_new_tokens
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
