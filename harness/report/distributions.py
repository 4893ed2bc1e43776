"""Distributions the per-method means hide: latency percentiles (TTFT and TPOT per generation, inter-token
latency per emission) and acceptance by draft position (the conditional acceptance rate at each position, and
the histogram of accepted drafts per cycle), per model, temperature, method and suite, from the records.

Inter-token latency (ITL) is what serving benchmarks (vLLM's) call it: the gap between successive streamed
outputs. A speculative cycle hands its accepted drafts and its bonus token over at once, so a generation's
gaps are per cycle (per token for AR): the differences of its `emit_offsets_s` from the first token
(orthrus_core.metrics.gaps). Records from before that field, or from a decoder that cannot tell, have none."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from orthrus_core.metrics import gaps

from .style import method_order, temperature_label
from .tables import Table, fmt

PERCENTILES = (50, 90, 99)
MAX_POSITIONS = 16  # table columns; a longer draft's later positions are summed up in the last column


def slice_keys(gens: pd.DataFrame):
    """(model, temperature, suite, method) in the report's order: methods by method_order within a slice."""
    for (model, temp, suite), g in gens.groupby(["model", "temperature", "suite"], sort=True):
        for method in method_order(set(g.method)):
            yield (model, temp, suite, method), g[g.method == method]


# --------------------------------------------------------------------------------------------- latency


def percentiles(values) -> list[float | None]:
    values = np.asarray(pd.Series(values, dtype=float).dropna(), dtype=float)
    if not len(values):
        return [None] * len(PERCENTILES)
    return [float(np.percentile(values, q)) for q in PERCENTILES]


def inter_token(g: pd.DataFrame) -> dict:
    """The inter-token latencies of some generations, pooled: every gap between successive emissions of every
    generation that recorded them (`itl`, percentiles in seconds), how many gaps (`gaps`) and how many
    generations had no record of them (`itl_missing`, records from before emit_offsets_s)."""
    column = g.emit_offsets_s if "emit_offsets_s" in g else pd.Series([None] * len(g), dtype=object)
    recorded = [o for o in column if isinstance(o, list)]
    pooled = [gap for offsets in recorded for gap in gaps(offsets)]
    return {"itl": percentiles(pooled), "gaps": len(pooled), "itl_missing": len(g) - len(recorded)}


def latency_rows(gens: pd.DataFrame) -> list[dict]:
    """Per (model, temperature, suite, method): generations, TTFT and TPOT percentiles in seconds, and the
    inter-token latency's over every gap (`inter_token`)."""
    rows = []
    for (model, temp, suite, method), g in slice_keys(gens):
        rows.append(
            {
                "model": model,
                "temperature": temp,
                "suite": suite,
                "method": method,
                "generations": len(g),
                "ttft": percentiles(g.ttft_s),
                "tpot": percentiles(g.tpot_s),
                **inter_token(g),
            }
        )
    return rows


def latency_tables(gens: pd.DataFrame) -> list[Table]:
    data = latency_rows(gens)
    rows = [
        [
            r["model"],
            temperature_label(r["temperature"]),
            r["suite"],
            r["method"],
            str(r["generations"]),
            *[fmt(None if v is None else v * 1e3, ".1f") for v in r["ttft"]],
            *[fmt(None if v is None else v * 1e3, ".2f") for v in r["tpot"]],
            str(r["gaps"]) if r["gaps"] else "–",
            *[fmt(None if v is None else v * 1e3, ".2f") for v in r["itl"]],
        ]
        for r in data
    ]
    columns = ["model", "T", "suite", "method", "gens"]
    columns += [f"TTFT p{q} (ms)" for q in PERCENTILES] + [f"TPOT p{q} (ms)" for q in PERCENTILES]
    columns += ["ITL gaps"] + [f"ITL p{q} (ms)" for q in PERCENTILES]
    note = (
        "Percentiles (linear interpolation) of TTFT and TPOT over generations, of ITL over gaps. TTFT = prefill "
        "through the first token; TPOT = decode time / (new tokens − 1), each generation's mean (a one-token "
        "generation has none). ITL (inter-token latency, as vLLM's serving benchmark defines it) = the gap "
        "between successive emissions of a generation, the tokens one step hands over at once: a speculative "
        "method's verification cycle (its accepted drafts and the bonus token together), an AR step's one "
        "token, a diffusion block, a vLLM streamed output. The gaps of all the method's generations on the "
        "suite are pooled (ITL gaps: how many), so a generation weighs by its emissions; a speculative "
        "method's ITL is per burst, larger than its TPOT when cycles accept drafts, and its p99 shows its "
        "slowest cycles. – where the records hold no emission times (recorded from issue 29 on)."
    )
    missing = sum(r["itl_missing"] for r in data)
    if missing:
        note += f" {missing} generations here hold none and are left out of ITL."
    return [Table("Latency percentiles per method and suite", columns, rows, note)]


# ------------------------------------------------------------------------------------------ acceptance


def drafting(gens: pd.DataFrame) -> pd.DataFrame:
    """Generations of methods whose drafts a verifier accepted (lossless, with cycles)."""
    if gens.empty:
        return gens
    has_cycles = gens.accepted.map(len).gt(0)
    return gens[has_cycles & gens.lossless.astype(bool)]


