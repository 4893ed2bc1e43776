"""What every scorer is and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Score:
    correct: bool | None  # None where the suite has no notion of correctness
    status: str  # "correct", "wrong", "pass", "fail", "timeout", "error" or "unscored"
    detail: dict = field(default_factory=dict)  # JSON-serialisable: extracted answer, gold, stderr tail...


class Scorer(Protocol):
    reference_fields: tuple[str, ...]

    def score(self, reference: dict, outputs: list[str], tokenizer=None) -> Score: ...

    # Optional: `check_ready()` raises a ScorerConfigError when something scoring needs is missing (a
    # compiler); a run calls it before its first generation (listing or verifying suites does not).


class ScorerConfigError(ValueError):
    """An unknown scorer name, or options the scorer does not accept."""
