"""`orthrus-bench report RUN [RUN…] --out reports/NAME`: a self-contained HTML page (figures embedded as
data URIs, no scripts, no external requests), `report.md` for a pull-request comment or job summary, and
the figures as PNG files under `figures/`.

Figures estimated from samples carry 95% percentile-bootstrap CIs over work units (an item's turns by one
method and sample); speedups resample items paired with the baseline. Run-level figures (τ, TPF, speedup,
accuracy) come from `harness.runner.summarize`, applied to each (model, suite, temperature) slice, so they
agree with what `orthrus-bench run` prints.
"""

from __future__ import annotations

import base64
import html
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.run.runner import summarize  # noqa: E402

from .runs import (  # noqa: E402
    Run,
    bootstrap_ci,
    generations,
    load_runs,
    mean,
    pooled_tau,
    ratio_of_means,
    ratio_of_sums,
    read_json_if_present,
    units,
)

# Figure 4 of the paper orders the drafting methods EAGLE-3, DFlash, Orthrus; other methods follow.
DRAFT_ORDER = ["eagle3", "dflash", "orthrus"]
ACCURACY_SUITES = ["math500", "tiny-math"]  # the accuracy/throughput figure's suite, first one present
MIB = 2**20


# ------------------------------------------------------------------------------------------------ tables


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        def cell(text: str) -> str:
            return text.replace("|", "\\|").replace("\n", " ")

        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(cell(c) for c in self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows
        )
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def fmt(value, spec: str = ".2f", ci: tuple[float, float] | None = None, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:{spec}}{suffix}"
    if ci is not None:
        text += f" ({ci[0]:{spec}}–{ci[1]:{spec}})"
    return text


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --------------------------------------------------------------------------------------------- Table 1


def temperature_label(t: float) -> str:
    return f"T={t:g}"


def baseline_label(methods: set[str]) -> str | None:
    """The paper's denominator is transformers `generate` (ar-hf); the project's own AR loop otherwise."""
    return "ar-hf" if "ar-hf" in methods else ("ar" if "ar" in methods else None)


@dataclass
class Cell:
    tpf: float | None = None  # token-weighted: all new tokens / all forwards (summarize)
    tpf_ci: tuple | None = None
    tpf_per_question: float | None = None
    speedup: float | None = None  # per-question: ratio of mean per-item tokens/s (summarize, Spec-Bench)
    speedup_ci: tuple | None = None
    speedup_token_weighted: float | None = None  # Σ tokens / Σ time, method over baseline
    baseline: str | None = None


@dataclass
class SliceFigures:
    """summarize() on one (model, suite, temperature) slice, with the slice's work units (for the CIs
    summarize does not give) and the speedup baseline."""

    summary: pd.DataFrame
    units: pd.DataFrame
    baseline: str | None


def slice_figures(gens: pd.DataFrame, unit_table: pd.DataFrame) -> SliceFigures:
    records = gens.drop(columns=["run", "model"]).to_dict("records")
    return SliceFigures(summarize(records), unit_table, baseline_label(set(gens.method)))


def paired_units(unit_table: pd.DataFrame, method: str, baseline: str) -> pd.DataFrame:
    keys = ["suite", "item_id", "sample"]
    a = unit_table[unit_table.method == method].set_index(keys)
    b = unit_table[unit_table.method == baseline].set_index(keys)
    return a.merge(b, left_index=True, right_index=True, suffixes=("", "_base"))


def table1_cell(figures: SliceFigures, method: str) -> Cell:
    row = figures.summary.set_index("method").loc[method]
    own = figures.units[figures.units.method == method]
    cell = Cell(baseline=figures.baseline)
    cell.tpf = row.tpf
    cell.tpf_ci = bootstrap_ci(ratio_of_sums, own.tokens, own.forwards)
    with_forwards = own[own.forwards > 0]  # a one-token answer has no forward after the prefill
    cell.tpf_per_question = (
        float((with_forwards.tokens / with_forwards.forwards).mean()) if len(own) else None
    )
    if figures.baseline is not None:
        cell.speedup = row[f"speedup_vs_{figures.baseline.replace('-', '_')}"]
        pairs = paired_units(figures.units, method, figures.baseline)
        cell.speedup_ci = bootstrap_ci(ratio_of_means, pairs.tokens_per_s, pairs.tokens_per_s_base)
        base = figures.units[figures.units.method == figures.baseline]
        cell.speedup_token_weighted = (own.tokens.sum() / own.wall_s.sum()) / (
            base.tokens.sum() / base.wall_s.sum()
        )
    return cell


