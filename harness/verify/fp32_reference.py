"""The reference every output is tested against: the run's target checkpoint in float32, teacher-forced."""

from __future__ import annotations

import numpy as np
import torch

from orthrus_core.params import SamplingParams
from orthrus_core.sampling import probs

from .forensics import teacher_forced_logits


class Reference:
    """The target model in float32, teacher-forced: logits and transformed distributions at realised prefixes."""

    def __init__(self, model):
        self.model = model
        self.logits = teacher_forced_logits(model)

    def probs(self, prompt_ids: list[int], tokens: list[int], params: SamplingParams) -> torch.Tensor:
        """[len(tokens), V]: the distribution each token was drawn from under H0."""
        return probs(params, self.logits(prompt_ids, tokens)).double()

    def prefix_probs(self, prompt_ids: list[int], prefixes: list[tuple[int, ...]], params: SamplingParams):
        """prefix -> the distribution of the next token after prompt + prefix, one forward per longest
        prefix (its shorter prefixes come from the same pass)."""
        table: dict[tuple[int, ...], np.ndarray] = {}
        for prefix in sorted(set(prefixes), key=len, reverse=True):
            if prefix in table:
                continue
            # logits(prompt, prefix + [any]) has a row for every prefix of `prefix`, itself included.
            rows = probs(params, self.logits(prompt_ids, [*prefix, 0])).double().numpy()
            for i in range(len(prefix) + 1):
                table.setdefault(prefix[:i], rows[i])
        return table
