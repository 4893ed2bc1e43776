"""`dflash`: a DFlash block-diffusion drafter conditioned on target features, chain verification."""

from __future__ import annotations

from orthrus_core.checkpoint import resolve
from orthrus_core.dflash import DFlashDrafter, load_dflash
from orthrus_core.speculative import generate_speculative

from .base import Decoder
from .checkpoints import draft_checkpoint

OPTIONS = {
    "block_size": (int, None),  # None: the drafter's own (16 for the public Qwen3 drafters)
    "draft": (str, None),  # hub id or directory; default: the known drafter for the target (checkpoints.py)
}


class DFlashDecoder(Decoder):
    name = "dflash"

    def __init__(self, target, label, config, checkpoints, draft):
        super().__init__(target, label, config, checkpoints)
        self.draft = draft

    def decode(self, prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens):
        drafter = DFlashDrafter(self.draft, self.target.model, self.config["block_size"])
        return generate_speculative(
            self.target.model,
            drafter,
            prompt_ids,
            max_new_tokens,
            params,
            stop_token_ids=stop_token_ids,
            generator=generator,
            on_tokens=on_tokens,
        )


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