def slices(gens: pd.DataFrame, unit_table: pd.DataFrame) -> dict[tuple, SliceFigures]:
    out = {}
    for key, g in gens.groupby(["model", "suite", "temperature"], sort=True):
        u = unit_table[
            (unit_table.model == key[0]) & (unit_table.suite == key[1]) & (unit_table.temperature == key[2])
        ]
        out[key] = slice_figures(g, u)
    return out


def orthrus_labels(gens: pd.DataFrame) -> list[str]:
    return sorted(set(gens[gens.method_name == "orthrus"].method))


def table1(gens: pd.DataFrame, by_slice: dict[tuple, SliceFigures]) -> list[Table]:
    """The paper's Table 1: per model and suite, Orthrus's TPF and speedup at T = 0 and T = 1 (and any other
    temperature run), with an average row per model; then the same cells under the other averaging."""
    temps = sorted({0.0, 1.0} | set(gens.temperature.dropna()))
    cells: dict[tuple, Cell] = {}
    for (model, suite, temp), figures in by_slice.items():
        for label in orthrus_labels(gens):
            if label in set(figures.summary.method):
                cells[(model, label, suite, temp)] = table1_cell(figures, label)
    groups = sorted({(m, label) for m, label, _, _ in cells})
    if not groups:
        return [Table("Table 1", ["model", "method", "suite"], [], "no Orthrus method in these runs")]
    baselines = sorted({c.baseline for c in cells.values() if c.baseline})
    denominators = " and ".join(f"`{b}`" for b in baselines) or "no AR baseline in the run"

    def build(title: str, tpf_of, speedup_of, with_ci: bool, note: str) -> Table:
        columns = ["model", "method", "suite"]
        for t in temps:
            columns += [f"{temperature_label(t)} TPF", f"{temperature_label(t)} speedup"]
        rows = []
        for model, label in groups:
            suites = sorted({s for m, lab, s, _ in cells if (m, lab) == (model, label)})
            for suite in suites:
                row = [model, label, suite]
                for t in temps:
                    c = cells.get((model, label, suite, t))
                    row += [
                        fmt(tpf_of(c), ci=c.tpf_ci if with_ci else None) if c else "–",
                        fmt(speedup_of(c), ci=c.speedup_ci if with_ci else None, suffix="×") if c else "–",
                    ]
                rows.append(row)
            average = [model, label, "Average"]
            for t in temps:
                per_suite = [cells.get((model, label, s, t)) for s in suites]
                tpfs = [tpf_of(c) for c in per_suite if c and not is_missing(tpf_of(c))]
                sps = [speedup_of(c) for c in per_suite if c and not is_missing(speedup_of(c))]
                average += [
                    fmt(float(np.mean(tpfs))) if len(tpfs) == len(suites) else "–",
                    fmt(float(np.mean(sps)), suffix="×") if len(sps) == len(suites) else "–",
                ]
            rows.append(average)
        return Table(title, columns, rows, note)

    main = build(
        "Table 1 — Orthrus TPF and wall-clock speedup over AR",
        lambda c: c.tpf,
        lambda c: c.speedup,
        True,
        "TPF is token-weighted: all new tokens / all forwards after prefill (an Orthrus cycle counts two). "
        "Speedup is per-question (Spec-Bench): mean per-item tokens/s of Orthrus / the same for "
        f"{denominators}. Parentheses: 95% bootstrap CI over items (paired with the baseline for speedup). "
        "Average: arithmetic mean of the suite rows, as in the paper.",
    )
    other = build(
        "Table 1, other averaging",
        lambda c: c.tpf_per_question,
        lambda c: c.speedup_token_weighted,
        False,
        "TPF is the per-question mean of (item tokens / item forwards); speedup is token-weighted: "
        f"(Σ tokens / Σ wall time) of Orthrus over the same for {denominators}. The paper does not say which "
        "averaging it uses; they differ by about 8% on long-output suites.",
    )
    return [main, other]


