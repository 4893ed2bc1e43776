"""`dflash`: a DFlash block-diffusion drafter conditioned on target features, chain verification."""

from __future__ import annotations

from orthrus_core.checkpoint import resolve
from orthrus_core.dflash import DFlashBatchDrafter, DFlashDrafter, load_dflash

from .base import SpeculativeDecoder
from .checkpoints import draft_checkpoint

OPTIONS = {
    "block_size": (int, None),  # None: the drafter's own (16 for the public Qwen3 drafters)
    "draft": (str, None),  # hub id or directory; default: the known drafter for the target (checkpoints.py)
}


class DFlashDecoder(SpeculativeDecoder):
    name = "dflash"

    def __init__(self, target, label, config, checkpoints, draft):
        super().__init__(target, label, config, checkpoints)
        self.draft = draft

    def drafter(self, params, generator):
        return DFlashDrafter(self.draft, self.target.model, self.config["block_size"])

    def batch_drafter(self, params):
        return DFlashBatchDrafter(self.draft, self.target.model, self.config["block_size"])


def build(target, label, options):
    directory = resolve(draft_checkpoint("dflash", target, options["draft"]))
    draft = load_dflash(directory, target.model)
    config = dict(
        options,
        draft=options["draft"] or str(directory),
        block_size=options["block_size"] or draft.block_size,
    )
    DFlashDrafter(draft, target.model, config["block_size"])  # validates block_size
    return DFlashDecoder(target, label, config, {"draft": str(directory)}, draft)
