"""Bootstrap confidence intervals, and the statistics the report resamples (a ratio of means, τ and TPF pooled
over generations); each also works on plain columns. τ and TPF are orthrus_core.metrics' definitions,
applied to the sums, NaN where undefined."""

from __future__ import annotations

import numpy as np

from orthrus_core import metrics


def bootstrap_ci(
    statistic, *samples, confidence: float = 0.95, n_resamples: int = 2000
) -> tuple[float, float] | None:
    """Percentile bootstrap CI of `statistic(*samples, axis=-1)`, the samples resampled together (paired:
    one index draw per resample keeps an item's values side by side; seeded, so a report is reproducible). None
    with fewer than two values, or where the figure itself is undefined (a TPF of items without forwards after
    the prefill). A resample in which it is undefined (one drawing only such items: `_pooled`'s NaN) is left
    out of the percentiles. The draws and percentiles are scipy.stats.bootstrap's (paired, vectorized,
    method="percentile", rng=default_rng(0)), which warns on such resamples instead."""
    samples = tuple(np.asarray(s, dtype=float) for s in samples)
    n = len(samples[0])
    if n < 2:
        return None
    value = float(statistic(*samples, axis=-1))
    if not np.isfinite(value):
        return None
    if all(np.ptp(s) == 0 for s in samples):  # every resample gives the same value
        return value, value
    draws = np.random.default_rng(0).integers(0, n, (n_resamples, n))
    distribution = np.asarray(statistic(*(s[draws] for s in samples), axis=-1), dtype=float)
    distribution = distribution[np.isfinite(distribution)]
    if not len(distribution):
        return None
    alpha = (1 - confidence) / 2
    low, high = np.quantile(distribution, [alpha, 1 - alpha])
    return float(low), float(high)


def ratio_of_means(a, b, axis=-1):
    return np.mean(np.asarray(a, float), axis=axis) / np.mean(np.asarray(b, float), axis=axis)


def sums(a, axis=-1) -> np.ndarray:
    """Sums along `axis` as an array (0-d for one column), so metrics applies its formula elementwise."""
    return np.asarray(np.sum(np.asarray(a, float), axis=axis))


def _pooled(formula, numerators, denominators, axis):
    """`formula` (metrics.tau, metrics.tpf: a ratio of sums) of the sums along `axis`. Where the denominators sum
    to 0 (no cycles, no forwards after the prefill: a run of one-token answers, or a resample of such items)
    the figure is undefined, as metrics says with None for one generation: NaN here, computed without
    dividing by zero (so no RuntimeWarning in the report's output)."""
    top, bottom = sums(numerators, axis), sums(denominators, axis)
    defined = bottom != 0
    return np.where(defined, formula(top, np.where(defined, bottom, 1.0)), np.nan)


def pooled_tau(accepted, cycles, axis=-1):
    """τ over many generations: metrics.tau of all accepted drafts and all cycles (docs/methodology.md)."""
    return _pooled(metrics.tau, accepted, cycles, axis)


def pooled_tpf(tokens, forwards, axis=-1):
    """TPF over many generations: metrics.tpf of all new tokens and all forwards (docs/methodology.md)."""
    return _pooled(metrics.tpf, tokens, forwards, axis)


def mean(a, axis=-1):
    return np.mean(np.asarray(a, float), axis=axis)
