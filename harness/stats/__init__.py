"""Statistics primitives on arrays: per-prompt means, SDs, Hedges' g, confidence intervals,
sign-flip permutation p-values, Holm's adjustment, t quantiles, a line fit, and for steerability
and agreement: exact proportion and chi-square SD intervals, the AUC and Spearman's rho with their
intervals. The only module that calls scipy (`harness.stats.comparison` composes these into one estimate).

The samples of a prompt are first averaged into one per-prompt mean (non-finite values
dropped), and the unit of analysis is the prompt.

Which interval and test the harness prints is decided by `harness.stats.calibration`, which measures
their coverage and false-positive rate by simulation at every size the tool accepts: the
Student t interval covers 95 % at every n on normal data, BCa bootstrap intervals do not (0.52
at n = 2, 0.87 at n = 8, 0.94 at n = 48, 1000 null runs each), so mean differences get the t
interval (Welch's for independent samples) and BCa stays for the diagnostics' statistics over
many texts and items.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

NAN = float("nan")
Alternative = Literal["two-sided", "less", "greater"]

CI_T = "Student t"
CI_WELCH = "Welch t"
CI_NONE = "none: fewer than 2 prompts"
# every compared prompt moved by the same amount: a t interval would be a point and an MDE 0, claims
# that no sample size supports (8 of 8 prompts flipping does not make the population effect exact)
CI_ZERO_SPREAD = "none: zero spread, the interval would be a point"
TEST_SIGN_FLIP = "sign-flip permutation"
TEST_WELCH = "Welch t-test"
TEST_NONE = "none: fewer than 2 prompts"
PERMUTATIONS = 9999  # Monte Carlo resamples of the sign-flip test where 2**n exceeds this (n > 13)


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


def sd(values: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1) of the finite values; NaN for fewer than 2."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.std(ddof=1)) if x.size > 1 else NAN


def pooled_sd(x: Sequence[float], y: Sequence[float]) -> float:
    """Pooled standard deviation of two independent samples (NaN unless both have 2 values)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or b.size < 2:
        return NAN
    return math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))


def _standardized(diff: float, scale: float, df: int) -> float:
    """diff / scale times Hedges' J = 1 − 3 / (4 df − 1); zero scale gives 0 or ±inf by the sign,
    a non-finite one (values beyond float range) NaN, not 0."""
    if not math.isfinite(scale) or not math.isfinite(diff):
        return NAN
    if scale == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / scale * (1 - 3 / (4 * df - 1))


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
    if u.size < 3:
        return NAN
    scale = math.sqrt((u.var(ddof=1) + s.var(ddof=1)) / 2)
    return _standardized(float(s.mean() - u.mean()), scale, u.size - 1)


