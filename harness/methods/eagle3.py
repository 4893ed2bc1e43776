"""`eagle3`: an EAGLE-3 draft head, dynamic-tree (default) or chain drafting, one tree verify pass per cycle."""

from __future__ import annotations

from orthrus_core.checkpoint import resolve
from orthrus_core.eagle3 import HUB_PATTERNS, Eagle3Drafter, load_eagle3
from orthrus_core.quantize import quantize_

from .base import LoopDecoder
from .checkpoints import draft_checkpoint

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
