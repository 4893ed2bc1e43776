"""`orthrus-bench verify RUN`: lossless-equivalence verdicts for every method of a run, against its AR run.

Per (method, suite, temperature), on the records of the same prompts (see docs/verification.md):

* greedy (T = 0): token-ID identity per prompt, divergence forensics (harness/verify/forensics.py), and the verdict:
  float32 PASS only at 100% identity; lower precision PASS only when every divergence is a numerical near-tie
  and the divergence rate is not above the AR-vs-AR rate under benign perturbations (one-sided Fisher exact);
  the exact binomial 95% upper bound on the algorithmic divergence rate per prompt is always stated;
* sampling (T > 0): T1 randomized PIT (KS, CvM), T2 G-tests at a fixed context (needs a decoder), T3
  surprisal z, T4 two-sample tests against the AR samples, Holm-corrected at alpha; PASS when none rejects.
  Each test states its N and the smallest deviation it could detect;
* accuracy: exact McNemar (greedy), paired bootstrap with TOST at a margin (sampling), non-inferiority for
  lossy methods.

The target's exact distributions come from teacher-forcing the run's target checkpoint in float32; nothing
else is needed for the greedy verdicts and T1/T3/T4. Re-synchronising after greedy divergences and T2 need
the method's decoder: pass `decoder_factory` (label -> generate function, as harness.methods provides).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from harness.run.seeds import generation_seed
from orthrus_core.sampling import SamplingParams

from .equivalence import (
    MIN_EXPECTED,
    GTest,
    StatResult,
    Surprisal,
    acceptance_audit,
    combined_g_test,
    compare_accuracy,
    g_test,
    holm,
    pit_test,
    randomized_pit,
    surprisal_terms,
    surprisal_test,
    two_sample_tests,
)
from .forensics import (
    ALGORITHMIC,
    NEAR_TIE,
    BenignStudy,
    benign_study,
    compare_pair,
    teacher_forced_logits,
)

DEFAULT_ALPHA = 0.01
DEFAULT_MARGIN = 0.02  # accuracy equivalence margin: 2 points
DEFAULT_T2_SAMPLES = 500  # draws at the fixed context (see reports/calibration.md for the power this buys)
DEFAULT_T2_DEPTH = 4  # new-token positions tested at the fixed context
DEFAULT_TIE_PATHS = 4  # AR greedy paths per suite for the benign-perturbation study
VERDICTS = "verdicts.json"

# generate(prompt_ids, max_new_tokens, *, temperature, top_k, top_p, seed, stop_token_ids) -> GenerationResult
GenerateFn = Callable[..., object]
DecoderFactory = Callable[[str], GenerateFn]


# ------------------------------------------------------------------------------------ reference model


class Reference:
    """The target model in float32, teacher-forced: logits and transformed distributions at realised prefixes."""

    def __init__(self, model):
        self.model = model
        self.logits = teacher_forced_logits(model)

    def probs(self, prompt_ids: list[int], tokens: list[int], params: SamplingParams) -> torch.Tensor:
        """[len(tokens), V]: the distribution each token was drawn from under H0."""
        return params.probs(self.logits(prompt_ids, tokens)).double()

    def prefix_probs(self, prompt_ids: list[int], prefixes: list[tuple[int, ...]], params: SamplingParams):
        """prefix -> the distribution of the next token after prompt + prefix, one forward per longest
        prefix (its shorter prefixes come from the same pass)."""
        table: dict[tuple[int, ...], np.ndarray] = {}
        for prefix in sorted(set(prefixes), key=len, reverse=True):
            if prefix in table:
                continue
            # logits(prompt, prefix + [any]) has a row for every prefix of `prefix`, itself included.
            rows = params.probs(self.logits(prompt_ids, [*prefix, 0])).double().numpy()
            for i in range(len(prefix) + 1):
                table.setdefault(prefix[:i], rows[i])
        return table


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
) -> list[tuple[int, ...]]:
    """T2's draws: `samples` generations of `depth` tokens from the same prompt (the same cache state), each
    with its own seed hashed from `seed` (harness.run.seeds)."""
    sequences = []
    for i in range(samples):
        result = generate(
            prompt_ids,
            depth,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            seed=generation_seed(seed, "t2", i, 0),
            stop_token_ids=stop_token_ids,
        )
        sequences.append(tuple(result.tokens))
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


# -------------------------------------------------------------------------------------------- per group


def _key(record: dict) -> tuple:
    return (record["suite"], record["item_id"], record["sample"], record["turn"])


def _correctness(records: list[dict]) -> dict[str, list[bool]]:
    """item -> per-sample correctness (last turns that were scored), in sample order."""
    by_item: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for r in records:
        if r.get("score_correct") is not None:
            by_item[r["item_id"]].append((r["sample"], bool(r["score_correct"])))
    return {item: [c for _, c in sorted(v)] for item, v in by_item.items()}


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


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
) -> dict:
    """Token identity, forensics and the greedy verdict for one method's records of one suite."""
    prompts = identical = not_comparable = positions = 0
    first_divergences, events = [], []
    algorithmic_prompts = 0
    for r in sorted(records, key=_key):
        ar = reference_by_key.get(_key(r))
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


