"""The sampling verdict (T > 0): a family of tests that the method's sampled tokens follow the target's
distribution, Holm-corrected at alpha; PASS when none rejects. Each test states its N and the smallest
deviation it could detect (docs/verification.md):

* T1 randomized PIT of every token under the reference distribution (KS, CvM);
* T2 G-tests of many draws at one fixed context (needs the method's decoder);
* T3 surprisal z: the tokens' total surprisal against its expectation and variance under H0;
* T4 two-sample tests of sequence log-probability and length against the reference method's samples;
* T5 an audit of the consensus rule from the decoder's acceptance trace.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict

import numpy as np
import torch

from harness.methods.base import GenerateFn
from harness.run.seeds import generation_seed
from orthrus_core.params import SamplingParams

from .equivalence import (
    MIN_EXPECTED,
    GTest,
    StatResult,
    Surprisal,
    acceptance_audit,
    combined_g_test,
    g_test,
    holm,
    pit_test,
    randomized_pit,
    surprisal_terms,
    surprisal_test,
    two_sample_tests,
)
from .fp32_reference import Reference

# ------------------------------------------------------------------------------------------ T2 at fixed context


def draw_fixed_context(
    generate: GenerateFn,
    prompt_ids: list[int],
    params: SamplingParams,
    *,
    samples: int,
    depth: int,
    stop_token_ids: list[int],
    seed: int,
    on_draw: Callable[[], None] | None = None,
) -> list[tuple[int, ...]]:
    """T2's draws: `samples` generations of `depth` tokens from the same prompt (the same cache state), each
    with its own seed hashed from `seed` (harness.run.seeds). `on_draw` is called after each (progress)."""
    sequences = []
    for i in range(samples):
        result = generate(
            prompt_ids, depth, params, seed=generation_seed(seed, "t2", i, 0), stop_token_ids=stop_token_ids
        )
        sequences.append(tuple(result.tokens))
        if on_draw is not None:
            on_draw()
    return sequences


def fixed_context_tests(
    sequences: list[tuple[int, ...]],
    reference: Reference,
    prompt_ids: list[int],
    params: SamplingParams,
    *,
    depth: int,
    alpha: float,
) -> list[StatResult]:
    """T2 on draws from one prompt: at each position j < depth the draws are grouped by their realised
    prefix (a context), the token counts of each context G-tested against the reference distribution there
    (cells pooled to expected >= 5), and the contexts' statistics summed. Position 0 is the first step; later
    positions cover the parallel blocks' offsets and boundaries, whichever the draws fell on."""
    # Only contexts with enough draws for two pooled cells are worth a forward pass.
    groups_by_position = []
    for j in range(depth):
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for seq in sequences:
            if len(seq) > j:
                groups[seq[:j]].append(seq[j])
        groups_by_position.append({k: v for k, v in groups.items() if len(v) >= 2 * MIN_EXPECTED})
    table = reference.prefix_probs(prompt_ids, [k for g in groups_by_position for k in g], params)
    results = []
    for j, groups in enumerate(groups_by_position):
        tests: list[GTest | None] = []
        for prefix, tokens in groups.items():
            probs = table[prefix]
            tests.append(g_test(np.bincount(tokens, minlength=len(probs)), probs))
        combined = combined_g_test(f"T2 G-test position {j}", tests, alpha)
        if combined is not None:
            results.append(combined)
    return results


def t2_context(
    reference: Reference, records: list[dict], params: SamplingParams, limit: int = 16
) -> list[int]:
    """The fixed context for T2: prompt + the first k tokens of one of `records` (realised paths), chosen to
    maximise P(the most likely first token) x the entropy of the step after it. Most draws then share their
    first token, so the context of the second position (a parallel block's first draft) is fixed for most of
    them, and the distribution tested there is far from deterministic."""
    best, best_score = None, -1.0
    for r in records[:limit]:
        tokens = list(r["output_ids"])
        if len(tokens) < 2:
            continue
        probs = reference.probs(r["prompt_ids"], tokens, params)
        p_max, argmax = probs.max(-1)
        entropy = -(probs * torch.where(probs > 0, probs.log(), torch.zeros_like(probs))).sum(-1)
        for k in range(len(tokens) - 1):
            score = float(p_max[k] * entropy[k + 1])
            if int(argmax[k]) == tokens[k] and score > best_score:
                best, best_score = list(r["prompt_ids"]) + tokens[:k], score
    return best if best is not None else list(records[0]["prompt_ids"])


# ------------------------------------------------------------------------------------ T1, T3, T4, T5


# Wraps the records a step goes through, to show how far it is (harness.progress): records -> records.
Track = Callable[[list[dict]], Iterable[dict]]


