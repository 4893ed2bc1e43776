"""`diffusion`: lossy block-diffusion decoding, no verification (orthrus_core/block_diffusion.py).

layout "orthrus" runs an Orthrus checkpoint's diffusion view alone (orthrus-diffusion-only); layout "sdar"
runs a block-diffusion LM with Qwen3 weights in SDAR's layout (blocks at multiples of block_size, in-place
prediction, e.g. JetLM/SDAR-8B-Chat-b16 with block_size=16 and mask_token_id=151669). Greedy only.
"""

from __future__ import annotations

from orthrus_core.block_diffusion import BlockDiffusionLM, generate_block_diffusion

from .base import Decoder

OPTIONS = {
    "layout": (str, "orthrus"),
    "block_size": (int, None),  # None: the checkpoint's block_size
    "sub_block_size": (int, None),  # None: the whole block (Fast-dLLM v2 uses 8 within 32)
    "threshold": (float, 0.9),
    "mask_token_id": (int, None),  # None: the checkpoint's mask_token_id
}


class BlockDiffusionDecoder(Decoder):
    name = "diffusion"
    lossless = False

    def __init__(self, target, label, config, lm):
        super().__init__(target, label, config)
        self.lm = lm

    def decode(self, prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens):
        if not params.greedy:
            raise ValueError("the diffusion method decodes greedily only (temperature 0)")
        c = self.config
        return generate_block_diffusion(
            self.lm,
            prompt_ids,
            max_new_tokens,
            block_size=c["block_size"],
            sub_block_size=c["sub_block_size"],
            threshold=c["threshold"],
            stop_token_ids=stop_token_ids,
            on_tokens=on_tokens,
        )


def build(target, label, options):
    model = target.model
    mask_token_id = (
        options["mask_token_id"]
        if options["mask_token_id"] is not None
        else getattr(model.config, "mask_token_id", None)
    )
    block_size = options["block_size"] or getattr(model.config, "block_size", None)
    if mask_token_id is None or block_size is None:
        raise ValueError(f"diffusion: {target.path} gives no mask_token_id/block_size; pass them as options")
    if options["layout"] == "orthrus":
        lm = BlockDiffusionLM.orthrus(model)
    elif options["layout"] == "sdar":
        lm = BlockDiffusionLM.sdar(model, mask_token_id)
    else:
        raise ValueError(f"diffusion: layout must be 'orthrus' or 'sdar', got {options['layout']!r}")
    sub = options["sub_block_size"] or block_size
    config = dict(options, block_size=block_size, sub_block_size=sub, mask_token_id=lm.mask_token_id)
    if block_size < 2 or not 1 <= sub <= block_size or not 0 <= options["threshold"] <= 1:
        raise ValueError(
            f"diffusion: bad block_size/sub_block_size/threshold {block_size}/{sub}/{options['threshold']}"
        )
    return BlockDiffusionDecoder(target, label, config, lm)
