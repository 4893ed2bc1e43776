"""The one decoder interface every method implements. A method that drafts for the decode loop
(orthrus_core.loop) is a `LoopDecoder` around its drafter, made once with its options checked; the others
(transformers' generate, the official Orthrus loop, lossy block diffusion) decode one prompt at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch

from harness.method_spec import MethodSpec
from orthrus_core import loop
from orthrus_core.compiled import rehearsing
from orthrus_core.engine import bucket, row_bucket
from orthrus_core.generation import Clock, GenerationResult, StreamCallback
from orthrus_core.loop import Drafter, Finished, Request
from orthrus_core.memory import Decoding
from orthrus_core.params import GREEDY, SamplingParams
from orthrus_core.sampling import EXACT, AcceptanceRule

from . import BATCHED, METHODS, is_batched, is_greedy_only
from .target import Target

# What every caller holds of a decoder: its `generate`, or a stand-in with the same signature
# generate(prompt_ids, max_new_tokens, params, *, seed, stop_token_ids, on_tokens) -> GenerationResult.
GenerateFn = Callable[..., GenerationResult]


@dataclass(frozen=True)
class GenerateArgs:
    """One call of `Decoder.generate`, its sampling settings and acceptance rule already checked against the
    method: what a decoder's `_generate` decodes."""

    prompt_ids: Iterable[int]
    max_new_tokens: int
    params: SamplingParams
    seed: int | None
    stop_token_ids: Iterable[int] | None  # None: the target's eos_token_id
    on_tokens: StreamCallback | None
    rule: AcceptanceRule


class BatchError(ValueError):
    """A method, or one of its options, that has no batched form."""


