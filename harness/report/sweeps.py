"""Option sweeps (`run --sweep 'orthrus:block_size=4,8,16,32'`, or any run holding two or more labels of one
method that differ in one option): per (model, temperature, method, option) τ, TPF and the speedup over the
strongest AR baseline against the option's value, with the losslessness verdict of each value. Torch-free: the
values are read from the method labels (harness.method_spec.MethodSpec), the figures from the work units.

τ, TPF and the speedup are the report's own (stats.pooled_tau, stats.pooled_tpf, tables.speedup_over, against
verdicts.strongest_baseline), pooled over every suite of the run; a second table gives them per suite."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness.method_spec import MethodSpec

from .runs import Run
from .stats import bootstrap_ci, pooled_tau, pooled_tpf
from .style import temperature_label
from .tables import Table, fmt, speedup_over, suite_order
from .verdicts import strongest_baseline, verdict_index, verdict_summary


@dataclass(frozen=True)
class Sweep:
    """Labels of one method that differ in one option only: `values` maps each value (as written in the label)
    to its label, in the values' numeric order."""

    method: str
    option: str
    fixed: tuple[tuple[str, str], ...]  # the other options, the same in every label
    values: tuple[tuple[str, str], ...]  # (value, label)

    @property
    def name(self) -> str:
        """'orthrus block_size', or 'eagle3 depth (tree=chain)' with the fixed options."""
        fixed = ", ".join(f"{k}={v}" for k, v in self.fixed)
        return f"{self.method} {self.option}" + (f" ({fixed})" if fixed else "")


def value_order(value: str):
    """Numbers in numeric order, then any other value in text order."""
    try:
        number = float(value)
    except ValueError:
        return (1, 0.0, value)
    return (0, number, value) if math.isfinite(number) else (1, 0.0, value)


def find_sweeps(labels) -> list[Sweep]:
    """Every sweep among the method labels: per method and option, the labels that give the option and agree on
    every other option, where they give two or more values of it. A label that leaves the option at its default
    does not say its value, and is not in the sweep."""
    parsed = {}
    for label in dict.fromkeys(labels):
        try:
            parsed[label] = MethodSpec.parse(label)
        except ValueError:  # not a method spec: nothing to sweep
            continue
    groups: dict[tuple, dict[str, str]] = {}
    for label, spec in parsed.items():
        name, options = spec.name, spec.options
        for key, value in options.items():
            fixed = tuple(sorted((k, v) for k, v in options.items() if k != key))
            groups.setdefault((name, key, fixed), {}).setdefault(value, label)
    sweeps = [
        Sweep(name, key, fixed, tuple(sorted(by_value.items(), key=lambda kv: value_order(kv[0]))))
        for (name, key, fixed), by_value in groups.items()
        if len(by_value) >= 2
    ]
    return sorted(sweeps, key=lambda s: (s.method, s.option, s.fixed))


@dataclass
class Point:
    """One value of a sweep: its figures pooled over suites, per suite, and verify's verdict."""

    value: str
    label: str
    items: int
    tau: float | None
    tau_ci: tuple | None
    tpf: float | None
    tpf_ci: tuple | None
    speedup: float | None
    speedup_ci: tuple | None
    verdict: str
    verdict_size: str
    per_suite: dict[str, tuple] = field(default_factory=dict)  # suite -> (τ, TPF, speedup)


@dataclass
class SweepFigures:
    model: str
    temperature: float
    sweep: Sweep
    baseline: str | None
    points: list[Point]

    @property
    def where(self) -> str:
        return f"{self.model}, {temperature_label(self.temperature)}"


def tau_of(own: pd.DataFrame) -> float | None:
    """τ pooled over the units' cycles, for a lossless method that drafted; None otherwise."""
    if own.empty or not own.cycles.sum() or not own.lossless.astype(bool).all():
        return None
    return float(pooled_tau(own.accepted, own.cycles))


