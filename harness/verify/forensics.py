"""Greedy divergence forensics: where a method's greedy tokens leave the AR model's, and whether numerics
can explain it.

A divergence is located on the AR path: index d is the first new token where the two streams differ (or where
one of them ends). The AR model, teacher-forced in float32 on the common prefix, tells how close the call was:
the top-1 minus top-2 logit gap at d, the rank and logit of the token the method emitted, and the margin
between the AR token's logit and the method token's.

Whether numerics can explain a margin comes from a noise model of the two sides (`benign_study`): along AR
greedy paths, the AR decoder and benign variants of it (other kernel shapes, the same model and dtype) each
compute the margin of the float32 top-2 pair, and the errors of the two sides against float32 are fitted as a
bivariate normal. A benign flip happens where the float32 margin lies between the two sides' errors, so the
model gives the law of a benign flip's float32 margin (`NoiseModel.tail`); a divergence whose margin that law
makes improbable is "algorithmic", the rest "numerical near-ties" (a different kernel or shape could have
rounded either way). The threshold between them is the margin a benign flip exceeds with probability at most
the verdict's level (greedy.py), never a largest margin seen.

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
from functools import cached_property

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


def locate(
    index: int,
    row: torch.Tensor | None,
    ar: tuple[list[int], str],
    method: tuple[list[int], str, list[int]],
) -> DivergenceEvent:
    """The event at `index` (relative to both streams), with float32 logits `row` [V] at that position; its
    kind is named by `label`."""
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
    return DivergenceEvent(
        index,
        "EOS" if emits_stop else token_location(index, accepted),
        ALGORITHMIC,
        ar_token,
        method_token,
        gap=float(top[0] - top[1]),
        method_rank=int((row > row[method_token]).sum()) + 1,
        ar_logit=float(row[ar_token]),
        method_logit=float(row[method_token]),
        margin=float(row[ar_token] - row[method_token]),
    )


def label(events: list[DivergenceEvent], threshold: float) -> None:
    """Name each event's kind: a near-tie when its float32 margin is within `threshold`; a stream that ended
    where the other went on has no margin and is algorithmic."""
    for e in events:
        e.kind = NEAR_TIE if e.margin is not None and abs(e.margin) <= threshold else ALGORITHMIC


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
    *,
    continue_fn: ContinueFn | None = None,
    max_new_tokens: int | None = None,
) -> PairComparison:
    """Compare two records of the same prompt (`output_ids`, `stop_reason`, `accepted`); see the module
    docstring. With `continue_fn` and `max_new_tokens`, re-synchronise after each divergence at which both
    streams still had a token. The events' kinds are named afterwards (`label`), once the verdict knows its
    threshold."""
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
        event = locate(d, row, (a[offset:], ar["stop_reason"]), segment)
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

NOISE_SAMPLES = 1 << 18  # draws of the fitted normal that `NoiseModel.tail` integrates over


@dataclass
class NoiseModel:
    """One benign perturbation's numerics: at each compared position, the margin of the float32 top-2 pair as
    the AR decoder (the reference side) and the perturbed computation each compute it in the run's dtype,
    minus the float32 margin. The two errors' raw moments over `positions` (so that studies pool) fit a
    bivariate Student t: their mean and covariance, and the degrees of freedom whose kurtosis matches the
    larger of the two sides' (a normal when neither has excess kurtosis), since a few accumulations in a
    long forward err far more than the rest."""

    perturbation: str
    positions: int
    moments: list[list[float]]  # per side (reference, perturbed): E[e], E[e^2], E[e^3], E[e^4]
    cross: float  # E[e_reference * e_perturbed]

    @classmethod
    def fit(cls, perturbation: str, errors: np.ndarray) -> NoiseModel:
        """errors [n, 2]: (reference side, perturbed side) at n positions."""
        errors = np.asarray(errors, dtype=float).reshape(-1, 2)
        if not len(errors):
            return cls(perturbation, 0, [[0.0] * 4, [0.0] * 4], 0.0)
        moments = [[float((side**k).mean()) for k in range(1, 5)] for side in errors.T]
        return cls(perturbation, len(errors), moments, float((errors[:, 0] * errors[:, 1]).mean()))

    @classmethod
    def pooled(cls, models: list[NoiseModel]) -> NoiseModel:
        """The fit over the union of the models' positions (one perturbation's, from several studies)."""
        n = sum(m.positions for m in models)
        if n == 0:
            return models[0]
        moments = sum(m.positions * np.asarray(m.moments) for m in models) / n
        cross = sum(m.positions * m.cross for m in models) / n
        return cls(models[0].perturbation, n, moments.tolist(), float(cross))

    @property
    def mean(self) -> np.ndarray:
        return np.array([side[0] for side in self.moments])

    @property
    def cov(self) -> np.ndarray:
        (m1, m2, *_), (n1, n2, *_) = self.moments
        return np.array([[m2 - m1 * m1, self.cross - m1 * n1], [self.cross - m1 * n1, n2 - n1 * n1]])

    @property
    def dof(self) -> float:
        """The Student t's degrees of freedom: kurtosis 3 + 6 / (dof - 4); inf (a normal) without excess."""
        excess = 0.0
        for m1, m2, m3, m4 in self.moments:
            variance = m2 - m1 * m1
            if variance > 0:
                central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
                excess = max(excess, central4 / variance**2 - 3)
        return 4 + 6 / excess if excess > 0 else math.inf

    @cached_property
    def _flip_intervals(self) -> tuple[list[_Excess], float]:
        """The intervals of the event's float32 margin (AR's token minus the method's) at which the two sides
        pick different tokens of the pair, one per draw of the fitted t (the same draws every time: the tail
        is deterministic), as the excess sums the tails read (high, low, -low, -high), and their total
        length."""
        dof = self.dof
        shape = self.cov * (
            (dof - 2) / dof if math.isfinite(dof) else 1.0
        )  # a t's covariance is dof/(dof-2) x
        values, vectors = np.linalg.eigh(shape)
        root = vectors * np.sqrt(np.clip(values, 0, None))
        rng = np.random.default_rng(0)
        z = rng.standard_normal((NOISE_SAMPLES, 2)) @ root.T
        if math.isfinite(dof):
            z /= np.sqrt(rng.chisquare(dof, NOISE_SAMPLES) / dof)[:, None]
        e_ar, e_method = (self.mean + z).T
        # A flip of the pair (a, b) at float32 margin m = a - b: AR picks a iff m > -e_ar, the method iff
        # m > -e_method. When e_ar > e_method, m in (-e_ar, -e_method) and AR picked a: the event's margin
        # (AR's token minus the method's) is m. Otherwise m in (-e_method, -e_ar), AR picked b, the event's
        # margin -m lies in (e_ar, e_method).
        ar_higher = e_ar > e_method
        low, high = np.where(ar_higher, -e_ar, e_ar), np.where(ar_higher, -e_method, e_method)
        return [_Excess(x) for x in (high, low, -low, -high)], float((high - low).sum())

    def tail(self, margin: float) -> float:
        """P(|float32 margin| >= margin | a benign flip of the pair). Side s picks the pair's first token
        iff m + e_s > 0 (m the pair's float32 margin, e_s that side's error), so the sides disagree iff m
        lies between -e_reference and -e_perturbed. With m's density flat across the noise's scale, a flip's
        m is uniform on that interval, and the intervals weigh by their length: the tail is the intervals'
        length outside [-t, t] over their whole length."""
        (high, low, neg_low, neg_high), total = self._flip_intervals
        if total <= 0:
            return 0.0  # the two sides compute the same margins: no benign flip at all
        t = abs(margin)
        # An interval's length above t is (high - t)+ - (low - t)+, below -t (-t - low)+ - (-t - high)+.
        return (high(t) - low(t) + neg_low(t) - neg_high(t)) / total

    def upper_tail(self, margin: float) -> float:
        """P(float32 margin >= margin | a benign flip), signed: the chance that a benign flip leaves the
        method's token at least `margin` below AR's in float32 (a bug in the method only ever leaves it
        below)."""
        (high, low, _, _), total = self._flip_intervals
        if total <= 0:
            return 0.0
        return (high(margin) - low(margin)) / total