# ----------------------------------------------------------------------------------- per-method summary


def method_order(methods) -> list[str]:
    """Baselines first, then the drafting methods in the paper's Figure 4 order, then the rest."""
    methods = list(dict.fromkeys(methods))

    def rank(label: str):
        name = label.split(":", 1)[0]
        if name in ("ar", "ar-hf"):
            return (0, name, label)
        if name in DRAFT_ORDER:
            return (1, DRAFT_ORDER.index(name), label)
        return (2, name, label)

    return sorted(methods, key=rank)


def method_colors(methods) -> dict[str, str]:
    """One colour per method for every figure of a report (matplotlib's default cycle, in method order)."""
    return {method: f"C{i % 10}" for i, method in enumerate(method_order(methods))}


def summary_tables(by_slice: dict[tuple, SliceFigures]) -> list[Table]:
    rows = []
    for (model, suite, temp), figures in by_slice.items():
        summary = figures.summary.set_index("method")
        for method in method_order(summary.index):
            s = summary.loc[method]
            own = figures.units[figures.units.method == method]
            scored = own.correct.dropna().astype(float)
            pairs = paired_units(figures.units, method, "ar")
            rows.append(
                [
                    model,
                    suite,
                    temperature_label(temp),
                    method,
                    str(int(s.generations)),
                    fmt(
                        s.tau,
                        ci=bootstrap_ci(pooled_tau, own.accepted, own.cycles) if own.cycles.sum() else None,
                    ),
                    fmt(s.tpf, ci=bootstrap_ci(ratio_of_sums, own.tokens, own.forwards)),
                    fmt(s.tokens_per_s, ".1f", bootstrap_ci(mean, own.tokens_per_s)),
                    fmt(
                        s.speedup_vs_ar,
                        ci=bootstrap_ci(ratio_of_means, pairs.tokens_per_s, pairs.tokens_per_s_base),
                        suffix="×",
                    ),
                    fmt(s.speedup_vs_ar_hf, suffix="×"),
                    fmt(s.accuracy, ".1%", bootstrap_ci(mean, scored) if len(scored) else None),
                    fmt(s.identical_to_ar, ".1%"),
                ]
            )
    columns = [
        "model",
        "suite",
        "T",
        "method",
        "gens",
        "τ",
        "TPF",
        "tok/s",
        "× ar",
        "× ar-hf",
        "accuracy",
        "identical to ar",
    ]
    note = (
        "τ = accepted drafts + 1 per cycle, pooled over cycles; TPF = all new tokens / all forwards after "
        "prefill; tok/s = mean over items of item tokens / item wall time; accuracy = mean score over items. "
        "Parentheses: 95% bootstrap CI over items (speedup: paired with ar's item). "
        "Definitions: docs/methodology.md."
    )
    return [Table("Per method, suite and temperature", columns, rows, note)]


def errors_table(runs: list[Run]) -> Table | str:
    """Failed generations per run, method and suite, with the first error (they have no timing or score)."""
    failed: dict[tuple, list[str]] = {}
    for run in runs:
        for r in run.records:
            if r["status"] != "ok":
                failed.setdefault((str(run.directory), r["method"], r["suite"]), []).append(
                    r.get("error") or ""
                )
    if not failed:
        return "no failed generations"
    rows = [
        [run, method, suite, str(len(errors)), errors[0][:160]]
        for (run, method, suite), errors in failed.items()
    ]
    return Table("Failed generations", ["run", "method", "suite", "count", "first error"], rows)


