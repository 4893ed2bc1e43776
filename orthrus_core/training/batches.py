"""Training batches for a drafter: random (prompt + response) sequences of a frozen target, right-padded, with
where each response starts (the EAGLE-3 and DFlash trainers share them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T] prompt + response, right-padded
    lengths: torch.Tensor  # [B] real lengths
    response_start: torch.Tensor  # [B] index of the first response token


def make_batches(
    sequences: Sequence[tuple[list[int], int]], batch_size: int, pad_id: int, seed: int
) -> Callable[[], Batch]:
    """sequences: (ids, response_start) pairs -> a function returning a random batch each call."""
    g = torch.Generator().manual_seed(seed)

    def draw() -> Batch:
        chosen = [sequences[i] for i in torch.randint(len(sequences), (batch_size,), generator=g).tolist()]
        T = max(len(ids) for ids, _ in chosen)
        ids = torch.full((len(chosen), T), pad_id, dtype=torch.long)
        for row, (seq, _) in enumerate(chosen):
            ids[row, : len(seq)] = torch.tensor(seq)
        lengths = torch.tensor([len(s) for s, _ in chosen])
        return Batch(ids, lengths, torch.tensor([r for _, r in chosen]))

    return draw
