"""What a run is: `RunSpec` (suites, methods, model, settings), its defaults, and the generation settings it
uses for each suite."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from harness.suites.config import GenerationSettings

TINY_SUITES = ["tiny-math", "tiny-code", "tiny-chat"]
DEFAULT_METHODS = ["ar", "ar-hf", "orthrus", "eagle3", "dflash", "pld", "diffusion"]
DEFAULT_LIMIT = 8  # items per tiny suite when `run` is given no arguments: a few minutes on 2 CPU cores
# The suite settings a run may override for every suite it runs.
OVERRIDES = ("temperature", "top_k", "top_p", "max_new_tokens")
# RunSpec fields that say how a run ran rather than what it generated: outside its config.
SETTINGS = ("warmup", "telemetry", "data_dir", "engine", "batch_size", "continuous")


class RunError(Exception):
    """A run that cannot start: bad suite, method, checkpoint, shard or output directory."""


@dataclass
class RunSpec:
    suites: list[str] = field(default_factory=lambda: list(TINY_SUITES))
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    model: str | None = None  # checkpoint directory or hub id; None: the embedded tiny family
    dtype: str = "float32"
    device: str = "cpu"
    temperature: float | None = None  # None: each suite's own setting
    top_k: int | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    limit: int | None = None
    ids: list[str] | None = None  # dataset ids to keep (with or without the "<suite>/" prefix)
    samples: int = 1  # generations per item and method (> 1 for sampling-based verdicts)
    seed: int = 0
    warmup: int = 2
    telemetry: bool = True
    data_dir: str | None = None
    engine: str = "auto"  # orthrus_core.engine: auto | eager | compile | cudagraph
    batch_size: int | None = None  # B rows decoded together (orthrus_core.batch); None: one prompt at a time
    continuous: bool = False  # with batch_size: refill a finished row's slot at once (continuous batching)

    def config(self) -> dict:
        """What makes two runs' records comparable; hashed, and checked on --resume and merge. How the steps
        ran (the engine, telemetry) is in the run's settings, not here: it changes times, not tokens."""
        return {k: v for k, v in asdict(self).items() if k not in SETTINGS}


def generation_settings(suite: GenerationSettings, config: Mapping) -> GenerationSettings:
    """The settings a run uses for a suite: the suite file's [generation] with the run's non-null overrides
    in their place. `config` is `RunSpec.config()`, or the "config" of a finished run's run.json (verify)."""
    return dataclasses.replace(suite, **{k: config[k] for k in OVERRIDES if config.get(k) is not None})