def acceptance_by_position(accepted_lists) -> dict:
    """From the per-cycle accepted counts of some generations: `histogram[k]`, the cycles that accepted
    exactly k drafts; `conditional[i - 1]`, the share of cycles that accepted the draft at position i among
    those that accepted the i − 1 before it (i = 1 … the longest run accepted); `reached[i - 1]`, those
    cycles. The draft length is not recorded: at the last positions a draft may have been shorter (the block,
    or the tokens left before the length limit), which the rate there cannot tell from a rejection."""
    counts = Counter(int(n) for a in accepted_lists for n in a)
    cycles = sum(counts.values())
    longest = max(counts) if counts else 0
    histogram = [counts.get(k, 0) for k in range(longest + 1)]
    at_least = np.cumsum(histogram[::-1])[::-1]  # at_least[k]: cycles with ≥ k accepted
    reached = [int(at_least[i - 1]) for i in range(1, longest + 1)]
    conditional = [float(at_least[i] / at_least[i - 1]) for i in range(1, longest + 1)]
    return {"cycles": cycles, "histogram": histogram, "conditional": conditional, "reached": reached}


def acceptance_rows(gens: pd.DataFrame) -> list[dict]:
    rows = []
    for (model, temp, suite, method), g in slice_keys(drafting(gens)):
        rows.append(
            {"model": model, "temperature": temp, "suite": suite, "method": method}
            | acceptance_by_position(g.accepted)
        )
    return rows


def acceptance_tables(gens: pd.DataFrame) -> list[Table]:
    rows = acceptance_rows(gens)
    if not rows:
        return []
    positions = min(max(len(r["conditional"]) for r in rows), MAX_POSITIONS)
    lengths = min(max(len(r["histogram"]) for r in rows), MAX_POSITIONS + 1)
    keys = ["model", "T", "suite", "method", "cycles"]

    def key(r) -> list[str]:
        return [r["model"], temperature_label(r["temperature"]), r["suite"], r["method"], str(r["cycles"])]

    conditional_rows = []
    for r in rows:
        cells = [fmt(p, ".2f") for p in r["conditional"][:positions]]
        conditional_rows.append(key(r) + cells + ["–"] * (positions - len(cells)))
    histogram_rows = []
    for r in rows:
        shares = [n / r["cycles"] for n in r["histogram"]]
        cells = [fmt(s, ".1%") for s in shares[: lengths - 1]]
        if len(shares) >= lengths:  # the last column sums what lies beyond
            cells.append(fmt(sum(shares[lengths - 1 :]), ".1%"))
        histogram_rows.append(key(r) + cells + ["0.0%"] * (lengths - len(cells)))  # no cycle accepted k
    beyond = "+" if any(len(r["histogram"]) > lengths for r in rows) else ""
    return [
        Table(
            "Acceptance by draft position: P(draft i accepted | drafts 1 … i−1 accepted)",
            keys + [f"i={i}" for i in range(1, positions + 1)],
            conditional_rows,
            "Over all verification cycles: cycles that accepted ≥ i drafts / cycles that accepted ≥ i − 1, for "
            "i up to the longest run any cycle accepted (– beyond that method's). The draft length per cycle "
            "is not recorded: at the last positions a shorter draft (the block, or the tokens left before the "
            "length limit) reads as a rejection.",
        ),
        Table(
            "Accepted drafts per cycle: share of cycles accepting k",
            keys + [f"k={k}" for k in range(lengths - 1)] + [f"k={lengths - 1}{beyond}"],
            histogram_rows,
            "τ = the mean of k, + 1 (Figure 4). Shares of all verification cycles of the method on the suite.",
        ),
    ]


def figure_acceptance_position(gens: pd.DataFrame, axes, colors: dict, panels) -> None:
    """Row 0: the conditional acceptance rate against draft position; row 1: the share of cycles accepting k
    drafts; one line per method (its colour) and suite (its line style), one column per (model, T)."""
    rows = acceptance_rows(gens)
    suites = sorted({r["suite"] for r in rows})
    styles = {s: ["-", "--", ":", "-."][i % 4] for i, s in enumerate(suites)}
    for col, key in enumerate(panels.keys):
        own = [r for r in rows if (r["model"], r["temperature"]) == key]
        axes[0][col].set_title(panels.title(key))
        if not own:
            for ax in (axes[0][col], axes[1][col]):
                ax.text(0.5, 0.5, "no data: no method drafted tokens", ha="center", va="center",
                        transform=ax.transAxes)  # fmt: skip
                ax.set_xticks([])
                ax.set_yticks([])
            continue
        for r in own:
            label = f"{r['method']} · {r['suite']}"
            style = dict(color=colors[r["method"]], linestyle=styles[r["suite"]], marker=".", label=label)
            axes[0][col].plot(range(1, len(r["conditional"]) + 1), r["conditional"], **style)
            shares = np.asarray(r["histogram"], dtype=float) / max(r["cycles"], 1)
            axes[1][col].plot(range(len(shares)), shares, **style)
        axes[0][col].set_xlabel("draft position i")
        axes[0][col].set_ylabel("P(accepted | earlier accepted)")
        axes[0][col].set_ylim(0, 1.05)
        axes[1][col].set_xlabel("accepted drafts per cycle k")
        axes[1][col].set_ylabel("share of cycles")
        axes[0][col].legend(fontsize=7)
