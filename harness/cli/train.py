"""`orthrus-bench train-tiny`: train, measure and ship the tiny family (harness.tiny)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from .args import add_data_dir_arg

STAGES = ("all", "family", "drafts")


def register(sub) -> None:
    p = sub.add_parser(
        "train-tiny",
        help="train the tiny family from scratch (tokenizer, base, diffusion view; then its EAGLE-3 head and "
        "DFlash drafter), evaluate, ship",
    )
    p.add_argument("--out", help="the Orthrus checkpoint directory (default: models/tiny/orthrus); the drafts go "
                   "beside it, in eagle3/ and dflash/")  # fmt: skip
    p.add_argument(
        "--stage",
        choices=STAGES,
        default="all",
        help="family: tokenizer, base and diffusion view into --out; drafts: the EAGLE-3 head and DFlash "
        "drafter of the checkpoint at --out (trained on the CPU); all (default): both, in that order",
    )
    add_data_dir_arg(p)
    p.add_argument("--device", default="cpu", help="cpu | cuda for the family stage (bf16 autocast on cuda)")
    p.add_argument(
        "--work-dir", help="where stage checkpoints go, for resuming (default: beside --out, hidden)"
    )
    p.add_argument("--base-steps", type=int, help="override the recipe's base-stage steps")
    p.add_argument("--diff-steps", type=int, help="override the recipe's diffusion-stage steps")
    p.add_argument("--draft-steps", type=int, help="override the drafts' optimiser steps (each drafter)")
    p.add_argument(
        "--draft-prompts", type=int, help="override how many training answers the drafts learn from"
    )
    p.add_argument(
        "--draft-max-new-tokens",
        type=int,
        help="override the drafts' tokens per training answer and per evaluation generation",
    )
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N prompts of each tiny suite")
    p.add_argument("--eval-only", action="store_true", help="only measure the checkpoints at --out")
    p.set_defaults(func=cmd_train_tiny)


def overrides(pairs: dict) -> dict:
    return {k: v for k, v in pairs.items() if v}


def family(args, out: Path) -> None:
    from harness.options import check_device
    from harness.suites.data import resolve_data_dir
    from harness.tiny.family import evaluate, figures_table, save_family
    from orthrus_core.training.tiny import Recipe, train_tiny

    if args.eval_only:
        print(figures_table(evaluate(out, limit=args.eval_limit, data_dir=args.data_dir)))
        return
    recipe = dataclasses.replace(
        Recipe(), **overrides({"base_steps": args.base_steps, "diff_steps": args.diff_steps})
    )
    data_dir = resolve_data_dir(args.data_dir)
    if data_dir is None:
        print(
            "train-tiny: no data folder (--data-dir or ORTHRUS_DATA_DIR): training on generated text only",
            file=sys.stderr,
        )
    model, tokenizer, log = train_tiny(
        out, data_dir, recipe=recipe, device=check_device(args.device), work_dir=args.work_dir
    )
    figures = save_family(out, model.float().cpu(), tokenizer, log, evaluate_limit=args.eval_limit)
    print(f"wrote {out}\n{figures_table(figures)}")


def drafts(args, out: Path) -> None:
    from harness.methods import load_target
    from harness.tiny.drafts import DraftRecipe, drafts_stage

    recipe = dataclasses.replace(
        DraftRecipe(),
        **overrides(
            {
                "steps": args.draft_steps,
                "train_prompts": args.draft_prompts,
                "max_new_tokens": args.draft_max_new_tokens,
            }
        ),
    )
    target = load_target(out)
    if target.tokenizer is None:
        raise ValueError(f"{out} has no tokenizer files: the drafts learn from the base's chat answers")
    drafts_stage(target, recipe, eval_only=args.eval_only, eval_limit=args.eval_limit)


def cmd_train_tiny(args) -> int:
    from harness.paths import DEFAULT_MODEL

    out = Path(args.out) if args.out else DEFAULT_MODEL
    if args.stage in ("all", "family"):
        family(args, out)
    if args.stage in ("all", "drafts"):
        drafts(args, out)
    return 0
