"""The per-method summary of a run, as `orthrus-bench run` and `merge` print it and the report's tables use it:
τ, TPF, tokens/s and its speedup over `ar` and `ar-hf`, accuracy, greedy token identity with `ar`, and the
batch size each method decoded at; printed with the run's weight quantization where it has one."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pandas as pd
from rich.table import Table

from harness.console import console
from harness.records import BACKEND, UNIT, prompt_key
from harness.store import RUN, load_run, read_records
from orthrus_core import metrics

from .style import method_order


def summarize(records: list[dict]) -> pd.DataFrame:
    """Per method: τ (over all cycles), TPF, mean per-item tokens/s and its speedup over `ar` and `ar-hf`
    (Spec-Bench: ratio of the means of per-item tokens/s), accuracy, greedy token identity with `ar`, and the
    batch size it decoded at (`run --batch-size`; None: one prompt at a time, or several sizes)."""
    df = pd.DataFrame.from_records([r for r in records if r["status"] == "ok"])
    errors = defaultdict(int)
    backends = {}  # method -> whose engine decoded it (records from before issue 28: the project's)
    for r in records:
        backends.setdefault(r["method"], r.get("backend") or BACKEND)
        if r["status"] != "ok":
            errors[r["method"]] += 1
    failed_only = [
        {"method": m, "backend": backends.get(m, BACKEND), "generations": 0, "errors": n}
        for m, n in errors.items()
        if df.empty or m not in set(df.method)
    ]
    if df.empty:
        return pd.DataFrame(failed_only)
    per_item = df.groupby(list(UNIT)).agg(tokens=("new_tokens", "sum"), wall=("wall_s", "sum"))
    per_item["tps"] = per_item.tokens / per_item.wall
    tps = per_item.groupby("method").tps.mean()
    ar_ids = {}
    if "ar" in set(df.method):
        ar = df[df.method == "ar"]
        ar_ids = {prompt_key(r): r["output_ids"] for r in ar.to_dict("records")}
    rows = []
    for method, g in df.groupby("method", sort=False):
        accepted = [n for a in g.accepted for n in a]
        forwards = int((g.ar_forwards + g.draft_forwards).sum())
        scored = g.score_correct.dropna()
        identical = [
            r["output_ids"] == ar_ids[prompt_key(r)] for r in g.to_dict("records") if prompt_key(r) in ar_ids
        ]
        rows.append(
            {
                "method": method,
                "backend": backends.get(method, BACKEND),
                "generations": len(g),
                "errors": errors.get(method, 0),
                # tau counts drafts a verifier accepted; a lossy decoder commits its drafts unverified
                "tau": metrics.tau(sum(accepted), len(accepted)) if g.lossless.all() else None,
                "tpf": metrics.tpf(int(g.new_tokens.sum()), forwards),
                "tokens_per_s": tps[method],
                "speedup_vs_ar": tps[method] / tps["ar"] if "ar" in tps else None,
                "speedup_vs_ar_hf": tps[method] / tps["ar-hf"] if "ar-hf" in tps else None,
                "accuracy": scored.astype(float).mean() if len(scored) else None,
                "identical_to_ar": sum(identical) / len(identical) if identical else None,
                "batch_size": batch_size(g),
            }
        )
    return pd.DataFrame(rows + failed_only)


def batch_size(g: pd.DataFrame) -> int | None:
    """The batch size a method's generations were decoded at, where they share one (None: one at a time)."""
    if "batch_size" not in g:
        return None
    sizes = set(g.batch_size.dropna())
    return int(sizes.pop()) if len(sizes) == 1 else None


def has_batch_size(table: pd.DataFrame) -> bool:
    return "batch_size" in table and table.batch_size.notna().any()


def print_summary(table, title: str, quantize: str | None = None) -> None:
    """The summary table of a run, the methods in the report's order, a B column where a method was batched;
    `quantize`, the run's simulated weight quantization (`run --quantize`), in a line under the title."""
    batched = has_batch_size(table)
    caption = [
        "per item: the mean over items of item tokens / item wall time, and its ratio to the baseline's "
        "(Spec-Bench)",
        *(["B: the batch size a method decoded at (–: one prompt at a time)"] if batched else []),
    ]
    rows = table.to_dict("records")
    order = {m: i for i, m in enumerate(method_order([r["method"] for r in rows]))}
    print_table(
        sorted(rows, key=lambda r: order[r["method"]]),
        [
            ("method", "method", "{}"),
            ("backend", "backend", "{}"),
            *([("batch_size", "B", "{:.0f}")] if batched else []),
            ("generations", "gens", "{}"),
            ("errors", "errors", "{}"),
            ("tau", "τ", "{:.2f}"),
            ("tpf", "TPF", "{:.2f}"),
            ("tokens_per_s", "tok/s (per item)", "{:.1f}"),
            ("speedup_vs_ar", "× ar (per item)", "{:.2f}"),
            ("speedup_vs_ar_hf", "× ar-hf (per item)", "{:.2f}"),
            ("accuracy", "accuracy", "{:.1%}"),
            ("identical_to_ar", "identical to ar", "{:.1%}"),
        ],
        title + (f"\nweights: {quantize} (simulated quantization, --quantize)" if quantize else ""),
        "\n".join(caption),
    )


def print_run_summary(directory, title: str) -> None:
    """The summary of the run in `directory` (its records and run.json), as `run` and `merge` print it."""
    quantize = load_run(directory).config.get("quantize") if (Path(directory) / RUN).exists() else None
    print_summary(summarize(read_records(directory)), title, quantize or None)


def print_table(rows: list[dict], columns: list[tuple[str, str, str]], title: str, caption: str = "") -> None:
    """Rows as a rich table on the console; columns are (key, header, format), a missing value printed –; the
    caption, if any, under the table."""
    t = Table(title=title, caption=caption or None)
    for _, name, _ in columns:
        t.add_column(name, justify="left" if name in ("method", "backend") else "right")
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        t.add_row(*cells)
    console().print(t)
