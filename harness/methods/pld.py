"""`pld`: prompt lookup decoding, n-gram drafts from the context, chain verification."""

from __future__ import annotations

from orthrus_core.prompt_lookup import PromptLookupBatchDrafter, PromptLookupDrafter

from .base import SpeculativeDecoder

OPTIONS = {"max_ngram": (int, 3), "num_draft_tokens": (int, 10)}


class PromptLookupDecoder(SpeculativeDecoder):
    name = "pld"

    def drafter(self, params, generator):
        return PromptLookupDrafter(self.config["max_ngram"], self.config["num_draft_tokens"])

    def batch_drafter(self, params):
        return PromptLookupBatchDrafter(self.config["max_ngram"], self.config["num_draft_tokens"])


def build(target, label, options):
    PromptLookupDrafter(options["max_ngram"], options["num_draft_tokens"])  # validates the options
    return PromptLookupDecoder(target, label, options)
