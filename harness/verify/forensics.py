"""Greedy divergence forensics: where a method's greedy tokens leave the AR model's, and whether numerics
can explain it.

A divergence is located on the AR path: index d is the first new token where the two streams differ (or where
one of them ends). The AR model, teacher-forced in float32 on the common prefix, tells how close the call was:
the top-1 minus top-2 logit gap at d, the rank and logit of the token the method emitted, and the margin
between the AR token's logit and the method token's. A margin within the near-tie threshold is a "numerical
near-tie" (a different kernel or shape could have rounded either way); anything else is an "algorithmic
divergence". The threshold comes from AR-vs-AR runs under benign perturbations of the numerics
(`benign_study`), where every flip is by construction numerical.

After a divergence, `compare_pair` can re-synchronise: the method continues from the AR prefix through d, so
that later, independent divergences are counted as events of their own (events per 1k tokens), not hidden
behind the first one. Without a decoder to re-run, the first divergence per prompt is all there is; the
event rate is then the first-divergence hazard (events over the positions observed up to them), which
estimates the same per-token rate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

NEAR_TIE = "near-tie"
ALGORITHMIC = "algorithmic"

# (prompt_ids, tokens) -> float32 logits [len(tokens), V]: row i is the AR model's prediction of tokens[i].
ReferenceLogits = Callable[[list[int], list[int]], torch.Tensor]
# (prompt_ids, max_new_tokens) -> (tokens, stop_reason, accepted): the method continuing from a given prefix.
ContinueFn = Callable[[list[int], int], tuple[list[int], str, list[int]]]


def teacher_forced_logits(model) -> ReferenceLogits:
    """The AR view of `model` (float32 for forensics) over prompt + tokens in one causal forward."""

    def logits(prompt_ids: list[int], tokens: list[int]) -> torch.Tensor:
        if not tokens:
            return torch.empty(0, model.config.vocab_size)
        device = model.lm_head.weight.device
        ids = torch.tensor([list(prompt_ids) + list(tokens[:-1])], device=device)
        with torch.inference_mode():
            # the logits of the generated positions only: a long prompt's [T, V] would be the largest transient
            out = model(ids, 0, model.new_cache(ids.shape[1]), logits_to_keep=len(tokens))[0]
        return out.float().cpu()

    return logits


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first index where a and b differ, or where the shorter one ends; None when they are equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def token_location(index: int, accepted: list[int]) -> str:
    """Which part of the method's decoding loop emitted token `index`: the prefill (token 0), an accepted
    draft at offset j of a parallel block (1-based), the verifier's own token closing a cycle (correction or
    bonus: the block boundary), or a plain AR step for methods without cycles."""
    if index == 0:
        return "prefill"
    if not accepted:
        return "step"
    start = 1
    for n in accepted:
        if index < start + n:
            return f"block offset {index - start + 1}"
        if index == start + n:
            return "block boundary"
        start += n + 1
    return "after the last cycle"  # a record whose accepted list does not cover its tokens


@dataclass
class DivergenceEvent:
    index: int  # position on the AR path (new tokens)
    location: str  # token_location, or "EOS" / "length limit"
    kind: str  # NEAR_TIE or ALGORITHMIC
    ar_token: int | None  # None: the AR stream ended here
    method_token: int | None  # None: the method's stream ended here
    gap: float | None = None  # AR float32 top-1 minus top-2 logit at this position
    method_rank: int | None = None  # 1 = the float32 argmax
    ar_logit: float | None = None
    method_logit: float | None = None
    margin: float | None = None  # ar_logit - method_logit


def classify(
    index: int,
    row: torch.Tensor | None,
    ar: tuple[list[int], str],
    method: tuple[list[int], str, list[int]],
    threshold: float,
) -> DivergenceEvent:
    """The event at `index` (relative to both streams), with float32 logits `row` [V] at that position."""
    a, ar_stop = ar
    m, method_stop, accepted = method
    if index >= len(a) or index >= len(m):
        # One stream ended where the other goes on: a stop rule or a length limit applied differently.
        ended_stop = method_stop if index >= len(m) else ar_stop
        location = "length limit" if ended_stop == "length" else "EOS"
        return DivergenceEvent(
            index,
            location,
            ALGORITHMIC,
            a[index] if index < len(a) else None,
            m[index] if index < len(m) else None,
        )
    ar_token, method_token = a[index], m[index]
    emits_stop = (index == len(a) - 1 and ar_stop == "stop") or (
        index == len(m) - 1 and method_stop == "stop"
    )
    top = torch.topk(row, 2).values
    margin = float(row[ar_token] - row[method_token])
    return DivergenceEvent(
        index,
        "EOS" if emits_stop else token_location(index, accepted),
        NEAR_TIE if abs(margin) <= threshold else ALGORITHMIC,
        ar_token,
        method_token,
        gap=float(top[0] - top[1]),
        method_rank=int((row > row[method_token]).sum()) + 1,
        ar_logit=float(row[ar_token]),
        method_logit=float(row[method_token]),
        margin=margin,
    )


@dataclass
class PairComparison:
    """One prompt: the method's greedy tokens against AR's."""

    identical: bool
    first_divergence: int | None
    events: list[DivergenceEvent] = field(default_factory=list)
    positions: int = 0  # AR-path positions observed (up to each divergence, and after re-syncs)
    resynced: bool = False


def compare_pair(
    prompt_ids: list[int],
    ar: dict,
    method: dict,
    reference_logits: ReferenceLogits,
    threshold: float,
    *,
    continue_fn: ContinueFn | None = None,
    max_new_tokens: int | None = None,
) -> PairComparison:
    """Compare two records of the same prompt (`output_ids`, `stop_reason`, `accepted`); see the module
    docstring. With `continue_fn` and `max_new_tokens`, re-synchronise after each divergence at which both
    streams still had a token."""
    a = list(ar["output_ids"])
    segment = (list(method["output_ids"]), method["stop_reason"], list(method.get("accepted") or []))
    d = first_divergence(a, segment[0])
    result = PairComparison(identical=d is None, first_divergence=d)
    logits = reference_logits(prompt_ids, a) if d is not None else None
    offset = 0  # where the current method segment starts on the AR path
    while True:
        d = first_divergence(a[offset:], segment[0])
        if d is None:
            result.positions += len(segment[0])
            return result
        index = offset + d
        row = logits[index] if index < len(a) and d < len(segment[0]) else None
        event = classify(d, row, (a[offset:], ar["stop_reason"]), segment, threshold)
        event.index = index
        result.events.append(event)
        result.positions += d + 1
        both_went_on = event.ar_token is not None and event.method_token is not None
        if continue_fn is None or max_new_tokens is None or not both_went_on or index + 1 >= len(a):
            return result
        offset = index + 1
        result.resynced = True
        segment = continue_fn(list(prompt_ids) + a[:offset], max_new_tokens - offset)


# -------------------------------------------------------------------------------- AR-vs-AR, benign numerics


@dataclass
class BenignStudy:
    """AR against itself under benign numerics perturbations, teacher-forced on AR greedy paths."""

    dtype: str
    perturbations: list[str]
    positions: int  # compared positions, summed over perturbations
    flips: int  # positions where a perturbation's argmax differs from the cached AR decoder's
    flip_margins: list[float]  # float32 |logit difference| of the two tokens at each flip
    floor: float  # the rounding prior: two units in the last place of `dtype` at the typical top logit
    threshold: float  # max(largest flip margin, floor): the near-tie threshold

    @property
    def rate(self) -> float:
        return self.flips / self.positions if self.positions else 0.0


def _argmax_cached(model, prompt: torch.Tensor, path: torch.Tensor, batch: int = 1) -> torch.Tensor:
    """Argmax at every path position from the AR decoder's own numerics: prefill, then one token per step
    (`batch` identical rows, to change the GEMM shapes)."""
    cache = model.new_cache(prompt.shape[0] + path.shape[0], rows=batch)
    rows = [model(prompt[None].expand(batch, -1), 0, cache)[0, -1].argmax()]
    for i in range(path.shape[0] - 1):
        step = path[i : i + 1][None].expand(batch, -1)
        rows.append(model(step, prompt.shape[0] + i, cache)[0, -1].argmax())
    return torch.stack(rows)


def _argmax_recomputed(model, prompt: torch.Tensor, path: torch.Tensor) -> torch.Tensor:
    """Argmax from one causal forward over prompt + path (prefill recompute instead of the KV cache)."""
    ids = torch.cat([prompt, path[:-1]])[None]
    return model(ids, 0, model.new_cache(ids.shape[1]))[0, prompt.shape[0] - 1 :].argmax(-1)


def _argmax_verify_width(model, prompt: torch.Tensor, path: torch.Tensor, width: int) -> torch.Tensor:
    """Argmax from verify-shaped forwards: `width` path tokens per forward, as an Orthrus verify pass runs."""
    cache = model.new_cache(prompt.shape[0] + path.shape[0] + width)
    rows = [model(prompt[None], 0, cache)[0, -1:].argmax(-1)]
    for i in range(0, path.shape[0] - 1, width):
        chunk = path[i : min(i + width, path.shape[0] - 1)][None]
        rows.append(model(chunk, prompt.shape[0] + i, cache)[0].argmax(-1))
    return torch.cat(rows)


def dtype_floor(dtype: torch.dtype, top_logits: np.ndarray) -> float:
    """Two units in the last place of `dtype` at the 95th percentile of |top-1 logit|."""
    magnitude = float(np.percentile(np.abs(top_logits), 95)) if len(top_logits) else 1.0
    return 2 * torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(max(magnitude, 1e-30)))


@torch.inference_mode()
def benign_study(
    model,
    reference_logits: ReferenceLogits,
    paths: list[tuple[list[int], list[int]]],
    *,
    verify_width: int = 8,
    batch: int = 4,
) -> BenignStudy:
    """Compare the AR decoder's argmax along each (prompt, greedy path) with three benign variants of the
    same computation in `model`'s dtype: verify width 1 vs `verify_width`, prefill recompute vs KV cache, and
    batch 1 vs `batch`. Flip margins are measured in the float32 reference logits."""
    device = model.lm_head.weight.device
    perturbations = {
        f"verify width {verify_width}": lambda p, t: _argmax_verify_width(model, p, t, verify_width),
        "prefill recompute": lambda p, t: _argmax_recomputed(model, p, t),
        f"batch {batch}": lambda p, t: _argmax_cached(model, p, t, batch),
    }
    positions, margins, tops = 0, [], []
    for prompt_ids, tokens in paths:
        if not tokens:
            continue
        prompt = torch.tensor(prompt_ids, device=device)
        path = torch.tensor(tokens, device=device)
        reference = _argmax_cached(model, prompt, path).cpu()
        fp32 = reference_logits(prompt_ids, tokens)
        tops.append(fp32.max(-1).values.numpy())
        for perturbed in perturbations.values():
            other = perturbed(prompt, path).cpu()
            positions += len(tokens)
            for i in torch.nonzero(other != reference).flatten().tolist():
                margins.append(abs(float(fp32[i, reference[i]] - fp32[i, other[i]])))
    dtype = model.lm_head.weight.dtype
    floor = dtype_floor(dtype, np.concatenate(tops) if tops else np.array([]))
    return BenignStudy(
        str(dtype).removeprefix("torch."),
        list(perturbations),
        positions,
        len(margins),
        margins,
        floor,
        max([floor, *margins]),
    )