def figure4_tables(u: pd.DataFrame) -> list[Table]:
    """The numbers behind the Figure 4 plot: τ per suite (rows) and drafting method (columns)."""
    drafting = u[u.cycles.gt(0) & u.lossless.astype(bool)]  # verified drafts; lossy diffusion has none
    tables = []
    for model, temp in Panels.of(drafting).keys:
        d = drafting[(drafting.model == model) & (drafting.temperature == temp)]
        methods = method_order(set(d.method))
        rows = []
        for suite in sorted(set(d.suite)):
            row = [suite]
            for method in methods:
                g = d[(d.suite == suite) & (d.method == method)]
                tau = pooled_tau(g.accepted, g.cycles) if len(g) else None
                row.append(fmt(tau, ci=bootstrap_ci(pooled_tau, g.accepted, g.cycles)) if len(g) else "–")
            rows.append(row)
        title = f"Figure 4 — average acceptance length τ ({model}, {temperature_label(temp)})"
        note = "τ = accepted drafts + 1 per cycle, pooled over cycles; the paper's Figure 4 shows τ − 1."
        tables.append(Table(title, ["suite", *methods], rows, note))
    return tables


# -------------------------------------------------------------------------------------------- figures


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    path: Path | None = None


@dataclass
class Panels:
    """One subplot per (model, temperature): methods are compared within a model and a setting."""

    keys: list[tuple] = field(default_factory=list)

    @staticmethod
    def of(df: pd.DataFrame) -> Panels:
        return Panels(sorted({(m, t) for m, t in zip(df.model, df.temperature, strict=True)}))

    def title(self, key: tuple) -> str:
        return f"{key[0]}, {temperature_label(key[1])}"


def new_figure(panels: int, rows: int = 1, width: float = 6.0, height: float = 4.0):
    fig, axes = plt.subplots(
        rows, max(panels, 1), figsize=(width * max(panels, 1), height * rows), squeeze=False
    )
    return fig, axes


def no_data(ax, why: str) -> None:
    text = textwrap.fill(f"no data: {why}", width=40)  # a panel can be narrow; wrap=True ignores the axes
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def error_bar(value: float, ci: tuple | None) -> list[float]:
    if ci is None:
        return [0.0, 0.0]
    return [max(value - ci[0], 0.0), max(ci[1] - value, 0.0)]


def context_axis(ax, buckets) -> None:
    buckets = sorted({int(b) for b in buckets})
    ax.set_xscale("log", base=2)
    ax.set_xticks(buckets, [f"{b // 1024}K" if b >= 1024 else str(b) for b in buckets])
    ax.minorticks_off()
    ax.set_xlabel("context length bucket (tokens)")


def figure_acceptance(u: pd.DataFrame, ax_row, colors: dict) -> None:
    """Figure 4 layout: grouped bars of τ per suite, one bar per drafting method."""
    drafting = u[u.cycles.gt(0) & u.lossless.astype(bool)]  # verified drafts; lossy diffusion has none
    panels = Panels.of(u)
    for ax, key in zip(ax_row, panels.keys, strict=False):
        d = drafting[(drafting.model == key[0]) & (drafting.temperature == key[1])]
        ax.set_title(panels.title(key))
        if d.empty:
            no_data(ax, "no method drafted tokens (τ needs verification cycles)")
            continue
        suites = sorted(set(d.suite))
        methods = method_order(set(d.method))
        width = 0.8 / len(methods)
        for i, method in enumerate(methods):
            xs, taus, errs = [], [], []
            for j, suite in enumerate(suites):
                g = d[(d.method == method) & (d.suite == suite)]
                if g.empty:
                    continue
                tau = pooled_tau(g.accepted, g.cycles)
                ci = bootstrap_ci(pooled_tau, g.accepted, g.cycles)
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                taus.append(tau)
                errs.append(error_bar(tau, ci))
            bars = ax.bar(
                xs, taus, width, yerr=np.array(errs).T, capsize=3, label=method, color=colors[method]
            )
            ax.bar_label(bars, fmt="%.1f", fontsize=8)
        ax.set_xticks(range(len(suites)), suites)
        ax.set_ylabel("average acceptance length τ")
        ax.legend(fontsize=8)


