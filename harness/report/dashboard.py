"""`orthrus-bench dashboard results/history --out reports/dashboard`: trends across runs.

`results/history` holds one run directory per benchmarked commit (any depth; a directory with a
records.jsonl is a run). Runs are ordered by their start time. Written to --out: one PNG per metric
(a panel per suite, a line per method), `dashboard.html` (self-contained) and `dashboard.md`, and the
newest run's figures in github-action-benchmark's custom JSON format, split by direction as that action
requires: `benchmark-bigger.json` (tool `customBiggerIsBetter`) and `benchmark-smaller.json`
(`customSmallerIsBetter`), entries `{name, unit, value, range, extra}`.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness.store import RECORDS  # noqa: E402
from orthrus_core.jsonfile import write_json  # noqa: E402

from .runs import Run, generations, load_runs, units  # noqa: E402
from .stats import bootstrap_ci, mean  # noqa: E402
from .style import CSS, method_colors, method_order, temperature_label  # noqa: E402
from .tables import slices  # noqa: E402


@dataclass(frozen=True)
class TrendMetric:
    key: str
    label: str
    unit: str
    bigger_is_better: bool


METRICS = [
    TrendMetric("tokens_per_s", "tokens/s", "tokens/s", True),
    TrendMetric("speedup_vs_ar", "speedup over ar", "x", True),
    TrendMetric("tau", "τ (acceptance length)", "tokens/cycle", True),
    TrendMetric("tpf", "TPF", "tokens/forward", True),
    TrendMetric("accuracy", "accuracy", "fraction", True),
    TrendMetric("ttft_ms", "median TTFT", "ms", False),
    TrendMetric("tpot_ms", "median TPOT", "ms", False),
    TrendMetric("peak_memory_mib", "peak allocated memory", "MiB", False),
    TrendMetric("energy_per_token_j", "energy per token", "J", False),
]


def find_runs(history: Path) -> list[Run]:
    directories = sorted(p.parent for p in history.rglob(RECORDS))
    if not directories:
        raise FileNotFoundError(f"no run directories (with {RECORDS}) under {history}")
    runs = load_runs(directories)
    return sorted(runs, key=lambda r: (r.started, str(r.directory)))


def run_metrics(run: Run) -> pd.DataFrame:
    """One row per (suite, temperature, method, metric) of one run; tokens/s carries a bootstrap CI."""
    gens = generations([run])
    if gens.empty:
        return pd.DataFrame()
    u = units(gens)
    rows = []
    for (model, suite, temp), figures in slices(gens, u).items():
        for s in figures.summary.to_dict("records"):
            method = s["method"]
            g = gens[(gens.suite == suite) & (gens.temperature == temp) & (gens.method == method)]
            own = u[(u.suite == suite) & (u.temperature == temp) & (u.method == method)]
            energy = g[g.energy_reliable.eq(True) & g.energy_j.notna()]
            peak = g.allocator_peak_bytes.max()
            values = {
                "tokens_per_s": (s["tokens_per_s"], bootstrap_ci(mean, own.tokens_per_s)),
                "speedup_vs_ar": (s["speedup_vs_ar"], None),
                "tau": (s["tau"], None),
                "tpf": (s["tpf"], None),
                "accuracy": (s["accuracy"], None),
                "ttft_ms": (g.ttft_s.median() * 1e3, None),
                "tpot_ms": (g.tpot_s.median() * 1e3 if g.tpot_s.notna().any() else None, None),
                "peak_memory_mib": (peak / 2**20, None),
                "energy_per_token_j": (
                    (energy.energy_j / energy.new_tokens).mean() if not energy.empty else None,
                    None,
                ),
            }
            for metric in METRICS:
                value, ci = values[metric.key]
                if value is None or pd.isna(value):
                    continue
                rows.append(
                    {
                        "run": str(run.directory),
                        "started": run.started,
                        "commit": run.commit,
                        "model": model,
                        "suite": suite,
                        "temperature": temp,
                        "method": method,
                        "metric": metric.key,
                        "value": float(value),
                        "ci": ci,
                        "items": len(own),
                    }
                )
    return pd.DataFrame(rows)


def benchmark_entries(metrics: pd.DataFrame, bigger_is_better: bool) -> list[dict]:
    """github-action-benchmark custom entries; a name is stable across runs, so the action can chart it."""
    entries = []
    by_key = {m.key: m for m in METRICS}
    for row in metrics.to_dict("records"):
        metric = by_key[row["metric"]]
        if metric.bigger_is_better != bigger_is_better or not np.isfinite(row["value"]):
            continue  # the other file's, or no figure to chart (standard JSON has no NaN)
        entry = {
            "name": f"{row['model']} / {row['suite']} / {temperature_label(row['temperature'])} / "
            f"{row['method']} / {metric.label}",
            "unit": metric.unit,
            "value": round(row["value"], 6),
            "extra": f"commit {row['commit']}, {row['items']} items, run {row['run']}",
        }
        if row["ci"] is not None:  # the action shows `range` as given; the exact interval goes in `extra`
            low, high = row["ci"]
            entry["range"] = f"± {(high - low) / 2:.4g}"
            entry["extra"] += f", 95% bootstrap CI {low:.4g} to {high:.4g}"
        entries.append(entry)
    return entries


def trend_figure(history: pd.DataFrame, metric: TrendMetric, path: Path) -> None:
    data = history[history.metric == metric.key]
    panels = sorted({(m, s, t) for m, s, t in zip(data.model, data.suite, data.temperature, strict=True)})
    runs = list(dict.fromkeys(history.run))  # already in time order
    labels = [history[history.run == r].commit.iloc[0][:7] for r in runs]
    colors = method_colors(history.method)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), squeeze=False)
    for ax, (model, suite, temp) in zip(axes[0], panels, strict=True):
        d = data[(data.model == model) & (data.suite == suite) & (data.temperature == temp)]
        for method in method_order(set(d.method)):
            series = d[d.method == method].set_index("run").reindex(runs)
            xs = np.arange(len(runs))
            ax.plot(xs, series.value.to_numpy(float), marker="o", label=method, color=colors[method])
            cis = series.ci.dropna()
            if len(cis):
                idx = [runs.index(r) for r in cis.index]
                ax.fill_between(
                    idx, [c[0] for c in cis], [c[1] for c in cis], color=colors[method], alpha=0.2
                )
        ax.set_xticks(range(len(runs)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_title(f"{suite}, {temperature_label(temp)} ({model})", fontsize=9)
        ax.set_ylabel(f"{metric.label} ({metric.unit})")
        ax.legend(fontsize=7)
    fig.suptitle(f"{metric.label}: {'higher' if metric.bigger_is_better else 'lower'} is better")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# github-action-benchmark's input files, by whether bigger is better (its tools customBiggerIsBetter and
# customSmallerIsBetter); .github/workflows/gpu-bench.yml publishes both.
BENCHMARK_FILES = {"benchmark-bigger.json": True, "benchmark-smaller.json": False}


def write_dashboard(history_dir: str | Path, out: str | Path) -> Path:
    runs = find_runs(Path(history_dir))
    history = pd.concat([run_metrics(r) for r in runs], ignore_index=True)
    if history.empty:
        raise ValueError(f"no successful generations in the runs under {history_dir}")
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    drawn = []
    for metric in METRICS:
        if (history.metric == metric.key).any():
            path = out / "figures" / f"trend_{metric.key}.png"
            trend_figure(history, metric, path)
            drawn.append((metric, path))
    newest = history[history.run == str(runs[-1].directory)]
    for name, bigger in BENCHMARK_FILES.items():
        write_json(out / name, benchmark_entries(newest, bigger))
    run_list = ", ".join(f"{r.commit} ({r.started or '?'})" for r in runs)
    md = [f"# orthrus-bench dashboard: {len(runs)} runs", "", f"Runs, oldest first: {run_list}", ""]
    md += [f"![{m.label}](figures/{p.name})" for m, p in drawn]
    (out / "dashboard.md").write_text("\n\n".join(md) + "\n")
    images = "".join(
        f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
        f'alt="{html.escape(m.label)}"></figure>'
        for m, p in drawn
    )
    (out / "dashboard.html").write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>orthrus-bench dashboard</title>'
        f"<style>{CSS}</style></head><body><h1>orthrus-bench dashboard</h1>"
        f"<p>{len(runs)} runs, oldest first: {html.escape(run_list)}</p>{images}</body></html>\n"
    )
    return out
