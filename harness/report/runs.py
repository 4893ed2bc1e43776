"""Run directories as tables: what `report`, `compare` and `dashboard` read.

One row per work unit (an item's turns by one method for one sample) is the grain of every per-question
figure (docs/methodology.md, "Averages"); `units()` builds it from the per-generation records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.records import BACKEND, UNIT
from harness.store import RUN, RunInfo, load_run, read_records

EMBEDDED_MODEL = "embedded tiny family"
# Telemetry fields that a run made with --no-telemetry lacks altogether; there they read as not measured.
TELEMETRY_COLUMNS = [
    "allocator_peak_bytes",
    "energy_j",
    "energy_reliable",
    "diffusion_forward_count",
    "diffusion_forward_ms_mean",
]


@dataclass
class Run:
    directory: Path
    info: RunInfo | None  # run.json (None: a directory of records alone)
    records: list[dict]  # every complete record, errors included

    @property
    def base_model(self) -> str:
        return (self.info and self.info.config.get("model")) or EMBEDDED_MODEL

    @property
    def model(self) -> str:
        """The model decoded: a run with simulated weight quantization decodes another model than the base's,
        so that every table keeps its figures apart from full precision's."""
        return self.base_model + (f" ({self.quantize} weights)" if self.quantize else "")

    @property
    def commit(self) -> str:
        git = self.info.git if self.info else {}
        commit = git.get("commit") or "unknown"
        return commit[:10] + ("+dirty" if git.get("dirty") else "")

    @property
    def started(self) -> str:
        return (self.info and self.info.started) or ""

    @property
    def quantize(self) -> str | None:
        """The run's simulated weight quantization (`run --quantize`; None: full precision)."""
        return (self.info and self.info.config.get("quantize")) or None

    def greedy(self, suite: str, temperature: float) -> bool:
        """Whether the run's generations of `suite` at `temperature` were greedy (RunInfo.greedy; without a
        run.json, temperature decides alone)."""
        return self.info.greedy(suite, temperature) if self.info else float(temperature) == 0

    def backend(self, method: str) -> str:
        """Whose engine decoded `method` as run.json records it (the project's where it does not say)."""
        methods = self.info.methods if self.info else {}
        return methods.get(method, {}).get("backend") or BACKEND


def load_runs(directories: list[str | os.PathLike]) -> list[Run]:
    runs = []
    for directory in directories:
        directory = Path(directory)
        info = load_run(directory) if (directory / RUN).exists() else None
        runs.append(Run(directory, info, read_records(directory)))
    return runs


def generations(runs: list[Run]) -> pd.DataFrame:
    """The successful generations of all runs, one row each, with `run` and `model` columns added, and the
    backend from run.json where a record does not say (records from before issue 28)."""
    rows = [
        {
            **r,
            "run": str(run.directory),
            "model": run.model,
            "base_model": run.base_model,
            "backend": r.get("backend") or run.backend(r["method"]),
            "quantize": run.quantize,
            "greedy": run.greedy(r["suite"], r["temperature"]),
        }
        for run in runs
        for r in run.records
        if r["status"] == "ok"
    ]
    df = pd.DataFrame.from_records(rows)
    if df.empty:
        return df
    df = df.reindex(columns=list(dict.fromkeys([*df.columns, *TELEMETRY_COLUMNS, "tags"])))
    # Records before tags were recorded have none; a category (Spec-Bench's) is the one tag reports group by.
    df["category"] = df.tags.map(lambda tags: tags.get("category") if isinstance(tags, dict) else None)
    return df


def units(df: pd.DataFrame) -> pd.DataFrame:
    """Per work unit (model, temperature, method, suite, item, sample): tokens, time, forwards, cycles,
    accepted drafts, the score, and per-unit tokens/s (tokens / wall time, Spec-Bench's per-question rate)."""
    if df.empty:
        return pd.DataFrame()
    df = df.assign(
        forwards=df.ar_forwards + df.draft_forwards,
        cycles=df.accepted.map(len),
        accepted_sum=df.accepted.map(sum),
    )
    # A unit of one run's model and temperature (the report reads several runs); a method's name and
    # losslessness come along with it.
    keys = ["model", "temperature", *UNIT, "method_name", "lossless"]
    out = df.groupby(keys, dropna=False, sort=False).agg(
        tokens=("new_tokens", "sum"),
        wall_s=("wall_s", "sum"),
        forwards=("forwards", "sum"),
        cycles=("cycles", "sum"),
        accepted=("accepted_sum", "sum"),
        correct=("score_correct", "last"),
        context_bucket=("context_bucket", "first"),
        category=("category", "first"),
    )
    out = out.reset_index()
    out["tokens_per_s"] = out.tokens / out.wall_s
    return out


def read_json_if_present(path: Path) -> object | None:
    return json.loads(path.read_text()) if path.is_file() else None
