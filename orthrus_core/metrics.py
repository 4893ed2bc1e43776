"""How the counting figures are defined, once, for a generation, a record, a run or a group of them (numbers
or arrays alike; torch-free, so the report stage reads them too). See docs/methodology.md.

* tau (τ, acceptance length): tokens per verification cycle, accepted drafts + 1, pooled over cycles:
  1 + Σ accepted / Σ cycles. Plain AR decoding has no cycles and no τ. (The paper's Figure 4 plots τ − 1.)
* TPF (tokens per forward): new tokens / forwards after the prefill (target and drafter forwards, so both
  passes of an Orthrus cycle count, as the paper counts them). The first token comes from the prefill and
  counts among the tokens.
* ITL (inter-token latency), as serving benchmarks (vLLM's) define it: the gaps between successive streamed
  outputs of a generation. A speculative cycle hands over its accepted drafts and the bonus token at once (one
  emission), so its gaps are per cycle, not per token; AR's are per token. A generation's emissions after the
  first token are recorded as offsets from it (`emit_offsets_s`), and its gaps are the differences of
  0, offset 1, offset 2, ...: one gap per emission after the first token, summing to the last offset.
"""

from __future__ import annotations


def tau(accepted, cycles):
    """1 + accepted drafts / cycles (sums; arrays elementwise); None where there are no cycles (scalars)."""
    if isinstance(cycles, (int, float)) and not cycles:
        return None
    return 1 + accepted / cycles


def tpf(tokens, forwards):
    """New tokens / forwards after the prefill; None where there are none (scalars)."""
    if isinstance(forwards, (int, float)) and not forwards:
        return None
    return tokens / forwards


def gaps(offsets):
    """The inter-token latencies of one generation from its emission offsets after the first token (seconds
    since it): the differences of [0, *offsets]."""
    offsets = list(offsets)
    return [b - a for a, b in zip([0.0, *offsets], offsets, strict=False)]