def sequence_statistics(reference: Reference, records: list[dict], params: SamplingParams, seed: int):
    """Per record: PIT values and surprisal terms per token, total log-probability and length; and over all
    records, the acceptance trace's events (accepted, q(x), p(x)) with p the reference's (T5)."""
    generator = torch.Generator().manual_seed(seed)
    pits, terms, logprob, length, audit = [], [], [], [], []
    for r in records:
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
) -> tuple[list[StatResult], bool]:
    """T1, T3, T4, T5 (when the records carry acceptance traces) and T2 (when given) with Holm across them;
    True when the family rejects."""
    pits, terms, logprob, length, audit = sequence_statistics(reference, records, params, seed)
    _, _, ref_logprob, ref_length, _ = sequence_statistics(reference, reference_records, params, seed + 1)
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


def verify_sampling(records, reference_records, reference, params, *, alpha, seed, t2=None) -> dict:
    family, rejected = sampling_family(
        reference, records, reference_records, params, alpha=alpha, seed=seed, t2=t2
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


# ------------------------------------------------------------------------------------------------ the run


def generation_params(run: dict, suite: str, temperature: float) -> tuple[SamplingParams, int, list]:
    """The settings the run used for `suite`: the suite file's [generation], overridden by the run's
    non-null temperature/top_k/top_p/max_new_tokens; returns (params, max_new_tokens, stop entries)."""
    from harness.suites.config import parse_suite
    from harness.suites.suite import load_suite

    config = run.get("config", {})
    raw = run.get("suites", {}).get(suite, {}).get("config")
    settings = parse_suite(raw, suite, "run.json").generation if raw else load_suite(suite).generation
    top_k = config.get("top_k") if config.get("top_k") is not None else settings.top_k
    top_p = config.get("top_p") if config.get("top_p") is not None else settings.top_p
    max_new = config.get("max_new_tokens") or settings.max_new_tokens
    return SamplingParams(temperature, top_k, top_p), max_new, list(settings.stop)


def target_path(run: dict) -> str:
    from harness.paths import default_model

    for m in run.get("models", []):
        if m.get("role") == "target":
            return m["path"]
    return str(default_model())


def verify_run(
    run_dir: str | Path,
    *,
    alpha: float = DEFAULT_ALPHA,
    margin: float = DEFAULT_MARGIN,
    reference_method: str = "ar",
    tie_paths: int = DEFAULT_TIE_PATHS,
    t2_samples: int = DEFAULT_T2_SAMPLES,
    t2_depth: int = DEFAULT_T2_DEPTH,
    decoder_factory: DecoderFactory | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> dict:
    """Every verdict of the run in `run_dir` (not written; see `verify_main`)."""
    from harness.cli import DTYPES
    from harness.store import load_run, read_records
    from orthrus_core.checkpoint import load_model

    run = load_run(run_dir)
    records = [r for r in read_records(run_dir) if r["status"] == "ok"]
    dtype = _dtype_name(run.get("config", {}).get("dtype", "float32"))
    path = target_path(run)
    reference = Reference(load_model(path, dtype=torch.float32, device=device).eval())
    run_model = (
        reference.model if dtype == "float32" else load_model(path, dtype=DTYPES[dtype], device=device)
    )
    stop_ids_for = _stop_ids_resolver(path, reference.model)

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["method"], r["suite"], float(r["temperature"]))].append(r)
    benign_by_suite: dict[str, BenignStudy] = {}
    decoders: dict[str, GenerateFn | None] = {}
    verdicts = []
    for (method, suite, temperature), group in sorted(groups.items()):
        if method == reference_method:
            continue
        ref_records = groups.get((reference_method, suite, temperature), [])
        params, max_new, stop = generation_params(run, suite, temperature)
        info = run.get("methods", {}).get(method, {})
        lossless = bool(group[0].get("lossless", info.get("lossless", True)))
        entry = {
            "method": method,
            "method_name": group[0].get("method_name"),
            "lossless": lossless,
            "suite": suite,
            "dtype": dtype,
            "temperature": temperature,
            "reference": reference_method,
            "mode": "greedy" if params.greedy else "sampling",
        }
        generate = None
        if decoder_factory is not None:
            if method not in decoders:
                try:
                    decoders[method] = decoder_factory(method)
                except Exception as exc:  # a method the registry cannot rebuild here: verify without it
                    decoders[method] = None
                    entry["decoder_error"] = f"{type(exc).__name__}: {exc}"
            generate = decoders[method]
        if not ref_records:
            entry.update(verdict="NO DATA", reason=f"the run has no {reference_method} records for {suite}")
        elif params.greedy:
            if suite not in benign_by_suite:
                paths = [
                    (r["prompt_ids"], r["output_ids"]) for r in sorted(ref_records, key=_key)[:tie_paths]
                ]
                benign_by_suite[suite] = benign_study(run_model, reference.logits, paths)
            continue_fn = None
            if generate is not None:
                stop_ids = stop_ids_for(stop)

                def continue_fn(prompt, max_new_tokens, generate=generate, stop_ids=stop_ids):
                    r = generate(prompt, max_new_tokens, temperature=0.0, top_k=0, top_p=1.0, seed=None,
                                 stop_token_ids=stop_ids)  # fmt: skip
                    return list(r.tokens), r.stop_reason, list(r.accepted)

            ref_by_key = {_key(r): r for r in ref_records}
            entry["greedy"] = verify_greedy(
                group,
                ref_by_key,
                reference,
                benign_by_suite[suite],
                dtype=dtype,
                alpha=alpha,
                continue_fn=continue_fn,
                max_new_tokens=max_new,
            )
            entry.update(verdict=entry["greedy"]["verdict"], reason=entry["greedy"]["reason"])
        else:
            t2 = None
            if generate is not None and t2_samples > 0:
                prompt = t2_context(reference, sorted(ref_records, key=_key), params)
                draws = draw_fixed_context(
                    generate,
                    prompt,
                    params,
                    samples=t2_samples,
                    depth=t2_depth,
                    stop_token_ids=stop_ids_for(stop),
                    seed=seed + 10_000,
                )
                t2 = fixed_context_tests(draws, reference, prompt, params, depth=t2_depth, alpha=alpha)
            entry["sampling"] = verify_sampling(
                group, ref_records, reference, params, alpha=alpha, seed=seed, t2=t2
            )
            entry.update(verdict=entry["sampling"]["verdict"], reason=entry["sampling"]["reason"])
        accuracy = compare_accuracy(
            _correctness(ref_records),
            _correctness(group),
            greedy=params.greedy,
            lossy=not lossless,
            margin=margin,
            alpha=alpha,
            seed=seed,
        )
        entry["accuracy"] = asdict(accuracy) if accuracy else None
        entry["summary"] = plain_summary(entry)
        verdicts.append(entry)
    return {
        "run": str(run_dir),
        "alpha": alpha,
        "accuracy_margin": margin,
        "dtype": dtype,
        "target": path,
        "reference": reference_method,
        "decoders_available": decoder_factory is not None,
        "verdicts": verdicts,
    }


