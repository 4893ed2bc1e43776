"""`diffusion`: lossy block-diffusion decoding, no verification (orthrus_core/block_diffusion.py).

layout "orthrus" runs an Orthrus checkpoint's diffusion view alone (orthrus-diffusion-only); layout "sdar"
runs a block-diffusion LM with Qwen3 weights in SDAR's layout (blocks at multiples of block_size, in-place
prediction, e.g. JetLM/SDAR-8B-Chat-b16 with block_size=16 and mask_token_id=151669); layout "fast-dllm-v2"
runs Fast-dLLM v2 (Qwen2 weights, blocks at multiples of block_size, token shift; the authors' defaults:
block 32 from the config's bd_size, sub-block 8, threshold 0.9, the tokenizer's "|<MASK>|"). The layout
defaults to the checkpoint's own. Greedy only.
"""

from __future__ import annotations

from orthrus_core.block_diffusion import BlockDiffusionLM, generate_block_diffusion
from orthrus_core.memory import Decoding

from .base import Decoder, GenerateArgs

LAYOUTS = {
    "orthrus": BlockDiffusionLM.orthrus,
    "sdar": BlockDiffusionLM.sdar,
    "fast-dllm-v2": BlockDiffusionLM.fast_dllm_v2,
}
FAST_DLLM_MASK = "|<MASK>|"  # token 151665 of Fast-dLLM v2's tokenizer
FAST_DLLM_SUB_BLOCK = 8

OPTIONS = {
    "layout": (str, None),  # None: the checkpoint's (fast-dllm-v2 with bd_size, sdar for SDAR, else orthrus)
    "block_size": (int, None),  # None: the checkpoint's block_size (Fast-dLLM v2: bd_size)
    "sub_block_size": (int, None),  # None: the whole block (Fast-dLLM v2: 8)
    "threshold": (float, 0.9),
    "mask_token_id": (int, None),  # None: the checkpoint's mask_token_id
}


class BlockDiffusionDecoder(Decoder):
    def __init__(self, target, label, config, lm):
        super().__init__(target, label, config)
        self.lm = lm

    def _generate(self, args: GenerateArgs):
        c = self.config
        return generate_block_diffusion(
            self.lm,
            args.prompt_ids,
            args.max_new_tokens,
            block_size=c["block_size"],
            sub_block_size=c["sub_block_size"],
            threshold=c["threshold"],
            stop_token_ids=args.stop_token_ids,
            on_tokens=args.on_tokens,
        )

    def memory_decoding(self) -> Decoding:
        """Block diffusion in its own cache, one prompt at a time."""
        c = self.config
        return Decoding(self.label, kind="diffusion", block_size=c["block_size"], layout=c["layout"])


def checkpoint_layout(config) -> str:
    if getattr(config, "bd_size", None) is not None:
        return "fast-dllm-v2"
    return "sdar" if "SDARForCausalLM" in (config.architectures or []) else "orthrus"


def build(target, label, options):
    model = target.model
    layout = options["layout"] or checkpoint_layout(model.config)
    if layout not in LAYOUTS:
        raise ValueError(f"diffusion: layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    fast = layout == "fast-dllm-v2"
    mask_token_id = options["mask_token_id"]
    if mask_token_id is None:
        mask_token_id = getattr(model.config, "mask_token_id", None)
    if mask_token_id is None and fast and target.tokenizer is not None:
        mask_token_id = target.tokenizer.convert_tokens_to_ids(FAST_DLLM_MASK)
    block_size = (
        options["block_size"]
        or getattr(model.config, "block_size", None)
        or getattr(model.config, "bd_size", None)
    )
    if mask_token_id is None or block_size is None:
        raise ValueError(f"diffusion: {target.path} gives no mask_token_id/block_size; pass them as options")
    if not 0 <= mask_token_id < model.config.vocab_size:
        raise ValueError(
            f"diffusion: mask_token_id {mask_token_id} is outside the vocabulary [0, {model.config.vocab_size}) "
            f"of {target.path}"
        )
    lm = LAYOUTS[layout](model) if layout == "orthrus" else LAYOUTS[layout](model, mask_token_id)
    sub = options["sub_block_size"] or (min(FAST_DLLM_SUB_BLOCK, block_size) if fast else block_size)
    config = dict(
        options, layout=layout, block_size=block_size, sub_block_size=sub, mask_token_id=lm.mask_token_id
    )
    if block_size < 2 or not 1 <= sub <= block_size or not 0 <= options["threshold"] <= 1:
        raise ValueError(
            f"diffusion: bad block_size/sub_block_size/threshold {block_size}/{sub}/{options['threshold']}"
        )
    return BlockDiffusionDecoder(target, label, config, lm)
