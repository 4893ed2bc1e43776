"""`orthrus`: the target's own diffusion view drafts a block, its AR view verifies it (decoding.py)."""

from __future__ import annotations

from orthrus_core.speculative import OrthrusDrafter

from .base import SpeculativeDecoder

OPTIONS = {"block_size": (int, None)}  # None: the checkpoint's block_size


class OrthrusDecoder(SpeculativeDecoder):
    name = "orthrus"

    def drafter(self, params, generator):
        return OrthrusDrafter(self.target.model, self.config["block_size"], params, generator)


def build(target, label, options):
    model = target.model
    if not model.has_diffusion_view:
        raise ValueError(
            f"orthrus needs a checkpoint with a diffusion view (OrthrusLM); {target.path} has none"
        )
    block_size = options["block_size"] or model.block_size
    if block_size < 2:
        raise ValueError(f"orthrus: block_size must be >= 2, got {block_size}")
    return OrthrusDecoder(target, label, {**options, "block_size": block_size})
