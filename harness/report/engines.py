"""The report's answer across engines: Orthrus against DFlash and EAGLE-3 in each engine that decoded them
(the project's, and vLLM through `vllm-orthrus`, `vllm-dflash`, `vllm-eagle3`), the headline's first tables;
and the cross-engine checks, a vLLM method held against the project's method of the same algorithm (`vllm-ar`
against `ar`, `vllm-orthrus` against `orthrus`), where a difference is the engines' disagreement, not a
method's fault."""

from __future__ import annotations

import pandas as pd

from harness.records import prompt_key
from orthrus_core import metrics

from .stats import pooled_tau
from .style import VLLM_PREFIX, method_order, temperature_label
from .tables import AR_BASELINES, Table, fmt, pooled_ratio, speedup_over, strongest_baseline, suite_order

# The headline's question, Orthrus against DFlash and EAGLE-3, in its order, with the names it prints.
DRAFTERS = {"orthrus": "Orthrus", "dflash": "DFlash", "eagle3": "EAGLE-3"}
# (engine, the prefix of its methods' names, its AR baseline; None: the fastest AR baseline of the run, the
# headline's denominator)
ENGINES = (("orthrus-bench", "", None), ("vLLM", VLLM_PREFIX, f"{VLLM_PREFIX}ar"))
# Orthrus in vLLM: the project's Orthrus algorithm, so in float32 greedy both give `ar`'s tokens and accept
# the same drafts in every cycle at the same block size.
VLLM_ORTHRUS = f"{VLLM_PREFIX}orthrus"


# ---------------------------------------------------------------------------- Orthrus against the others


def drafter_tables(u: pd.DataFrame, batch_size: int | None = None) -> list[Table]:
    """Per model and temperature, one row per engine that decoded its Orthrus and DFlash or EAGLE-3: each
    one's speedup over the engine's AR baseline (mean per-item tokens/s over the baseline's on the same items
    of every suite, 95% paired bootstrap CI) and its τ pooled over every suite's cycles. `batch_size`: the
    batch size of the units in `u`, named in each title (None: decoded alone)."""
    tables = []
    for (model, temp), g in u.groupby(["model", "temperature"], sort=True):
        rows = [row for engine in ENGINES if (row := engine_row(g, *engine))]
        if not rows:
            continue
        columns = ["engine", "methods", "speedup over", *(f"{n} ×" for n in DRAFTERS.values()),
                   *(f"{n} τ" for n in DRAFTERS.values())]  # fmt: skip
        note = (
            "Orthrus against DFlash and EAGLE-3 in each engine that decoded Orthrus and one of them: the "
            f"project's (orthrus-bench: {', '.join(DRAFTERS)}) and vLLM's "
            f"({', '.join(VLLM_PREFIX + d for d in DRAFTERS)}). ×: mean per-item tokens/s over that of the "
            "engine's AR baseline (speedup over) on the same items of every suite, 95% paired bootstrap CI "
            "over items in parentheses; the project's engine's is the fastest AR baseline of the run, vLLM's "
            f"`{VLLM_PREFIX}ar`. τ: accepted drafts + 1 per cycle, pooled over every suite's cycles. A "
            "method run with several options counts by its fastest, named under methods. Each method's "
            "verdict: the table below."
        )
        where = f"{model}, {temperature_label(temp)}" + (f", B={batch_size}" if batch_size else "")
        tables.append(Table(f"Headline — Orthrus against DFlash and EAGLE-3 ({where})", columns, rows, note))
    return tables


def engine_row(g: pd.DataFrame, engine: str, prefix: str, baseline: str | None) -> list[str] | None:
    """One engine's row of drafter_tables over the units `g` of one model and temperature: None where the
    engine did not decode its Orthrus and at least one of DFlash and EAGLE-3."""
    baseline = (
        strongest_baseline(g) if baseline is None else (baseline if baseline in set(g.method) else None)
    )
    labels = {d: fastest_label(g, prefix + d, baseline) for d in DRAFTERS}
    if labels["orthrus"] is None or all(labels[d] is None for d in DRAFTERS if d != "orthrus"):
        return None
    speedups, taus = [], []
    for label in labels.values():
        found = speedup_over(g, label, baseline) if label and baseline else None
        speedups.append(fmt(found[0], ci=found[1], suffix="×") if found else "–")
        own = g[g.method == label]
        taus.append(fmt(float(pooled_tau(own.accepted, own.cycles))) if label else "–")
    named = ", ".join(label for label in labels.values() if label)
    return [engine, named, baseline or "–", *speedups, *taus]


def fastest_label(g: pd.DataFrame, name: str, baseline: str | None) -> str | None:
    """The label of method `name` in `g` (its only one, or the fastest over `baseline` of several; the first
    in the report's order without a baseline); None where `g` has none."""
    labels = method_order(set(g[g.method_name == name].method))
    if len(labels) < 2 or baseline is None:
        return labels[0] if labels else None
    ratios = {label: pooled_ratio(g, label, baseline) for label in labels}
    return max(labels, key=lambda label: -1.0 if ratios[label] is None else ratios[label])