class _Excess:
    """x -> the function t -> sum((x - t)+), in O(log n) per t."""

    def __init__(self, values: np.ndarray):
        self.sorted = np.sort(values)
        self.suffix = np.concatenate([np.cumsum(self.sorted[::-1])[::-1], [0.0]])

    def __call__(self, t: float) -> float:
        k = int(np.searchsorted(self.sorted, t, side="right"))
        return float(self.suffix[k] - (len(self.sorted) - k) * t)


@dataclass
class BenignStudy:
    """AR against itself under benign numerics perturbations, teacher-forced on AR greedy paths: the flips
    seen, and each perturbation's noise model (what decides whether a divergence is a near-tie)."""

    dtype: str
    perturbations: list[str]
    positions: int  # compared positions, summed over perturbations
    flips: int  # positions where a perturbation's argmax differs from the cached AR decoder's
    flip_margins: list[float]  # float32 |logit difference| of the two tokens at each flip
    noise: list[NoiseModel] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.flips / self.positions if self.positions else 0.0

    def p_value(self, margin: float) -> float:
        """The chance that a benign flip's float32 margin is at least |margin|, under the noisiest
        perturbation's model."""
        return max((m.tail(margin) for m in self.noise), default=0.0)

    def one_sided_p_value(self, margin: float) -> float:
        """The chance that a benign flip's float32 margin (AR's token minus the method's) is at least
        `margin`, under the noisiest perturbation's model."""
        return max((m.upper_tail(margin) for m in self.noise), default=0.0)

    def threshold(self, level: float) -> float:
        """The smallest margin that a benign flip exceeds with probability <= level (0: no noise seen)."""
        low, high = 0.0, 1.0
        while self.p_value(high) > level:
            low, high = high, 2 * high
        for _ in range(40):
            middle = (low + high) / 2
            low, high = (low, middle) if self.p_value(middle) <= level else (middle, high)
        return high if self.p_value(0.0) > level else 0.0

    @classmethod
    def pooled(cls, studies: list[BenignStudy]) -> BenignStudy:
        """One study over the paths of several (the calibration studies each prompt once, then pools the
        paths a replicate's verdict would have studied)."""
        first = studies[0]
        return cls(
            first.dtype,
            first.perturbations,
            sum(s.positions for s in studies),
            sum(s.flips for s in studies),
            [m for s in studies for m in s.flip_margins],
            [NoiseModel.pooled(list(models)) for models in zip(*(s.noise for s in studies), strict=True)],
        )


