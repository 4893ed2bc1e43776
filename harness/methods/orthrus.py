"""`orthrus`: the target's own diffusion view drafts a block, its AR view verifies it (orthrus_core/orthrus.py),
in the decode loop.

`orthrus:cache=dynamic` is the same algorithm on transformers' DynamicCache, written as the official
implementation writes it (orthrus_core/official_loop.py): the baseline the decode loop and its engine are
measured against, greedy and one prompt at a time."""

from __future__ import annotations

from orthrus_core.memory import Decoding
from orthrus_core.official_loop import generate_orthrus_dynamic_cache
from orthrus_core.orthrus import OrthrusDrafter

from .base import Decoder, GenerateArgs, LoopDecoder

OPTIONS = {"block_size": (int, None), "cache": (str, "static")}  # block_size None: the checkpoint's
CACHES = ("static", "dynamic")


class OfficialLoopDecoder(Decoder):
    def _generate(self, args: GenerateArgs):
        return generate_orthrus_dynamic_cache(
            self.target.model,
            args.prompt_ids,
            args.max_new_tokens,
            block_size=self.config["block_size"],
            stop_token_ids=args.stop_token_ids,
            on_tokens=args.on_tokens,
        )

    def memory_decoding(self) -> Decoding:
        """The official loop on a DynamicCache, one prompt at a time."""
        return Decoding(self.label, kind="official", block_size=self.config["block_size"])


def runs_on(model) -> bool:
    """Whether it decodes for `model` (the memory planner's default methods ask): the target's own diffusion view
    drafts, so the checkpoint must have one (OrthrusLM)."""
    return model.has_diffusion_view


def build(target, label, options):
    model = target.model
    if not runs_on(model):
        raise ValueError(
            f"orthrus needs a checkpoint with a diffusion view (OrthrusLM); {target.path} has none"
        )
    if options["cache"] not in CACHES:
        raise ValueError(f"orthrus: cache must be one of {', '.join(CACHES)}, got {options['cache']!r}")
    drafter = OrthrusDrafter(model, options["block_size"])  # checks the block size
    config = {**options, "block_size": drafter.block_size}
    if options["cache"] == "dynamic":
        return OfficialLoopDecoder(target, label, config)
    return LoopDecoder(target, label, config, drafter)
