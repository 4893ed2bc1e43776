"""The results store: one directory per run, `run.json` (`RunInfo`: provenance and configuration) and
`records.jsonl`.

Records (harness.records: the schema) are appended one generation per line; all lines of one work unit (the
turns of one item by one method) go out in a single write followed by flush and fsync, so after any stop
(Ctrl-C, kill -9, power loss, a full disk) the file holds complete units followed by at most the unfinished
unit it was writing. Nothing else is ever accepted in silence: every line read is checked (`scan`) against
the record schema (every field of its type) and against the run its run.json describes (its suite, method,
item, sample, turns, generation settings and seed, and the config hash the store stamps on it); that
unfinished tail, which only a run whose writer stopped can have, is left out by readers and cut by
`open_run(..., resume=True)`; any other bad line (garbled, not a record, a record of another run, a unit cut
short in the middle, a unit written twice, damage at the end of a complete run) stops every reader and resume
with the file and line named, and `repair` moves such lines to records.rejected.jsonl, keeping every good
record.

A directory's identity is fixed when it is made: run.json is written before records.jsonl, a resume must
match its configuration and its shard (a whole run stays whole, shard i/n stays i/n), and records without a
run.json cannot be resumed.

One process writes a directory at a time (`WriterLock`: an flock the kernel releases when its holder dies):
a run, a repair, a verify writing verdicts.json, a merge. Files are replaced atomically
(orthrus_core.jsonfile's `replace_file` and `write_json`): a failed write leaves the old file and no partial one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from harness.paths import checkpoint_location
from harness.records import BACKEND, Record, schema_problem, unit_key, unit_name, upgraded
from harness.run.seeds import generation_seed
from orthrus_core.jsonfile import json_safe, replace_file, write_json
from orthrus_core.params import SamplingParams

RECORDS = "records.jsonl"
RUN = "run.json"
RETRIED = "retried-errors.jsonl"  # the error records of units that --retry-failed ran again
REJECTED = "records.rejected.jsonl"  # the bad lines `repair` moved out of records.jsonl, as they were
LOCK = ".writer.lock"  # held (flock) by the one process writing the directory; says who it is


# The suite settings a run may override for every suite it runs (harness.run.spec.RunSpec.generation).
OVERRIDES = ("temperature", "top_k", "top_p", "max_new_tokens")


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
    # name -> {config, hash, data_origin, items}: items (added with issue 37) maps each item id the run (or this
    # shard) decodes to its number of turns
    suites: dict = field(default_factory=dict)
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
        methods = {label: _method_now(m) for label, m in data.get("methods", {}).items()}
        return cls(**{"config_hash": "", **data, "methods": methods})

    def to_dict(self) -> dict:
        optional = ("launch", "merged_from", "compiles")
        return {k: v for k, v in asdict(self).items() if v is not None or k not in optional}

    def generation(self, suite: str) -> dict:
        """The generation settings the run used for `suite` (OVERRIDES: temperature, top_k, top_p,
        max_new_tokens): the run's override where it gave one, else the suite file's [generation] table as
        run.json records it, the rule of harness.run.spec.RunSpec.generation; None where run.json says neither."""
        table = self.suites.get(suite, {}).get("config", {}).get("generation", {})
        return {k: table.get(k) if self.config.get(k) is None else self.config[k] for k in OVERRIDES}

    def greedy(self, suite: str, temperature: float | None = None) -> bool:
        """Whether the run decoded `suite` (at `temperature`, a record's; default the run's) greedily:
        orthrus_core.params.SamplingParams.greedy of its settings (T = 0, or one that leaves one token, such as
        top-k 1); top-k and top-p disabled where run.json does not say, False where the temperature is unknown."""
        settings = self.generation(suite)
        temperature = settings["temperature"] if temperature is None else temperature
        if temperature is None:
            return False
        top_k, top_p = settings["top_k"], settings["top_p"]
        try:
            return SamplingParams(float(temperature), top_k or 0, 1.0 if top_p is None else top_p).greedy
        except (TypeError, ValueError):  # a setting SamplingParams refuses: the temperature still says
            return float(temperature) == 0

    @property
    def shard_name(self) -> str:
        index, count = self.shard
        return "a whole run" if count == 1 else f"shard {index}/{count} of a run"

    @property
    def target_path(self) -> str | None:
        """The run's target checkpoint as it loads here (load_target): a repository-relative path against this
        checkout, a hub id at its revision, an absolute path (a run.json from before checkpoints were named so
        holds one) as it is (harness.paths.checkpoint_location)."""
        target = next((m for m in self.models if m.get("role") == "target"), None)
        if target is None:
            return None
        return checkpoint_location(target["path"], target.get("origin"), target.get("revision"))


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
    record: dict | None = None  # the record it holds, once read and checked against the schema and the run


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
    newline_missing: bool = False  # the last line is a good record without its newline (resume adds it)

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


def scan(path: Path, run: RunInfo | None = None) -> Scan:
    """Read a records.jsonl whole (see Scan); every line is checked against the schema and, given the run's
    run.json, against the run (`not_of_run`). A tail a stopped writer left is a tail only where a writer can
    have stopped: in a run that run.json calls complete, it is damage."""
    data = path.read_bytes()
    lines = split_lines(data)
    unfinished = lines[-1] if lines and not data.endswith(b"\n") else None  # its writer stopped inside it
    records: list[dict] = []
    record_lines: list[int] = []
    first_copy: dict[tuple, int] = {}  # unit -> the line its first copy starts at
    good_end, settled = 0, 0  # the end of the last complete unit, and the index of the line after it
    pending: list[tuple[Line, dict]] = []  # the lines of the unit being read
    for index, line in enumerate(lines):
        record, why_not = line_record(line, line is unfinished, run)
        if record is None:
            cut_short(pending, why_not)
            continue
        line.record = record
        if pending and (unit_key(pending[0][1]) != unit_key(record) or record["turn"] != len(pending)):
            cut_short(pending, "the rest of its unit missing")
        if record["turn"] != len(pending):
            line.problem = f"turn {record['turn']} of {record['turns']} of {unit_name(record)}: its earlier turns missing"
            continue
        pending.append((line, record))
        if len(pending) < record["turns"]:
            continue
        key = unit_key(record)
        if key in first_copy:
            for copy, _ in pending:
                copy.problem = (
                    f"{unit_name(record)} written again (its first copy starts at line {first_copy[key]})"
                )
        else:
            first_copy[key] = pending[0][0].number
            records += [r for _, r in pending]
            record_lines += [copy.number for copy, _ in pending]
        pending.clear()
        good_end, settled = line.end, index + 1
    bad = [line for line in lines[:settled] if line.problem is not None]
    tail = lines[settled:]
    cut_short(pending, "its unit unfinished")
    if not writer_stopped(tail, run):
        bad, tail = bad + tail, []
    newline_missing = unfinished is not None and unfinished.number in record_lines
    return Scan(path, records, record_lines, good_end, bad, tail, newline_missing)


def split_lines(data: bytes) -> list[Line]:
    """The file's lines, numbered from 1, each with the byte offset after it; none after a final newline."""
    lines: list[Line] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        offset = min(offset + len(raw) + 1, len(data))
        lines.append(Line(number, raw, offset))
    if lines[-1].raw == b"":  # the file is empty or ends with a newline: nothing after it
        lines.pop()
    return lines


