"""Statistical checks that a decoder's samples follow the AR model's distribution.

T1, the randomized probability integral transform (Rosenblatt; Czado et al. for discrete forecasts): for a
token x drawn from the exact next-token distribution p_t, with the vocabulary ordered by p_t descending,
u_t = F_t(x-) + V * p_t(x), V ~ U(0, 1), is exactly U(0, 1), and independent across positions. Ordering by
p_t (rather than by token id) makes the test sensitive to sharpening and flattening, the typical failures of a
broken acceptance rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, signal, stats


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


# ---------------------------------------------------------------------------------------------- T2: G-tests
# Each test below returns a `StatResult`: its p-value, the sample size it used and the smallest deviation it
# could detect (power 0.8 at level alpha), so that a PASS always says how small a bug it would have missed.

POWER = 0.8  # the power at which "minimal detectable" deviations are stated
# T5: relative disagreement of q(x) and p(x) below which a correction counts as rounding, not as impossible.
# float32 decoders and the float32 reference agree to ~1e-6; this leaves three orders of magnitude.
AUDIT_TOLERANCE = 1e-3
MIN_EXPECTED = 5  # the pooling rule of Mitsuba's chi2 tests: no cell with an expected count below 5


@dataclass
class StatResult:
    name: str
    pvalue: float
    n: int  # samples (tokens, sequences or draws) the test used
    statistic: float | None = None
    detail: str = ""
    min_detectable_tv: float | None = None  # see docs/verification.md for what it bounds, test by test
    min_detectable_effect: str | None = None  # the same in the test's own unit, where TV does not apply
    adjusted_pvalue: float | None = None  # Holm, filled in by `holm`
    reject: bool | None = None


def pooled_cells(observed: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Pool the cells with expected count < MIN_EXPECTED into one, and that pool into the smallest kept cell
    until it reaches MIN_EXPECTED too; None when fewer than two cells are left (nothing to test)."""
    order = np.argsort(-expected, kind="stable")
    obs, exp = observed[order].astype(np.float64), expected[order]
    keep = int(np.sum(exp >= MIN_EXPECTED))
    pooled_obs, pooled_exp = obs[keep:].sum(), exp[keep:].sum()
    while pooled_exp < MIN_EXPECTED and keep > 0 and pooled_exp + pooled_obs > 0:
        keep -= 1
        pooled_obs, pooled_exp = pooled_obs + obs[keep], pooled_exp + exp[keep]
    cells_obs, cells_exp = list(obs[:keep]), list(exp[:keep])
    if pooled_exp > 0:
        cells_obs.append(pooled_obs)
        cells_exp.append(pooled_exp)
    if len(cells_obs) < 2:
        return None
    return np.array(cells_obs), np.array(cells_exp)


@dataclass
class GTest:
    statistic: float
    df: int
    n: int
    impossible: int = 0  # draws of tokens the reference gives probability 0


def g_test(counts: np.ndarray, probs: np.ndarray) -> GTest | None:
    """G-test of token counts [V] against the reference distribution probs [V], cells pooled (None when the
    draws are too few for two cells). Draws of a zero-probability token are counted in `impossible`."""
    counts, probs = np.asarray(counts, dtype=np.float64), np.asarray(probs, dtype=np.float64)
    n = int(counts.sum())
    impossible = int(counts[probs <= 0].sum())
    possible = probs > 0
    cells = pooled_cells(counts[possible], (n - impossible) * probs[possible] / probs[possible].sum())
    if cells is None:
        return GTest(0.0, 0, n, impossible) if impossible else None
    result = stats.power_divergence(cells[0], cells[1], lambda_="log-likelihood")
    return GTest(float(result.statistic), len(cells[0]) - 1, n, impossible)


