"""The report's figures, one PNG each: acceptance length (the paper's Figure 4 layout), throughput against
context length, accuracy against throughput, memory and draft overhead, energy per token, TTFT and TPOT,
acceptance by draft position.
Error bars are 95% bootstrap CIs over work units."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .distributions import figure_acceptance_position  # noqa: E402
from .stats import bootstrap_ci, mean, pooled_tau  # noqa: E402
from .style import method_colors, method_order, temperature_label  # noqa: E402

ACCURACY_SUITES = ["math500", "tiny-math"]  # the accuracy/throughput figure's suite, first one present
MIB = 2**20


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


def error_bars(rows: list[list[float]]) -> list[list[float]]:
    """Per-bar [below, above] rows as matplotlib's yerr: two lists (a 2 x 1 array for a single bar warns in
    matplotlib's finiteness check under NumPy >= 1.25)."""
    return [[float(r[0]) for r in rows], [float(r[1]) for r in rows]]


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
                tau = float(pooled_tau(g.accepted, g.cycles))  # a 0-d array: matplotlib wants a number
                ci = bootstrap_ci(pooled_tau, g.accepted, g.cycles)
                xs.append(j + (i - (len(methods) - 1) / 2) * width)
                taus.append(tau)
                errs.append(error_bar(tau, ci))
            bars = ax.bar(
                xs, taus, width, yerr=error_bars(errs), capsize=3, label=method, color=colors[method]
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
                xs, ys, yerr=error_bars(errs), marker="o", capsize=3, label=method, color=colors[method]
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
                yerr=error_bars([error_bar(y, bootstrap_ci(mean, correct))]),
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
        bars = ax.bar(methods, values, yerr=error_bars(errs), capsize=3, color=[colors[m] for m in methods])
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
    Figure(
        "acceptance_position",
        "Acceptance by draft position",
        "Top: the share of cycles accepting the draft at position i among those that accepted the i − 1 "
        "before it. Bottom: the share of cycles accepting k drafts. Per method (colour) and suite (line style), "
        "over all verification cycles. The draft length is not recorded: at the last positions a shorter "
        "draft reads as a rejection.",
    ),
]


def save(fig, spec: Figure, directory: Path) -> Figure:
    """`spec` (name, title, caption) drawn on `fig`: titled, laid out, written as directory/NAME.png, closed."""
    fig.suptitle(spec.title)
    fig.tight_layout()
    path = directory / f"{spec.name}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Figure(spec.name, spec.title, spec.caption, path)


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
        "acceptance_position": (
            2,
            lambda axes: figure_acceptance_position(gens, axes, colors, Panels.of(gens)),
        ),
    }
    out = []
    for figure in FIGURES:
        rows, draw = drawers[figure.name]
        fig, axes = new_figure(panels, rows, height=4.0 if rows == 1 else 3.2)
        draw(axes)
        out.append(save(fig, figure, directory))
    return out


BATCH_FIGURE = Figure(
    "batch",
    "Throughput and speedup against batch size",
    "Left: tokens/s over the whole batch (Σ tokens / Σ spans from first admission to last finish). "
    "Right: that throughput over ar's at the same batch size. One line per method and batching mode.",
)


def draw_batch_figure(figures: pd.DataFrame, directory: Path) -> Figure | None:
    """The batch sweep (harness.report.batch.batch_figures) as a PNG; None without batched runs."""
    if figures.empty:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    fig, axes = new_figure(2)
    colors = method_colors(figures.method)
    for (method, continuous), f in figures.groupby(["method", "batch_continuous"], sort=False):
        f = f.sort_values("batch_size")
        style = dict(color=colors[method], marker="o", linestyle="--" if continuous else "-")
        label = f"{method}{' (continuous)' if continuous else ''}"
        axes[0, 0].plot(f.batch_size, f.throughput, label=label, **style)
        axes[0, 1].plot(f.batch_size, f.speedup_vs_ar.astype(float), label=label, **style)
    sizes = sorted(figures.batch_size.unique())
    for ax, ylabel in zip(axes[0], ["tokens/s (whole batch)", "× ar at the same batch size"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0, 1].axhline(1.0, color="grey", linewidth=0.8)
    axes[0, 0].legend(fontsize="small")
    return save(fig, BATCH_FIGURE, directory)


SWEEP_FIGURE = Figure(
    "sweeps",
    "τ, TPF and speedup against each swept option",
    "One column per sweep (method, option, model, temperature). Top: τ (accepted drafts + 1 per cycle) and TPF "
    "(tokens per forward pass), pooled over every suite. Bottom: mean per-item tokens/s over the fastest AR "
    "baseline's on the same items; the grey line is parity. Error bars: 95% bootstrap CIs over items.",
)


def sweep_axis(ax, values: list[str], option: str) -> list[float]:
    """The x positions of a sweep's values: the numbers themselves (a log2 axis where they are positive and span
    a factor of 4 or more), or evenly spaced where a value is not a number; ticks at every value."""
    try:
        xs = [float(v) for v in values]
    except ValueError:
        xs = [float(i) for i in range(len(values))]
    else:
        if min(xs) > 0 and max(xs) / min(xs) >= 4:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
    ax.set_xticks(xs, values)
    ax.set_xlabel(option)
    ax.grid(alpha=0.3)
    return xs


def draw_sweep_figure(figures: list, directory: Path) -> Figure | None:
    """The sweeps (harness.report.sweeps.SweepFigures) as one PNG; None without a sweep."""
    if not figures:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    fig, axes = new_figure(len(figures), 2, width=4.5, height=3.4)
    for col, f in enumerate(figures):
        top, bottom = axes[0][col], axes[1][col]
        values = [p.value for p in f.points]
        for ax in (top, bottom):
            xs = sweep_axis(ax, values, f.sweep.option)
        top.set_title(f"{f.sweep.name}\n{f.where}", fontsize=10)
        for quantity, style in (("tau", "-"), ("tpf", "--")):
            points = [(x, p) for x, p in zip(xs, f.points, strict=True) if getattr(p, quantity) is not None]
            if points:
                ys = [getattr(p, quantity) for _, p in points]
                errs = [error_bar(getattr(p, quantity), getattr(p, f"{quantity}_ci")) for _, p in points]
                label = "τ" if quantity == "tau" else "TPF"
                top.errorbar([x for x, _ in points], ys, yerr=error_bars(errs), marker="o", capsize=3,
                             linestyle=style, label=label)  # fmt: skip
        top.set_ylabel("tokens per cycle / per forward")
        top.legend(fontsize=8)
        points = [(x, p) for x, p in zip(xs, f.points, strict=True) if p.speedup is not None]
        if not points:
            no_data(bottom, "no AR baseline in the run")
            continue
        bottom.errorbar(
            [x for x, _ in points],
            [p.speedup for _, p in points],
            yerr=error_bars([error_bar(p.speedup, p.speedup_ci) for _, p in points]),
            marker="o",
            capsize=3,
            color="C2",
        )
        bottom.axhline(1.0, color="grey", linewidth=0.8)
        bottom.set_ylabel(f"speedup over {f.baseline}")
    return save(fig, SWEEP_FIGURE, directory)
