"""The greedy verdict (T = 0): token-ID identity per prompt against the reference method's record of the same
prompt, divergence forensics (forensics.py) and the verdict. float32 passes only at 100% identity; lower
precision only when every divergence is a numerical near-tie and the divergence rate is not above the
AR-vs-AR rate under benign perturbations (one-sided Fisher exact). The exact binomial 95% upper bound on the
algorithmic divergence rate per prompt is always stated."""

from __future__ import annotations

from dataclasses import asdict

from scipy import stats

from harness.methods.base import GenerateFn
from harness.records import prompt_key
from orthrus_core.params import GREEDY

from .forensics import ALGORITHMIC, NEAR_TIE, BenignStudy, compare_pair
from .fp32_reference import Reference


def greedy_continuation(generate: GenerateFn, stop_token_ids: list[int]):
    """The method's greedy output after a prefix: what re-synchronisation after a divergence runs (forensics)."""

    def continue_from(prompt: list[int], max_new_tokens: int) -> tuple[list[int], str, list[int]]:
        r = generate(prompt, max_new_tokens, GREEDY, stop_token_ids=stop_token_ids)
        return list(r.tokens), r.stop_reason, list(r.accepted)

    return continue_from


def verify_greedy(
    records: list[dict],
    reference_by_key: dict[tuple, dict],  # records.prompt_key -> the reference method's record
    reference: Reference,
    benign: BenignStudy,
    *,
    dtype: str,
    alpha: float,
    continue_fn=None,
    max_new_tokens: int | None = None,
) -> dict:
    """Token identity, forensics and the greedy verdict for one method's records of one suite."""
    prompts = identical = not_comparable = positions = 0
    first_divergences, events = [], []
    algorithmic_prompts = 0
    for r in sorted(records, key=prompt_key):
        ar = reference_by_key.get(prompt_key(r))
        if ar is None:
            continue
        if ar["prompt_ids"] != r["prompt_ids"]:
            not_comparable += 1  # an earlier turn diverged, so this turn's prompt is the method's own
            continue
        pair = compare_pair(
            r["prompt_ids"],
            ar,
            r,
            reference.logits,
            benign.threshold,
            continue_fn=continue_fn,
            max_new_tokens=max_new_tokens,
        )
        prompts += 1
        identical += pair.identical
        positions += pair.positions
        where = {"item_id": r["item_id"], "sample": r["sample"], "turn": r["turn"]}
        if not pair.identical:
            first_divergences.append({**where, "index": pair.first_divergence})
        events += [{**where, **asdict(e)} for e in pair.events]
        algorithmic_prompts += any(e.kind == ALGORITHMIC for e in pair.events)
    near_ties = sum(e["kind"] == NEAR_TIE for e in events)
    algorithmic = len(events) - near_ties
    fisher_p = float(
        stats.fisher_exact(
            [[len(events), positions - len(events)], [benign.flips, benign.positions - benign.flips]],
            alternative="greater",
        ).pvalue
    )
    upper = (
        float(stats.binomtest(algorithmic_prompts, prompts, alternative="less").proportion_ci(0.95).high)
        if prompts
        else None
    )
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
        ok = algorithmic == 0 and fisher_p > alpha
        verdict = "PASS" if ok else "FAIL"
        reason = (
            f"{identical}/{prompts} identical; {near_ties} near-tie and {algorithmic} algorithmic divergences; "
            f"rate {1000 * len(events) / max(positions, 1):.2f}/1k vs AR-vs-AR {1000 * benign.rate:.2f}/1k "
            f"(Fisher p = {fisher_p:.3g})"
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
        "resynced": continue_fn is not None,
        "algorithmic_prompts": algorithmic_prompts,
        "algorithmic_rate_upper95": upper,
        "fisher_vs_ar_ar_pvalue": fisher_p,
        "near_tie_threshold": benign.threshold,
        "ar_vs_ar": asdict(benign),
    }