def sweep_figures(u: pd.DataFrame, runs: list[Run]) -> list[SweepFigures]:
    """Per (model, temperature) and sweep of its labels, one Point per value (see the module docstring)."""
    if u.empty:
        return []
    verdicts = verdict_index(runs)
    out = []
    for (model, temperature), g in u.groupby(["model", "temperature"], sort=True):
        baseline = strongest_baseline(g)
        suites = suite_order(set(g.suite))
        for sweep in find_sweeps(g.method):
            points = []
            for value, label in sweep.values:
                own = g[g.method == label]
                tau = tau_of(own)
                found = speedup_over(g, label, baseline) if baseline else None
                summary = verdict_summary(verdicts.get((model, label, float(temperature)), []))
                per_suite = {}
                for suite in suites:
                    s = own[own.suite == suite]
                    if s.empty:
                        continue
                    sp = speedup_over(g[g.suite == suite], label, baseline) if baseline else None
                    per_suite[suite] = (tau_of(s), float(pooled_tpf(s.tokens, s.forwards)), sp and sp[0])
                points.append(
                    Point(
                        value=value,
                        label=label,
                        items=len(own),
                        tau=tau,
                        tau_ci=bootstrap_ci(pooled_tau, own.accepted, own.cycles)
                        if tau is not None
                        else None,
                        tpf=float(pooled_tpf(own.tokens, own.forwards)) if len(own) else None,
                        tpf_ci=bootstrap_ci(pooled_tpf, own.tokens, own.forwards),
                        speedup=found[0] if found else None,
                        speedup_ci=found[1] if found else None,
                        verdict=summary.verdict,
                        verdict_size=summary.size,
                        per_suite=per_suite,
                    )
                )
            out.append(SweepFigures(model, float(temperature), sweep, baseline, points))
    return out


def sweep_tables(figures: list[SweepFigures]) -> list[Table]:
    """Per sweep: one row per value pooled over suites (τ, TPF, speedup with 95% CIs, the verdict), then the
    same per suite in one compact table."""
    tables = []
    for f in figures:
        option, baseline = f.sweep.option, f.baseline
        rows = [
            [
                p.value,
                p.label,
                str(p.items),
                fmt(p.tau, ci=p.tau_ci),
                fmt(p.tpf, ci=p.tpf_ci),
                fmt(p.speedup, ci=p.speedup_ci, suffix="×"),
                p.verdict,
                p.verdict_size,
            ]
            for p in f.points
        ]
        columns = [
            option,
            "method",
            "items",
            "τ",
            "TPF",
            f"speedup over {baseline or 'AR'}",
            "lossless?",
            "N",
        ]
        note = (
            "Pooled over every suite of the run. τ = accepted drafts + 1 per cycle, pooled over cycles (lossless "
            "methods); TPF = all new tokens / all forwards after prefill; speedup: mean per-item tokens/s over "
            f"that of `{baseline}`, the fastest AR baseline in the run, on the same items. Parentheses: 95% "
            "bootstrap CI over items (speedup: paired with the baseline's item). lossless?: verify's verdict, "
            "PASS only where every suite passes (Equivalence verdicts); N: the prompts or sequences it rests on."
            if baseline
            else "No AR baseline in the run: no speedup. τ, TPF pooled over every suite; lossless?: verify's."
        )
        tables.append(Table(f"Sweep: {f.sweep.name} ({f.where})", columns, rows, note))
        suites = list(dict.fromkeys(s for p in f.points for s in p.per_suite))
        if len(suites) > 1:
            per_suite = [
                [p.value]
                + [
                    (
                        f"{fmt(p.per_suite[s][0])} / {fmt(p.per_suite[s][1])} / "
                        f"{fmt(p.per_suite[s][2], suffix='×')}"
                    )
                    if s in p.per_suite
                    else "–"
                    for s in suites
                ]
                for p in f.points
            ]
            tables.append(
                Table(
                    f"Sweep per suite: {f.sweep.name}, τ / TPF / speedup over {baseline or 'AR'} ({f.where})",
                    [option, *suites],
                    per_suite,
                    "The same figures per suite, without CIs (few items per suite).",
                )
            )
    return tables
