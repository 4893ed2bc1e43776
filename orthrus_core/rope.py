"""Rotary embeddings whose frequencies stay float32 whatever dtype the model is moved to.

transformers' rotary embeddings hold `inv_freq` (and `original_inv_freq`) as buffers, so `model.to(bfloat16)`
casts them: bfloat16 keeps 8 bits of a frequency, and the phase position x inv_freq is then off by tens of
radians at position 40K, every long-context query and key rotated wrong. Here the frequencies are never
converted: a cast (`.to(dtype)`, `.half()`, `.bfloat16()`) leaves them as they are, and a move to another
device (`.to(device)`, `.cuda()`, `.to_empty()`) computes them again, in float32 on the CPU from the module's
own config, and places them there. Construction computes them the same way, so every path to a model (built on
a GPU, moved, loaded) has the same frequencies. Every module that owns a rotary embedding (the target's
backbone, the EAGLE-3 head, the DFlash drafter) builds one of these.
"""

from __future__ import annotations

import torch
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding


class Float32Frequencies:
    """Mixin placed before the transformers rotary embedding class it names in `transformers_class`."""

    transformers_class: type[torch.nn.Module]

    def __init__(self, config):
        super().__init__(config)
        self.place_frequencies(self.inv_freq.device)

    def _apply(self, fn, recurse=True):
        frequencies = dict(self.named_buffers(recurse=False))
        super()._apply(fn, recurse)
        if self.inv_freq.device == frequencies["inv_freq"].device:
            # A cast, or a move to where they are: the float32 tensors themselves, which compiled passes and
            # captured CUDA graphs may hold, stay.
            for name, tensor in frequencies.items():
                setattr(self, name, tensor)
        else:
            self.place_frequencies(self.inv_freq.device)
        return self

    def place_frequencies(self, device: torch.device | str) -> None:
        """The frequencies as transformers' class computes them from the config, in float32 on the CPU whatever
        device the model is built on or moved to (so every path to a model gives the same ones), placed on
        `device`. Also how a model built on the meta device gets them: no state dict holds them."""
        with torch.device("cpu"):
            fresh = self.transformers_class(self.config)
        for name, frequencies in fresh.named_buffers():
            setattr(self, name, frequencies.to(device))


class Qwen3Rotary(Float32Frequencies, Qwen3RotaryEmbedding):
    """Qwen3's (and Qwen2's) rotary embedding, its frequencies float32 through any move."""

    transformers_class = Qwen3RotaryEmbedding


class LlamaRotary(Float32Frequencies, LlamaRotaryEmbedding):
    """Llama's rotary embedding (the EAGLE-3 head's), its frequencies float32 through any move."""

    transformers_class = LlamaRotaryEmbedding
