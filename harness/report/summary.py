"""The per-method summary of a run, as `orthrus-bench run` and `merge` print it and the report's tables use it:
τ, TPF, tokens/s and its speedup over `ar` and `ar-hf`, accuracy, and greedy token identity with `ar`."""

from __future__ import annotations

import math
from collections import defaultdict

import pandas as pd
from rich.table import Table

from harness.console import console
from harness.records import ENGINE, UNIT, prompt_key
from orthrus_core import metrics


def summarize(records: list[dict]) -> pd.DataFrame:
    """Per method: τ (over all cycles), TPF, mean per-item tokens/s and its speedup over `ar` and `ar-hf`
    (Spec-Bench: ratio of the means of per-item tokens/s), accuracy, and greedy token identity with `ar`."""
    df = pd.DataFrame.from_records([r for r in records if r["status"] == "ok"])
    errors = defaultdict(int)
    engines = {}  # method -> the engine that decoded it (records from before issue 28: the project's)
    for r in records:
        engines.setdefault(r["method"], r.get("engine") or ENGINE)
        if r["status"] != "ok":
            errors[r["method"]] += 1
    failed_only = [
        {"method": m, "engine": engines.get(m, ENGINE), "generations": 0, "errors": n}
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
                "engine": engines.get(method, ENGINE),
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
            }
        )
    return pd.DataFrame(rows + failed_only)


def print_summary(table, title: str) -> None:
    print_table(
        table.to_dict("records"),
        [
            ("method", "method", "{}"),
            ("engine", "engine", "{}"),
            ("generations", "gens", "{}"),
            ("errors", "errors", "{}"),
            ("tau", "τ", "{:.2f}"),
            ("tpf", "TPF", "{:.2f}"),
            ("tokens_per_s", "tok/s", "{:.1f}"),
            ("speedup_vs_ar", "× ar", "{:.2f}"),
            ("speedup_vs_ar_hf", "× ar-hf", "{:.2f}"),
            ("accuracy", "accuracy", "{:.1%}"),
            ("identical_to_ar", "identical to ar", "{:.1%}"),
        ],
        title,
    )


def print_table(rows: list[dict], columns: list[tuple[str, str, str]], title: str) -> None:
    """Rows as a rich table on the console; columns are (key, header, format), a missing value printed –."""
    t = Table(title=title)
    for _, name, _ in columns:
        t.add_column(name, justify="left" if name in ("method", "engine") else "right")
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        t.add_row(*cells)
    console().print(t)
