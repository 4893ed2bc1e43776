"""Weight quantization sensitivity: when runs with different `run --quantize` formats (orthrus_core.quantize)
are reported together, τ and TPF per method and format beside full precision. Torch-free: the formats are read
from run.json, and the table is built from the records alone."""

from __future__ import annotations

import pandas as pd

from orthrus_core import metrics

from .style import method_order, temperature_label
from .tables import Table, fmt

FULL = "full precision"
# The formats' order, coarsest last (orthrus_core.quantize.FORMATS; repeated here so the report needs no torch).
ORDER = ("fp8-tensor", "fp8-channel", "int8-channel", "int4-group")


def format_label(value) -> str:
    return value if isinstance(value, str) and value else FULL


def quantization_tables(gens: pd.DataFrame) -> list[Table]:
    """Per (model, temperature): one row per method, one column per format (full precision first), cells
    "τ / TPF" pooled over the format's generations (τ for lossless methods only). Nothing when every run here
    has the same format."""
    if gens.empty or "quantize" not in gens:
        return []
    gens = gens.assign(quantize=gens.quantize.map(format_label))
    if gens.quantize.nunique() < 2:
        return []
    present = set(gens.quantize)
    formats = [f for f in (FULL, *ORDER) if f in present] + sorted(present - {FULL, *ORDER})
    out = []
    for (model, temperature), g in gens.groupby(["base_model", "temperature"], sort=False):
        rows = []
        for method in method_order(g.method.unique()):
            cells = [method]
            for f in formats:
                m = g[(g.method == method) & (g.quantize == f)]
                cells.append(cell(m) if len(m) else "–")
            rows.append(cells)
        out.append(
            Table(
                f"Weight quantization: τ / TPF per format ({model}, {temperature_label(temperature)})",
                ["method", *formats],
                rows,
                "Each format quantizes the linear weights of the target and the drafters (not lm_head, norms "
                "or embeddings) and dequantizes them back to the run's dtype; a lossless method is checked "
                "against ar of the same quantized model. τ: mean accepted tokens per cycle; TPF: tokens per "
                "forward pass.",
            )
        )
    return out


def cell(m: pd.DataFrame) -> str:
    accepted = [n for a in m.accepted for n in (a if isinstance(a, list) else [])]
    forwards = int((m.ar_forwards + m.draft_forwards).sum())
    lossless = bool(m.lossless.all()) if "lossless" in m else False
    tau = metrics.tau(sum(accepted), len(accepted)) if lossless and accepted else None
    tpf = metrics.tpf(int(m.new_tokens.sum()), forwards) if forwards else None
    return f"{fmt(tau)} / {fmt(tpf)}"
