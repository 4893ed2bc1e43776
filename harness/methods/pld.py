"""`pld`: prompt lookup decoding, n-gram drafts from the context, chain verification."""

from __future__ import annotations

from orthrus_core.prompt_lookup import PromptLookupDrafter

from .base import LoopDecoder

OPTIONS = {"max_ngram": (int, 3), "num_draft_tokens": (int, 10)}


def build(target, label, options):
    return LoopDecoder(
        target, label, options, PromptLookupDrafter(options["max_ngram"], options["num_draft_tokens"])
    )
