"""One run split across processes and joined again: `--shard i/n` keeps shard i of n (the items balanced by
expected cost, launch.balanced_shards); `merge` joins the shard directories of one run (same configuration, shards 0..n-1 once each)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from harness.records import unit_key, unit_name
from harness.store import (
    LOCK,
    RECORDS,
    RUN,
    RunInfo,
    WriterLock,
    add_compiles,
    load_run,
    read_records,
    record_line,
    replace_file,
    save_run,
)

from .spec import RunError


def parse_shard(text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise RunError(f"--shard must look like i/n (e.g. 0/4), not {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise RunError(f"--shard {text}: need 0 <= i < n")
    return i, n


def merge(shard_dirs: list[str | Path], out: str | Path) -> Path:
    """Join shard directories of one run (same config hash, shards i/n covering 0..n-1 once, each unit in one
    shard) into `out`. The merge is built and checked beside `out`, then renamed into place: a refused or
    failed merge leaves nothing behind. `out` may hold other things (a launched run's shards/), not a run."""
    if not shard_dirs:
        raise RunError("merge needs at least one shard directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out} is a file, not a directory; choose another --out")
    if (out / RECORDS).exists() or (out / RUN).exists():
        raise RunError(f"{out} already holds a run; choose another --out")
    runs = [load_run(d) for d in shard_dirs]
    hashes = {r.config_hash for r in runs}
    if len(hashes) != 1:
        raise RunError(f"the shards come from different configurations (config hashes {sorted(hashes)})")
    counts = {r.shard[1] for r in runs}
    indices = sorted(r.shard[0] for r in runs)
    if len(counts) != 1 or indices != list(range(counts.pop())):
        raise RunError(f"shards {[r.shard for r in runs]} do not cover i/n for i = 0..n-1 exactly once")
    incomplete = [str(d) for d, r in zip(shard_dirs, runs, strict=True) if r.status != "complete"]
    if incomplete:
        raise RunError(f"shard(s) not finished: {', '.join(incomplete)}; resume them first")
    records, owner = [], {}
    for directory in shard_dirs:
        for record in read_records(directory):  # each checked against its shard's run.json
            key = unit_key(record)
            if owner.setdefault(key, directory) != directory:
                raise RunError(
                    f"{unit_name(record)} is in both {owner[key]} and {directory}: shards of one run hold disjoint "
                    "units; nothing was written"
                )
            records.append(record)
    merged = _merged_run(shard_dirs, runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{out.name}.merging-", dir=out.parent))
    try:
        with WriterLock(building, "orthrus-bench merge"):
            save_run(building, merged)
            replace_file(building / RECORDS, b"".join(record_line(r) for r in records))
            read_records(building)  # the merge checked as every reader will read it
        (building / LOCK).unlink()
        if not out.exists() or not any(out.iterdir()):
            os.replace(building, out)  # the whole merge appears at once
        else:  # beside other things: records first, run.json last (a run.json holds its whole merge)
            os.replace(building / RECORDS, out / RECORDS)
            os.replace(building / RUN, out / RUN)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out


def _merged_run(shard_dirs: list[str | Path], runs: list) -> RunInfo:
    merged = dataclasses.replace(
        runs[0],
        shard=[0, 1],
        merged_from=[{"dir": str(d), **r.to_dict()} for d, r in zip(shard_dirs, runs, strict=True)],
        started=min(r.started for r in runs),
        finished=max(r.finished for r in runs),
        compiles=add_compiles(*(r.compiles for r in runs)),
        suites=_merged_suites(runs),
    )
    if any(r.launch for r in runs):  # launched processes: the launcher, and each rank's device and host
        merged.launch = {
            "launcher": (runs[0].launch or {}).get("launcher"),
            "world_size": len(runs),
            "ranks": [r.launch for r in runs],
        }
    return merged


def _merged_suites(runs: list) -> dict:
    """The shards' suites, each with the items of every shard (in shard order)."""
    merged = {name: dict(entry) for name, entry in runs[0].suites.items()}
    for name, entry in merged.items():
        if "items" in entry:
            entry["items"] = {item: turns for r in runs for item, turns in r.suites[name]["items"].items()}
    return merged
