"""Figures of batched runs (`run --batch-size B`, or a sweep `run --batch-sizes 1,2,4,…`): per method and batch
size, the batch's throughput (tokens over the span from the first admission to the last finish), its speedup
over `ar` at the same batch size, per-request latency (TTFT, TPOT), τ and TPF, the KV cache per row, and greedy
identity with the same method's output at the sweep's smallest batch size.

Throughput is a batch-level figure: per (run, suite, method) the tokens of every request over the span, summed
over suites (Σ tokens / Σ spans). Latency is per request: medians over generations.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.records import prompt_key
from orthrus_core import metrics

from .style import method_order
from .summary import print_table

MIB = 2**20
GROUP = ["model", "temperature", "method", "batch_size", "batch_continuous"]


def batched(gens: pd.DataFrame) -> pd.DataFrame:
    """The generations that were decoded in a batch."""
    if gens.empty or "batch_size" not in gens:
        return gens.iloc[0:0]
    return gens[gens.batch_size.notna()]


def batch_figures(gens: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, temperature, method, batch size, continuous): see the module docstring."""
    g = batched(gens)
    if g.empty:
        return pd.DataFrame()
    g = g.assign(batch_size=g.batch_size.astype(int), batch_continuous=g.batch_continuous.astype(bool))
    spans = g.groupby([*GROUP, "run", "suite"], sort=False).agg(
        tokens=("new_tokens", "sum"), start=("batch_admitted_s", "min"), end=("batch_finished_s", "max")
    )
    spans["span_s"] = spans.end - spans.start
    per = spans.groupby(GROUP, sort=False).agg(tokens=("tokens", "sum"), span_s=("span_s", "sum"))
    reference = smallest_batch_outputs(g)
    rows = []
    for key, m in g.groupby(GROUP, sort=False):
        accepted = [n for a in m.accepted for n in a]
        forwards = int((m.ar_forwards + m.draft_forwards).sum())
        outputs = {output_key(r): tuple(r["output_ids"]) for r in m.to_dict("records")}
        same = [output == reference[k] for k, output in outputs.items() if k in reference]
        tokens, span = per.loc[key, "tokens"], per.loc[key, "span_s"]
        rows.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "requests": len(m),
                "tokens": int(tokens),
                "span_s": span,
                "throughput": tokens / span if span > 0 else math.nan,
                "ttft_ms": 1e3 * m.ttft_s.median(),
                "tpot_ms": 1e3 * m.tpot_s.median(),
                "tau": metrics.tau(sum(accepted), len(accepted)) if m.lossless.all() else None,
                "tpf": metrics.tpf(int(m.new_tokens.sum()), forwards),
                "rows_mean": m.batch_rows_mean.mean(),
                "kv_mib_per_row": m.kv_row_bytes.median() / MIB,
                "kv_bytes_per_position": m.kv_bytes_per_position.median(),
                "kv_scratch_positions": int(m.kv_scratch_positions.max()),
                "identical_to_smallest_b": sum(same) / len(same) if same and m.greedy.all() else None,
            }
        )
    out = pd.DataFrame(rows)
    ar = out[out.method == "ar"].set_index(["model", "temperature", "batch_size", "batch_continuous"])
    key = ["model", "temperature", "batch_size", "batch_continuous"]

    def vs_ar(row, column):
        k = tuple(row[c] for c in key)
        return row[column] / ar.loc[k, column] if k in ar.index and ar.loc[k, column] else None

    out["speedup_vs_ar"] = out.apply(lambda r: vs_ar(r, "throughput"), axis=1)
    out["kv_vs_ar"] = out.apply(lambda r: vs_ar(r, "kv_mib_per_row"), axis=1)
    out["kv_per_position_vs_ar"] = out.apply(lambda r: vs_ar(r, "kv_bytes_per_position"), axis=1)
    return sorted_by(out, ["model", "temperature", "batch_continuous", "method", "batch_size"])


def sorted_by(figures: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The rows sorted by `columns`, the methods in the report's order (style.method_order), not the text's."""
    rank = {m: i for i, m in enumerate(method_order(figures.method.unique()))}
    return figures.sort_values(columns, key=lambda c: c.map(rank) if c.name == "method" else c, kind="stable")


def output_key(record) -> tuple:
    """A generation of one method: (method, the prompt's key), the same at every batch size."""
    return record["method"], prompt_key(record)


def smallest_batch_outputs(g: pd.DataFrame) -> dict[tuple, tuple]:
    """output_key -> output ids at the smallest batch size the method ran at."""
    out = {}
    for _, m in g.groupby("method", sort=False):
        smallest = m[m.batch_size == m.batch_size.min()]
        for r in smallest.to_dict("records"):
            out[output_key(r)] = tuple(r["output_ids"])
    return out


def print_batch_figures(figures: pd.DataFrame, title: str) -> None:
    """The sweep as `orthrus-bench run --batch-sizes` prints it: one line per method and batch size. Its speedup
    is the batch's throughput over ar's at the same B, not the per-item speedup of each run's summary."""
    print_table(
        sorted_by(figures, ["method", "batch_size"]).to_dict("records"),
        [
            ("method", "method", "{}"),
            ("batch_size", "B", "{}"),
            ("requests", "requests", "{}"),
            ("throughput", "tok/s (batch)", "{:.1f}"),
            ("speedup_vs_ar", "× ar (batch)", "{:.2f}"),
            ("ttft_ms", "TTFT ms", "{:.1f}"),
            ("tpot_ms", "TPOT ms", "{:.2f}"),
            ("tau", "τ", "{:.2f}"),
            ("kv_mib_per_row", "KV MiB/row", "{:.2f}"),
            ("identical_to_smallest_b", "= smallest B", "{:.0%}"),
        ],
        title,
        "batch: Σ tokens / Σ spans (first admission to last finish) and its ratio to ar's at the same B; the "
        "per-item speedup of each B is in that run's summary above",
    )
