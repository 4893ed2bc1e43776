"""Every JSON file the project writes, written one way: `write_json(path, obj)` replaces the file atomically
(`replace_file`) with standard JSON (`json_text`: no NaN or Infinity token, which strict parsers reject).
Torch-free and in the core, so that the core's checkpoint writers, the harness's stores and reports and the
benchmarks share it (the harness depends on the core, never the other way)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def json_safe(obj, *, infinity_as_text: bool = True):
    """JSON without NaN/inf (strict readers reject them): non-finite floats become None, or strings ("inf",
    "-inf") where an infinity means something (a statistic, a bound); without `infinity_as_text` (a record's
    measurements, which readers average) every non-finite float becomes None, not measured."""
    if isinstance(obj, dict):
        return {k: json_safe(v, infinity_as_text=infinity_as_text) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v, infinity_as_text=infinity_as_text) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) or not infinity_as_text else str(obj)
    return obj


def json_text(obj, **kwargs) -> str:
    """`obj` as standard JSON, every file and line the project writes: json_safe, then no NaN or Infinity
    token (allow_nan=False), which strict parsers reject."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def replace_file(path: Path, payload: bytes) -> None:
    """Replace `path` atomically: a reader sees the old file or the new one, never a mix, and a failed write
    (a full disk) leaves the old file and no partial one. The partial file is the process's own, so that two
    processes replacing one file (vLLM's digest memo, shared by a launch's shards) do not write into each
    other's."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    """Replace `path` atomically with `obj` as standard JSON (json_text, then a newline); values JSON has no
    type for (a Path, a dtype) written as their str."""
    replace_file(Path(path), (json_text(obj, indent=indent, default=str) + "\n").encode())
