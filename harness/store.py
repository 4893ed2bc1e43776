"""The results store: one directory per run, `run.json` (`RunInfo`: provenance and configuration) and
`records.jsonl`.

Records (harness.records: the schema) are appended one generation per line; all lines of one work unit (the
turns of one item by one method) go out in a single write followed by flush and fsync, so after any stop
(Ctrl-C, kill -9, power loss, a full disk) the file holds complete units followed by at most the unfinished
unit it was writing. Nothing else is ever accepted in silence: every line read is checked (`scan`); that
unfinished tail is left out by readers and cut by `open_run(..., resume=True)`; any other bad line (garbled,
not a record, a unit cut short in the middle, a unit written twice) stops every reader and resume with the
file and line named, and `repair` moves such lines to records.rejected.jsonl, keeping every good record.

One process writes a directory at a time (`WriterLock`: an flock the kernel releases when its holder dies):
a run, a repair, a verify writing verdicts.json, a merge. Files are replaced atomically (`replace_file`): a
failed write leaves the old file and no partial one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.records import Record, missing_fields, unit_key

RECORDS = "records.jsonl"
RUN = "run.json"
RETRIED = "retried-errors.jsonl"  # the error records of units that --retry-failed ran again
REJECTED = "records.rejected.jsonl"  # the bad lines `repair` moved out of records.jsonl, as they were
LOCK = ".writer.lock"  # held (flock) by the one process writing the directory; says who it is


class StoreError(Exception):
    """A results directory that cannot be used as asked (exists without --resume, config mismatch...)."""


class CorruptStoreError(StoreError):
    """A records.jsonl with lines that are not good records, other than the tail a stopped writer leaves."""


class LockedError(StoreError):
    """Another process is writing the results directory."""


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
    # The project's compiles and graph captures (orthrus_core.compiled's ledger) per method: label -> {"warmup",
    # "generations"} -> {"count", "seconds", "by_kind"}, over every session of a resumed run and every shard of a
    # merged one; generations' are shapes warm-up had not compiled. None: a run from before it was recorded.
    compiles: dict | None = None

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
        optional = ("launch", "merged_from", "compiles")
        return {k: v for k, v in asdict(self).items() if v is not None or k not in optional}

    @property
    def target_path(self) -> str | None:
        """The local directory of the run's target checkpoint."""
        return next((m["path"] for m in self.models if m.get("role") == "target"), None)


def add_compiles(*counts: dict | None) -> dict | None:
    """RunInfo.compiles of several sessions or shards, added up per method and phase (None: none recorded)."""
    total: dict = {}
    for count in counts:
        for label, phases in (count or {}).items():
            for phase, c in phases.items():
                into = total.setdefault(label, {}).setdefault(
                    phase, {"count": 0, "seconds": 0.0, "by_kind": {}}
                )
                into["count"] += c["count"]
                into["seconds"] += c["seconds"]
                for kind, n in c["by_kind"].items():
                    into["by_kind"][kind] = into["by_kind"].get(kind, 0) + n
    return total if any(count is not None for count in counts) else None


@dataclass
class Line:
    number: int  # 1-based, as an editor shows it
    raw: bytes  # without its newline
    end: int  # byte offset just after it (and its newline)
    problem: str | None = None  # why it is not part of a good record; None for one that is
    unreadable: bool = False  # not JSON, or never finished (no newline): what a writer stopped inside leaves
    record: dict | None = None  # the record it holds, once read and checked against the schema


