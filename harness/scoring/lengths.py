"""Scorer for open-ended chat: no correctness, only how long each answer is."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Score


@dataclass(frozen=True)
class LengthScorer:
    reference_fields = ()

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score:
        detail = {
            "chars": [len(text) for text in outputs],
            "words": [len(text.split()) for text in outputs],
        }
        if tokenizer is not None:
            detail["tokens"] = [len(tokenizer.encode(text, add_special_tokens=False)) for text in outputs]
        return Score(correct=None, status="unscored", detail=detail)
