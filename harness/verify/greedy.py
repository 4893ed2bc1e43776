"""The greedy verdict (T = 0, or a degenerate sampling setting: SamplingParams.greedy): token-ID identity per prompt against the reference method's record of the same
prompt, divergence forensics (forensics.py) and the verdict. float32 passes only at 100% identity; lower
precision only when every divergence is a numerical near-tie and the divergence rate is not above the
AR-vs-AR rate under benign perturbations (one-sided Fisher exact), a divergence being a near-tie when the noise
model of the two sides (forensics.benign_study) makes its float32 margin a plausible benign flip. The exact
binomial 95% upper bound on the algorithmic divergence rate per prompt is always stated."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict

import numpy as np
from scipy import stats

from harness.methods.base import GenerateFn
from harness.records import prompt_key
from orthrus_core.params import GREEDY

from .forensics import ALGORITHMIC, NEAR_TIE, BenignStudy, PairComparison, compare_pair, label
from .fp32_reference import Reference


def greedy_continuation(generate: GenerateFn, stop_token_ids: list[int]):
    """The method's greedy output after a prefix: what re-synchronisation after a divergence runs (forensics)."""

    def continue_from(prompt: list[int], max_new_tokens: int) -> tuple[list[int], str, list[int]]:
        r = generate(prompt, max_new_tokens, GREEDY, stop_token_ids=stop_token_ids)
        return list(r.tokens), r.stop_reason, list(r.accepted)

    return continue_from


def compare_records(
    records: list[dict],
    reference_by_key: dict[tuple, dict],  # records.prompt_key -> the reference method's record
    reference: Reference,
    *,
    continue_fn=None,
    max_new_tokens: int | None = None,
    track: Callable[[list], Iterable] = iter,
) -> tuple[list[tuple[dict, PairComparison]], int]:
    """Each record against the reference's record of its prompt -> ([(where, comparison)], records not
    comparable: a later turn whose prompt holds the method's own diverged answer). `track` wraps the sorted
    records, to show how far the comparison is (harness.progress)."""
    compared, not_comparable = [], 0
    for r in track(sorted(records, key=prompt_key)):
        ar = reference_by_key.get(prompt_key(r))
        if ar is None:
            continue
        if ar["prompt_ids"] != r["prompt_ids"]:
            not_comparable += 1  # an earlier turn diverged, so this turn's prompt is the method's own
            continue
        pair = compare_pair(
            r["prompt_ids"], ar, r, reference.logits, continue_fn=continue_fn, max_new_tokens=max_new_tokens
        )
        compared.append(({"item_id": r["item_id"], "sample": r["sample"], "turn": r["turn"]}, pair))
    return compared, not_comparable