def hedges_g_independent(x: Sequence[float], y: Sequence[float]) -> float:
    """Hedges' g of two independent samples (y − x): pooled-SD Cohen's d times J, df = nx + ny − 2."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or b.size < 2:
        return NAN
    return _standardized(float(b.mean() - a.mean()), pooled_sd(a, b), a.size + b.size - 2)


def t_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student t interval of the mean (scipy.stats.ttest_1samp). All values equal gives (v, v);
    fewer than 2 values gives (nan, nan)."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return NAN, NAN
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return float(ci.low), float(ci.high)


def welch(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Welch's interval and two-sided p-value of mean(y) − mean(x) (scipy.stats.ttest_ind,
    unequal variances). Fewer than 2 values on a side gives nans; all values equal gives (0, 0, 1)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or b.size < 2:
        return NAN, NAN, NAN
    if np.all(np.concatenate([a, b]) == a[0]):
        return 0.0, 0.0, 1.0
    res = stats.ttest_ind(b, a, equal_var=False)
    ci = res.confidence_interval(confidence)
    return float(ci.low), float(ci.high), float(res.pvalue)


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, seed: int = 0,
                 n_resamples: int = 2000) -> tuple[float, float]:
    """BCa bootstrap CI of the mean of `values` (scipy.stats.bootstrap), seeded.

    For statistics over many texts or items (the diagnostics): below about 50 values it covers
    less than it claims (see `harness.stats.calibration`). Falls back to the percentile method where BCa
    gives non-finite bounds. All values equal gives (v, v); fewer than 2 values gives (nan, nan).
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return NAN, NAN
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])

    def run(method: str) -> tuple[float, float]:
        res = stats.bootstrap((x,), _mean, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    with warnings.catch_warnings():
        # BCa on degenerate resamples warns (nan arithmetic, DegenerateDataWarning); we fall back.
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = run("BCa")
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    return run("percentile")


def paired_p_value(diffs: Sequence[float], seed: int = 0, n_resamples: int = PERMUTATIONS,
                   alternative: Alternative = "two-sided") -> float:
    """Sign-flip permutation p-value of mean(diffs) == 0 (scipy.stats.permutation_test).

    Exact (all 2**n sign flips) when 2**n <= n_resamples, else seeded Monte Carlo. The smallest
    p it can give is `smallest_p(n)`. All diffs zero gives 1.0; n < 2 gives nan.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return NAN
    if np.all(d == 0):
        return 1.0
    res = stats.permutation_test((d,), _mean, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative=alternative,
                                 rng=np.random.default_rng(seed))
    return float(res.pvalue)


def sign_flip_is_exact(n: int, n_resamples: int = PERMUTATIONS) -> bool:
    """Whether `paired_p_value` of n prompts enumerates every sign flip (else it is Monte Carlo)."""
    return 2**n <= n_resamples


def smallest_p(n: int, sides: int = 2, n_resamples: int = PERMUTATIONS) -> float:
    """The smallest p-value the sign-flip test of `paired_p_value` can give with n prompts:
    sides / 2**n when exact (scipy doubles the smaller one-sided p), else sides / (n_resamples + 1)."""
    if n < 2:
        return NAN
    if sign_flip_is_exact(n, n_resamples):
        return min(1.0, sides / 2**n)
    return min(1.0, sides / (n_resamples + 1))


def min_prompts(alpha: float, sides: int = 2) -> int:
    """The fewest prompts at which the sign-flip test can give p < alpha (6 two-sided, 5 one-sided
    at 0.05): below it no effect, however large, is ever significant."""
    n = 2
    while not smallest_p(n, sides) < alpha:
        n += 1
    return n


def t_quantile(q: float, df: float) -> float:
    """The q-quantile of Student's t with df degrees of freedom."""
    return float(stats.t.ppf(q, df))


def line_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares slope of y on x and its standard error (scipy.stats.linregress)."""
    fit = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return float(fit.slope), float(fit.stderr)


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


def proportion_ci(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval of a proportion seen `successes` times in `n`
    trials (scipy.stats.binomtest); (nan, nan) when n = 0."""
    if n <= 0:
        return NAN, NAN
    ci = stats.binomtest(successes, n).proportion_ci(confidence, method="exact")
    return float(ci.low), float(ci.high)


def sd_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Chi-square interval of the standard deviation of the finite values: sqrt((n − 1) s² / q) at
    the upper and the lower (1 ± confidence) / 2 quantile q of χ²(n − 1). Exact for normal data, too
    narrow for heavy-tailed data (it rests on the normal-theory distribution of the variance).
    Fewer than 2 values, or all equal (the interval would be the point 0), gives (nan, nan)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2 or np.all(x == x[0]):
        return NAN, NAN
    scaled = (x.size - 1) * x.var(ddof=1)
    upper, lower = stats.chi2.ppf([(1 + confidence) / 2, (1 - confidence) / 2], x.size - 1)
    return math.sqrt(scaled / upper), math.sqrt(scaled / lower)


def _auc(positive: np.ndarray, negative: np.ndarray, axis: int = -1) -> np.ndarray:
    """P(positive > negative) + P(tie) / 2: the Mann-Whitney U of the positives over n₊ n₋."""
    u = stats.mannwhitneyu(positive, negative, axis=axis, method="asymptotic").statistic
    return u / (positive.shape[axis] * negative.shape[axis])


def auc(positive: Sequence[float], negative: Sequence[float], confidence: float = 0.95, seed: int = 0,
        n_resamples: int = 2000) -> tuple[float, float, float]:
    """Area under the ROC curve of a score for a binary label, from the scores of the positive and of
    the negative items (a tie counts one half), and a stratified bootstrap interval: positives and
    negatives resampled apart (scipy.stats.bootstrap of the two samples), BCa, or the percentile
    method where BCa gives non-finite bounds (every resample equal, e.g. AUC 1). It takes the items
    as independent. On binormal scores (AUC 0.76, 30 negatives, 200 draws) it covered 0.95 with 10
    or 20 positives but 0.92 with 5 and 0.87 with 3: below 10 of a class it is too narrow. (nan, nan,
    nan) without a positive or a negative; nan bounds with fewer than 2 of either."""
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if pos.size == 0 or neg.size == 0:
        return NAN, NAN, NAN
    point = float(_auc(pos, neg))
    if pos.size < 2 or neg.size < 2:
        return point, NAN, NAN

    def run(method: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            # BCa on degenerate resamples warns (nan arithmetic, DegenerateDataWarning); we fall back.
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap((pos, neg), _auc, vectorized=True, n_resamples=n_resamples,
                                  confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    low, high = run("BCa")
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = run("percentile")
    return point, low, high


EXACT_SPEARMAN = 8  # pairs up to which spearman's p-value is exact (8! = 40320 pairings)


def spearman(x: Sequence[float], y: Sequence[float], confidence: float = 0.95
             ) -> tuple[float, float, float, float]:
    """Spearman's rho of paired values (scipy.stats.spearmanr), its interval by Fisher's z with the
    Bonett-Wright (2000) standard error sqrt((1 + rho² / 2) / (n − 3)), and its two-sided p-value:
    exact (every pairing of the ranks) up to EXACT_SPEARMAN pairs, where scipy's t approximation is
    far off (rho = 1 of 4 pairs: p 0 instead of 2 / 4! = 0.083), scipy's above. All nan when a side
    is constant (rho is undefined); nan bounds below 4 pairs."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return NAN, NAN, NAN, NAN
    res = stats.spearmanr(a, b)
    rho, p = float(res.statistic), float(res.pvalue)
    if a.size <= EXACT_SPEARMAN:
        exact = stats.PermutationMethod(n_resamples=np.inf)
        p = float(stats.pearsonr(stats.rankdata(a), stats.rankdata(b), method=exact).pvalue)
    if a.size < 4:
        return rho, NAN, NAN, p
    half = float(stats.norm.ppf((1 + confidence) / 2)) * math.sqrt((1 + rho**2 / 2) / (a.size - 3))
    z = math.atanh(min(max(rho, -1 + 1e-15), 1 - 1e-15))  # finite at rho = ±1
    return rho, math.tanh(z - half), math.tanh(z + half), p