def _cached(model, prompt: torch.Tensor, path: torch.Tensor, pairs: torch.Tensor, batch: int = 1):
    """The AR decoder's own numerics at every path position, prefill then one token per step (`batch`
    identical rows, to change the GEMM shapes) -> (argmax [n], logits of `pairs` [n, 2])."""
    cache = model.new_cache(prompt.shape[0] + path.shape[0], rows=batch)
    rows = [model(prompt[None].expand(batch, -1), 0, cache)[0, -1]]
    for i in range(path.shape[0] - 1):
        step = path[i : i + 1][None].expand(batch, -1)
        rows.append(model(step, prompt.shape[0] + i, cache)[0, -1])
    return _read(torch.stack(rows), pairs)


def _recomputed(model, prompt: torch.Tensor, path: torch.Tensor, pairs: torch.Tensor):
    """One causal forward over prompt + path (prefill recompute instead of the KV cache)."""
    ids = torch.cat([prompt, path[:-1]])[None]
    return _read(model(ids, 0, model.new_cache(ids.shape[1]))[0, prompt.shape[0] - 1 :], pairs)


def _verify_width(model, prompt: torch.Tensor, path: torch.Tensor, pairs: torch.Tensor, width: int):
    """Verify-shaped forwards: `width` path tokens per forward, as an Orthrus verify pass runs."""
    cache = model.new_cache(prompt.shape[0] + path.shape[0] + width)
    rows = [model(prompt[None], 0, cache)[0, -1:]]
    for i in range(0, path.shape[0] - 1, width):
        chunk = path[i : min(i + width, path.shape[0] - 1)][None]
        rows.append(model(chunk, prompt.shape[0] + i, cache)[0])
    return _read(torch.cat(rows), pairs)


def _read(logits: torch.Tensor, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [n, V] -> (argmax [n], the logits of each position's pair [n, 2] in float32), on the CPU."""
    return logits.argmax(-1).cpu(), logits.gather(-1, pairs.to(logits.device)).float().cpu()


@torch.inference_mode()
def benign_study(
    model,
    reference_logits: ReferenceLogits,
    paths: list[tuple[list[int], list[int]]],
    *,
    verify_width: int = 8,
    batch: int = 4,
) -> BenignStudy:
    """Compare the AR decoder along each (prompt, greedy path) with three benign variants of the same
    computation in `model`'s dtype: verify width 1 vs `verify_width`, prefill recompute vs KV cache, and batch
    1 vs `batch`. Flips are counted and their margins measured in the float32 reference logits; at every
    position the margin of the float32 top-2 pair, as each side computes it, feeds the noise models."""
    device = model.lm_head.weight.device
    perturbations = {
        f"verify width {verify_width}": lambda p, t, x: _verify_width(model, p, t, x, verify_width),
        "prefill recompute": lambda p, t, x: _recomputed(model, p, t, x),
        f"batch {batch}": lambda p, t, x: _cached(model, p, t, x, batch),
    }
    errors = {name: [] for name in perturbations}
    positions, margins = 0, []
    for prompt_ids, tokens in paths:
        if not tokens:
            continue
        prompt = torch.tensor(prompt_ids, device=device)
        path = torch.tensor(tokens, device=device)
        fp32 = reference_logits(prompt_ids, tokens)
        top = torch.topk(fp32, 2)
        pairs, fp32_margin = top.indices, (top.values[:, 0] - top.values[:, 1]).numpy()
        reference, reference_pair = _cached(model, prompt, path, pairs)
        reference_error = (reference_pair[:, 0] - reference_pair[:, 1]).numpy() - fp32_margin
        for name, perturbed in perturbations.items():
            other, other_pair = perturbed(prompt, path, pairs)
            positions += len(tokens)
            for i in torch.nonzero(other != reference).flatten().tolist():
                margins.append(abs(float(fp32[i, reference[i]] - fp32[i, other[i]])))
            other_error = (other_pair[:, 0] - other_pair[:, 1]).numpy() - fp32_margin
            errors[name].append(np.stack([reference_error, other_error], axis=1))
    dtype = model.lm_head.weight.dtype
    return BenignStudy(
        str(dtype).removeprefix("torch."),
        list(perturbations),
        positions,
        len(margins),
        margins,
        [NoiseModel.fit(name, np.concatenate(e) if e else np.zeros((0, 2))) for name, e in errors.items()],
    )
