"""`orthrus`: the target's own diffusion view drafts a block, its AR view verifies it (decoding.py).

`orthrus:cache=dynamic` is the same algorithm on transformers' DynamicCache, written as the official
implementation writes it (orthrus_core/reference.py): the baseline the static-cache engine is measured
against, greedy only."""

from __future__ import annotations

from orthrus_core.batch import OrthrusBatchDrafter
from orthrus_core.reference import generate_orthrus_dynamic_cache
from orthrus_core.speculative import OrthrusDrafter

from .base import BatchError, SpeculativeDecoder

OPTIONS = {"block_size": (int, None), "cache": (str, "static")}  # block_size None: the checkpoint's
CACHES = ("static", "dynamic")


class OrthrusDecoder(SpeculativeDecoder):
    name = "orthrus"

    def drafter(self, params, generator):
        return OrthrusDrafter(self.target.model, self.config["block_size"], params, generator)

    def batch_drafter(self, params):
        if self.config["cache"] != "static":
            raise BatchError(
                f"{self.label} decodes one prompt at a time; orthrus (cache=static) decodes batches"
            )
        return OrthrusBatchDrafter(self.target.model, self.config["block_size"], params)

    def decode(self, prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens):
        if self.config["cache"] == "static":
            return super().decode(prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens)
        if not params.greedy:
            raise ValueError(f"{self.label} decodes greedily only; use orthrus for temperature > 0")
        return generate_orthrus_dynamic_cache(
            self.target.model,
            prompt_ids,
            max_new_tokens,
            block_size=self.config["block_size"],
            stop_token_ids=stop_token_ids,
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
    if options["cache"] not in CACHES:
        raise ValueError(f"orthrus: cache must be one of {', '.join(CACHES)}, got {options['cache']!r}")
    return OrthrusDecoder(target, label, {**options, "block_size": block_size})
