"""The one decoder interface every method implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import torch

from orthrus_core.generation import GenerationResult, StreamCallback
from orthrus_core.sampling import SamplingParams
from orthrus_core.speculative import Drafter, generate_speculative

from .target import Target


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

    def sampling(self, temperature, top_k, top_p, seed) -> tuple[SamplingParams, torch.Generator | None]:
        params = SamplingParams(temperature, top_k, top_p)
        generator = None
        if seed is not None:
            generator = torch.Generator(self.target.model.lm_head.weight.device).manual_seed(seed)
        return params, generator

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
