"""Statistics primitives on arrays: per-prompt means, Hedges' g, bootstrap CIs, sign-flip
permutation p-values, Holm's adjustment (pure functions; `harness.comparison` composes them).

The samples of a prompt are first averaged into one per-prompt mean (non-finite values
dropped), and the unit of analysis is the prompt.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

NAN = float("nan")


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def per_prompt_means(values: dict[str, list[float]]) -> tuple[dict[str, float], int]:
    """Mean of the finite values of every prompt, and the count of non-finite values dropped.

    Prompts with no finite value are left out.
    """
    means: dict[str, float] = {}
    dropped = 0
    for key, vals in values.items():
        arr = np.asarray(vals, dtype=float)
        finite = arr[np.isfinite(arr)]
        dropped += arr.size - finite.size
        if finite.size:
            means[key] = float(finite.mean())
    return means, dropped


def hedges_g(unsteered: Sequence[float], steered: Sequence[float]) -> float:
    """Hedges' g of paired per-prompt means: the "g_av" of Lakens (2013).

    g = (mean(s) - mean(u)) / sqrt((var_u + var_s) / 2) * J, variances with ddof=1 and
    J = 1 - 3 / (4 df - 1), df = n - 1. The standardizer is the root mean square of the two
    SDs; Lakens' d_av uses their plain mean, which differs slightly. n < 3 gives nan (J is 0
    at n = 2, which would read as "no effect"); zero variance on both sides gives 0.0 or
    +-inf by the sign of the mean difference.
    """
    u, s = np.asarray(unsteered, dtype=float), np.asarray(steered, dtype=float)
    if u.shape != s.shape:
        raise ValueError(f"unpaired inputs: {u.size} unsteered vs {s.size} steered")
    n = u.size
    if n < 3:
        return NAN
    diff = float(s.mean() - u.mean())
    var_u, var_s = float(u.var(ddof=1)), float(s.var(ddof=1))
    if var_u == 0 and var_s == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    j = 1 - 3 / (4 * (n - 1) - 1)
    return diff / math.sqrt((var_u + var_s) / 2) * j


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0,
                 n_resamples: int = 2000) -> tuple[float, float]:
    """BCa bootstrap CI of the mean of `values` (scipy.stats.bootstrap), seeded.

    Falls back to the percentile method where BCa gives non-finite bounds (degenerate
    resamples). All values equal gives (v, v); fewer than 2 values gives (nan, nan).
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return NAN, NAN
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])

    def run(method: str) -> tuple[float, float]:
        res = stats.bootstrap((x,), _mean, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method=method,
                              rng=np.random.default_rng(seed))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    with warnings.catch_warnings():
        # BCa on degenerate resamples warns (nan arithmetic, DegenerateDataWarning); we fall back.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = run("BCa")
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    return run("percentile")


def paired_p_value(diffs: Sequence[float], seed: int = 0, n_resamples: int = 9999) -> float:
    """Two-sided sign-flip permutation p-value of mean(diffs) == 0 (scipy.stats.permutation_test).

    Exact (all 2**n sign flips) when 2**n <= n_resamples, else seeded Monte Carlo.
    All diffs zero gives 1.0; n < 2 gives nan.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return NAN
    if np.all(d == 0):
        return 1.0
    res = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative="two-sided",
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values in input order; NaNs stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, NAN)
    idx = np.flatnonzero(~np.isnan(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out.tolist()


def proportion_upper_bound(successes: int, n: int, alpha: float) -> float:
    """Exact (Clopper-Pearson) one-sided upper confidence bound, at level 1 − `alpha`, of a
    proportion seen `successes` times in `n` trials; 1.0 when they all succeeded, nan when n = 0."""
    if n <= 0:
        return NAN
    if successes >= n:
        return 1.0
    return float(stats.beta.ppf(1 - alpha, successes + 1, n - successes))


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free interval of the median from two order statistics (scipy.stats.quantile_test):
    it covers the true median with probability at least `confidence` for independent values of any
    continuous distribution; (nan, nan) when there are too few values to reach that (fewer than 6
    at 95 %)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return NAN, NAN
    ci = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(confidence)
    return float(ci.low), float(ci.high)
