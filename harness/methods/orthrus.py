"""`orthrus`: the target's own diffusion view drafts a block, its AR view verifies it (decoding.py)."""

from __future__ import annotations

from orthrus_core.decoding import generate_orthrus

from .base import Decoder

OPTIONS = {"block_size": (int, None)}  # None: the checkpoint's block_size


class OrthrusDecoder(Decoder):
    name = "orthrus"

    def decode(self, prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens):
        return generate_orthrus(
            self.target.model,
            prompt_ids,
            max_new_tokens,
            params,
            block_size=self.config["block_size"],
            stop_token_ids=stop_token_ids,
            generator=generator,
            on_tokens=on_tokens,
        )


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
