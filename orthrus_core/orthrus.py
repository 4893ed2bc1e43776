"""Orthrus' drafter: the target's own diffusion view (arXiv 2605.12825, paper.md §1).

Per cycle, one diffusion-view pass over every active row's block [root, MASK x (K-1)] at the row's own
positions; block position i predicts position i+1, so K-1 drafts per row, argmax or sampled from the view's
distribution q (then verified by Leviathan's rule). The pass writes scratch K/V into the target's cache at the
slots the verify pass overwrites right after, so the committed cache only ever holds AR-view K/V and nothing
is copied: Orthrus' O(1) memory overhead.
"""

from __future__ import annotations

import torch

from .loop import Drafter, Proposal
from .memory import FLOAT32
from .model import OrthrusForCausalLM
from .sampling import probs, sample


class OrthrusDrafter(Drafter):
    def __init__(self, model: OrthrusForCausalLM, block_size: int | None = None):
        if not model.has_diffusion_view:
            raise ValueError(
                "Orthrus decoding needs a checkpoint with a diffusion view (architectures OrthrusLM)"
            )
        self.block_size = model.block_size if block_size is None else block_size  # None: the checkpoint's
        if self.block_size < 2:
            raise ValueError(f"block size must be >= 2, got {self.block_size}")
        self.mask_token_id = model.mask_token_id

    @property
    def max_nodes(self) -> int:
        return self.block_size

    def admit(self, b, prompt, features):
        pass

    def propose(self, roots, params, generators):
        R, K = roots.shape[0], self.block_size
        block = torch.full((R, K), self.mask_token_id, dtype=torch.long, device=roots.device)
        block[:, 0] = roots
        logits = self.engine.step(self.cache, block, diffusion=True)[:, :-1]
        if params.greedy:
            return Proposal(torch.cat([roots[:, None], logits.argmax(-1)], 1), [K - 1] * R, 1)
        q = probs(params, logits)
        drafts = torch.stack([sample(q[b], generators[b]) for b in range(R)])
        return Proposal(torch.cat([roots[:, None], drafts], 1), [K - 1] * R, 1, q)

    # Its cost (orthrus_core.loop.Drafter): no state of its own (the scratch K/V is in the target's cache).

    def draft_pass_bytes(self, sizing, verify):
        """The diffusion pass is a target pass over the block: the verify pass's bytes."""
        return verify

    def proposal_bytes(self, sizing):
        """Sampled drafts keep their q [R, K-1, V] (float32) through the verify pass."""
        if not sizing.sampling_copies:
            return 0
        return sizing.rows * (self.block_size - 1) * sizing.config.vocab_size * FLOAT32

    def engine_passes(self):
        """The diffusion pass and the verify pass, each over the block."""
        return [self.block_size, self.block_size]