def figure_context(u: pd.DataFrame, ax_row, colors: dict) -> None:
    panels = Panels.of(u)
    for ax, key in zip(ax_row, panels.keys, strict=False):
        d = u[(u.model == key[0]) & (u.temperature == key[1]) & u.context_bucket.notna()]
        ax.set_title(panels.title(key))
        if d.empty:
            no_data(ax, "no record has a context bucket")
            continue
        for method in method_order(set(d.method)):
            g = d[d.method == method].groupby("context_bucket").tokens_per_s
            xs = list(g.groups)
            ys = [g.get_group(x).mean() for x in xs]
            errs = [error_bar(y, bootstrap_ci(mean, g.get_group(x))) for x, y in zip(xs, ys, strict=True)]
            ax.errorbar(
                xs, ys, yerr=np.array(errs).T, marker="o", capsize=3, label=method, color=colors[method]
            )
        context_axis(ax, d.context_bucket)
        ax.set_ylabel("end-to-end tokens/s (mean per item)")
        ax.legend(fontsize=8)


def accuracy_suite(u: pd.DataFrame) -> str | None:
    scored = set(u[u.correct.notna()].suite)
    return next((s for s in ACCURACY_SUITES if s in scored), min(scored) if scored else None)


def figure_accuracy(u: pd.DataFrame, ax_row, colors: dict) -> None:
    suite = accuracy_suite(u)
    panels = Panels.of(u)
    for ax, key in zip(ax_row, panels.keys, strict=False):
        d = u[(u.model == key[0]) & (u.temperature == key[1]) & (u.suite == suite) & u.correct.notna()]
        ax.set_title(f"{suite}: {panels.title(key)}")
        if d.empty:
            no_data(ax, "no scored items")
            continue
        ar = d[d.method == "ar"]
        if not ar.empty:
            ax.axhline(
                ar.correct.astype(float).mean(), ls="--", color="grey", label="AR accuracy (lossless line)"
            )
        for method in method_order(set(d.method)):
            g = d[d.method == method]
            correct = g.correct.astype(float)
            x, y = g.tokens_per_s.mean(), correct.mean()
            lossless = bool(g.lossless.iloc[0])
            ax.errorbar(
                [x],
                [y],
                xerr=np.array([error_bar(x, bootstrap_ci(mean, g.tokens_per_s))]).T,
                yerr=np.array([error_bar(y, bootstrap_ci(mean, correct))]).T,
                marker="o" if lossless else "X",
                markersize=8,
                capsize=3,
                color=colors[method],
                label=f"{method} ({'lossless' if lossless else 'lossy'})",
            )
        ax.set_xlabel("tokens/s (mean per item)")
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8)


def figure_memory(gens: pd.DataFrame, axes, colors: dict) -> None:
    """Row 0: peak allocator memory; row 1: memory above AR's at the same context; row 2: share of wall
    time in draft (diffusion-view) forwards. All against the context bucket."""
    panels = Panels.of(gens)
    for col, key in enumerate(panels.keys):
        d = gens[(gens.model == key[0]) & (gens.temperature == key[1]) & gens.context_bucket.notna()]
        mem = d[d.allocator_peak_bytes.notna()]
        ax_peak, ax_over, ax_draft = axes[0][col], axes[1][col], axes[2][col]
        ax_peak.set_title(panels.title(key))
        if mem.empty:
            for ax in (ax_peak, ax_over):
                no_data(ax, "allocator memory is recorded on CUDA devices only")
        else:
            peak = mem.groupby(["method", "context_bucket"]).allocator_peak_bytes.max() / MIB
            ar_peak = peak.get("ar")
            for method in method_order(set(mem.method)):
                series = peak.loc[method]
                ax_peak.plot(series.index, series.values, marker="o", label=method, color=colors[method])
                if ar_peak is not None and method != "ar":
                    over = (series - ar_peak).dropna()
                    ax_over.plot(over.index, over.values, marker="o", label=method, color=colors[method])
            ax_peak.set_ylabel("peak allocated memory (MiB)")
            ax_over.set_ylabel("peak memory above AR (MiB)")
            for ax in (ax_peak, ax_over):
                context_axis(ax, mem.context_bucket)
                ax.legend(fontsize=8)
        drafts = d[d.diffusion_forward_count.fillna(0) > 0]
        if drafts.empty:
            no_data(ax_draft, "no timed draft forwards (only the diffusion view's passes are timed)")
        else:
            share = drafts.diffusion_forward_count * drafts.diffusion_forward_ms_mean / (drafts.wall_s * 1e3)
            grouped = share.groupby([drafts.method, drafts.context_bucket]).mean()
            for method in method_order(set(drafts.method)):
                series = grouped.loc[method]
                ax_draft.plot(
                    series.index, series.values * 100, marker="o", label=method, color=colors[method]
                )
            context_axis(ax_draft, drafts.context_bucket)
            ax_draft.set_ylabel("wall time in draft passes (%)")
            ax_draft.legend(fontsize=8)


