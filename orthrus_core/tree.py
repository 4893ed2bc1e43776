"""Draft trees: the shape a speculative method proposes for each row, and the target's view of one.

A row's proposal has N nodes. Node 0 is the root: the last committed token, not in the target's KV cache yet.
Every other node is a drafted token whose parent has a smaller index, so sorting a path by node index sorts it
by depth. A chain (prompt lookup, DFlash, Orthrus, EAGLE-3 with top_k 1) is the tree with parent[i] = i - 1,
and a proposal of chains carries no parents at all: its verify pass is the plain causal one.

The verify pass writes node i of a row into that row's cache slot start + i at RoPE position start + depth(i);
a node attends to the row's committed prefix, its ancestors and itself. Greedy acceptance walks from the root:
a child is accepted when it equals the target's argmax at its parent; drafted siblings are distinct, so at most
one child matches and the accepted path is unique (`accept_greedy`: every row at once, on the device). Sampled
acceptance is `sampling.AcceptanceRule.tree`.
"""

from __future__ import annotations

import torch


def ancestors(parents: torch.Tensor) -> torch.Tensor:
    """parents [..., N] -> boolean [..., N, N]: row i marks node i and its ancestors."""
    N = parents.shape[-1]
    eye = torch.eye(N, device=parents.device)
    reach = eye + torch.nn.functional.one_hot(parents.clamp_min(0), N).float() * (parents >= 0)[..., None]
    # Each squaring doubles the path length covered: log2(N) products reach every ancestor.
    for _ in range(max(N - 1, 1).bit_length()):
        reach = ((reach @ reach) > 0).float()
    return reach.bool()


def accept_greedy(tokens: torch.Tensor, parents: torch.Tensor, anc: torch.Tensor, logits: torch.Tensor):
    """Every row's tree at once: tokens, parents [R, N], ancestors [R, N, N], the verify pass's logits
    [R, N, V] -> (the accepted path [R, N]: a mask of its nodes, the root's included; the next token [R]), on
    the device, for the caller to read back in one transfer."""
    target = logits.argmax(-1)
    matches = tokens == target.gather(1, parents.clamp_min(0))
    matches[:, 0] = True
    # A node is reachable when it and all its ancestors match; the deepest one ends the path (first on ties).
    reachable = ~(anc & ~matches[:, None, :]).any(-1)
    depth = anc.sum(-1) - 1
    best = torch.where(reachable, depth, -1).argmax(-1)
    rows = torch.arange(tokens.shape[0], device=tokens.device)
    return anc[rows, best], target[rows, best]