def combined_g_test(name: str, tests: list[GTest], alpha: float) -> StatResult | None:
    """Independent G-tests (one per context) summed: sum of G ~ chi2 with the summed degrees of freedom."""
    tests = [t for t in tests if t is not None]
    if not tests:
        return None
    n = sum(t.n for t in tests)
    impossible = sum(t.impossible for t in tests)
    statistic, df = sum(t.statistic for t in tests), sum(t.df for t in tests)
    pvalue = 0.0 if impossible else float(stats.chi2.sf(statistic, df)) if df else 1.0
    detail = f"{len(tests)} contexts, df {df}" + (
        f", {impossible} draws of zero-probability tokens" if impossible else ""
    )
    return StatResult(
        name, pvalue, n, statistic, detail, min_detectable_tv=g_test_min_tv(n, max(df, 1), alpha)
    )


def g_test_min_tv(n: int, df: int, alpha: float, power: float = POWER) -> float:
    """Every alternative with per-context TV >= this is detected with `power` (asymptotically): the test's
    noncentrality is n * chi2-divergence, and chi2-divergence >= 4 TV^2 (Cauchy-Schwarz)."""
    critical = stats.chi2.isf(alpha, df)
    noncentrality = optimize.brentq(lambda lam: stats.ncx2.sf(critical, df, lam) - power, 1e-9, 1e6)
    return math.sqrt(noncentrality / n) / 2


# --------------------------------------------------------------------------------- T1 and T3: per-token tests


def ks_min_tv(n: int, alpha: float, power: float = POWER) -> float:
    """The smallest sup-distance between CDFs a KS test on n points detects with `power`: the critical value
    plus `power`'s normal quantile times the largest standard deviation of an empirical CDF (1/2 sqrt(n)).
    A deviation of the token distributions by TV d moves the PIT's CDF by at most d, so nothing below this
    is detectable."""
    return (stats.kstwobign.isf(alpha) + stats.norm.ppf(power) * 0.5) / math.sqrt(n)


def pit_test(u: np.ndarray, alpha: float) -> list[StatResult]:
    """T1: KS and Cramer-von Mises of the randomized PIT values against U(0, 1). Degenerate positions (one
    token of probability 1) need no case of their own: their u is V, exactly U(0, 1). Cramer-von Mises is
    undefined on one value (scipy gives NaN): a single token is tested by KS alone. None when u is empty."""
    if len(u) == 0:
        return []
    n, tv = len(u), ks_min_tv(len(u), alpha)
    detail = "randomized PIT vs U(0,1)"
    if n < 2:
        ks = float(stats.kstest(u, "uniform").pvalue)
        return [StatResult("T1 PIT KS", ks, n, detail=detail, min_detectable_tv=tv)]
    pvalues = uniformity_pvalues(u)
    return [
        StatResult("T1 PIT KS", pvalues["ks"], n, detail=detail, min_detectable_tv=tv),
        StatResult("T1 PIT CvM", pvalues["cvm"], n, detail=detail, min_detectable_tv=tv),
    ]


@dataclass
class Surprisal:
    """Per token: -log p(x), and the entropy and variance of -log p under p (the reference)."""

    surprisal: np.ndarray
    entropy: np.ndarray
    variance: np.ndarray


def surprisal_terms(probs: torch.Tensor, tokens: torch.Tensor) -> Surprisal:
    p = probs.double()
    log_p = torch.where(p > 0, p.log(), torch.zeros_like(p))
    entropy = -(p * log_p).sum(-1)
    variance = (p * log_p**2).sum(-1) - entropy**2
    p_x = p[torch.arange(len(tokens)), tokens]
    surprisal = torch.where(p_x > 0, -p_x.log(), torch.full_like(p_x, math.inf))
    return Surprisal(surprisal.numpy(), entropy.numpy(), variance.clamp_min(0).numpy())