class Decoder:
    """One configured method. `spec` is the method spec it was made from (make_decoder's overrides written
    in), `label` that spec as run.json and the records name it, `config` every resolved
    option (JSON-serialisable, for provenance) and `checkpoints` the local directory of every checkpoint used,
    by role ("target", "draft")."""

    def __init__(
        self, target: Target, spec: MethodSpec, config: dict, checkpoints: dict[str, str] | None = None
    ):
        self.target, self.spec, self.config = target, spec, config
        self.label = str(spec)
        self.checkpoints = {"target": target.path, **(checkpoints or {})}
        self.name = spec.name  # the method, e.g. "eagle3"

    # Whether its drafts are accepted by the decode loop's acceptance rule, which a caller may replace (the
    # calibration plants bugs through it); the others decode by their own rule and refuse any but EXACT.
    takes_rule = False

    @property
    def lossless(self) -> bool:
        """Greedy output equals AR's and sampled output follows the target's distribution."""
        return METHODS[self.name].lossless

    @property
    def batched(self) -> bool:
        return is_batched(self.spec)

    # The configuration of the engine that decodes it where that is not the project's (vLLM's version and engine
    # arguments), for run.json and the report; None for the project's engine, whose mode run.json records.
    engine_config: dict | None = None

    @property
    def backend(self) -> str:
        """Whose engine decodes it: the project's (harness.methods.BACKEND) or "vllm"."""
        return METHODS[self.name].backend

    @property
    def outside_engine(self) -> str | None:
        """The passes this method runs outside the target's engine (eager whatever its mode), for run.json and
        the report: a comparison under compile or cudagraph is even only where this is None."""
        return "every pass"

    def start(self) -> None:
        """Start what the decoder runs on outside this process (a vLLM engine) now rather than at its first
        generation, so that what refuses to start fails before any generation (the runner calls it)."""

    def close(self) -> None:
        """Release what the decoder holds outside this process (a vLLM engine and its processes)."""

    @property
    def greedy_only(self) -> bool:
        return is_greedy_only(self.spec)

    def generator(self, seed: int | None) -> torch.Generator | None:
        """The generator a seeded generation draws from (None: unseeded)."""
        return None if seed is None else torch.Generator(self.target.engine.device).manual_seed(seed)

    def check_params(self, params: SamplingParams) -> None:
        if self.greedy_only and not params.greedy:
            raise ValueError(
                f"{self.label} decodes greedily only (temperature 0, or a setting whose distribution is one "
                f"token: top-k 1), not at {params.temperature}"
            )

    def check_rule(self, rule: AcceptanceRule) -> None:
        if rule != EXACT and not self.takes_rule:
            raise ValueError(
                f"{self.label} accepts by its own rule, not the decode loop's: it takes no acceptance rule but "
                f"the exact one (orthrus_core.sampling.EXACT), not {rule!r}"
            )

    def generate(
        self,
        prompt_ids: Iterable[int],
        max_new_tokens: int,
        params: SamplingParams = GREEDY,
        *,
        seed: int | None = None,
        stop_token_ids: Iterable[int] | None = None,
        on_tokens: StreamCallback | None = None,
        rule: AcceptanceRule = EXACT,
    ) -> GenerationResult:
        """One generation after prompt_ids; stop tokens default to the target's eos_token_id. The one entry
        of every method: it checks the settings and the rule for the method, then decodes (`_generate`)."""
        self.check_params(params)
        self.check_rule(rule)
        return self._generate(
            GenerateArgs(prompt_ids, max_new_tokens, params, seed, stop_token_ids, on_tokens, rule)
        )

    def _generate(self, args: GenerateArgs) -> GenerationResult:
        """The method's own decoding of one checked call."""
        raise NotImplementedError

    def decode(
        self,
        next_request: Callable[[], Request | None],
        params: SamplingParams = GREEDY,
        *,
        rows: int = 1,
        continuous: bool = False,
        rule: AcceptanceRule = EXACT,
    ) -> Iterator[Finished]:
        """The requests `next_request` returns, `rows` at a time, each yielded as it finishes. Here, for a method
        that decodes one prompt at a time: one row, each request through `generate`, alone."""
        if rows != 1:
            raise BatchError(
                f"{self.label} does not decode in batches; the batched methods are {', '.join(BATCHED)}"
            )
        return self._one_at_a_time(next_request, params, rule)

    def _one_at_a_time(
        self, next_request, params: SamplingParams, rule: AcceptanceRule
    ) -> Iterator[Finished]:
        """Each request through `generate`, seeded with the seed its generator started from (`generator`). It
        shares no pass; its KV figures are None (its cache is the method's own, not the decode loop's)."""
        clock = Clock(self.target.engine.device)
        for request in iter(next_request, None):
            seed = None if request.generator is None else request.generator.initial_seed()
            admitted_at = clock()
            result = self.generate(
                request.prompt_ids, request.max_new_tokens, params, seed=seed,
                stop_token_ids=request.stop_token_ids, on_tokens=request.on_tokens, rule=rule,
            )  # fmt: skip
            passes = result.ar_forwards + result.draft_forwards
            yield Finished(
                request, result, admitted_at, clock(), passes, float(passes), 1.0, None, None, None
            )

    def warm_up(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        params: SamplingParams = GREEDY,
        *,
        repeats: int,
        rows: int | None = None,
        continuous: bool = False,
        positions: Iterable[int] = (),
    ) -> None:
        """Unrecorded work before a run's first recorded generation, so that kernel selection, allocator growth
        and lazy initialisation are not timed: `repeats` decodes of `rows` requests for `prompt_ids` (up to
        `max_new_tokens` each; `rows` None: one, alone). `positions`: what each first-turn request of the run
        needs (prompt + max_new_tokens), for a decoder whose passes compile per shape (LoopDecoder); what the
        others compile, if anything (transformers' graphs for `ar-hf:cache=static`), these generations
        compile."""
        batch = rows or 1
        for _ in range(repeats):
            _drain(
                self, [Request(prompt_ids, max_new_tokens) for _ in range(batch)], params, batch, continuous
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    def memory_decoding(self) -> Decoding:
        """How it decodes as the memory planner sees it (orthrus_core.memory.plan; harness.methods.plan): each
        decoder of the project's engine says; another engine (vLLM) plans its own memory."""
        raise NotImplementedError(f"{self.label}: {type(self).__name__} says nothing of its memory")


def _drain(decoder: Decoder, requests: list[Request], params: SamplingParams, rows: int, continuous: bool):
    """Decode `requests` `rows` at a time, discarding the results."""
    queue = iter(requests)
    for _ in decoder.decode(lambda: next(queue, None), params, rows=rows, continuous=continuous):
        pass


# New tokens of a request that warms up one pass shape: each cycle runs every pass kind of its method, so a few
# cycles compile them all (kernel selection and allocator growth are the `repeats` generations' to warm).
SHAPE_TOKENS = 4


class LoopDecoder(Decoder):
    """A method that is a drafter in the decode loop (None: plain AR)."""

    takes_rule = True

    def __init__(self, target, spec, config, drafter: Drafter | None, checkpoints=None):
        super().__init__(target, spec, config, checkpoints)
        self.drafter = drafter

    @property
    def outside_engine(self) -> str | None:
        return None  # every pass of the loop, the drafter's too, runs in the target's engine (Engine.run)

    @property
    def compiles_per_shape(self) -> bool:
        """Whether its passes compile or capture a graph per shape: a static engine, FlexAttention on CUDA, or
        the CUDA route rehearsed on a CPU (orthrus_core.rehearsal). Eager on a CPU compiles nothing."""
        engine = self.target.engine
        return engine.static or engine.device.type == "cuda" or rehearsing()

    def warm_up(self, prompt_ids, max_new_tokens, params=GREEDY, *, repeats, rows=None, continuous=False,
                positions=()):  # fmt: skip
        """Decoder.warm_up and, where its passes compile (`compiles_per_shape`), every pass shape the run's
        first-turn requests will reach. A pass's shape is its kind (AR step, draft, verify), its row bucket and
        its cache's capacity bucket (orthrus_core.engine), so: per capacity bucket that `positions` need and per
        row bucket of `rows` (1, 2, 4, ... up to rows), one decode of as many requests, each a few tokens long
        but reserving its bucket (Request.capacity), in a cache of the run's rows. Later turns of a conversation,
        whose prompts are not known before, can still meet a new bucket (the runner runs such a generation
        again)."""
        batch = rows or 1
        nodes = self.drafter.max_nodes if self.drafter else 1
        capacities = sorted({bucket(n + nodes) for n in positions}) if self.compiles_per_shape else []

        def requests(count: int, new_tokens: int, capacity: int | None) -> list[Request]:
            # A prompt short enough for the bucket: what it says does not change a pass's shape. No stop token:
            # a request that stopped at its first token would run no cycle, so no pass.
            prompt = prompt_ids if capacity is None else prompt_ids[: max(capacity - new_tokens - nodes, 1)]
            return [Request(prompt, new_tokens, [], capacity=capacity) for _ in range(count)]

        # In a bucket the run needs: another would compile shapes for nothing
        first = capacities[0] if capacities else None
        for _ in range(repeats):
            _drain(self, requests(batch, max_new_tokens, first), params, batch, continuous)
        counts = sorted({row_bucket(active, batch) for active in range(1, batch + 1)})
        shape_tokens = min(max_new_tokens, SHAPE_TOKENS)
        for capacity in capacities:
            for count in counts:
                _drain(self, requests(count, shape_tokens, capacity), params, batch, continuous)

    def decode(self, next_request, params=GREEDY, *, rows=1, continuous=False, rule=EXACT):
        self.check_params(params)
        return loop.decode(
            self.target.engine, self.drafter, next_request, rows, params, continuous=continuous, rule=rule
        )

    def _generate(self, args: GenerateArgs) -> GenerationResult:
        return loop.generate(
            self.target.engine, self.drafter, args.prompt_ids, args.max_new_tokens, args.params,
            stop_token_ids=args.stop_token_ids, generator=self.generator(args.seed), on_tokens=args.on_tokens,
            rule=args.rule,
        )  # fmt: skip

    def memory_decoding(self) -> Decoding:
        """In the decode loop, its drafter (None: plain AR) saying its own cost."""
        draft = self.checkpoints.get("draft")
        return Decoding(self.label, drafter=self.drafter, source=f"loaded from {draft}" if draft else "")
