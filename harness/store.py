"""The results store: one directory per run, `run.json` (`RunInfo`: provenance and configuration) and
`records.jsonl`.

Records (harness.records: the schema) are appended one generation per line; all lines of one work unit (the turns of one item by one
method) go out in a single write followed by flush and fsync, so after any stop (Ctrl-C, kill -9, power
loss) the file holds complete units followed by at most one partial unit at its end. `open_run(...,
resume=True)` cuts that partial unit off, so no half-written line is ever accepted, and reports the units
already done, so none is run twice. Every line read is checked against the schema.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.records import Record, missing_fields, unit_key

RECORDS = "records.jsonl"
RUN = "run.json"
RETRIED = "retried-errors.jsonl"  # the error records of units that --retry-failed ran again


class StoreError(Exception):
    """A results directory that cannot be used as asked (exists without --resume, config mismatch...)."""


@dataclass(kw_only=True)
class RunInfo:
    """A run's run.json: what was asked for (`config`, hashed; `settings`, how it ran), how it ran (the engine
    as resolved on the device, versions, hardware, the launcher), what it used (suites, methods, checkpoints,
    seeds) and how far it got. Written by the runner, merged by `harness.run.shards`, read by verify and the
    report; `load_run` and `save_run` are its only reader and writer."""

    config: dict  # harness.run.spec.RunSpec.config(): what makes two runs' records comparable
    config_hash: str
    shard: list[int] = field(default_factory=lambda: [0, 1])
    settings: dict = field(default_factory=dict)  # the RunSpec fields outside its config (SETTINGS)
    engine: str = "eager"  # as resolved on the device; runs from before the engine existed ran eager
    command: list[str] = field(default_factory=list)
    git: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    hardware: dict = field(default_factory=dict)
    suites: dict = field(default_factory=dict)  # name -> {config, hash, data_origin}
    methods: dict = field(default_factory=dict)  # label -> {name, lossless, config, hash, checkpoints}
    models: list[dict] = field(default_factory=list)  # every checkpoint, by role ("target", "<label>:draft")
    seeds: dict = field(default_factory=dict)
    status: str = "running"  # running | complete | interrupted
    started: str | None = None
    finished: str | None = None
    resumed_from: int | None = None  # units already done when a --resume began
    launch: dict | None = None  # a launched run's launcher, rank, device, host and pid (run.launch)
    merged_from: list[dict] | None = None  # a merge of shard runs: each shard's directory and run.json

    @classmethod
    def from_dict(cls, data: dict, source: str = "run.json") -> RunInfo:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown or "config" not in data:
            problem = f"unknown keys {', '.join(unknown)}" if unknown else "no config"
            raise StoreError(
                f"{source} is not an orthrus-bench run.json ({problem}; the schema is harness.store.RunInfo)"
            )
        return cls(**{"config_hash": "", **data})

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("launch", "merged_from")}

    @property
    def target_path(self) -> str | None:
        """The local directory of the run's target checkpoint."""
        return next((m["path"] for m in self.models if m.get("role") == "target"), None)


def _complete_prefix(path: Path) -> tuple[int, list[dict]]:
    """Byte length of the longest prefix of complete units, and their records (each checked against the
    schema: a complete line that is not a record is an error, not a torn end)."""
    data = path.read_bytes()
    records: list[dict] = []
    good_end = 0  # end of the last complete unit
    offset = 0
    pending: list[dict] = []
    for number, line in enumerate(data.split(b"\n")[:-1], 1):  # after the last newline: never complete
        offset += len(line) + 1
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        missing = missing_fields(record) if isinstance(record, dict) else ["(not a JSON object)"]
        if missing:
            raise StoreError(
                f"{path}, line {number}: not an orthrus-bench record (it lacks {', '.join(missing[:6])}"
                f"{' ...' if len(missing) > 6 else ''}; the schema is harness/records.py)"
            )
        pending.append(record)
        if record["turn"] == record["turns"] - 1:
            if len({unit_key(r) for r in pending}) != 1 or len(pending) != record["turns"]:
                break
            records += pending
            pending = []
            good_end = offset
    return good_end, records