def _stop_ids_resolver(model_path: str, model):
    """stop entries of a suite -> token ids, with the target's tokenizer (loaded on first use); a checkpoint
    without a tokenizer keeps the integer entries and the model's EOS."""
    from orthrus_core.generation import default_stop_ids

    cache = {}

    def resolve(stop: list) -> list[int]:
        ids = [s for s in stop if isinstance(s, int)]
        if len(ids) == len(stop):
            return ids
        if "tokenizer" not in cache:
            from orthrus_core.tokenizer import load_tokenizer

            cache["tokenizer"] = load_tokenizer(model_path)
        if cache["tokenizer"] is None:
            return sorted(set(ids) | set(default_stop_ids(model)))
        from harness.suites.config import GenerationSettings

        return GenerationSettings(1, stop=tuple(stop)).stop_token_ids_and_strings(cache["tokenizer"])[0]

    return resolve


def _points(x: float) -> str:
    return f"{100 * x:+.1f}"


def plain_summary(entry: dict) -> str:
    """One sentence a reader can act on: what was checked, the verdict, and the accuracy difference."""
    kind = "lossless" if entry["lossless"] else "lossy"
    head = (
        f"{entry['method']} ({kind}) {'PASSES' if entry['verdict'] == 'PASS' else entry['verdict'] + 'S'} "
        f"on {entry['suite']} at T={entry['temperature']:g} ({entry['dtype']}): {entry['reason']}"
    )
    if entry["verdict"] == "NO DATA":
        head = f"{entry['method']} on {entry['suite']} at T={entry['temperature']:g}: no verdict, {entry['reason']}"
    acc = entry.get("accuracy")
    if acc:
        lo, hi = acc["ci95"]
        head += (
            f". Accuracy {100 * acc['method_accuracy']:.1f}% vs {entry['reference']} "
            f"{100 * acc['reference_accuracy']:.1f}% (difference {_points(acc['difference'])} points, "
            f"95% CI [{_points(lo)}, {_points(hi)}], {acc['items']} items): {acc['conclusion']}"
        )
    if not entry["lossless"] and entry["verdict"] == "FAIL":
        head += ". Its outputs are not the AR model's: it is not a lossless decoder"
    return head + "."