# ----------------------------------------------------------------------------------- cross-engine checks


def cross_engine_words(labels: set[str], names: set[str]) -> str:
    """The headline note's sentences for the cross-engine checks among a table's method `labels` (and their
    registry `names`): "" where there is none."""
    words = ""
    engines = [m for m in AR_BASELINES[1:] if m in labels]
    if engines:
        words += (
            f" {' and '.join(f'`{m}`' for m in engines)} against `ar`: a cross-engine check of the project's "
            "AR (another engine decoding the same weights one token a pass); a FAIL there is a disagreement "
            "between engines, not a method's fault."
        )
    if {VLLM_ORTHRUS, "orthrus"} <= names:
        words += (
            f" `{VLLM_ORTHRUS}` against `orthrus`: a cross-engine check of the project's Orthrus (the same "
            "algorithm in vLLM; greedy, their token identity and accepted drafts per suite under "
            "Cross-engine check); a difference there is a disagreement between engines, not a method's fault."
        )
    return words


def cross_engine_tables(gens: pd.DataFrame) -> list[Table]:
    """Per model and greedy temperature, each vLLM Orthrus label against the project's (cross_engine_twin),
    per suite on the prompts both decoded: how many are token-identical to each other and to `ar`, how many
    accepted the same drafts in every cycle, and each one's τ with their difference."""
    tables = []
    for (model, temp), g in gens[gens.greedy.astype(bool)].groupby(["model", "temperature"], sort=True):
        for label in method_order(set(g[g.method_name == VLLM_ORTHRUS].method)):
            twin = cross_engine_twin(label, set(g[g.method_name == "orthrus"].method))
            if twin is None:
                continue
            suites = suite_order(set(g[g.method == label].suite) & set(g[g.method == twin].suite))
            rows = [cross_engine_row(g[g.suite == suite], suite, label, twin) for suite in suites]
            columns = ["suite", "prompts", "identical to each other", "same accepted drafts in every cycle",
                       f"{twin} identical to ar", f"{label} identical to ar", f"{twin} τ", f"{label} τ",
                       "τ difference"]  # fmt: skip
            note = (
                f"`{label}` decodes with `{twin}`'s algorithm in vLLM: both are lossless, so in float32 "
                "greedy each gives `ar`'s tokens, and at the same block size they accept the same drafts in "
                "every cycle. A difference here is a disagreement between the engines (a near-tie of the "
                "diffusion pass's logits, whose order another engine's kernels may flip), not a method's "
                "fault: the verdicts hold each to `ar` alone (Equivalence verdicts). Greedy generations, on "
                "the prompts both decoded; τ: accepted drafts + 1 per cycle, pooled over cycles; τ "
                "difference: vLLM's less the project's."
            )
            where = f"{model}, {temperature_label(temp)}"
            title = f"Cross-engine check: {label} against {twin} ({where})"
            tables.append(Table(title, columns, rows, note))
    return tables


def cross_engine_twin(label: str, twins: set[str]) -> str | None:
    """The project's label a vLLM label is checked against: the one of the same options, else the default,
    else the only one; None where none of them is in `twins`."""
    same = label.removeprefix(VLLM_PREFIX)
    default = same.split(":", 1)[0]
    if same in twins or default in twins:
        return same if same in twins else default
    return next(iter(twins)) if len(twins) == 1 else None


def cross_engine_row(g: pd.DataFrame, suite: str, label: str, twin: str) -> list[str]:
    """One suite's row of cross_engine_tables from its generations `g`."""
    by_prompt = {
        method: {prompt_key(r): r for r in g[g.method == method].to_dict("records")}
        for method in (label, twin, "ar")
    }
    shared = sorted(set(by_prompt[label]) & set(by_prompt[twin]))
    pairs = [(by_prompt[label][k], by_prompt[twin][k]) for k in shared]
    identical = sum(a["output_ids"] == b["output_ids"] for a, b in pairs)
    same_drafts = sum(list(a["accepted"]) == list(b["accepted"]) for a, b in pairs)

    def identical_to_ar(method: str) -> str:
        ar = by_prompt["ar"]
        compared = [k for k in shared if k in ar]
        if not compared:
            return "–"
        same = sum(by_prompt[method][k]["output_ids"] == ar[k]["output_ids"] for k in compared)
        return f"{same}/{len(compared)}"

    def tau(method: str) -> float | None:
        accepted = [list(by_prompt[method][k]["accepted"]) for k in shared]
        return metrics.tau(sum(map(sum, accepted)), sum(map(len, accepted)))

    taus = [tau(twin), tau(label)]
    difference = taus[1] - taus[0] if None not in taus else None
    return [suite, str(len(shared)), f"{identical}/{len(shared)}", f"{same_drafts}/{len(shared)}",
            identical_to_ar(twin), identical_to_ar(label), *(fmt(t) for t in taus),
            fmt(difference, "+.2f")]  # fmt: skip
