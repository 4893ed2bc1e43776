"""What a decoder samples with: `SamplingParams`, one validated value from the command line or a suite file to
the decode loop (the batched path and verify included). Torch-free, so that the suite files, the run's record
and the report can hold it; the distribution it defines is `sampling.probs`.

Greedy, defined once (`SamplingParams.greedy`; every decision between greedy and sampled decoding or verdicts
reads it): temperature 0, or a *degenerate* sampling setting, one whose distribution is a single token:

* `top_k == 1`: the top token alone (`probs` keeps exact ties at the k-th logit, so a tie of the two largest
  logits is the one difference: greedy takes the first maximum, as everywhere).
* `temperature < TEMPERATURE_FLOOR` (1e-6): softmax at temperature T gives a token Δ below the top logit the
  float32 probability e^(-Δ/T), which is 0 once Δ/T > 104 (87 where subnormals flush to zero, as on CUDA's
  fast paths), so only tokens within 104·T < 1.04e-4 of the top logit can be drawn. In a bfloat16 or float16
  run two different logits of magnitude ≥ 1/8 are at least 1.2e-4 apart: the distribution is the tied maxima,
  greedy's token. In float32 the window is within the rounding by which the same logits computed by two
  kernels (a cached step, a verify pass, verify's float32 recompute) already differ, so which token has mass
  there is decided by rounding, not by the model, and no sampling test can tell the two apart. Far below it
  (T < ~1e-37) `logits / T` overflows to inf and the softmax is NaN.
* `top_p < TOP_P_FLOOR` (1e-6): the nucleus keeps a token while the mass before it is below top_p, and the top
  token of any distribution over V ≤ 10^6 tokens has probability ≥ 1/V ≥ 1e-6 > top_p: the nucleus is the top
  token alone (the first maximum on ties, the stable sort's order and argmax's), exactly.

Such a setting is decoded as greedy (argmax) and judged by verify's greedy verdict; `degenerate` says it was
asked for as sampling, and `greedy_reason` says why it is greedy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Below these a sampling setting's distribution is one token (see the module docstring for why).
TEMPERATURE_FLOOR = 1e-6
TOP_P_FLOOR = 1e-6


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy (argmax; the first maximum on ties)
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1 disables

    def __post_init__(self):
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):  # NaN and inf included
            raise ValueError(f"temperature must be >= 0 and finite (0 is greedy), got {self.temperature}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {self.top_k!r}")
        if not 0 < self.top_p <= 1:  # NaN and inf included
            raise ValueError(f"top_p must be in (0, 1] (1 disables it), got {self.top_p}")

    @property
    def greedy_reason(self) -> str | None:
        """Why these settings decode greedily (None: they sample): temperature 0, or the degenerate setting
        that makes the distribution one token."""
        if self.temperature == 0:
            return "temperature 0"
        if self.temperature < TEMPERATURE_FLOOR:
            return f"temperature {self.temperature:g} below {TEMPERATURE_FLOOR:g}"
        if self.top_k == 1:
            return "top_k 1"
        if self.top_p < TOP_P_FLOOR:
            return f"top_p {self.top_p:g} below {TOP_P_FLOOR:g}"
        return None

    @property
    def greedy(self) -> bool:
        """Decoded as the argmax and judged by the greedy verdict: temperature 0 or a degenerate setting."""
        return self.greedy_reason is not None

    @property
    def degenerate(self) -> bool:
        """Asked for as sampling (temperature > 0) but one token's distribution: greedy."""
        return self.temperature > 0 and self.greedy


GREEDY = SamplingParams()