def print_verdicts(result: dict, console=None) -> None:
    from rich.table import Table

    from harness.console import console as make_console

    console = console or make_console()
    table = Table(title=f"verify {result['run']} (alpha {result['alpha']}, reference {result['reference']})")
    for column in ("method", "suite", "T", "mode", "N", "verdict", "evidence", "min TV", "Δ accuracy"):
        table.add_column(column, justify="left" if column in ("method", "suite", "evidence") else "right")
    style = {"PASS": "green", "FAIL": "red"}
    for v in result["verdicts"]:
        if "greedy" in v:
            g = v["greedy"]
            n = f"{g['prompts']} prompts"
            evidence = (
                f"{g['identical']}/{g['prompts']} identical, {g['near_tie_events']} near-tie, "
                f"{g['algorithmic_events']} algorithmic; alg. rate ≤ {100 * (g['algorithmic_rate_upper95'] or 0):.1f}%"
            )
            tv = "–"
        elif "sampling" in v:
            s = v["sampling"]
            n = f"{s['tokens']} tok"
            rejected = [t["name"] for t in s["tests"] if t["reject"]]
            evidence = (
                f"rejects: {', '.join(rejected)}" if rejected else f"{len(s['tests'])} tests, none rejects"
            )
            tv = f"{s['min_detectable_tv']:.3f}" if s["min_detectable_tv"] is not None else "–"
        else:
            n, evidence, tv = "–", v["reason"], "–"
        acc = v.get("accuracy")
        delta = f"{_points(acc['difference'])} pt" if acc else "–"
        verdict = f"[{style.get(v['verdict'], 'yellow')}]{v['verdict']}[/]"
        table.add_row(
            v["method"] + ("" if v["lossless"] else " (lossy)"),
            v["suite"],
            f"{v['temperature']:g}",
            v["mode"],
            n,
            verdict,
            evidence,
            tv,
            delta,
        )
    console.print(table)
    for v in result["verdicts"]:
        if v["verdict"] != "PASS":
            console.print(v["summary"], highlight=False)


