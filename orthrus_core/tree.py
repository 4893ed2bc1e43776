"""Draft trees: the shape every speculative method proposes, the target's mask for verifying one in a single
forward, and the exact acceptance rules over it.

A tree has N nodes. Node 0 is the root: the last committed token, which is not in the target's KV cache yet.
Every other node is a drafted token whose parent has a smaller index, so sorting a path by node index sorts it
by depth. A chain (prompt lookup, DFlash, EAGLE-3 with top_k 1) is the tree with parent[i] = i - 1.

The verify pass writes node i into cache slot start + i at RoPE position start + depth(i); a node attends to
the committed prefix, its ancestors and itself. Acceptance walks from the root:
* greedy: a child is accepted when it equals the target's argmax at its parent; drafted siblings are distinct,
  so at most one child matches and the accepted path is unique;
* sampling (`accept_sampled`): drafts are deterministic (q is one-hot on each drafted token), so Leviathan's
  rule accepts child x with probability p(x); after a rejection the residual max(p - q, 0) is p with x removed,
  and the next sibling is tried against it (SpecInfer's multi-draft rule, as EAGLE does). When every child is
  rejected, or at a leaf, the next token is sampled from what is left. This is exact for any tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

from . import sampling
from .sampling import RESIDUAL_EPS, sample


@dataclass
class DraftTree:
    tokens: torch.Tensor  # [N] target token ids, tokens[0] = the root
    parents: torch.Tensor  # [N] parent node index, parents[0] = -1

    @classmethod
    def chain(cls, root: int, drafts: torch.Tensor) -> DraftTree:
        """A chain of drafts [n] after the root."""
        tokens = torch.cat([drafts.new_tensor([root]), drafts])
        return cls(tokens, torch.arange(-1, len(drafts), device=drafts.device))

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @cached_property
    def is_chain(self) -> bool:
        return bool((self.parents == torch.arange(-1, len(self) - 1, device=self.parents.device)).all())

    @cached_property
    def ancestors(self) -> torch.Tensor:
        """Boolean [N, N]: row i marks node i and its ancestors (the nodes it may attend to in the tree)."""
        N = len(self)
        if self.is_chain:
            return torch.ones(N, N, dtype=torch.bool, device=self.tokens.device).tril()
        reach = torch.eye(N, device=self.tokens.device)
        reach[torch.arange(1, N), self.parents[1:]] = 1.0
        # Each squaring doubles the path length covered: log2(N) products reach every ancestor.
        for _ in range(max(N - 1, 1).bit_length()):
            reach = ((reach @ reach) > 0).float()
        return reach.bool()

    @cached_property
    def depth(self) -> torch.Tensor:
        """[N] number of ancestors (0 for the root)."""
        return self.ancestors.sum(-1) - 1

    def verify_mask(self, start: int) -> torch.Tensor:
        """Boolean [N, start + N] for the target's verify pass: the whole prefix, then ancestors and self."""
        prefix = torch.ones(len(self), start, dtype=torch.bool, device=self.tokens.device)
        return torch.cat([prefix, self.ancestors], dim=1)


def accept_greedy(tree: DraftTree, logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """logits [N, V] of the verify pass -> (accepted path: node indices from the root, next token)."""
    target = logits.argmax(-1)
    matches = tree.tokens == target[tree.parents.clamp_min(0)]
    matches[0] = True
    # A node is reachable when it and all its ancestors match; the deepest one ends the path (first on ties).
    reachable = ~(tree.ancestors & ~matches[None]).any(-1)
    best = int(torch.where(reachable, tree.depth, -1).argmax())
    return tree.ancestors[best].nonzero()[:, 0], int(target[best])


def accept_sampled(
    tree: DraftTree, probs: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, int]:
    """probs [N, V]: the target's sampling distribution after each node -> (accepted path, next token)."""
    tokens, parents = tree.tokens.tolist(), tree.parents.tolist()
    children: list[list[int]] = [[] for _ in tokens]
    for i, parent in enumerate(parents[1:], start=1):
        children[parent].append(i)
    node, path = 0, [0]
    while True:
        p = probs[node]
        for child in children[node]:
            x = tokens[child]
            u = torch.rand((), generator=generator, device=p.device)
            if u * p.sum() < p[x]:  # p is unnormalised after rejections: accept with probability p(x) / sum p
                node = child
                path.append(child)
                break
            p = sampling.residual_distribution(p, F.one_hot(tree.tokens[child], p.shape[-1]).to(p.dtype))
        else:
            residual = p if p.sum() > RESIDUAL_EPS else probs[node]
            return torch.tensor(path, device=tree.tokens.device), int(sample(residual, generator))
