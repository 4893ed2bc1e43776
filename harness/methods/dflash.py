"""`dflash`: a DFlash block-diffusion drafter conditioned on target features, chain verification."""

from __future__ import annotations

from orthrus_core.checkpoint import resolve
from orthrus_core.dflash import DFlashDrafter, load_dflash
from orthrus_core.quantize import quantize_

from .base import LoopDecoder
from .checkpoints import draft_checkpoint

OPTIONS = {
    "block_size": (int, None),  # None: the drafter's own (16 for the public Qwen3 drafters)
    "draft": (str, None),  # hub id or directory; default: the known drafter for the target (checkpoints.py)
}


def build(target, label, options):
    directory = resolve(draft_checkpoint("dflash", target, options["draft"]))
    model = load_dflash(directory, target.model)
    quantize_(model, getattr(target, "quantize", None))  # the target's format (orthrus_core.quantize)
    drafter = DFlashDrafter(model, target.model, options["block_size"])
    config = dict(options, draft=options["draft"] or str(directory), block_size=drafter.block_size)
    return LoopDecoder(target, label, config, drafter, {"draft": str(directory)})