def figure_energy(gens: pd.DataFrame, ax_row, colors: dict) -> None:
    panels = Panels.of(gens)
    for ax, key in zip(ax_row, panels.keys, strict=False):
        ax.set_title(panels.title(key))
        d = gens[(gens.model == key[0]) & (gens.temperature == key[1])]
        d = d[d.energy_reliable.eq(True) & d.energy_j.notna()]
        if d.empty:
            no_data(ax, "no reliable NVML energy readings (CUDA only, generations of at least 1 s)")
            continue
        methods = method_order(set(d.method))
        values, errs = [], []
        for method in methods:
            per_token = (d[d.method == method].energy_j / d[d.method == method].new_tokens).to_numpy()
            values.append(per_token.mean())
            errs.append(error_bar(per_token.mean(), bootstrap_ci(mean, per_token)))
        bars = ax.bar(methods, values, yerr=np.array(errs).T, capsize=3, color=[colors[m] for m in methods])
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_ylabel("energy per token (J)")


def figure_latency(gens: pd.DataFrame, axes) -> None:
    """TTFT (row 0) and TPOT (row 1) distributions per method, box plots over generations."""
    panels = Panels.of(gens)
    for col, key in enumerate(panels.keys):
        d = gens[(gens.model == key[0]) & (gens.temperature == key[1])]
        methods = method_order(set(d.method))
        for row, (column, label) in enumerate([("ttft_s", "TTFT (ms)"), ("tpot_s", "TPOT (ms)")]):
            ax = axes[row][col]
            data = [d[d.method == m][column].dropna().to_numpy() * 1e3 for m in methods]
            if not any(len(x) for x in data):
                no_data(ax, f"no {column}")
                continue
            ax.boxplot(data, tick_labels=methods, showmeans=True)
            ax.set_ylabel(label)
            ax.set_yscale("log")
        axes[0][col].set_title(panels.title(key))


FIGURES = [
    Figure(
        "acceptance",
        "Average acceptance length per method and suite (the paper's Figure 4 layout)",
        "τ = accepted drafts + 1 per verification cycle, pooled over cycles (EAGLE/DFlash's definition). "
        "The paper's Figure 4 plots accepted drafts without the +1, i.e. τ − 1. Error bars: 95% bootstrap "
        "CI over items.",
    ),
    Figure(
        "throughput_context",
        "End-to-end throughput against context length",
        "Mean over items of item tokens / item wall time, per context bucket (a sweep's target length, or "
        "the smallest of 1K…40K holding the prompt). Error bars: 95% bootstrap CI over items.",
    ),
    Figure(
        "accuracy_throughput",
        "Accuracy against throughput",
        "Lossless methods (circles) must sit on the AR accuracy line up to sampling noise; lossy ones "
        "(crosses) may fall off it. Error bars: 95% bootstrap CIs over items.",
    ),
    Figure(
        "memory_overhead",
        "Peak memory and draft overhead against context length",
        "Top: torch.cuda.max_memory_allocated per generation (weights included), maximum per bucket. "
        "Middle: the same minus AR's at that bucket. Bottom: share of wall time spent in timed draft "
        "(diffusion-view) forwards; EAGLE-3/DFlash drafter forwards are not timed.",
    ),
    Figure(
        "energy",
        "Energy per token",
        "NVML board energy per generation / new tokens, generations flagged energy_reliable only (≥ 1 s). "
        "Error bars: 95% bootstrap CI over generations.",
    ),
    Figure(
        "latency",
        "TTFT and TPOT distributions",
        "Per generation: TTFT = prefill through the first token; TPOT = decode time / (new tokens − 1). "
        "Boxes: quartiles; whiskers 1.5 IQR; triangle: mean.",
    ),
]


