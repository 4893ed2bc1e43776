"""Statistical checks that a decoder's samples follow the AR model's distribution.

T1, the randomized probability integral transform (Rosenblatt; Czado et al. for discrete forecasts): for a
token x drawn from the exact next-token distribution p_t, with the vocabulary ordered by p_t descending,
u_t = F_t(x-) + V * p_t(x), V ~ U(0, 1), is exactly U(0, 1), and independent across positions. Ordering by
p_t (rather than by token id) makes the test sensitive to sharpening and flattening, the typical failures of a
broken acceptance rule.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import stats


def randomized_pit(probs: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """probs [N, V] (the distribution each token was supposedly drawn from), tokens [N] -> u [N] in [0, 1)."""
    sorted_p, order = torch.sort(probs.double(), dim=-1, descending=True, stable=True)
    rank = torch.argsort(order, dim=-1)[torch.arange(len(tokens)), tokens]
    mass_before = (sorted_p.cumsum(-1) - sorted_p).gather(-1, rank[:, None])[:, 0]
    p_x = probs.double()[torch.arange(len(tokens)), tokens]
    return mass_before + torch.rand(len(tokens), generator=generator, dtype=torch.float64) * p_x


def uniformity_pvalues(u: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Kolmogorov-Smirnov and Cramer-von Mises p-values of u against U(0, 1)."""
    u = np.asarray(u, dtype=np.float64)
    return {
        "ks": float(stats.kstest(u, "uniform").pvalue),
        "cvm": float(stats.cramervonmises(u, "uniform").pvalue),
    }
