"""Token distributions and the exact consensus rules of every speculative method.

`probs(params, logits)` turns logits into the distribution a decoder samples from (temperature, then top-k,
then top-p, the order of transformers' logits warpers). A speculative decoder applies the same transform to
its draft distribution q and to the target p, so its output follows the *transformed* target distribution.

Acceptance (no per-token Python loop for chains; they return tensors so that the loop reads the accepted
counts, the next tokens and the drafts back in one transfer):
* `greedy_accept`: per row, the longest prefix of drafts equal to the target argmax, then the target token at
  the first mismatch (or the bonus token after the last draft).
* `AcceptanceRule.chain`: Leviathan et al. / Chen et al. speculative sampling for drafts drawn from q: accept
  draft x_i with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection resample from
  normalize(max(p_i - q_i, 0)); if every draft is accepted, sample the bonus token from p_n.
* `AcceptanceRule.tree`: deterministic drafts in a tree (q one-hot on each drafted token): accept child x with
  probability p(x); after a rejection the residual max(p - q, 0) is p with x removed and the next sibling is
  tried against it (SpecInfer's multi-draft rule, as EAGLE does); when every child is rejected, or at a leaf,
  the next token is drawn from what is left. Exact for any tree.

The rule is an argument of the decode loop: its fields are the exact rule by default, and the calibration
(harness.verify.calibrate) plants its bugs by passing other values, never by patching this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .host import upload
from .params import SamplingParams

# Below this residual mass p and q agree to rounding: rejection there is a rounding artefact and p is exact.
RESIDUAL_EPS = 1e-5


def probs(params: SamplingParams, logits: torch.Tensor) -> torch.Tensor:
    """float32 logits [..., V] -> the sampling distribution [..., V] (rows sum to 1)."""
    logits = logits.float() / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    p = torch.softmax(logits, dim=-1)
    if params.top_p < 1:
        sorted_p, order = torch.sort(p, dim=-1, descending=True, stable=True)
        # Keep a token while the mass strictly before it is below top_p: the smallest nucleus >= top_p.
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= params.top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        p = p.masked_fill(drop, 0.0)
        p = p / p.sum(-1, keepdim=True)
    return p


def sample(p: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of p [..., V] -> [...]."""
    flat = p.reshape(-1, p.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(p.shape[:-1])


def next_token(
    params: SamplingParams, logits: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """The token after logits [..., V]: the argmax when greedy, else a draw from `probs`."""
    return logits.argmax(-1) if params.greedy else sample(probs(params, logits), generator)


def greedy_accept(
    drafts: torch.Tensor, target_logits: torch.Tensor, lengths: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """drafts [..., n], target_logits [..., n+1, V] -> (accepted drafts [...], next token [...]). `lengths` [...]
    says how many drafts of each row are real (a batch of ragged chains); the rest are never accepted."""
    target = target_logits.argmax(-1)
    match = drafts == target[..., :-1]
    if lengths is not None:
        match &= torch.arange(drafts.shape[-1], device=drafts.device) < lengths[..., None]
    n_accepted = torch.cumprod(match.long(), -1).sum(-1)
    return n_accepted, target.gather(-1, n_accepted[..., None])[..., 0]


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Unnormalised max(p - q, 0): what to resample from after a rejection."""
    return (p - q).clamp_min(0.0)


@dataclass(frozen=True)
class AcceptanceRule:
    """Lossless speculative sampling. The defaults are the exact rule; `ratio_scale` (accept with probability
    min(1, ratio_scale * p / q)), `position_shift` (read p one position off), `residual` and `target_logits`
    (what the rule reads of each cycle's target pass, greedy or sampled: a verify-pass logit bias, as a kernel
    bug would add) exist so that the calibration can measure the verdicts' power against planted bugs by
    passing them in."""

    ratio_scale: float = 1.0
    position_shift: int = 0
    residual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = residual_distribution
    target_logits: Callable[[torch.Tensor], torch.Tensor] | None = None

    def chain(
        self, drafts: torch.Tensor, q: torch.Tensor, p: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """drafts [n] sampled from q [n, V]; target p [n+1, V] -> (accepted drafts, next token), 0-dim."""
        n = drafts.shape[0]
        rows = torch.arange(n, device=drafts.device)
        u = torch.rand(n, generator=generator, device=drafts.device)
        # u < p/q without the division (q(x) > 0 since x was drawn from q).
        accepted = u * q[rows, drafts] < self.ratio_scale * p[rows + self.position_shift, drafts]
        n_accepted = torch.cumprod(accepted.long(), 0).sum()
        # A zero row after q makes the "all accepted" case the same formula: max(p_n - 0, 0) = p_n (the bonus).
        q_at = torch.cat([q, q.new_zeros(1, q.shape[1])])[n_accepted]
        p_at = p[n_accepted]
        residual = self.residual(p_at, q_at)
        residual = torch.where(residual.sum() > RESIDUAL_EPS, residual, p_at)
        return n_accepted, sample(residual, generator)

    def chain_with_trace(self, drafts, q, p, generator) -> tuple[int, int, list, list[int]]:
        """`chain`, read back in one transfer -> (accepted drafts, next token, the acceptance trace's entries:
        [accepted (1) or corrected (0), q(token)] per draft position ruled on, then None for a bonus token; the
        drafts as host ints)."""
        n, nxt = self.chain(drafts, q, p, generator)
        m = len(drafts)
        rows = torch.arange(m, device=drafts.device)
        q_emitted = q[rows, torch.where(rows == n, nxt, drafts)]  # valid up to row n
        # token ids as float64: exact below 2**53
        n, token, *rest = torch.cat(
            [torch.stack([n, nxt]).double(), q_emitted.double(), drafts.double()]
        ).tolist()
        n, token, q_at, drafted = int(n), int(token), rest[:m], [int(x) for x in rest[m:]]
        return n, token, [[1, x] for x in q_at[:n]] + ([[0, q_at[n]]] if n < m else [None]), drafted

    def tree(
        self, tokens: list[int], parents: list[int], p: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[list[int], int]:
        """Deterministic drafts in a tree (node 0 the root, parents[i] < i), p [N, V] the target's distribution
        after each node -> (accepted path of node indices from the root, next token).

        The walk draws one uniform per child it tries and then the next token, in that order; it is computed
        with two reads of the device: every node's tests (for the j-th child of node n, the mass left at n after
        its first j - 1 children were rejected and that child's share of it, for all nodes at once) and as many
        uniforms as the longest walk can try are read back together, the walk follows them on the host, and the
        generator is set back to where the walk's last uniform left it, so that the next token is drawn from the
        stream a walk that drew its uniforms one by one would draw it from."""
        # a static engine verifies a chain at its full width: p has rows after the real nodes', never walked
        p = p[: len(tokens)]
        children: list[list[int]] = [[] for _ in tokens]
        for i, parent in enumerate(parents[1:], start=1):
            children[parent].append(i)
        ranks = range(max(map(len, children)))
        # per child rank j and node: the j-th child's token (0 where there is none) and whether there is one
        child_tokens = upload(
            [[tokens[c[j]] if j < len(c) else 0 for c in children] for j in ranks], p.device
        )
        tried = upload([[j < len(c) for c in children] for j in ranks], p.device, torch.bool)
        # After rank j, dist is each node's mass with its first j children rejected. Each mass left is summed
        # over its own row, as the walk sums it (a [N, V] tensor's row sums round otherwise at a large V).
        dist, masses, shares = p, [], []
        for j in ranks:
            x = child_tokens[j]
            masses += [dist[n].sum() for n, kids in enumerate(children) if j < len(kids)]
            shares.append(dist.gather(1, x[:, None])[:, 0])
            residual = self.residual(dist, F.one_hot(x, dist.shape[-1]).to(dist.dtype))
            dist = torch.where(tried[j][:, None], residual, dist)
        generator = generator if generator is not None else _default_generator(p.device)
        draws, states = [], [generator.get_state()]
        for _ in range(_longest_walk(children)):
            draws.append(torch.rand((), generator=generator, device=p.device))
            states.append(generator.get_state())
        node, path, used = 0, [0], 0
        if draws:  # one read-back: the uniforms, the masses left and the children's shares
            host = np.float32(torch.cat([torch.stack(draws + masses), *shares]).tolist())
            u, mass = host[: len(draws)], iter(host[len(draws) : len(draws) + len(masses)])
            mass_at = {(j, n): next(mass) for j in ranks for n, kids in enumerate(children) if j < len(kids)}
            share_at = host[len(draws) + len(masses) :].reshape(-1, len(tokens))
            scale = np.float32(self.ratio_scale)
            while children[node]:
                for j, child in enumerate(children[node]):
                    # the mass is unnormalised after rejections: accept with probability share / mass left
                    accept = u[used] * mass_at[j, node] < scale * share_at[j, node]
                    used += 1
                    if accept:
                        node = child
                        path.append(child)
                        break
                else:
                    break
            generator.set_state(states[used])
        left = dist[node]
        return path, int(sample(torch.where(left.sum() > RESIDUAL_EPS, left, p[node]), generator))


def _longest_walk(children: list[list[int]]) -> int:
    """The most children a walk from the root can try: the j-th child of a node is tried after its j - 1 elder
    siblings, and a walk ends having tried all of its last node's children."""
    before = [0] * len(children)  # children tried on the way to each node
    for n, kids in enumerate(children):
        for j, child in enumerate(kids):
            before[child] = before[n] + j + 1
    return max(b + len(kids) for b, kids in zip(before, children, strict=True))


def _default_generator(device: torch.device) -> torch.Generator:
    """The generator a draw with `generator=None` takes on `device`."""
    if device.type == "cuda":
        return torch.cuda.default_generators[
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    return torch.default_generator


EXACT = AcceptanceRule()
