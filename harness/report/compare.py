"""`orthrus-bench compare BASE NEW`: a regression gate for pull requests.

Both runs are paired per prompt (suite, item, sample, turn) and per method, then gated in two tiers
(research note "Harness anchors", §4):

1. Deterministic under greedy decoding, so zero tolerance: token identity (any prompt whose output ids
   changed is a regression) and τ and TPF pooled over the paired prompts (any decrease is a regression).
2. Noisy, so asv's rule (airspeed-velocity/asv `_stats.py`, `asv continuous`): a change counts only when
   a Mann–Whitney U test says the two samples differ (p < 0.002) *and* the ratio of means moves past a
   relative threshold (default 5%) in the bad direction. The paired bootstrap CI of that ratio is shown.
   With few prompts the test cannot reach p < 0.002 at all (7 per side are needed); such rows say so.

A method in BASE that NEW lacks, and more failed generations in NEW, are regressions too. Exit status 1
when anything regressed, 0 otherwise; the markdown table lists every delta and verdict, each figure with its
unit.

What the two runs' run.json say comes first (harness.report.configs): every configuration difference, grouped
(model, dtype, quantization, methods, suites, lengths, sampling, samples/seed/items, engine, batch size,
machine, software), or that there is none. Runs generated with different settings (anything that changes the
tokens: the weights, dtype, quantization, effective max_new_tokens or sampling of a suite, the seed where
anything samples, the suites, items and samples, a method's options) are not compared at all unless the user
says `--allow-config-change` (`compare` raises ConfigChangeError: exit 2); then the first line says that the
configurations differ and the next ones how. Timing and memory are gated only between runs with one
fingerprint (the CPU or GPU model, torch's version and the engine mode as resolved) and without
`--no-timing-gate`; otherwise their rows are shown with the verdict "info" and the first line says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from harness.records import PROMPT, UNIT
from orthrus_core import metrics

from .configs import ConfigChangeError, ConfigComparison, compare_configs, timing_not_gated
from .runs import Run, generations
from .stats import bootstrap_ci, ratio_of_means

PAIR = ["method", *PROMPT]  # one method's generation of one prompt, in BASE and in NEW
REGRESSION, IMPROVEMENT, OK, UNDECIDABLE, INFO = "REGRESSION", "improvement", "ok", "undecidable", "info"


@dataclass(frozen=True)
class TimingMetric:
    column: str
    label: str
    unit: str
    bigger_is_better: bool
    scale: float = 1.0  # for display only


TIMING_METRICS = [
    TimingMetric("tokens_per_s", "tokens/s", "tok/s", True),
    TimingMetric("ttft_s", "TTFT", "ms", False, 1e3),
    TimingMetric("tpot_s", "TPOT", "ms", False, 1e3),
    TimingMetric("allocator_peak_bytes", "peak memory", "MiB", False, 1 / 2**20),
    TimingMetric("energy_per_token_j", "energy/token", "mJ", False, 1e3),
]


@dataclass
class Row:
    method: str
    metric: str
    base: str
    new: str
    change: str
    ci: str
    p: str
    n: int
    verdict: str
    why: str = ""
    counted: str = "prompts"  # what n counts: prompts (a turn of an item's sample) or work units (its turns)


@dataclass
class Comparison:
    """Everything `compare` says: the configurations side by side, whether timing is gated (None) or why
    not (a short reason for the first line, the full one), and the rows of the table."""

    configs: ConfigComparison
    timing_not_gated: tuple[str, str] | None
    rows: list[Row]

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == REGRESSION]


def min_mannwhitney_p(n: int, m: int) -> float:
    """The smallest two-sided p-value an exact Mann–Whitney U test can give with n and m values."""
    return 2 / math.comb(n + m, n)


def timing_row(method: str, metric: TimingMetric, pairs: pd.DataFrame, threshold: float, alpha: float) -> Row:
    base, new = pairs[f"{metric.column}_base"].to_numpy(float), pairs[metric.column].to_numpy(float)
    n = len(pairs)
    shown = dict(
        base=f"{base.mean() * metric.scale:.4g} {metric.unit}",
        new=f"{new.mean() * metric.scale:.4g} {metric.unit}",
    )
    ratio = new.mean() / base.mean()
    ci = bootstrap_ci(ratio_of_means, new, base)
    p = stats.mannwhitneyu(new, base, alternative="two-sided").pvalue if n else math.nan
    worse_by = (1 - ratio) if metric.bigger_is_better else (ratio - 1)
    row = Row(
        method,
        metric.label,
        change=f"{(ratio - 1) * 100:+.1f}%",
        ci="–" if ci is None else f"{(ci[0] - 1) * 100:+.1f}% … {(ci[1] - 1) * 100:+.1f}%",
        p=f"{p:.2g}",
        n=n,
        verdict=OK,
        **shown,
    )
    if n < 2 or min_mannwhitney_p(n, n) >= alpha:
        row.verdict = UNDECIDABLE
        row.why = f"{n} pairs cannot reach p < {alpha:g} (7 per side are needed)"
    elif p < alpha and abs(worse_by) > threshold:
        row.verdict = REGRESSION if worse_by > 0 else IMPROVEMENT
        row.why = f"p < {alpha:g} and beyond ±{threshold:.0%}"
    return row


def greedy_rows(method: str, pairs: pd.DataFrame) -> list[Row]:
    """Zero tolerance under greedy decoding: token identity, then τ and TPF pooled over the pairs."""
    rows = []
    differ = [a != b for a, b in zip(pairs.output_ids, pairs.output_ids_base, strict=True)]
    n = len(pairs)
    rows.append(
        Row(
            method,
            "greedy token identity",
            base="–",
            new=f"{n - sum(differ)}/{n} prompts identical",
            change=f"{sum(differ)} prompts changed",
            ci="–",
            p="–",
            n=n,
            verdict=REGRESSION if any(differ) else OK,
            why="zero tolerance" if any(differ) else "",
        )
    )
    cycles_base, cycles_new = int(pairs.accepted_base.map(len).sum()), int(pairs.accepted.map(len).sum())
    if cycles_base or cycles_new:
        tau_base = pooled(metrics.tau, pairs.accepted_base.map(sum).sum(), cycles_base)
        tau_new = pooled(metrics.tau, pairs.accepted.map(sum).sum(), cycles_new)
        changed = int((pairs.accepted.map(tuple) != pairs.accepted_base.map(tuple)).sum())
        rows.append(deterministic_row(method, "τ (greedy)", "tokens/cycle", tau_base, tau_new, changed, n))
    forwards_base = pairs.ar_forwards_base + pairs.draft_forwards_base
    forwards_new = pairs.ar_forwards + pairs.draft_forwards
    if forwards_base.sum() or forwards_new.sum():
        tpf_base = pooled(metrics.tpf, pairs.new_tokens_base.sum(), forwards_base.sum())
        tpf_new = pooled(metrics.tpf, pairs.new_tokens.sum(), forwards_new.sum())
        changed = int((forwards_new != forwards_base).sum())
        rows.append(
            deterministic_row(method, "TPF (greedy)", "tokens/forward", tpf_base, tpf_new, changed, n)
        )
    return rows


def pooled(metric, count, over) -> float:
    """metrics.tau or metrics.tpf of two sums; NaN where it has none (no cycles or forwards on that side)."""
    value = metric(int(count), int(over))
    return math.nan if value is None else value


def deterministic_row(
    method: str, metric: str, unit: str, base: float, new: float, changed: int, n: int
) -> Row:
    if not new >= base:  # NaN on the NEW side (no cycles left) is a regression too
        verdict, why = REGRESSION, "zero tolerance"
    elif new > base:
        verdict, why = IMPROVEMENT, ""
    else:
        verdict, why = OK, ""
    delta = new - base
    return Row(
        method,
        metric,
        base="none" if math.isnan(base) else f"{base:.4f} {unit}",  # none: no cycles or forwards
        new="none" if math.isnan(new) else f"{new:.4f} {unit}",
        change=("–" if math.isnan(delta) else f"{delta:+.4f} {unit}") + f" ({changed} prompts changed)",
        ci="–",
        p="–",
        n=n,
        verdict=verdict,
        why=why,
    )


def error_count(run: Run, method: str) -> int:
    return sum(1 for r in run.records if r["method"] == method and r["status"] != "ok")


def compare(
    base: Run,
    new: Run,
    threshold: float = 0.05,
    alpha: float = 0.002,
    gate_timing: bool = True,
    allow_config_change: bool = False,
) -> Comparison:
    """The whole comparison, configurations first. Raises ConfigChangeError where BASE and NEW were generated
    with different settings and `allow_config_change` is not given. Timing is gated where `gate_timing` and
    both runs have one fingerprint (harness.report.configs.timing_not_gated)."""
    configs = compare_configs(base, new)
    if configs.token_changes and not allow_config_change:
        raise ConfigChangeError(configs.refusal(str(base.directory), str(new.directory)))
    not_gated = timing_not_gated(base, new)
    if not_gated is None and not gate_timing:
        not_gated = ("--no-timing-gate", "--no-timing-gate was given")
    because = not_gated[0] if not_gated else ""
    rows = compare_runs(base, new, threshold, alpha, gate_timing=not_gated is None, not_gated_because=because)
    return Comparison(configs, not_gated, rows)


def compare_runs(
    base: Run,
    new: Run,
    threshold: float = 0.05,
    alpha: float = 0.002,
    gate_timing: bool = True,
    not_gated_because: str = "--no-timing-gate",
) -> list[Row]:
    """Every row of the comparison. gate_timing=False reports timing and memory rows without gating them
    (verdict "info", the verdict they would have had and `not_gated_because` in the row's why): for runs from
    different machines or software, where only the deterministic rows can be compared."""
    base_df, new_df = generations([base]), generations([new])
    rows: list[Row] = []
    for df in (base_df, new_df):
        if not df.empty:
            # NVML's energy counter is too coarse for generations under a second (docs/methodology.md).
            df["energy_per_token_j"] = (df.energy_j / df.new_tokens).where(df.energy_reliable.eq(True))
    base_methods = list(dict.fromkeys(base_df.method)) if not base_df.empty else []
    new_methods = set(new_df.method) if not new_df.empty else set()
    for method in base_methods:
        if method not in new_methods:
            rows.append(
                Row(method, "coverage", "present", "missing", "–", "–", "–", 0, REGRESSION, "not in NEW")
            )
            continue
        b = base_df[base_df.method == method]
        pairs = new_df[new_df.method == method].merge(b, on=PAIR, suffixes=("", "_base"))
        if pairs.empty:
            rows.append(
                Row(method, "coverage", "–", "–", "–", "–", "–", 0, REGRESSION, "no prompt in both runs")
            )
            continue
        rows += error_rows(method, base, new)
        greedy = pairs[pairs.greedy & pairs.greedy_base]  # SamplingParams.greedy in both runs
        if not greedy.empty:
            rows += greedy_rows(method, greedy)
        timing = timing_rows(method, pairs, threshold, alpha)
        if not gate_timing:
            for row in timing:
                ungate(row, not_gated_because)
        rows += timing + accuracy_rows(method, pairs)
    return rows


def error_rows(method: str, base: Run, new: Run) -> list[Row]:
    """A regression row where NEW has more failed generations of `method` than BASE; else none."""
    errors_base, errors_new = error_count(base, method), error_count(new, method)
    if errors_new <= errors_base:
        return []
    return [
        Row(
            method,
            "errors",
            f"{errors_base} failed",
            f"{errors_new} failed",
            f"+{errors_new - errors_base} failed",
            "–",
            "–",
            0,
            REGRESSION,
            "more failed generations",
        )
    ]


def timing_rows(method: str, pairs: pd.DataFrame, threshold: float, alpha: float) -> list[Row]:
    """The noisy tier: tokens/s over work units, then each other timing and memory metric over the prompts
    both runs measured it on."""
    timing = [timing_row(method, TIMING_METRICS[0], unit_pairs(pairs), threshold, alpha)]
    timing[0].counted = "work units"
    for metric in TIMING_METRICS[1:]:
        valid = pairs[pairs[metric.column].notna() & pairs[f"{metric.column}_base"].notna()]
        if not valid.empty:
            timing.append(timing_row(method, metric, valid, threshold, alpha))
    return timing


def accuracy_rows(method: str, pairs: pd.DataFrame) -> list[Row]:
    """Accuracy over the prompts scored in both runs, for information (token identity gates it); none unscored."""
    scored = pairs[pairs.score_correct.notna() & pairs.score_correct_base.notna()]
    if scored.empty:
        return []
    acc_base, acc_new = (
        scored.score_correct_base.astype(float).mean(),
        scored.score_correct.astype(float).mean(),
    )
    return [
        Row(
            method,
            "accuracy",
            f"{acc_base:.1%}",
            f"{acc_new:.1%}",
            f"{(acc_new - acc_base) * 100:+.1f} pp",
            "–",
            "–",
            len(scored),
            INFO,
            "gated through token identity",
        )
    ]


def ungate(row: Row, because: str) -> None:
    """A timing row shown, not gated: verdict info, with the verdict it would have had."""
    would = {REGRESSION: "worse", IMPROVEMENT: "better", UNDECIDABLE: "undecidable"}.get(row.verdict)
    row.why = f"{would}: {row.why}; not gated: {because}" if would else f"not gated: {because}"
    row.verdict = INFO


def unit_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """tokens/s per work unit (an item's turns), as the report and Spec-Bench compute it."""
    grouped = pairs.groupby(list(UNIT)).agg(
        tokens=("new_tokens", "sum"),
        wall=("wall_s", "sum"),
        tokens_base=("new_tokens_base", "sum"),
        wall_base=("wall_s_base", "sum"),
    )
    return pd.DataFrame(
        {
            "tokens_per_s": grouped.tokens / grouped.wall,
            "tokens_per_s_base": grouped.tokens_base / grouped.wall_base,
        }
    )


def markdown(comparison: Comparison, base: Path, new: Path, threshold: float, alpha: float) -> str:
    """The verdict: a first line with the status, whether the configurations differ (in which groups) and
    whether timing is gated; then every configuration difference (or that there is none), why timing is not
    gated, the rules, and the table."""
    configs, not_gated, rows = comparison.configs, comparison.timing_not_gated, comparison.rows
    regressions = comparison.regressions
    status = f"❌ {len(regressions)} regression(s)" if regressions else "✅ no regression"
    clauses = [status, configs.summary(), f"timing not gated ({not_gated[0]})" if not_gated else ""]
    lines = [f"### orthrus-bench compare: {'; '.join(c for c in clauses if c)}", ""]
    if configs.differences:
        if configs.token_changes:
            lead = (
                "**The configurations differ**, compared anyway (--allow-config-change): tokens, τ and TPF may "
                "differ for that reason alone."
            )
        else:
            lead = "**The configurations differ** in how the runs ran, not in what they generate:"
        lines += [lead, *configs.lines(), ""]
    else:
        lines += [*configs.lines(), ""]
    if not_gated:
        lines += [
            f"**Timing and memory are not gated**: {not_gated[1]}. Their rows are shown with the verdict info.",
            "",
        ]
    lines += [
        f"BASE `{base}` → NEW `{new}`. Greedy token identity, τ and TPF: zero tolerance. Timing and memory: "
        f"regression when Mann–Whitney p < {alpha:g} and the mean moves more than {threshold:.0%} the wrong "
        "way (asv's rule); CI: 95% paired bootstrap of the ratio NEW/BASE over prompts (tokens/s: over work "
        "units).",
        "",
        "| method | metric | base | new | change | 95% CI | p | n | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        verdict = f"**{r.verdict}**" if r.verdict == REGRESSION else r.verdict
        if r.why:
            verdict += f" ({r.why})"
        n = f"{r.n} {r.counted}" if r.n else "–"
        lines.append(
            f"| {r.method} | {r.metric} | {r.base} | {r.new} | {r.change} | {r.ci} | {r.p} | {n} | {verdict} |"
        )
    return "\n".join(lines) + "\n"