class RunStore:
    def __init__(self, directory: Path, records: list[dict]):
        self.directory = directory
        self.done = {unit_key(r) for r in records}
        self.records = records
        self._file = open(directory / RECORDS, "ab")  # noqa: SIM115 (held for the whole run)

    def write_unit(self, records: Iterable[Record]) -> None:
        """Append one work unit's records in a single write, flushed and fsynced."""
        lines = [r.to_json() for r in records]
        payload = b"".join(json.dumps(r, allow_nan=True).encode() + b"\n" for r in lines)
        self._file.write(payload)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.add(unit_key(lines[0]))
        self.records += lines

    def write_run(self, run: RunInfo) -> None:
        save_run(self.directory, run)

    def close(self) -> None:
        self._file.close()


def json_safe(obj):
    """JSON without NaN/inf (strict readers reject them): non-finite floats become None, or strings."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else str(obj)
    return obj


def write_json(path: Path, obj: dict) -> None:
    """Replace `path` atomically: a reader sees the old file or the new one, never a mix."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def open_run(
    directory: str | os.PathLike, *, resume: bool, config_hash: str, retry_failed: bool = False
) -> RunStore:
    """Create a results directory, or with resume=True reopen one made with the same configuration. With
    retry_failed, the units that ended in an error are taken out of records.jsonl (into retried-errors.jsonl,
    so that nothing is lost) to be run again."""
    if retry_failed and not resume:
        raise StoreError("--retry-failed re-runs the failed units of an existing run: pass --resume too")
    directory = Path(directory)
    records_path = directory / RECORDS
    if records_path.exists() or (directory / RUN).exists():
        if not resume:
            raise StoreError(
                f"{directory} already holds a run: pass --resume to continue it, or choose another --out"
            )
        previous = load_run(directory).config_hash if (directory / RUN).exists() else None
        if previous not in (None, config_hash):
            raise StoreError(
                f"{directory} holds a run with a different configuration (config hash "
                f"{previous} vs {config_hash}); resume it with the same suites, methods, "
                f"model and settings, or choose another --out"
            )
        records: list[dict] = []
        if records_path.exists():
            end, records = _complete_prefix(records_path)
            if end != records_path.stat().st_size:
                with open(records_path, "r+b") as f:
                    f.truncate(end)
                    os.fsync(f.fileno())
        if retry_failed:
            records = _set_aside_failed_units(directory, records)
        return RunStore(directory, records)
    directory.mkdir(parents=True, exist_ok=True)
    return RunStore(directory, [])


def _set_aside_failed_units(directory: Path, records: list[dict]) -> list[dict]:
    """Append the records of every unit with an error to RETRIED, then rewrite RECORDS without them
    (atomically: a crash leaves the old file or the new one); -> the records kept."""
    failed = {unit_key(r) for r in records if r["status"] != "ok"}
    if not failed:
        return records
    kept = [r for r in records if unit_key(r) not in failed]
    with open(directory / RETRIED, "ab") as f:
        f.write(b"".join(json.dumps(r).encode() + b"\n" for r in records if unit_key(r) in failed))
        f.flush()
        os.fsync(f.fileno())
    tmp = directory / f".{RECORDS}.partial"
    with open(tmp, "wb") as f:
        f.write(b"".join(json.dumps(r, allow_nan=True).encode() + b"\n" for r in kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / RECORDS)
    return kept


def read_records(directory: str | os.PathLike) -> list[dict]:
    """The complete units of a run (a partial unit at the end, from a run still going or killed, is left out)."""
    path = Path(directory) / RECORDS
    if not path.exists():
        raise StoreError(f"{directory} has no {RECORDS}: is it an orthrus-bench run directory?")
    return _complete_prefix(path)[1]


def load(directory: str | os.PathLike):
    """A run's records as a pandas DataFrame, one row per generation (turn); see docs/methodology.md."""
    import pandas as pd

    return pd.DataFrame.from_records(read_records(directory))


def load_run(directory: str | os.PathLike) -> RunInfo:
    path = Path(directory) / RUN
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise StoreError(
            f"{path} is not valid JSON ({exc}); it is the run's provenance, rewritten on --resume"
        ) from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} is not an orthrus-bench run.json (not a JSON object)")
    return RunInfo.from_dict(data, str(path))


def save_run(directory: str | os.PathLike, run: RunInfo) -> None:
    write_json(Path(directory) / RUN, run.to_dict())