def line_record(line: Line, unfinished: bool, run: RunInfo | None) -> tuple[dict | None, str]:
    """(the line's record, "") where it is one of the run's records; else (None, what that makes of the rest of
    its unit), the line's problem set. `unfinished`: the line is the last one, without its newline."""
    try:
        record = upgraded(json.loads(line.raw, parse_constant=_refuse_constant))
    except ValueError as exc:  # not JSON (UnicodeDecodeError and JSONDecodeError are ValueErrors)
        unreadable = f"not valid JSON ({exc})"
        line.problem = "an unfinished line (no newline after it)" if unfinished else unreadable
        line.unreadable = True
        return None, "the rest of its unit unreadable"
    problem = schema_problem(record)
    if problem is not None:
        line.problem = f"not an orthrus-bench record ({problem}; the schema is harness/records.py)"
        line.unreadable = unfinished
        return None, "the rest of its unit not a record"
    problem = run and not_of_run(record, run)
    if problem:
        line.problem = f"a record of another run: {problem} (run.json)"
        return None, "the rest of its unit not of this run"
    return record, ""


def cut_short(pending: list[tuple[Line, dict]], reason: str) -> None:
    """The lines of an incomplete unit marked bad, saying why it ended there; `pending` emptied."""
    for line, record in pending:
        line.problem = f"turn {record['turn']} of {record['turns']} of {unit_name(record)}: {reason}"
    pending.clear()


def writer_stopped(tail: list[Line], run: RunInfo | None) -> bool:
    """Whether the lines after the last complete unit are what a stopped writer leaves: turns 0, 1, ... of the
    unit it was writing, then at most one unreadable line; anything else is damage (the lines' problems then
    say so where run.json calls the run complete)."""
    written = [line.record for line in tail[: len(tail) - (bool(tail) and tail[-1].unreadable)]]
    stopped = all(
        r is not None and r["turn"] == turn and unit_key(r) == unit_key(written[0])
        for turn, r in enumerate(written)
    )
    if stopped and tail and run is not None and run.status == "complete":
        for line in tail:
            line.problem = (
                f"damage at the end of a complete run ({line.problem}): run.json says the run finished, so no "
                "writer stopped inside it"
            )
        return False
    return stopped


