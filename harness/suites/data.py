"""Dataset resolution for suites: the local data folder first, then the Hugging Face hub.

A data folder is laid out like the project's ``shared/data`` (see its MANIFEST.md). It is given with
``--data-dir`` or the ``ORTHRUS_DATA_DIR`` environment variable; when a suite's files are in it they are
read with ``datasets``' JSON builder, with no network access. Otherwise the suite's hub dataset is
loaded with ``datasets.load_dataset``. When neither works the error names both places looked at.

Records come back as dicts keyed by the suite's field names (not the source's column names), plus
``"id"``: the value of the id column, or the record's position.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from .config import BuiltinSource, DatasetSpec, HubSource, LocalSource

DATA_DIR_ENV = "ORTHRUS_DATA_DIR"


class DatasetUnavailableError(RuntimeError):
    """Neither the data folder nor the hub could provide a suite's dataset."""


class DatasetFieldError(ValueError):
    """A dataset lacks a column that the suite's field mapping names."""


@dataclass(frozen=True)
class LoadedRecords:
    records: list[dict]
    origin: str  # where they came from, for provenance: "local: <paths>", "hub: <id> ...", "builtin: <fn>"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The data folder: ``data_dir`` if given, else ``$ORTHRUS_DATA_DIR``, else None."""
    chosen, origin = (
        (data_dir, "--data-dir") if data_dir is not None else (os.environ.get(DATA_DIR_ENV), DATA_DIR_ENV)
    )
    if not chosen:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DatasetUnavailableError(
            f"data folder {path} (from {origin}) does not exist or is not a folder; point it at a folder "
            f"laid out like shared/data (see its MANIFEST.md)"
        )
    return path


def load_records(spec: DatasetSpec, data_dir: Path | None, suite_name: str) -> LoadedRecords:
    if spec.builtin is not None:
        return _load_builtin(spec, spec.builtin, suite_name)

    local_problem = _local_problem(spec.local, data_dir)
    if local_problem is None:
        paths = [data_dir / file for file in spec.local.files]
        rows = _read_local_files(paths)
        if spec.local.keep is not None:
            rows = _keep_range(rows, spec.local.keep, f"local files of suite {suite_name!r}")
        origin = "local: " + ", ".join(str(path) for path in paths)
        return LoadedRecords(_map_fields(rows, spec, spec.local.fields, spec.local.id_field, origin), origin)

    if spec.hub is None:
        raise DatasetUnavailableError(
            f"suite {suite_name!r} reads only from the data folder and {local_problem}. "
            f"Point --data-dir or {DATA_DIR_ENV} at a folder laid out like shared/data (see its MANIFEST.md)."
        )
    try:
        rows = _read_hub(spec.hub)
    except Exception as exc:  # whatever the hub raised is reported with the local problem
        raise DatasetUnavailableError(
            f"the dataset of suite {suite_name!r} is neither present locally nor reachable:\n"
            f"  - data folder: {local_problem}\n"
            f"  - {spec.hub.describe()}: {type(exc).__name__}: {exc}\n"
            f"Point --data-dir or {DATA_DIR_ENV} at a folder laid out like shared/data (see its "
            f"MANIFEST.md), or allow access to the Hugging Face hub."
        ) from exc
    origin = "hub: " + spec.hub.describe()
    return LoadedRecords(_map_fields(rows, spec, spec.hub.fields, spec.hub.id_field, origin), origin)


def _local_problem(local: LocalSource | None, data_dir: Path | None) -> str | None:
    """Why the data folder cannot serve this dataset, or None if it can."""
    if local is None:
        return "the suite names no local files"
    if data_dir is None:
        return (
            f"no data folder was given (--data-dir or {DATA_DIR_ENV}); it would need {', '.join(local.files)}"
        )
    missing = [str(data_dir / file) for file in local.files if not (data_dir / file).is_file()]
    if missing:
        return f"{', '.join(missing)} not found"
    return None


def _read_local_files(paths: list[Path]) -> list[dict]:
    import datasets
    import datasets.config

    # The packaged JSON builder reads JSON, JSON Lines and gzip files, but unless told otherwise it also
    # pings the hub's S3 bucket to count a "download". Both switches are read at call time.
    saved = datasets.config.HF_HUB_OFFLINE, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    datasets.config.HF_HUB_OFFLINE, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = True, False
    try:
        dataset = datasets.load_dataset("json", data_files=[str(path) for path in paths], split="train")
    finally:
        datasets.config.HF_HUB_OFFLINE, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = saved
    return dataset.to_list()


def _read_hub(hub: HubSource) -> list[dict]:
    import datasets

    return datasets.load_dataset(hub.id, hub.config, split=hub.split).to_list()


def _keep_range(rows: list[dict], keep, where: str) -> list[dict]:
    if rows and keep.field not in rows[0]:
        raise DatasetFieldError(f"{where}: [dataset.local] keep names column {keep.field!r}, which they lack")
    return [row for row in rows if keep.minimum <= row[keep.field] <= keep.maximum]


def _map_fields(
    rows: list[dict], spec: DatasetSpec, fields: dict | None, id_field: str | None, origin: str
) -> list[dict]:
    fields = fields or spec.fields
    id_field = id_field or spec.id_field
    if not rows:
        raise DatasetFieldError(f"{origin}: the dataset has no records")
    columns = set(rows[0])
    needed = {**fields, **({"id": id_field} if id_field else {})}
    missing = {name: column for name, column in needed.items() if column not in columns}
    if missing:
        raise DatasetFieldError(
            f"{origin}: no column(s) {', '.join(f'{c!r} (for {n!r})' for n, c in missing.items())}; "
            f"its columns are {sorted(columns)}. Fix the field mapping in the suite file."
        )
    return [
        {"id": str(row[id_field]) if id_field else str(position), **{n: row[c] for n, c in fields.items()}}
        for position, row in enumerate(rows)
    ]


def _load_builtin(spec: DatasetSpec, builtin: BuiltinSource, suite_name: str) -> LoadedRecords:
    module_name, function_name = builtin.function.split(":")
    origin = f"builtin: {builtin.function}"
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise DatasetUnavailableError(
            f"suite {suite_name!r}: cannot import the record generator {builtin.function}: {exc}"
        ) from exc
    rows = list(function(**builtin.args))
    if not all(isinstance(row, dict) for row in rows):
        raise DatasetFieldError(f"{origin}: the generator must yield dicts (one record each)")
    return LoadedRecords(_map_fields(rows, spec, None, None, origin), origin)