def surprisal_test(terms: Surprisal, alpha: float, power: float = POWER) -> StatResult:
    """T3: Z = sum(-log p(x) - H) / sqrt(sum Var[-log p]) is N(0, 1) under H0; two-sided. Sensitive to
    sharpening (Z < 0) and flattening (Z > 0) of the whole distribution."""
    n = len(terms.surprisal)
    sd = math.sqrt(terms.variance.sum())
    if not np.all(np.isfinite(terms.surprisal)):
        return StatResult("T3 surprisal z", 0.0, n, math.inf, "a token of probability 0 was emitted")
    z = float((terms.surprisal - terms.entropy).sum() / sd) if sd > 0 else 0.0
    shift = (stats.norm.isf(alpha / 2) + stats.norm.ppf(power)) * sd / n if n else math.inf
    return StatResult(
        "T3 surprisal z",
        float(2 * stats.norm.sf(abs(z))),
        n,
        z,
        "positive: flatter than the reference, negative: sharper",
        min_detectable_effect=f"{shift:.3g} nats/token of mean surprisal",
    )


# ------------------------------------------------------------------------------------ T5: acceptance audit


def poisson_binomial_pmf(pi: np.ndarray) -> np.ndarray:
    """P(S = k), k = 0..len(pi), for S a sum of independent Bernoulli(pi): the coefficients of the product of
    the polynomials (1 - pi + pi z), multiplied pairwise so that the long products go through the FFT."""
    polys = [np.array([1 - x, x]) for x in pi] or [np.ones(1)]
    while len(polys) > 1:
        paired = [signal.convolve(a, b) for a, b in zip(polys[::2], polys[1::2], strict=False)]
        polys = paired + polys[len(paired) * 2 :]
    return np.clip(polys[0], 0.0, None)


def acceptance_audit(
    accepted: np.ndarray,
    q: np.ndarray,
    p: np.ndarray,
    alpha: float,
    power: float = POWER,
    tolerance: float = AUDIT_TOLERANCE,
) -> StatResult | None:
    """T5, an audit of the consensus rule from the decoder's acceptance trace. At a verified draft position,
    speculative sampling emits token x as an accepted draft with probability min(q(x), p(x)) and as the
    correction with max(p(x) - q(x), 0), whatever the draft distribution q; so given the emitted x it was
    accepted with probability pi = min(1, q(x) / p(x)), with p the target's exact distribution recomputed
    here. The number of acceptances is compared with its Poisson-binomial law given the pi (two-sided). A
    correction where q(x) > p(x) (1 + tolerance) (the residual max(p - q, 0) has no mass there) or an
    acceptance where q(x) = 0 cannot happen and rejects outright; corrections where q and p agree within the
    tolerance are rounding, dropped and counted.

    This sees bugs the output tests barely can: a wrong acceptance ratio, residual or target transform changes
    which tokens are accepted and corrected long before it measurably changes the output distribution, since
    its effect on the output is scaled by the rejection rate. Positions where q(x) >= p(x) (pi = 1) carry no
    information and no noise. None when the trace holds no verified draft positions."""
    accepted, q, p = (np.asarray(x, dtype=np.float64) for x in (accepted, q, p))
    ratio = np.divide(q, p, out=np.full_like(q, np.inf), where=p > 0)
    corrected = accepted == 0
    impossible = int(np.sum(corrected & (ratio > 1 + tolerance)) + np.sum(~corrected & (q <= 0)))
    rounding = corrected & (ratio >= 1) & (ratio <= 1 + tolerance)
    kept = ~rounding
    accepted, pi = accepted[kept], np.minimum(1.0, ratio[kept])
    n = len(accepted)
    if not n:
        return None
    free = (pi > 0) & (pi < 1)
    pmf = poisson_binomial_pmf(pi[free])
    s = int(accepted[free].sum())
    expected, variance = float(pi[free].sum()), float(np.sum(pi[free] * (1 - pi[free])))
    pvalue = 0.0 if impossible else float(min(1.0, 2 * min(pmf[: s + 1].sum(), pmf[s:].sum())))
    shift = (stats.norm.isf(alpha / 2) + stats.norm.ppf(power)) * math.sqrt(variance) / n
    notes = [f"{impossible} impossible events"] if impossible else []
    notes += [f"{int(rounding.sum())} corrections at q = p within rounding dropped"] if rounding.any() else []
    return StatResult(
        "T5 acceptance audit",
        pvalue,
        n,
        (s - expected) / math.sqrt(variance) if variance > 0 else 0.0,
        f"{s} of {int(free.sum())} undecided verified drafts accepted, {expected:.1f} expected"
        + "".join(f"; {x}" for x in notes)
        + "; z positive: accepts too often",
        min_detectable_effect=f"{shift:.3g} in the mean acceptance probability of a verified draft",
    )