def greedy_verdict(
    compared: list[tuple[dict, PairComparison]],
    benign: BenignStudy,
    *,
    dtype: str,
    alpha: float,
    not_comparable: int = 0,
    resynced: bool = False,
) -> dict:
    """The verdict on compared records. Below float32 it is three tests at alpha / 3 each (Bonferroni), on
    the float32 margins of the divergences (AR's token minus the method's), each with p-values under the
    noise model (the chance a benign flip's margin is as large): the largest |margin| (Bonferroni over the
    divergences: a divergence is algorithmic when its |margin| is past the near-tie threshold, the margin a
    benign flip exceeds with probability alpha / 3 / n), all the margins combined (Fisher's method on the
    one-sided p-values: a bug in the method leaves its tokens below AR's, each by a little), and the
    divergence rate against the AR-vs-AR rate (one-sided Fisher exact)."""
    pairs = [pair for _, pair in compared]
    level, threshold = label_divergences(pairs, benign, alpha)
    margin_p, combined_p = margin_p_values([e for pair in pairs for e in pair.events], benign)
    prompts, identical = len(pairs), sum(p.identical for p in pairs)
    positions = sum(p.positions for p in pairs)
    first_divergences = [{**where, "index": p.first_divergence} for where, p in compared if not p.identical]
    events = [{**where, **asdict(e)} for where, p in compared for e in p.events]
    algorithmic_prompts = sum(any(e.kind == ALGORITHMIC for e in p.events) for p in pairs)
    near_ties = sum(e["kind"] == NEAR_TIE for e in events)
    algorithmic = len(events) - near_ties
    fisher_p = rate_p_value(len(events), positions, benign)
    if prompts == 0:
        verdict, reason = "NO DATA", f"no prompt shared with the reference ({not_comparable} not comparable)"
    elif dtype == "float32":
        ok = identical == prompts and not_comparable == 0
        verdict = "PASS" if ok else "FAIL"
        reason = f"{identical}/{prompts} prompts token-identical" + (
            ""
            if ok
            else f" (float32 requires 100%); {near_ties} near-tie and {algorithmic} algorithmic divergences"
        )
    else:
        ok = algorithmic == 0 and combined_p > alpha / 3 and fisher_p > alpha / 3
        verdict = "PASS" if ok else "FAIL"
        reason = (
            f"{identical}/{prompts} identical; {near_ties} near-tie and {algorithmic} algorithmic divergences "
            f"(near-tie: float32 margin <= {threshold:.3g}, which a benign flip exceeds with p <= {level:.2g}); "
            f"margins combined p = {combined_p:.3g}; rate {1000 * len(events) / max(positions, 1):.2f}/1k vs "
            f"AR-vs-AR {1000 * benign.rate:.2f}/1k (Fisher p = {fisher_p:.3g})"
        )
    return {
        "verdict": verdict,
        "reason": reason,
        "prompts": prompts,
        "identical": identical,
        "not_comparable": not_comparable,
        "first_divergences": first_divergences,
        "events": events,
        "near_tie_events": near_ties,
        "algorithmic_events": algorithmic,
        "positions": positions,
        "events_per_1k": 1000 * len(events) / positions if positions else None,
        "resynced": resynced,
        "algorithmic_prompts": algorithmic_prompts,
        "algorithmic_rate_upper95": algorithmic_rate_upper95(algorithmic_prompts, prompts),
        "fisher_vs_ar_ar_pvalue": fisher_p,
        "near_tie_threshold": threshold,
        "near_tie_level": level,
        "margin_pvalues": margin_p,  # one-sided
        "margins_combined_pvalue": combined_p,
        "ar_vs_ar": asdict(benign),
    }


def label_divergences(pairs: list[PairComparison], benign: BenignStudy, alpha: float) -> tuple[float, float]:
    """Each divergence labelled near-tie or algorithmic at the near-tie threshold, the |margin| a benign flip
    exceeds with probability alpha / 3 / n (Bonferroni over the n divergences) -> (that level, the threshold)."""
    level = alpha / 3 / max(sum(len(pair.events) for pair in pairs), 1)
    threshold = benign.threshold(level)
    for pair in pairs:
        label(pair.events, threshold)
    return level, threshold


def margin_p_values(events: list, benign: BenignStudy) -> tuple[list[float], float]:
    """(each divergence's one-sided p-value under the noise model, Fisher's method over them: 1 without any)."""
    # A stream that ended where the other went on has no margin: no numerics explain it.
    margin_p = [benign.one_sided_p_value(e.margin) if e.margin is not None else 0.0 for e in events]
    combined_p = (
        float(stats.combine_pvalues(np.clip(margin_p, 1e-300, 1), method="fisher").pvalue) if events else 1.0
    )
    return margin_p, combined_p


def rate_p_value(events: int, positions: int, benign: BenignStudy) -> float:
    """The one-sided Fisher exact p-value of `events` divergences over `positions` against the AR-vs-AR rate."""
    return float(
        stats.fisher_exact(
            [[events, positions - events], [benign.flips, benign.positions - benign.flips]],
            alternative="greater",
        ).pvalue
    )


def algorithmic_rate_upper95(algorithmic_prompts: int, prompts: int) -> float | None:
    """The exact binomial 95% upper bound on the share of prompts with an algorithmic divergence (None: none)."""
    if not prompts:
        return None
    return float(stats.binomtest(algorithmic_prompts, prompts, alternative="less").proportion_ci(0.95).high)


def verify_greedy(
    records: list[dict],
    reference_by_key: dict[tuple, dict],
    reference: Reference,
    benign: BenignStudy,
    *,
    dtype: str,
    alpha: float,
    continue_fn=None,
    max_new_tokens: int | None = None,
    track: Callable[[list], Iterable] = iter,
) -> dict:
    """Token identity, forensics and the greedy verdict for one method's records of one suite."""
    compared, not_comparable = compare_records(
        records,
        reference_by_key,
        reference,
        continue_fn=continue_fn,
        max_new_tokens=max_new_tokens,
        track=track,
    )
    return greedy_verdict(
        compared,
        benign,
        dtype=dtype,
        alpha=alpha,
        not_comparable=not_comparable,
        resynced=continue_fn is not None,
    )
