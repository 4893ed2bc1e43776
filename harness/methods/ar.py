"""`ar`: plain autoregressive decoding over the static KV cache, the reference every method is held to."""

from __future__ import annotations

from orthrus_core.decoding import generate_ar

from .base import Decoder

OPTIONS: dict = {}


class ARDecoder(Decoder):
    name = "ar"

    def decode(self, prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens):
        return generate_ar(
            self.target.model,
            prompt_ids,
            max_new_tokens,
            params,
            stop_token_ids=stop_token_ids,
            generator=generator,
            on_tokens=on_tokens,
        )

    def batch_drafter(self, params):
        return None


def build(target, label, options):
    return ARDecoder(target, label, options)