def draw_figures(gens: pd.DataFrame, u: pd.DataFrame, directory: Path) -> list[Figure]:
    directory.mkdir(parents=True, exist_ok=True)
    panels = len(Panels.of(gens).keys)
    colors = method_colors(gens.method)
    drawers = {
        "acceptance": (1, lambda axes: figure_acceptance(u, axes[0], colors)),
        "throughput_context": (1, lambda axes: figure_context(u, axes[0], colors)),
        "accuracy_throughput": (1, lambda axes: figure_accuracy(u, axes[0], colors)),
        "memory_overhead": (3, lambda axes: figure_memory(gens, axes, colors)),
        "energy": (1, lambda axes: figure_energy(gens, axes[0], colors)),
        "latency": (2, lambda axes: figure_latency(gens, axes)),
    }
    out = []
    for figure in FIGURES:
        rows, draw = drawers[figure.name]
        fig, axes = new_figure(panels, rows, height=4.0 if rows == 1 else 3.2)
        draw(axes)
        fig.suptitle(figure.title)
        fig.tight_layout()
        path = directory / f"{figure.name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out.append(Figure(figure.name, figure.title, figure.caption, path))
    return out


# --------------------------------------------------------------------- verdicts, calibration, provenance


def json_tables(title: str, data) -> list[Table]:
    """The top-level tables of a JSON document, whatever its schema: a list of objects is one table; an
    object's members that are lists of objects or objects of objects become tables; scalars go together."""

    def text(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, (dict, list)):
            import json

            return json.dumps(value, separators=(",", ":"))[:200]
        return str(value)

    def records_table(name: str, records: list[dict], key_column: str | None = None) -> Table:
        columns = list(dict.fromkeys(k for r in records for k in r))
        return Table(name, columns, [[text(r.get(c, "")) for c in columns] for r in records])

    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return [records_table(title, data)]
    if not isinstance(data, dict):
        return [Table(title, ["value"], [[text(data)]])]
    tables, scalars = [], []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            tables.append(records_table(f"{title}: {key}", value))
        elif isinstance(value, dict) and value and all(isinstance(r, dict) for r in value.values()):
            tables.append(records_table(f"{title}: {key}", [{"name": k, **r} for k, r in value.items()]))
        else:
            scalars.append([key, text(value)])
    if scalars:
        tables.insert(0, Table(title, ["field", "value"], scalars))
    return tables


def verification_tables(runs: list[Run]) -> tuple[list[Table], list[str]]:
    tables, unverified = [], []
    for run in runs:
        verdicts = read_json_if_present(run.directory / "verdicts.json")
        if verdicts is None:
            unverified.append(str(run.directory))
        else:
            tables += json_tables(f"Equivalence verdicts ({run.directory})", verdicts)
    return tables, unverified


def provenance_table(runs: list[Run]) -> Table:
    rows = []
    for run in runs:
        info, config = run.info, run.info.get("config", {})
        hardware = info.get("hardware") or {}
        gpus = hardware.get("gpus") or []
        versions = info.get("versions") or {}
        rows.append(
            [
                str(run.directory),
                run.model,
                str(config.get("dtype", "–")),
                str(config.get("device", "–")),
                run.commit,
                str(info.get("config_hash", "–"))[:12],
                ", ".join(g.get("name", "?") for g in gpus if isinstance(g, dict))
                or str(hardware.get("cpu", "–")),
                ", ".join(
                    [f"{k} {v}" for k, v in versions.items() if k in ("python", "torch", "transformers")]
                    + [f"{k} {hardware[k]}" for k in ("cuda", "driver") if hardware.get(k)]
                ),
                f"{info.get('started', '–')} → {info.get('finished', '–')}",
                str(info.get("status", "–")),
                ", ".join(
                    f"{label} ({m.get('hash', '')[:8]})" for label, m in (info.get("methods") or {}).items()
                ),
            ]
        )
    columns = [
        "run",
        "model",
        "dtype",
        "device",
        "commit",
        "config",
        "hardware",
        "versions",
        "started → finished",
        "status",
        "methods (config hash)",
    ]
    return Table("Provenance", columns, rows, "Full provenance: run.json in each run directory.")