def sequence_statistics(
    reference: Reference,
    records: list[dict],
    params: SamplingParams,
    seed: int,
    track: Callable[[list[dict]], Iterable[dict]] = iter,
):
    """Per record: PIT values and surprisal terms per token, total log-probability and length; and over all
    records, the acceptance trace's events (accepted, q(x), p(x)) with p the reference's (T5). `track` wraps
    the records, to show how far the pass is."""
    generator = torch.Generator().manual_seed(seed)
    pits, terms, logprob, length, audit = [], [], [], [], []
    for r in track(records):
        tokens = list(r["output_ids"])
        if not tokens:
            continue
        probs = reference.probs(r["prompt_ids"], tokens, params)
        ids = torch.tensor(tokens)
        pits.append(randomized_pit(probs, ids, generator).numpy())
        t = surprisal_terms(probs, ids)
        terms.append(t)
        logprob.append(-float(t.surprisal.sum()))
        length.append(len(tokens))
        if trace := r.get("acceptance_trace"):  # aligned with the tokens; absent for other decoders
            if len(trace) != len(tokens):
                raise ValueError(
                    f"record {r.get('method')}/{r.get('suite')}/{r.get('item_id')} has {len(trace)} acceptance "
                    f"trace entries for {len(tokens)} tokens: the record is corrupt; run that unit again"
                )
            p_emitted = probs[torch.arange(len(tokens)), ids].tolist()
            audit += [(*event, p_x) for event, p_x in zip(trace, p_emitted, strict=True) if event]
    return pits, terms, np.array(logprob), np.array(length), np.array(audit).reshape(-1, 3)


def sampling_family(
    reference: Reference,
    records: list[dict],
    reference_records: list[dict],
    params: SamplingParams,
    *,
    alpha: float,
    seed: int,
    t2: list[StatResult] | None = None,
    track: Track | None = None,
) -> tuple[list[StatResult], bool]:
    """T1, T3, T4, T5 (when the records carry acceptance traces) and T2 (when given) with Holm across them;
    True when the family rejects. `track` shows how far the pass over both sides' records is: it wraps the
    method's records followed by the reference's, which the two passes take in turn."""
    both = iter(track([*records, *reference_records]) if track else [*records, *reference_records])

    def side(items: list[dict]) -> Iterable[dict]:
        return itertools.islice(both, len(items))

    pits, terms, logprob, length, audit = sequence_statistics(reference, records, params, seed, side)
    _, _, ref_logprob, ref_length, _ = sequence_statistics(
        reference, reference_records, params, seed + 1, side
    )
    for _ in both:  # the end of the wrapped records: the progress shown ends
        pass
    family: list[StatResult] = []
    if pits:
        family += pit_test(np.concatenate(pits), alpha)
        merged = Surprisal(
            np.concatenate([t.surprisal for t in terms]),
            np.concatenate([t.entropy for t in terms]),
            np.concatenate([t.variance for t in terms]),
        )
        family.append(surprisal_test(merged, alpha))
    # A zero-probability sequence has log-probability -inf: keep it comparable (and extreme) for the ranks.
    both = np.concatenate([logprob, ref_logprob])
    floor = np.min(both[np.isfinite(both)], initial=0) - 1e6
    family += two_sample_tests(
        np.where(np.isfinite(logprob), logprob, floor),
        np.where(np.isfinite(ref_logprob), ref_logprob, floor),
        length,
        ref_length,
        alpha,
        seed,
    )
    audit_result = acceptance_audit(audit[:, 0], audit[:, 1], audit[:, 2], alpha)
    family += [audit_result] if audit_result else []
    family += t2 or []
    return family, holm(family, alpha) if family else False


def verify_sampling(
    records, reference_records, reference, params, *, alpha, seed, t2=None, track: Track | None = None
) -> dict:
    family, rejected = sampling_family(
        reference, records, reference_records, params, alpha=alpha, seed=seed, t2=t2, track=track
    )
    tvs = [t.min_detectable_tv for t in family if t.min_detectable_tv is not None]
    tokens = sum(len(r["output_ids"]) for r in records)
    if not family:
        verdict, reason = "NO DATA", "no sampled tokens to test"
    else:
        worst = min(family, key=lambda t: t.adjusted_pvalue)
        verdict = "FAIL" if rejected else "PASS"
        reason = (
            f"{'rejected' if rejected else 'no test rejects'} at alpha {alpha} (Holm, {len(family)} tests); "
            f"smallest adjusted p {worst.adjusted_pvalue:.3g} ({worst.name})"
        )
    return {
        "verdict": verdict,
        "reason": reason,
        "tokens": tokens,
        "sequences": len(records),
        "reference_sequences": len(reference_records),
        "min_detectable_tv": min(tvs) if tvs else None,
        "tests": [asdict(t) for t in family],
    }
