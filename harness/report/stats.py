"""Bootstrap confidence intervals, and the statistics the report resamples (ratios of means and sums, pooled
τ); each also works on plain columns."""

from __future__ import annotations

import numpy as np
from scipy import stats


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


def ratio_of_sums(a, b, axis=-1):
    return np.sum(np.asarray(a, float), axis=axis) / np.sum(np.asarray(b, float), axis=axis)


def pooled_tau(accepted, cycles, axis=-1):
    """τ over many generations: 1 + all accepted drafts / all cycles (docs/methodology.md)."""
    return 1 + ratio_of_sums(accepted, cycles, axis)


def mean(a, axis=-1):
    return np.mean(np.asarray(a, float), axis=axis)