# ----------------------------------------------------------------------------------- T4: two-sample tests


def two_sample_tests(
    method_logprob: np.ndarray,
    reference_logprob: np.ndarray,
    method_length: np.ndarray,
    reference_length: np.ndarray,
    alpha: float,
    seed: int = 0,
    power: float = POWER,
) -> list[StatResult]:
    """T4: the method's sequences against the reference decoder's, on the per-sequence target log-probability
    (KS and k-sample Anderson-Darling, continuous) and on the length (permutation test of the mean).

    Constant data, defined rather than left to scipy (anderson_ksamp raises on it): when every sequence of both
    samples has the same log-probability (every token of probability 1, as under a setting that leaves one
    token at every position), or the same length, the two samples are identical in that statistic: no evidence
    of a difference, p = 1, statistic 0. Two different constants are two distinct values and go through the
    tests as they are (their p-value is the smallest the permutation or KS distribution gives at those sizes)."""
    a, b = np.asarray(method_logprob, float), np.asarray(reference_logprob, float)
    n, m = len(a), len(b)
    if n < 2 or m < 2:
        return []
    rng = np.random.default_rng(seed)
    tv = (stats.kstwobign.isf(alpha) + stats.norm.ppf(power) * 0.5) * math.sqrt(1 / n + 1 / m)
    sizes = f"{n} vs {m} sequences"
    if np.ptp(np.concatenate([a, b])) == 0:
        same = f"{sizes}; every sequence has log-probability {a[0] + 0.0:.6g}: no evidence of a difference"
        logprob = [
            StatResult("T4 log-prob KS", 1.0, n + m, 0.0, same, tv),
            StatResult("T4 log-prob AD", 1.0, n + m, 0.0, same, tv),
        ]
    else:
        ks = stats.ks_2samp(a, b)
        ad = stats.anderson_ksamp(
            [a, b], variant="midrank", method=stats.PermutationMethod(n_resamples=999, random_state=rng)
        )
        logprob = [
            StatResult("T4 log-prob KS", float(ks.pvalue), n + m, float(ks.statistic), sizes, tv),
            StatResult("T4 log-prob AD", float(ad.pvalue), n + m, float(ad.statistic), sizes, tv),
        ]
    la, lb = np.asarray(method_length, float), np.asarray(reference_length, float)
    if np.ptp(np.concatenate([la, lb])) == 0:
        length_p = 1.0  # every sequence has the same length: nothing to compare
    else:
        length_p = stats.permutation_test(
            (la, lb),
            lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
            permutation_type="independent",
            n_resamples=9999,
            vectorized=True,
            random_state=rng,
        ).pvalue
    spread = np.concatenate([la, lb]).std(ddof=1)
    length_shift = (stats.norm.isf(alpha / 2) + stats.norm.ppf(power)) * spread * math.sqrt(1 / n + 1 / m)
    return [
        *logprob,
        StatResult(
            "T4 length permutation",
            float(length_p),
            n + m,
            float(la.mean() - lb.mean()),
            f"{sizes}; mean length {la.mean():.1f} vs {lb.mean():.1f}",
            min_detectable_effect=f"{length_shift:.3g} tokens of mean length",
        ),
    ]


# -------------------------------------------------------------------------------------- multiple testing