def _method_now(method: dict) -> dict:
    """A run.json method entry (and its engine_config) with the keys renamed since it was written given their
    names now (harness.records.RENAMED: `engine`, whose engine decoded it, is `backend`)."""
    method = upgraded(method)
    if isinstance(method.get("engine_config"), dict):
        method = {**method, "engine_config": upgraded(method["engine_config"])}
    return method


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not standard JSON")


def not_of_run(record: dict, run: RunInfo) -> str | None:
    """What makes a record (of the schema) not one of `run`'s, or None: its suite, method, item, sample or turns
    outside what the run selects, its generation settings or seed not the run's, or the config hash stamped on
    it another run's. What run.json does not record (an older run's items) goes unchecked."""
    suite, method, item, sample = record["suite"], record["method"], record["item_id"], record["sample"]
    if suite not in run.suites:
        return f"its suite {suite} is not one of the run's ({', '.join(run.suites)})"
    if method not in run.methods:
        return f"its method {method} is not one of the run's ({', '.join(run.methods)})"
    stamped = record.get("config_hash")
    if stamped is not None and stamped != run.config_hash:
        return f"it was written under config hash {stamped}, the run's is {run.config_hash}"
    known = run.methods[method]
    for key, recorded in (("method_name", known.get("name")), ("lossless", known.get("lossless"))):
        if recorded is not None and record[key] != recorded:
            return f"its {key} is {record[key]!r}, the run's {method} has {recorded!r}"
    backend, ran_in = record.get("backend", BACKEND), known.get("backend", BACKEND)
    if backend != ran_in:
        return f"its backend is {backend}, the run's {method} ran in {ran_in}"
    items = run.suites[suite].get("items")
    if not item.startswith(f"{suite}/") or (items is not None and item not in items):
        selected = f"the {len(items)} items" if items is not None else "the items"
        return f"its item {item} is not one of {selected} {run.shard_name} selects from {suite}"
    samples = run.config.get("samples", 1)
    if sample >= samples:
        return f"its sample {sample} is beyond the run's --samples {samples}"
    if record["status"] != "ok":
        return None
    if items is not None and record["turns"] != items[item]:
        return f"it says its item has {record['turns']} turn(s); the item the run decodes has {items[item]}"
    generation = run.generation(suite)
    temperature, limit = generation["temperature"], generation["max_new_tokens"]
    if temperature is not None and record["temperature"] != temperature:
        return f"its temperature is {record['temperature']}, the run's for {suite} is {temperature}"
    new, stop = record["new_tokens"], record["stop_reason"]
    if limit is not None and (new > limit or (stop == "length" and new != limit)):
        return f"it stopped at {new} new tokens ({stop}), the run's max_new_tokens for {suite} is {limit}"
    base = run.seeds.get("base")
    if base is not None and record["seed"] != generation_seed(base, item, sample, record["turn"]):
        return f"its seed is not the run's (--seed {base}) for its item, sample and turn"
    return None


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
    """An open results directory: its writer lock, the units done, records.jsonl open for appending, the config
    hash it stamps on every record it writes, and the run.json a resume found (`resumed`; None for a new run)."""

    def __init__(
        self,
        directory: Path,
        records: list[dict],
        lock: WriterLock,
        config_hash: str,
        resumed: RunInfo | None = None,
    ):
        self.directory = directory
        self.config_hash = config_hash
        self.resumed = resumed
        self.done = {unit_key(r) for r in records}
        self.records = records
        self._lock = lock
        self._file = open(directory / RECORDS, "ab")  # noqa: SIM115 (held for the whole run)

    def write_unit(self, records: Iterable[Record]) -> None:
        """Append one work unit's records in a single write, flushed and fsynced."""
        lines = [{**r.to_json(), "config_hash": self.config_hash} for r in records]
        payload = b"".join(record_line(r) for r in lines)
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


def record_line(record: dict) -> bytes:
    """One record as its records.jsonl line (standard JSON: a non-finite measurement is written null)."""
    return json.dumps(json_safe(record, infinity_as_text=False), allow_nan=False).encode() + b"\n"


