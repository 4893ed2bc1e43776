"""`dflash`: a DFlash block-diffusion drafter conditioned on target features, chain verification."""

from __future__ import annotations

import torch
from torch import nn

from orthrus_core.checkpoint import read_json, resolve
from orthrus_core.dflash import DFlashDrafter, DFlashDraftModel, dflash_config, draft_config, load_dflash
from orthrus_core.quantize import quantize_

from .base import LoopDecoder
from .checkpoints import PUBLIC_DRAFT_SHAPES, draft_checkpoint, draft_directory

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


def meta_drafter(target, options) -> tuple[DFlashDrafter, str]:
    """(the drafter on the meta target `target` (a harness.methods.plan.PlanTarget), where its shape came from),
    as `build` would make it, without loading a weight (harness.methods.plan)."""
    config, source = draft_shape(target, options["draft"])
    return DFlashDrafter(meta_draft(config, target.model), target.model, options["block_size"]), source


def meta_draft(config, target: nn.Module) -> DFlashDraftModel:
    """A DFlash drafter as `dflash.load_dflash` makes it (it reads the target's embedding and lm_head), on the
    meta device: every shape and dtype, no memory."""
    with torch.device("meta"):
        draft = DFlashDraftModel(config).to(target.lm_head.weight.dtype)
    return draft.eval()


def draft_shape(target, override: str | None):
    """(drafter config, where the shape came from) for DFlash on `target`: the drafter's config where it is at
    hand, else the public drafters' shape."""
    t = target.model.config
    directory, hub_id = draft_directory("dflash", target.path, override)
    if directory is not None:
        raw = read_json(directory / "config.json")
        return draft_config(raw, t.num_hidden_layers), f"{hub_id or directory}'s config"
    public = PUBLIC_DRAFT_SHAPES["dflash"]
    mask = getattr(t, "mask_token_id", None)
    config = dflash_config(
        t, public["num_layers"], public["block_size"], t.vocab_size - 1 if mask is None else mask
    )
    shape = f"{public['num_layers']} layers, block size {public['block_size']}, the target's dimensions"
    if hub_id is not None:
        return config, f"{hub_id}'s published shape: {shape}"
    return config, (
        f"no DFlash drafter is known for {target.path}: dflash_config for the target at the public drafters' "
        f"{shape}"
    )
