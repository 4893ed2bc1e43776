"""Where the project's shipped artefacts live: the tiny model family, suite files, reference results.

They sit at the top of a source checkout (`models/`, `suites/`, `results/`), next to the packages; an
installed copy finds them through the checkout it was installed from (`pip install -e .`), or through
$ORTHRUS_HOME pointing at such a checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("ORTHRUS_HOME") or Path(__file__).resolve().parents[1])
TINY_DIR = PROJECT_ROOT / "models" / "tiny"
SUITES_DIR = PROJECT_ROOT / "suites"
# The embedded default: what every command uses when no --model is given.
DEFAULT_MODEL = TINY_DIR / "orthrus"


def default_model() -> Path:
    if not (DEFAULT_MODEL / "config.json").is_file():
        raise FileNotFoundError(
            f"the embedded default model is not at {DEFAULT_MODEL}: run from a source checkout installed with "
            "`pip install -e .`, set ORTHRUS_HOME to one, or pass --model"
        )
    return DEFAULT_MODEL


# How run.json names a checkpoint (its `models` entries and each method's `checkpoints`), so that the name means
# something on another machine: "repository", a path relative to the checkout (models/tiny/orthrus); "hub", a
# hub id and the revision of the snapshot it was loaded from; "local", an absolute path (anywhere else). The
# weights' sha256 beside it says what was loaded, wherever the name points now.
REPOSITORY, HUB, LOCAL = "repository", "hub", "local"


def checkpoint_name(directory: str | os.PathLike) -> dict:
    """{"path", "origin", "revision"} of a loaded checkpoint directory. A hub cache snapshot
    (`.../models--owner--name/snapshots/<revision>`) is named by its hub id and revision, even where the cache
    lies inside the checkout; a directory inside the checkout (PROJECT_ROOT) by its path relative to it;
    anything else by its absolute path."""
    absolute = Path(os.path.abspath(directory))  # not resolved: a snapshot's files are links into the blobs
    parts = absolute.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return {
            "path": parts[-3].removeprefix("models--").replace("--", "/"),
            "origin": HUB,
            "revision": parts[-1],
        }
    try:
        relative = absolute.resolve().relative_to(PROJECT_ROOT.resolve())
    except ValueError:
        return {"path": str(absolute), "origin": LOCAL, "revision": None}
    return {"path": relative.as_posix(), "origin": REPOSITORY, "revision": None}


def checkpoint_reference(directory: str | os.PathLike) -> str:
    """One string for a loaded checkpoint directory, as run.json's methods' `checkpoints` hold it: the
    repository-relative or absolute path, or `owner/name@revision` for a hub snapshot (which
    orthrus_core.checkpoint.resolve loads at that revision)."""
    return reference(checkpoint_name(directory))


def reference(name: dict) -> str:
    """The string of a checkpoint_name: its path, with `@revision` for a hub snapshot."""
    return f"{name['path']}@{name['revision']}" if name.get("origin") == HUB else name["path"]


def checkpoint_location(path: str, origin: str | None = None, revision: str | None = None) -> str:
    """What loads here (load_target, orthrus_core.checkpoint.resolve) the checkpoint run.json names by `path`
    and `origin`: a repository-relative path against this checkout (PROJECT_ROOT); a hub id at its revision
    (`owner/name@revision`); an absolute path, or any path of a run.json from before checkpoints were named so
    (no origin), as it is."""
    if origin == REPOSITORY:
        return str(PROJECT_ROOT / path)
    if origin == HUB:
        return f"{path}@{revision}" if revision and "@" not in path else path
    return path
