"""The one decoder interface every method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator

import torch

from orthrus_core.batch import BatchDrafter, BatchResult, Request, decode_batch
from orthrus_core.generation import GenerationResult, StreamCallback
from orthrus_core.sampling import SamplingParams
from orthrus_core.speculative import Drafter, generate_speculative

from .target import Target

# The method specs that decode in batches (`Decoder.batch_drafter`), for error messages.
BATCHED_METHODS = ("ar", "orthrus", "pld", "eagle3:tree=chain", "dflash")


class BatchError(ValueError):
    """A method, or one of its options, that has no batched form."""


class Decoder(ABC):
    """One configured method. `config` holds every resolved option (JSON-serialisable, for provenance) and
    `checkpoints` the local directory of every checkpoint used, by role ("target", "draft")."""

    name: str  # the method, e.g. "eagle3"
    lossless: bool = True  # greedy output equals AR's and sampled output follows the target's distribution

    def __init__(self, target: Target, label: str, config: dict, checkpoints: dict[str, str] | None = None):
        self.target, self.label, self.config = target, label, config
        self.checkpoints = {"target": target.path, **(checkpoints or {})}

    def generate(
        self,
        prompt_ids: Iterable[int],
        max_new_tokens: int,
        *,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop_token_ids: Iterable[int] | None = None,
        on_tokens: StreamCallback | None = None,
    ) -> GenerationResult:
        """Generate after prompt_ids; stop tokens default to the target's eos_token_id."""
        params, generator = self.sampling(temperature, top_k, top_p, seed)
        return self.decode(prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens)

    @abstractmethod
    def decode(
        self,
        prompt_ids: Iterable[int],
        max_new_tokens: int,
        params: SamplingParams,
        generator: torch.Generator | None,
        stop_token_ids: Iterable[int] | None,
        on_tokens: StreamCallback | None,
    ) -> GenerationResult:
        """The method itself, with the sampling settings validated and the seeded generator made."""

    def batch_drafter(self, params: SamplingParams) -> BatchDrafter | None:
        """The method over a batch (orthrus_core.batch): its batch drafter, None for plain AR. A method that has
        no batched form raises BatchError, which names the ones that do."""
        raise BatchError(
            f"{self.label} does not decode in batches; the batched methods are {', '.join(BATCHED_METHODS)}"
        )

    def generate_batch(
        self,
        next_request: Callable[[], Request | None],
        batch_size: int,
        params: SamplingParams,
        *,
        continuous: bool = False,
    ) -> Iterator[BatchResult]:
        """Requests pulled from `next_request`, `batch_size` rows at a time, each yielded as it finishes."""
        drafter = self.batch_drafter(params)
        yield from decode_batch(
            self.target.model,
            drafter,
            next_request,
            batch_size,
            params,
            continuous=continuous,
        )

    def generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(self.target.model.lm_head.weight.device).manual_seed(seed)

    def sampling(self, temperature, top_k, top_p, seed) -> tuple[SamplingParams, torch.Generator | None]:
        return SamplingParams(temperature, top_k, top_p), self.generator(seed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"


class SpeculativeDecoder(Decoder):
    """A method that is a drafter in the draft-verify loop every lossless speculative method shares
    (orthrus_core.speculative): the method is its `drafter`."""

    @abstractmethod
    def drafter(self, params: SamplingParams, generator: torch.Generator | None) -> Drafter:
        """A fresh drafter for one generation (sampled drafts draw from `generator`)."""

    def decode(self, prompt_ids, max_new_tokens, params, generator, stop_token_ids, on_tokens):
        return generate_speculative(
            self.target.model,
            self.drafter(params, generator),
            prompt_ids,
            max_new_tokens,
            params,
            stop_token_ids=stop_token_ids,
            generator=generator,
            on_tokens=on_tokens,
        )
