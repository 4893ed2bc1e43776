"""What a run is: `RunSpec` (suites, methods, model, settings), its defaults, and the generation settings it
uses for each suite: one typed value from the command line (or run.json, for verify) to the decoder."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from harness.method_spec import MethodSpec
from harness.methods import METHODS, OWN, backend_of
from harness.options import OptionError, check_device_name, check_positive, check_sampling
from harness.store import OVERRIDES
from harness.suites.config import GenerationSettings
from orthrus_core.quantize import check_format

TINY_SUITES = ["tiny-math", "tiny-code", "tiny-chat"]
# Every method of the project's engine (vLLM's are named: vllm-ar, ...), parsed once here
DEFAULT_METHODS = [MethodSpec.parse(name) for name in OWN]
DEFAULT_LIMIT = 8  # items per tiny suite when `run` is given no arguments: a few minutes on 2 CPU cores
# RunSpec fields that say how a run ran rather than what it generated: outside its config.
SETTINGS = (
    "warmup",
    "telemetry",
    "data_dir",
    "engine",
    "batch_size",
    "continuous",
    "tensor_parallel_size",
    "data_parallel_size",
)


class RunError(Exception):
    """A run that cannot start: bad suite, method, checkpoint, shard or output directory."""


@dataclass
class RunSpec:
    suites: list[str] = field(default_factory=lambda: list(TINY_SUITES))
    # The methods as written (text, or parsed already): each parsed here, once (harness.method_spec.MethodSpec),
    # and passed on parsed to the runner, its decoders and their records.
    methods: list[MethodSpec] = field(default_factory=lambda: list(DEFAULT_METHODS))
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
    batch_size: int | None = None  # B rows decoded together (orthrus_core.loop); None: one prompt at a time
    continuous: bool = False  # with batch_size: refill a finished row's slot at once (continuous batching)
    # How the vLLM methods' engines spread the target over devices (vLLM's own tensor and data parallelism); the
    # project's engine decodes on one device per process (several processes: a launcher and shards).
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    # Simulated weight quantization of the target and the drafters (orthrus_core.quantize: fp8-tensor,
    # fp8-channel, int8-channel, int4-group; None: full precision). In the config: it changes the tokens.
    quantize: str | None = None

    def __post_init__(self):
        self.methods = [MethodSpec.of(m) for m in self.methods]

    def check(self) -> None:
        """Every option that can be checked before anything is loaded (harness.options); the lengths against the
        model's positions and memory are checked once it is loaded (runner.prepare); the engine with the device
        it must run on, where the target is loaded (orthrus_core.engine.check_engine, before the weights)."""
        check_device_name(self.device)
        check_positive("--samples", self.samples)
        check_positive("--seed", self.seed, minimum=0)
        check_positive("--warmup", self.warmup, minimum=0)
        for flag, value in (
            ("--limit", self.limit),
            ("--max-new-tokens", self.max_new_tokens),
            ("--batch-size", self.batch_size),
            ("--tensor-parallel-size", self.tensor_parallel_size),
            ("--data-parallel-size", self.data_parallel_size),
        ):
            if value is not None:
                check_positive(flag, value)
        if max(self.tensor_parallel_size, self.data_parallel_size) > 1 and not any(
            backend_of(m) == "vllm" for m in self.methods
        ):
            raise OptionError(
                "--tensor-parallel-size and --data-parallel-size are vLLM's: give them with a vLLM method "
                f"({', '.join(m for m in METHODS if backend_of(m) == 'vllm')})"
            )
        try:
            check_format(self.quantize)
        except ValueError as exc:
            raise OptionError(f"--quantize: {exc}") from None
        if self.quantize is not None and any(backend_of(m) == "vllm" for m in self.methods):
            raise OptionError(
                "--quantize applies to the project's engine; vLLM loads the checkpoint itself: "
                "drop the vLLM methods or --quantize"
            )
        if self.continuous and self.batch_size is None:
            raise OptionError("--continuous needs --batch-size (or --batch-sizes)")
        check_sampling(
            0.0 if self.temperature is None else self.temperature,
            0 if self.top_k is None else self.top_k,
            1.0 if self.top_p is None else self.top_p,
            flags=True,
        )

    def config(self) -> dict:
        """What makes two runs' records comparable; hashed, and checked on --resume and merge. How the steps
        ran (the engine, telemetry) is in the run's settings, not here: it changes times, not tokens. `quantize`
        is in it only when given, so a full-precision run's config (and hash) is what it was before the option."""
        config = {k: v for k, v in asdict(self).items() if k not in SETTINGS}
        if config["quantize"] is None:
            del config["quantize"]
        return config

    @classmethod
    def recorded(cls, config: dict, settings: dict | None = None) -> RunSpec:
        """The spec a run.json records (harness.store.RunInfo's config and settings)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**(settings or {}), **config}.items() if k in names})

    def generation(self, suite: GenerationSettings) -> GenerationSettings:
        """The settings this run uses for a suite: the suite file's [generation] with the run's overrides
        (those not None) in their place. What the decoder gets is its `.sampling` (SamplingParams), the
        `max_new_tokens` and the stop tokens: in a batch-1 run, a batched run and verify alike."""
        return dataclasses.replace(
            suite, **{k: getattr(self, k) for k in OVERRIDES if getattr(self, k) is not None}
        )