# --------------------------------------------------------------------------------------------- the command


def add_verify_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN", help="results directory written by `orthrus-bench run`")
    parser.add_argument("--out", help=f"verdicts file (default: RUN/{VERDICTS})")
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="family-wise level (Holm)")
    parser.add_argument(
        "--margin", type=float, default=DEFAULT_MARGIN, help="accuracy equivalence margin (0.02 = 2 points)"
    )
    parser.add_argument("--reference", default="ar", help="the method label to compare against")
    parser.add_argument(
        "--tie-paths", type=int, default=DEFAULT_TIE_PATHS, help="AR paths per suite for the near-tie study"
    )
    parser.add_argument(
        "--t2-samples",
        type=int,
        default=DEFAULT_T2_SAMPLES,
        help="T2 draws at the fixed context (0: skip T2)",
    )
    parser.add_argument("--t2-depth", type=int, default=DEFAULT_T2_DEPTH, help="T2 positions per draw")
    parser.add_argument(
        "--no-decoders",
        action="store_true",
        help="records only: no greedy re-synchronisation and no T2 (which re-run the methods)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)


def registry_decoder_factory(run_dir: str | Path, device: str) -> DecoderFactory | None:
    """label -> generate, from the method registry (harness.methods) and the run's target; None without it."""
    try:
        from harness.methods import Target, make_decoder
    except ImportError:
        return None
    from harness.cli import DTYPES
    from harness.store import load_run
    from orthrus_core.checkpoint import load_model
    from orthrus_core.tokenizer import load_tokenizer

    run = load_run(run_dir)
    path = target_path(run)
    dtype = DTYPES[_dtype_name(run.get("config", {}).get("dtype", "float32"))]
    target = Target(load_model(path, dtype=dtype, device=device), Path(path), load_tokenizer(path))
    return lambda label: make_decoder(label, target).generate


def verify_main(
    run_dir,
    out=None,
    alpha: float = DEFAULT_ALPHA,
    *,
    margin: float = DEFAULT_MARGIN,
    reference: str = "ar",
    tie_paths: int = DEFAULT_TIE_PATHS,
    t2_samples: int = DEFAULT_T2_SAMPLES,
    t2_depth: int = DEFAULT_T2_DEPTH,
    decoders: bool = True,
    device: str = "cpu",
    seed: int = 0,
    decoder_factory: DecoderFactory | None = None,
) -> int:
    """Verify, print the table, write verdicts.json; exit status 1 when a lossless method fails, else 0."""
    from harness.store import json_safe, write_json

    if decoder_factory is None and decoders:
        decoder_factory = registry_decoder_factory(run_dir, device)
    result = verify_run(
        run_dir,
        alpha=alpha,
        margin=margin,
        reference_method=reference,
        tie_paths=tie_paths,
        t2_samples=t2_samples,
        t2_depth=t2_depth,
        decoder_factory=decoder_factory,
        device=device,
        seed=seed,
    )
    path = Path(out) if out else Path(run_dir) / VERDICTS
    write_json(path, json_safe(result))
    print_verdicts(result)
    print(f"wrote {path}", file=sys.stderr)
    return 1 if any(v["lossless"] and v["verdict"] == "FAIL" for v in result["verdicts"]) else 0


def cmd_verify(args) -> int:
    return verify_main(
        args.run_dir,
        args.out,
        args.alpha,
        margin=args.margin,
        reference=args.reference,
        tie_paths=args.tie_paths,
        t2_samples=args.t2_samples,
        t2_depth=args.t2_depth,
        decoders=not args.no_decoders,
        device=args.device,
        seed=args.seed,
    )