def check_out(
    directory: str | os.PathLike,
    config_hash: str,
    shard: list[int] | tuple[int, int],
    *,
    resume: bool,
    retry_failed: bool = False,
) -> RunInfo | None:
    """Whether a run of `config_hash` (as shard i/n) may write `directory`: a new one (-> None), or with resume
    the same run's (-> its run.json). Reads only, so the runner asks before it loads anything (a refused resume
    must not wait for a model to load); `open_run` asks again under the writer lock."""
    if retry_failed and not resume:
        raise StoreError("--retry-failed re-runs the failed units of an existing run: pass --resume too")
    directory = Path(directory)
    beyond = next((d for d in (directory, *directory.parents) if os.path.lexists(d)), None)
    if beyond is not None and not beyond.is_dir():
        if beyond == directory:
            raise StoreError(f"--out {directory} is a file, not a directory: choose another --out")
        raise StoreError(f"--out {directory}: {beyond} is a file, not a directory; choose another --out")
    records_path = directory / RECORDS
    has_records = records_path.exists() and records_path.stat().st_size > 0
    if not (has_records or (directory / RUN).exists()):
        return None
    if not resume:
        raise StoreError(
            f"{directory} already holds a run: pass --resume to continue it, or choose another --out"
        )
    if not (directory / RUN).exists():
        raise StoreError(
            f"{directory} holds records but no {RUN}, so what made them (suites, methods, lengths, sampling) "
            f"is unknown and they cannot be resumed: restore {directory / RUN} from a copy, or choose "
            "another --out"
        )
    previous = load_run(directory)
    if previous.config_hash != config_hash:
        raise StoreError(
            f"{directory} holds a run with a different configuration (config hash "
            f"{previous.config_hash} vs {config_hash}); resume it with the same suites, methods, "
            f"model and settings, or choose another --out"
        )
    if list(previous.shard) != list(shard):
        index, count = previous.shard
        asked = "without --shard" if count == 1 else f"with --shard {index}/{count}"
        wanted = RunInfo(config={}, config_hash=config_hash, shard=list(shard)).shard_name
        raise StoreError(
            f"{directory} holds {previous.shard_name}, and this resume asks for {wanted}: a "
            f"directory is one whole run or one shard for its life. Resume it {asked}, or choose another "
            "--out"
        )
    return previous


def open_run(
    directory: str | os.PathLike, run: RunInfo, *, resume: bool, retry_failed: bool = False
) -> RunStore:
    """Create a results directory for `run` (its run.json written first, so that records never exist without
    the run they belong to), or with resume=True reopen one made with the same configuration and shard
    (`check_out`), holding its writer lock until `close`. Resume cuts the tail a stopped writer left (a partial
    unit) and refuses a records.jsonl with any other bad line (see `repair`). With retry_failed, the units
    that ended in an error are taken out of records.jsonl (into retried-errors.jsonl, so that nothing is
    lost) to be run again."""
    directory = Path(directory)
    check_out(directory, run.config_hash, run.shard, resume=resume, retry_failed=retry_failed)
    records_path = directory / RECORDS
    existed = directory.exists()
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
        previous = check_out(directory, run.config_hash, run.shard, resume=resume, retry_failed=retry_failed)
        if previous is None:
            save_run(directory, run)
            return RunStore(directory, [], lock, run.config_hash)
        records: list[dict] = []
        if records_path.exists():
            found = scan(records_path, previous)
            found.check()
            records = found.records
            with open(records_path, "r+b") as f:
                if found.tail:  # what the stopped writer left of the unit it was writing
                    f.truncate(found.good_end)
                elif found.newline_missing:  # a good last record: appends start on a line of their own
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")
                os.fsync(f.fileno())
        if retry_failed:
            records = _set_aside_failed_units(directory, records)
        return RunStore(directory, records, lock, run.config_hash, previous)
    except BaseException:
        lock.release()
        if not existed:
            for name in (RUN, LOCK):
                (directory / name).unlink(missing_ok=True)
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
        b"".join(record_line(r) for r in records if unit_key(r) in failed),
    )
    replace_file(directory / RECORDS, b"".join(record_line(r) for r in kept))
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
        found = scan(path, load_run(directory) if (directory / RUN).exists() else None)
        moved = found.bad + found.tail
        if moved:
            _append(directory / REJECTED, b"".join(line.raw + b"\n" for line in moved))
            lines = path.read_bytes().split(b"\n")
            replace_file(path, b"".join(lines[n - 1] + b"\n" for n in found.record_lines))
        return Repair(len(found.records), moved)


def read_records(directory: str | os.PathLike) -> list[dict]:
    """Every good record of a run, checked against its run.json where it has one: the complete units (the
    unfinished unit of a run still going, or stopped, is left out). A records.jsonl with any other bad line is a
    CorruptStoreError, never fewer records in silence."""
    directory = Path(directory)
    path = directory / RECORDS
    if not path.exists():
        raise StoreError(f"{directory} has no {RECORDS}: is it an orthrus-bench run directory?")
    found = scan(path, load_run(directory) if (directory / RUN).exists() else None)
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
