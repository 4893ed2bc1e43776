"""Train a DFlash drafter for a frozen target on the target's own outputs.

Each step samples `anchors` positions per sequence inside the response; a block [token at the anchor, MASK x
(B-1)] at the anchor's positions learns to predict the B-1 tokens after it, seeing the context rows (target
features) of the positions before the anchor and its own block bidirectionally, all blocks of a sequence in one
pass under a mask. The loss is cross-entropy to those tokens (the target's greedy output), weighted
exp(-(k-1)/gamma) for the k-th draft (DFlash: gamma 7 for B = 16). The layers start from the target's last
layers, the final norm from the target's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from orthrus_core.attention import CAUSAL
from orthrus_core.dflash import DFlashDraftModel, dflash_config
from orthrus_core.model import OrthrusForCausalLM

from .batches import Batch, make_batches
from .optimize import train_loop


def dflash_loss(
    draft: DFlashDraftModel, target: OrthrusForCausalLM, batch: Batch, anchors: int, gamma: float, g
):
    ids, Bk = batch.ids, draft.block_size
    B, T = ids.shape
    keep = lambda i, k, v: (k, v)  # noqa: E731
    with torch.no_grad():
        _, features = target.run(ids, torch.arange(T)[None], CAUSAL, False, keep, capture=draft.capture)
    # Anchors in [response_start, length - 2]: the anchor token is known, at least one token follows it.
    low, high = batch.response_start, batch.lengths - 1
    a = low[:, None] + (torch.rand(B, anchors, generator=g) * (high - low)[:, None]).long()  # [B, m]
    offsets = torch.arange(Bk)
    pos = a[..., None] + offsets  # [B, m, Bk]
    block = torch.full_like(pos, draft.mask_token_id)
    block[..., 0] = ids.gather(1, a)
    labels = ids.gather(1, pos.clamp_max(T - 1).flatten(1)).view_as(pos)
    valid = pos < batch.lengths[:, None, None]
    Q = anchors * Bk
    # Block rows see context positions before their anchor, and their own block.
    sees_context = torch.arange(T)[None, None, None] < a[..., None, None]  # [B, m, 1, T]
    sees_context = sees_context.expand(B, anchors, Bk, T).reshape(B, Q, T)
    block_of = torch.arange(Q) // Bk
    sees_block = (block_of[:, None] == block_of[None]).expand(B, Q, Q)
    mask = torch.cat([sees_context, sees_block], dim=-1)[:, None]
    positions = torch.cat([torch.arange(T).expand(B, T), pos.flatten(1)], dim=1)
    hidden = draft(target.model.embed_tokens(block.flatten(1)), features, positions, mask, keep)
    logits = target.lm_head(hidden).float().view(B, anchors, Bk, -1)[:, :, 1:]
    ce = F.cross_entropy(logits.flatten(0, 2), labels[:, :, 1:].flatten(), reduction="none").view(
        B, anchors, Bk - 1
    )
    weight = torch.exp(-(offsets[1:] - 1) / gamma) * valid[:, :, 1:]
    return (ce * weight).sum() / weight.sum().clamp_min(1)


def train_dflash(
    target: OrthrusForCausalLM,
    sequences: Sequence[tuple[list[int], int]],
    *,
    num_layers: int = 2,
    block_size: int = 16,
    mask_token_id: int,
    steps: int = 400,
    batch_size: int = 8,
    anchors: int = 16,
    gamma: float = 7.0,
    lr: float = 3e-3,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> DFlashDraftModel:
    """A new drafter trained on `sequences` ((ids, response_start) pairs of the target's own outputs)."""
    torch.manual_seed(seed)
    target.requires_grad_(False)
    draft = DFlashDraftModel(dflash_config(target.config, num_layers, block_size, mask_token_id))
    with torch.no_grad():
        L = target.config.num_hidden_layers
        for i, layer in enumerate(draft.layers):
            source = target.model.layers[L - num_layers + i]
            for name, p in layer.named_parameters():
                p.copy_(source.get_parameter(name))
        draft.fc.weight.normal_(0, 0.02)
        draft.hidden_norm.weight.fill_(1.0)
        draft.norm.weight.copy_(target.model.norm.weight)
    draw = make_batches(sequences, batch_size, pad_id=0, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    loss_of = lambda batch: dflash_loss(draft, target, batch, anchors, gamma, g)  # noqa: E731
    train_loop(draft, list(draft.parameters()), loss_of, draw, steps=steps, lr=lr, name="dflash", log=log)
    return draft
