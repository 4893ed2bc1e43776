"""Token distributions and the exact consensus rules shared by every speculative method.

`SamplingParams.probs` turns logits into the distribution a decoder samples from (temperature, then top-k,
then top-p, the order of transformers' logits warpers). A speculative decoder applies the same transform to
its draft distribution q and to the target p, so its output follows the *transformed* target distribution.

Acceptance rules (vectorised, no per-token Python loop, no host synchronisation: they return 0-dim tensors so
that the decoder reads the accepted count, the next token and the drafts back in one transfer):
* `greedy_accept`: the longest prefix of drafts equal to the target argmax, then the target token at the
  first mismatch (or the bonus token after the last draft).
* `speculative_accept`: Leviathan et al. / Chen et al. speculative sampling — accept draft x_i with
  probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection resample from normalize(max(p_i - q_i, 0));
  if every draft is accepted, sample the bonus token from p_n.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Below this residual mass p and q agree to rounding: rejection there is a rounding artefact and p is exact.
RESIDUAL_EPS = 1e-5


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 means greedy (argmax; the first maximum on ties)
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1 disables

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """float32 logits [..., V] -> the sampling distribution [..., V] (rows sum to 1)."""
        logits = logits.float() / self.temperature
        if self.top_k and self.top_k < logits.shape[-1]:
            kth = torch.topk(logits, self.top_k, dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
            # Keep a token while the mass strictly before it is below top_p: the smallest nucleus >= top_p.
            drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= self.top_p
            drop = drop_sorted.scatter(-1, order, drop_sorted)
            probs = probs.masked_fill(drop, 0.0)
            probs = probs / probs.sum(-1, keepdim=True)
        return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of probs [..., V] -> [...]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


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


def speculative_accept(
    drafts: torch.Tensor, q: torch.Tensor, p: torch.Tensor, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """drafts [n] sampled from q [n, V]; target p [n+1, V] -> (accepted drafts, next token)."""
    n = drafts.shape[0]
    rows = torch.arange(n, device=drafts.device)
    u = torch.rand(n, generator=generator, device=drafts.device)
    # u < p/q without the division (q(x) > 0 since x was drawn from q).
    accepted = u * q[rows, drafts] < p[rows, drafts]
    n_accepted = torch.cumprod(accepted.long(), 0).sum()
    # A zero row after q makes the "all accepted" case the same formula: max(p_n - 0, 0) = p_n (the bonus).
    q_at = torch.cat([q, q.new_zeros(1, q.shape[1])])[n_accepted]
    p_at = p[n_accepted]
    residual = residual_distribution(p_at, q_at)
    residual = torch.where(residual.sum() > RESIDUAL_EPS, residual, p_at)
    return n_accepted, sample(residual, generator)


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Unnormalised max(p - q, 0): what to resample from after a rejection."""
    return (p - q).clamp_min(0.0)