@dataclass
class Scan:
    """records.jsonl read whole: the good records (complete units, each once, in file order) and the lines of
    each, the bad lines (unreadable, not a record, an incomplete unit followed by others, a unit written
    again) and the tail a stopped writer leaves after the last complete unit (whole lines of an unfinished
    unit, then at most one unfinished line), which resume cuts and readers leave out."""

    path: Path
    records: list[dict]
    record_lines: list[int]  # the line number of each good record
    good_end: int  # byte offset after the last complete unit
    bad: list[Line]
    tail: list[Line]

    def check(self) -> None:
        """A CorruptStoreError naming the first bad line, how many there are and what to do, if there is one."""
        if not self.bad:
            return
        first, more = self.bad[0], self.bad[1:]
        after = sum(1 for n in self.record_lines if n > first.number)
        after = f" ({after} of them after that line)" if after else ""
        numbers = ", ".join(str(b.number) for b in more[:8]) + (" ..." if len(more) > 8 else "")
        others = f"; {len(more)} more bad line(s): {numbers}" if more else ""
        directory = self.path.parent
        raise CorruptStoreError(
            f"{self.path}, line {first.number}: {first.problem}{others}. The {len(self.records)} good records"
            f"{after} are intact; nothing was changed. `orthrus-bench repair "
            f"{directory}` moves the bad lines to {directory / REJECTED} and keeps every good record (or "
            "restore the file from a copy)"
        )


def scan(path: Path) -> Scan:
    """Read a records.jsonl whole (see Scan); every line is checked against the schema."""
    data = path.read_bytes()
    lines: list[Line] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        offset = min(offset + len(raw) + 1, len(data))
        lines.append(Line(number, raw, offset))
    if lines[-1].raw == b"":  # the file is empty or ends with a newline: nothing after it
        lines.pop()
    unfinished = lines[-1] if lines and not data.endswith(b"\n") else None  # its writer stopped inside it
    records: list[dict] = []
    record_lines: list[int] = []
    first_copy: dict[tuple, int] = {}  # unit -> the line its first copy starts at
    good_end, settled = 0, 0  # the end of the last complete unit, and the index of the line after it
    pending: list[tuple[Line, dict]] = []  # the lines of the unit being read

    def cut_short(reason: str) -> None:
        for line, record in pending:
            line.problem = f"turn {record['turn']} of {record['turns']} of {_unit_name(record)}: {reason}"
        pending.clear()

    for index, line in enumerate(lines):
        if line is unfinished:
            cut_short("its unit unfinished")
            line.problem, line.unreadable = "an unfinished line (no newline after it)", True
            continue
        try:
            record = json.loads(line.raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            cut_short("the rest of its unit unreadable")
            line.problem, line.unreadable = f"not valid JSON ({exc})", True
            continue
        missing = missing_fields(record) if isinstance(record, dict) else ["(not a JSON object)"]
        if missing:
            cut_short("the rest of its unit not a record")
            line.problem = (
                f"not an orthrus-bench record (it lacks {', '.join(missing[:6])}"
                f"{' ...' if len(missing) > 6 else ''}; the schema is harness/records.py)"
            )
            continue
        line.record = record
        if pending and (unit_key(pending[0][1]) != unit_key(record) or record["turn"] != len(pending)):
            cut_short("the rest of its unit missing")
        if record["turn"] != len(pending):
            line.problem = f"turn {record['turn']} of {record['turns']} of {_unit_name(record)}: its earlier turns missing"
            continue
        pending.append((line, record))
        if len(pending) < record["turns"]:
            continue
        key = unit_key(record)
        if key in first_copy:
            for copy, _ in pending:
                copy.problem = (
                    f"{_unit_name(record)} written again (its first copy starts at line {first_copy[key]})"
                )
        else:
            first_copy[key] = pending[0][0].number
            records += [r for _, r in pending]
            record_lines += [copy.number for copy, _ in pending]
        pending.clear()
        good_end, settled = line.end, index + 1
    bad = [line for line in lines[:settled] if line.problem is not None]
    tail = lines[settled:]
    cut_short("its unit unfinished")
    # What a stopped writer leaves: turns 0, 1, ... of the unit it was writing, then at most one unreadable line;
    # anything else after the last complete unit is damage.
    written = [line.record for line in tail[: len(tail) - (bool(tail) and tail[-1].unreadable)]]
    stopped = all(
        r is not None and r["turn"] == turn and unit_key(r) == unit_key(written[0])
        for turn, r in enumerate(written)
    )
    if not stopped:
        bad, tail = bad + tail, []
    return Scan(path, records, record_lines, good_end, bad, tail)


def _unit_name(record: dict) -> str:
    return f"the unit of item {record['item_id']} by {record['method']} (sample {record['sample']})"


class WriterLock:
    """The one writer of a results directory: an advisory flock on OUT/.writer.lock, held while the writer
    lives. The kernel drops it when the process ends however it ends (kill -9 included), so a stale lock never
    blocks; the file says who holds it (pid, host, command, since) for the error a second writer gets. Per
    directory: the shard directories of a launched run each have their own."""

    def __init__(self, directory: str | os.PathLike, what: str):
        import fcntl

        directory = Path(directory)
        path = directory / LOCK
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 4096, 0).decode(errors="replace")
            os.close(self._fd)
            try:
                h = json.loads(holder)
                who = f"pid {h['pid']} on {h['host']} ({h['what']}, since {h['since']})"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise LockedError(
                f"{directory} is being written by {who}: wait for it to finish or stop it, or choose another "
                "--out (one writer per results directory)"
            ) from None
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": what, "since": since})
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, me.encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunStore:
    """An open results directory: its writer lock, the units done, records.jsonl open for appending, and the
    run.json a resume found (`resumed`; None for a new run)."""

    def __init__(
        self, directory: Path, records: list[dict], lock: WriterLock, resumed: RunInfo | None = None
    ):
        self.directory = directory
        self.resumed = resumed
        self.done = {unit_key(r) for r in records}
        self.records = records
        self._lock = lock
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
        try:
            self._file.close()
        finally:
            self._lock.release()


