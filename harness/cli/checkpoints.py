"""`orthrus-bench inspect PATH_OR_ID`: what the harness sees in a checkpoint, from its config files and tensor
headers alone (orthrus_core.formats), so that it can be checked before a long GPU run. Exit 1 when loading it
would fail; exit 2, with the file named, when a file cannot be read at all (truncated weights, JSON that does not
parse, missing shards or tokenizer.json)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="a checkpoint's format, shapes, parameters, stop tokens, fit and load problems, without its weights",
    )
    p.add_argument("checkpoint", metavar="PATH_OR_ID", help="checkpoint directory or hub id")
    p.add_argument(
        "--target", help="for a draft: the target checkpoint (directory or hub id) to check it against"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_inspect)


def fits(info) -> list[str]:
    """For a draft, the public Qwen3 bases it could draft for (methods/checkpoints.py); for a target, the
    drafts the registry would pick for it."""
    from transformers import Qwen3Config

    from harness.methods.checkpoints import BASE_NAME, PUBLIC_DRAFTS, QWEN3_SHAPES
    from orthrus_core import dflash, eagle3, formats

    if info.format == "eagle3":
        config = eagle3.head_config(_config(info), _head_state(info))
        check = lambda base: eagle3.fit_problems(config, {}, base)  # noqa: E731
    elif info.format == "dflash":
        raw = _config(info)
        check = lambda base: dflash.fit_problems(  # noqa: E731
            raw, dflash.draft_config(raw, base.num_hidden_layers), base
        )
    elif info.format in formats.TARGET_FORMATS:
        match = BASE_NAME.search(info.path)
        base = match.group(0).lower() if match else None
        return [f"{m}: {drafts[base]}" for m, drafts in PUBLIC_DRAFTS.items() if base in drafts]
    else:
        return []
    return [name for name, shape in QWEN3_SHAPES.items() if not check(Qwen3Config(**shape))]


def _config(info) -> dict:
    from pathlib import Path

    from orthrus_core.checkpoint import read_json

    return read_json(Path(info.path) / "config.json")


def _head_state(info):
    from pathlib import Path

    from orthrus_core import eagle3

    return eagle3.read_weights(eagle3.weights_file(Path(info.path)), meta=True)


def _millions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def lines(info, fitting: list[str], tokenizer=None) -> list[str]:
    def token(i: int) -> str:
        name = tokenizer.convert_ids_to_tokens(i) if tokenizer is not None else None
        return f"{i} ({name})" if name else str(i)

    out = [info.path]
    arch = ", ".join(info.architectures) or "no architectures"
    out.append(
        f"  format       {info.format or 'not recognised'} ({arch}; model_type {info.model_type}), {info.dtype}"
    )
    out.append(
        f"  shape        {info.layers} layers, hidden {info.hidden_size}, vocabulary {info.vocab_size}"
    )
    if info.parameters:
        p = info.parameters
        views = ""
        if "diffusion_view_only" in p:
            views = f": AR view {_millions(p['ar_view'])}, the diffusion view adds {_millions(p['diffusion_view_only'])}"
        out.append(f"  parameters   {_millions(p['total'])} stored{views}")
    if info.block_size is not None or info.mask_token_id is not None:
        out.append(f"  block        size {info.block_size}, mask token {info.mask_token_id}")
    if not info.is_draft:
        stops = ", ".join(token(i) for i in info.stop_token_ids) or "none"
        out.append(f"  stop tokens  {stops}")
        out.append(f"  tokenizer    {'yes' if info.tokenizer else 'none (prompts must be token ids)'}")
    if info.reads_target_states is not None:
        out.append(
            f"  reads        target {'hidden states' if info.format == 'eagle3' else 'layers'} {info.reads_target_states}"
        )
    if info.is_draft:
        out.append(f"  fits         {', '.join(fitting) or 'none of the public Qwen3 bases'}")
    elif fitting:
        out.append(f"  drafts       {'; '.join(fitting)}")
    if info.problems:
        out.append(
            "  problems     "
            + "\n               ".join(p.replace("\n", "\n               ") for p in info.problems)
        )
    else:
        out.append("  problems     none" + (": it loads" if not info.is_draft else ""))
    return out


def cmd_inspect(args) -> int:
    from orthrus_core.formats import describe
    from orthrus_core.tokenizer import load_tokenizer

    info = describe(args.checkpoint, target=args.target)
    fitting = fits(info)
    # Loaded in either mode: tokenizer files that cannot make a tokenizer are an error (exit 2), as in a run.
    tokenizer = load_tokenizer(info.path) if info.tokenizer else None
    if args.json:
        print(json.dumps({**info.to_dict(), "fits" if info.is_draft else "drafts": fitting}))
    else:
        print("\n".join(lines(info, fitting, tokenizer)))
    return 1 if info.problems else 0
