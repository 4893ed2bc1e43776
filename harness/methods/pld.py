"""`pld`: prompt lookup decoding, n-gram drafts from the context, chain verification."""

from __future__ import annotations

from orthrus_core.prompt_lookup import PromptLookupDrafter
from orthrus_core.speculative import generate_speculative

from .base import Decoder

OPTIONS = {"max_ngram": (int, 3), "num_draft_tokens": (int, 10)}


class PromptLookupDecoder(Decoder):
    name = "pld"

    def decode(self, prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens):
        drafter = PromptLookupDrafter(self.config["max_ngram"], self.config["num_draft_tokens"])
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
    PromptLookupDrafter(options["max_ngram"], options["num_draft_tokens"])  # validates the options
    return PromptLookupDecoder(target, label, options)