# ----------------------------------------------------------------------------------------------- output


@dataclass
class Report:
    title: str
    runs: list[Run]
    table1: list[Table]
    figure4: list[Table]
    summary: list[Table]
    errors: Table | str
    figures: list[Figure]
    verdicts: list[Table]
    unverified: list[str]
    calibration: list[Table]
    provenance: Table

    def sections(self) -> list[tuple[str, list]]:
        verification = list(self.verdicts)
        if self.unverified:
            verification.append(
                "not verified: no verdicts.json in "
                + ", ".join(self.unverified)
                + " (run `orthrus-bench verify` on the run directory)"
            )
        calibration = self.calibration or ["no calibration table (reports/calibration.json)"]
        return [
            ("Table 1", self.table1),
            ("Figure 4", self.figure4),
            ("Summary", [*self.summary, self.errors]),
            ("Figures", self.figures),
            ("Equivalence verdicts", verification),
            ("Calibration", calibration),
            ("Provenance", [self.provenance]),
        ]

    def markdown(self) -> str:
        parts = [f"# {self.title}"]
        for heading, items in self.sections():
            parts.append(f"## {heading}")
            for item in items:
                if isinstance(item, Table):
                    parts.append(item.markdown())
                elif isinstance(item, Figure):
                    parts.append(
                        f"**{item.title}**\n\n![{item.title}](figures/{item.path.name})\n\n{item.caption}"
                    )
                else:
                    parts.append(f"_{item}_")
        return "\n\n".join(parts) + "\n"

    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for heading, items in self.sections():
            body.append(f"<h2>{html.escape(heading)}</h2>")
            for item in items:
                if isinstance(item, Table):
                    body.append(item.html())
                elif isinstance(item, Figure):
                    data = base64.b64encode(item.path.read_bytes()).decode()
                    body.append(
                        f'<figure id="fig-{item.name}"><img src="data:image/png;base64,{data}" '
                        f'alt="{html.escape(item.title)}"><figcaption><b>{html.escape(item.title)}.</b> '
                        f"{html.escape(item.caption)}</figcaption></figure>"
                    )
                else:
                    body.append(f'<p class="note">{html.escape(item)}</p>')
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>\n"
        )


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:.85em}"
    "caption{font-weight:bold;text-align:left;padding:.3em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;white-space:nowrap}"
    "th:first-child,td:first-child{text-align:left}"
    "img{max-width:100%;height:auto}figure{margin:1.5em 0}.note{color:#555;font-size:.85em}"
)


def build_report(run_dirs: list[str], out: str | Path, title: str | None = None, calibration=None) -> Report:
    runs = load_runs(run_dirs)
    gens = generations(runs)
    if gens.empty:
        raise ValueError(f"no successful generations in {', '.join(map(str, run_dirs))}")
    u = units(gens)
    by_slice = slices(gens, u)
    out = Path(out)
    verdicts, unverified = verification_tables(runs)
    calibration_data = read_json_if_present(Path(calibration)) if calibration else None
    if isinstance(calibration_data, dict):  # the per-replicate values are data for analysis, not a table
        calibration_data = {k: v for k, v in calibration_data.items() if k != "replicate_t3_z"}
    return Report(
        title=title or f"orthrus-bench report: {', '.join(str(r.directory) for r in runs)}",
        runs=runs,
        table1=table1(gens, by_slice),
        figure4=figure4_tables(u),
        summary=summary_tables(by_slice),
        errors=errors_table(runs),
        figures=draw_figures(gens, u, out / "figures"),
        verdicts=verdicts,
        unverified=unverified,
        calibration=json_tables("Calibration", calibration_data) if calibration_data is not None else [],
        provenance=provenance_table(runs),
    )


def write_report(run_dirs: list[str], out: str | Path, title: str | None = None, calibration=None) -> Path:
    out = Path(out)
    report = build_report(run_dirs, out, title, calibration)
    (out / "report.md").write_text(report.markdown())
    (out / "report.html").write_text(report.html())
    return out
