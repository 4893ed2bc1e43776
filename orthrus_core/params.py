"""What a decoder samples with: `SamplingParams`, one validated value from the command line or a suite file to
the decode loop (the batched path and verify included). Torch-free, so that the suite files, the run's record
and the report can hold it; the distribution it defines is `sampling.probs`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy (argmax; the first maximum on ties)
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1 disables

    def __post_init__(self):
        if not self.temperature >= 0:  # NaN included
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = SamplingParams()