def json_safe(obj):
    """JSON without NaN/inf (strict readers reject them): non-finite floats become None, or strings."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else str(obj)
    return obj


def replace_file(path: Path, payload: bytes) -> None:
    """Replace `path` atomically: a reader sees the old file or the new one, never a mix, and a failed write
    (a full disk) leaves the old file and no partial one."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    """Replace `path` atomically with `obj` as JSON (replace_file)."""
    replace_file(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def open_run(
    directory: str | os.PathLike, *, resume: bool, config_hash: str, retry_failed: bool = False
) -> RunStore:
    """Create a results directory, or with resume=True reopen one made with the same configuration, holding
    its writer lock until `close`. Resume cuts the tail a stopped writer left (a partial unit) and refuses a
    records.jsonl with any other bad line (see `repair`). With retry_failed, the units that ended in an error
    are taken out of records.jsonl (into retried-errors.jsonl, so that nothing is lost) to be run again."""
    if retry_failed and not resume:
        raise StoreError("--retry-failed re-runs the failed units of an existing run: pass --resume too")
    directory = Path(directory)
    records_path = directory / RECORDS
    existed = directory.exists()
    if existed and not directory.is_dir():
        raise StoreError(f"--out {directory} is a file, not a directory: choose another --out")
    created = [d for d in (directory, *directory.parents) if not os.path.lexists(d)]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(directory, "orthrus-bench " + " ".join(sys.argv[1:]))
    except OSError as exc:  # nothing written: the directories this call made go again
        for made in created:
            with contextlib.suppress(OSError):
                made.rmdir()
        raise StoreError(_unwritable(directory, exc)) from None
    try:
        if not (records_path.exists() or (directory / RUN).exists()):
            return RunStore(directory, [], lock)
        if not resume:
            raise StoreError(
                f"{directory} already holds a run: pass --resume to continue it, or choose another --out"
            )
        previous = load_run(directory) if (directory / RUN).exists() else None
        if previous is not None and previous.config_hash != config_hash:
            raise StoreError(
                f"{directory} holds a run with a different configuration (config hash "
                f"{previous.config_hash} vs {config_hash}); resume it with the same suites, methods, "
                f"model and settings, or choose another --out"
            )
        records: list[dict] = []
        if records_path.exists():
            found = scan(records_path)
            found.check()
            records = found.records
            if found.tail:  # what the stopped writer left of the unit it was writing
                with open(records_path, "r+b") as f:
                    f.truncate(found.good_end)
                    os.fsync(f.fileno())
        if retry_failed:
            records = _set_aside_failed_units(directory, records)
        return RunStore(directory, records, lock, previous)
    except BaseException:
        lock.release()
        if not existed:
            (directory / LOCK).unlink(missing_ok=True)
            directory.rmdir()
        raise


def _unwritable(directory: Path, exc: OSError) -> str:
    """Why `directory` cannot be created or locked, and what to do: --resume would meet the same wall."""
    where = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((d for d in directory.parents if d.exists() and not d.is_dir()), None)
        if blocker is not None:
            return f"--out {directory}: {blocker} is a file, not a directory; choose another --out"
    if exc.errno in (errno.EACCES, errno.EPERM):
        # the directory itself, or the deepest one that exists and would hold it
        fix = next((d for d in (directory, *directory.parents) if d.is_dir()), directory)
        return (
            f"--out {directory} cannot be written ({where}); nothing was written: make {fix} writable (e.g. "
            f"chmod -R u+w {fix}) or choose another --out"
        )
    if exc.errno == errno.EROFS:
        return f"--out {directory} is on a read-only filesystem ({where}); choose another --out"
    return (
        f"--out {directory} cannot be created or locked ({where}); nothing was written: choose another --out"
    )


def _set_aside_failed_units(directory: Path, records: list[dict]) -> list[dict]:
    """Append the records of every unit with an error to RETRIED, then rewrite RECORDS without them
    (atomically: a crash leaves the old file or the new one); -> the records kept."""
    failed = {unit_key(r) for r in records if r["status"] != "ok"}
    if not failed:
        return records
    kept = [r for r in records if unit_key(r) not in failed]
    _append(
        directory / RETRIED,
        b"".join(json.dumps(r).encode() + b"\n" for r in records if unit_key(r) in failed),
    )
    replace_file(directory / RECORDS, b"".join(json.dumps(r, allow_nan=True).encode() + b"\n" for r in kept))
    return kept


def _append(path: Path, payload: bytes) -> None:
    with open(path, "ab") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


@dataclass
class Repair:
    kept: int  # good records left in records.jsonl
    moved: list[Line]  # the lines moved to REJECTED


def repair(directory: str | os.PathLike) -> Repair:
    """Move every line of records.jsonl that is not part of a good record (bad lines, later copies of a unit,
    the tail of a stopped writer) to records.rejected.jsonl, as they were, and keep every good record in its
    order: first the rejected lines are appended and synced, then records.jsonl is replaced atomically, so a
    crash at any point loses nothing. Takes the writer lock."""
    directory = Path(directory)
    path = directory / RECORDS
    if not path.exists():
        raise StoreError(f"{directory} has no {RECORDS}: is it an orthrus-bench run directory?")
    with WriterLock(directory, "orthrus-bench repair"):
        found = scan(path)
        moved = found.bad + found.tail
        if moved:
            _append(directory / REJECTED, b"".join(line.raw + b"\n" for line in moved))
            lines = path.read_bytes().split(b"\n")
            replace_file(path, b"".join(lines[n - 1] + b"\n" for n in found.record_lines))
        return Repair(len(found.records), moved)


def read_records(directory: str | os.PathLike) -> list[dict]:
    """Every good record of a run: the complete units (the unfinished unit of a run still going, or stopped, is
    left out). A records.jsonl with any other bad line is a CorruptStoreError, never fewer records in silence."""
    path = Path(directory) / RECORDS
    if not path.exists():
        raise StoreError(f"{directory} has no {RECORDS}: is it an orthrus-bench run directory?")
    found = scan(path)
    found.check()
    return found.records


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
