"""Bootstrap confidence intervals, and the statistics the report resamples (a ratio of means, τ and TPF pooled
over generations); each also works on plain columns. τ and TPF are orthrus_core.metrics' definitions,
applied to the sums."""

from __future__ import annotations

import numpy as np
from scipy import stats

from orthrus_core import metrics


def bootstrap_ci(statistic, *samples, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap CI of `statistic(*samples, axis=-1)`, the samples resampled together (paired:
    one index draw per resample keeps an item's values side by side). None with fewer than two values."""
    samples = tuple(np.asarray(s, dtype=float) for s in samples)
    if len(samples[0]) < 2:
        return None
    if all(np.ptp(s) == 0 for s in samples):  # every resample gives the same value
        value = float(statistic(*samples, axis=-1))
        return value, value
    result = stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        n_resamples=2000,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def ratio_of_means(a, b, axis=-1):
    return np.mean(np.asarray(a, float), axis=axis) / np.mean(np.asarray(b, float), axis=axis)


def sums(a, axis=-1) -> np.ndarray:
    """Sums along `axis` as an array (0-d for one column), so metrics applies its formula elementwise: a
    resample without cycles or forwards gives NaN or inf, as a ratio of sums does, never None."""
    return np.asarray(np.sum(np.asarray(a, float), axis=axis))


def pooled_tau(accepted, cycles, axis=-1):
    """τ over many generations: metrics.tau of all accepted drafts and all cycles (docs/methodology.md)."""
    return metrics.tau(sums(accepted, axis), sums(cycles, axis))


def pooled_tpf(tokens, forwards, axis=-1):
    """TPF over many generations: metrics.tpf of all new tokens and all forwards (docs/methodology.md)."""
    return metrics.tpf(sums(tokens, axis), sums(forwards, axis))


def mean(a, axis=-1):
    return np.mean(np.asarray(a, float), axis=axis)
