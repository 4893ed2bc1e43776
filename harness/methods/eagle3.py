"""`eagle3`: an EAGLE-3 draft head, dynamic-tree (default) or chain drafting, one tree verify pass per cycle."""

from __future__ import annotations

import torch
from torch import nn

from orthrus_core import eagle3
from orthrus_core.checkpoint import read_json, resolve
from orthrus_core.eagle3 import HUB_PATTERNS, Eagle3Drafter, Eagle3Head, load_eagle3
from orthrus_core.quantize import quantize_

from .base import LoopDecoder
from .checkpoints import PUBLIC_DRAFT_SHAPES, draft_checkpoint, draft_directory

# EAGLE-3's published config (top-k 10, 7 draft levels, 60 tokens); `total_tokens=16` is the "tree 16" budget.
OPTIONS = {
    "tree": (str, "dynamic"),  # "dynamic" or "chain" (top-1 drafts, `depth` of them)
    "top_k": (int, 10),
    "depth": (int, 7),
    "total_tokens": (int, 60),
    "draft": (str, None),  # hub id or directory; default: the known head for the target (checkpoints.py)
}


def drafting(options) -> tuple[dict, tuple[int, int, int]]:
    """The resolved options and the drafter's (top_k, depth, total_tokens), checked (a chain is top-1 drafts)."""
    if options["tree"] not in ("dynamic", "chain"):
        raise ValueError(f"eagle3: tree must be 'dynamic' or 'chain', got {options['tree']!r}")
    config = dict(options)
    if options["tree"] == "chain":  # top_k and total_tokens do not apply
        config.update(top_k=1, total_tokens=options["depth"] + 1)
    drafter_options = (config["top_k"], config["depth"], config["total_tokens"])
    Eagle3Drafter.check(*drafter_options)
    return config, drafter_options


def build(target, label, options):
    config, drafter_options = drafting(options)  # checked before a checkpoint is fetched
    directory = resolve(draft_checkpoint("eagle3", target, options["draft"]), patterns=HUB_PATTERNS)
    head = load_eagle3(directory, target.model)
    quantize_(head, getattr(target, "quantize", None))  # the target's format (orthrus_core.quantize)
    drafter = Eagle3Drafter(head, target.model, *drafter_options)
    config["draft"] = options["draft"] or str(directory)
    return LoopDecoder(target, label, config, drafter, {"draft": str(directory)})


def meta_drafter(target, options) -> tuple[Eagle3Drafter, str]:
    """(the drafter on the meta target `target` (a harness.methods.plan.PlanTarget), where its head's shape came
    from), as `build` would make it, without loading a weight (harness.methods.plan)."""
    _, drafter_options = drafting(options)
    config, with_embed, source = head_shape(target, options["draft"])
    return Eagle3Drafter(meta_head(config, target.model, with_embed), target.model, *drafter_options), source


def meta_head(config, target: nn.Module, with_embed: bool = False) -> Eagle3Head:
    """An EAGLE-3 head as `eagle3.load_eagle3` makes it for `target` (its embedding the target's unless the
    checkpoint carries one), on the meta device: every shape and dtype, no memory."""
    with torch.device("meta"):
        embed = (
            nn.Embedding(config.vocab_size, config.hidden_size) if with_embed else target.model.embed_tokens
        )
        head = Eagle3Head(config, target.config.hidden_size, embed).to(target.lm_head.weight.dtype)
    return head.eval()


def head_shape(target, override: str | None):
    """(head config, whether it carries its own embedding, where the shape came from) for EAGLE-3 on `target`:
    the head's config (and its weights' headers) where they are at hand, else the public heads' shape."""
    t = target.model.config
    directory, hub_id = draft_directory("eagle3", target.path, override)
    draft_vocab = PUBLIC_DRAFT_SHAPES["eagle3"]["draft_vocab_size"]
    if directory is not None:
        raw = read_json(directory / "config.json")
        weights = next((directory / n for n in eagle3.WEIGHT_FILES if (directory / n).is_file()), None)
        if weights is not None:
            state = eagle3.read_weights(weights, meta=True)
            source = f"{directory}'s config and weights"
            return eagle3.head_config(raw, state), "embed_tokens.weight" in state, source
        raw = dict(raw, head_dim=raw.get("head_dim") or raw["hidden_size"] // raw["num_attention_heads"])
        # A stand-in for the q projection's weight (head_config reads head_dim from its rows).
        rows = torch.empty(raw["head_dim"] * raw["num_attention_heads"], 0, device="meta")
        state = {"midlayer.self_attn.q_proj.weight": rows}
        return eagle3.head_config(raw, state), False, f"{hub_id or directory}'s config"
    config = eagle3.eagle3_config(t, min(draft_vocab, t.vocab_size))
    if hub_id is not None:
        source = (
            f"{hub_id}'s published shape: the target's dimensions, a {draft_vocab}-token draft vocabulary, no "
            "embedding of its own"
        )
    else:
        source = (
            f"no EAGLE-3 head is known for {target.path}: eagle3_config for the target, with the public heads' "
            f"{draft_vocab}-token draft vocabulary"
        )
    return config, False, source
