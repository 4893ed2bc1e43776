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