def holm(results: list[StatResult], alpha: float) -> bool:
    """Holm's step-down adjustment across the family, in place; True when any test rejects at alpha."""
    order = sorted(range(len(results)), key=lambda i: results[i].pvalue)
    m, running = len(results), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * results[i].pvalue))
        results[i].adjusted_pvalue = running
        results[i].reject = running <= alpha
    return any(r.reject for r in results)


# --------------------------------------------------------------------------------------------- accuracy


@dataclass
class AccuracyComparison:
    """Per-item accuracy of a method against the reference on the same items (paired)."""

    items: int
    samples_per_item: float
    method_accuracy: float
    reference_accuracy: float
    difference: float  # method - reference, in accuracy units (0.02 = 2 points)
    ci95: tuple[float, float]
    test: str  # "exact McNemar" or "paired bootstrap"
    pvalue: float | None = None  # McNemar's, where it applies
    discordant: tuple[int, int] | None = None  # McNemar's (reference only right, method only right)
    tost_ci90: tuple[float, float] | None = None
    conclusion: str = ""


def mcnemar_exact(reference: np.ndarray, method: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test on paired correctness: b = reference right and method wrong, c = the reverse;
    p = two-sided binomial test of b in b + c at 1/2 (1 when there is no discordant item)."""
    reference, method = np.asarray(reference, bool), np.asarray(method, bool)
    b, c = int(np.sum(reference & ~method)), int(np.sum(~reference & method))
    return b, c, float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0


def paired_bootstrap_ci(differences: np.ndarray, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean per-item difference, resampling items (clusters of samples)."""
    if np.ptp(differences) == 0:
        return float(differences[0]), float(differences[0])
    result = stats.bootstrap(
        (differences,),
        np.mean,
        confidence_level=level,
        n_resamples=9999,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare_accuracy(
    reference: dict, method: dict, *, greedy: bool, lossy: bool, margin: float, alpha: float, seed: int = 0
) -> AccuracyComparison | None:
    """reference and method map item -> list of per-sample correctness (bools); items scored by both count.

    Greedy: exact McNemar on the first sample's correctness. Otherwise, and for every lossy method: the mean
    per-item difference with a paired bootstrap CI; equivalence by TOST (90% CI inside +-margin) for a
    lossless method, non-inferiority (the one-sided 95% lower bound above -margin) for a lossy one."""
    items = sorted(set(reference) & set(method))
    if not items:
        return None
    ref_mean = np.array([np.mean(reference[i]) for i in items])
    met_mean = np.array([np.mean(method[i]) for i in items])
    diff = met_mean - ref_mean
    k = float(np.mean([len(method[i]) for i in items]))
    ci95 = paired_bootstrap_ci(diff, 0.95, seed)
    ci90 = paired_bootstrap_ci(diff, 0.90, seed)
    result = AccuracyComparison(
        len(items),
        k,
        float(met_mean.mean()),
        float(ref_mean.mean()),
        float(diff.mean()),
        ci95,
        "paired bootstrap",
    )
    result.tost_ci90 = ci90
    points = f"{100 * margin:g} points"
    if greedy and not lossy:
        b, c, p = mcnemar_exact([reference[i][0] for i in items], [method[i][0] for i in items])
        result.test, result.pvalue, result.discordant = "exact McNemar", p, (b, c)
        result.conclusion = (
            "same per-item correctness" if b + c == 0 else f"{b + c} discordant items, McNemar p = {p:.3g}"
        )
        if p <= alpha:
            result.conclusion += ": accuracy differs"
    elif lossy:
        result.conclusion = (
            f"non-inferior at margin {points}"
            if ci90[0] > -margin
            else f"not shown non-inferior at margin {points}"
        )
    elif -margin < ci90[0] and ci90[1] < margin:
        result.conclusion = f"equivalent within {points} (TOST)"
    elif ci95[0] > 0 or ci95[1] < 0:
        result.conclusion = "accuracy differs (95% CI excludes 0)"
    else:
        result.conclusion = f"inconclusive: the 90% CI is wider than +-{points}"
    return result
