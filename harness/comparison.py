"""The one comparison core: every verdict of the harness comes from `compare_values` and
`adjust` (run effects, `compare`, `check`, sweep selection, controls).

Values are per-prompt means keyed by the prompt's identity (`PromptRecord.identity`); NaN marks
a prompt with no finite value. Two sets are **paired** when they hold the same prompts: the
unit is then the prompt's difference and prompts NaN on either side are left out (counted in
`n_missing`). Otherwise they are two independent samples of prompts.

**Multiplicity policy** (`adjust`): p-values are Holm-adjusted within a family, controlling
the family-wise error rate at `ALPHA`. A run has two families: the metrics its tasks declare
with an expected direction plus the fluency cost (confirmatory), and every other metric
(exploratory), so extra metrics never dilute the declared ones. `compare` applies the same
two families over its rows; `check` adjusts its regression tests as one family (any line may
fail the run) while "holds" needs every line to pass on its own (an intersection-union test,
which needs no adjustment).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from harness.stats import NAN, bootstrap_ci, hedges_g, holm, paired_p_value, per_prompt_means


@dataclass(frozen=True)
class Comparison:
    """`b` minus `a`: the difference of means with its CI, effect size and two-sided p-value."""

    paired: bool
    n: int  # prompts compared (paired: with finite values on both sides)
    n_missing: int  # prompts left out for a non-finite value
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    effect_size: float  # Hedges' g: g_av when paired, pooled-SD g when independent
    p_value: float
    deltas: tuple[float, ...] = ()  # paired: per-prompt b − a, in key order


def compare_values(a: Mapping[str, float], b: Mapping[str, float], *, seed: int = 0,
                   confidence: float = 0.95) -> Comparison:
    """Compare per-prompt values `b` with `a` (paired when both hold the same prompt keys)."""
    if set(a) == set(b):
        keys = [k for k in sorted(a) if math.isfinite(a[k]) and math.isfinite(b[k])]
        x = np.array([a[k] for k in keys], dtype=float)
        y = np.array([b[k] for k in keys], dtype=float)
        if not keys:
            return Comparison(True, 0, len(a), NAN, NAN, NAN, NAN, NAN, NAN, NAN)
        d = y - x
        low, high = bootstrap_ci(d, confidence=confidence, seed=seed)
        return Comparison(True, len(keys), len(a) - len(keys), float(x.mean()), float(y.mean()),
                          float(y.mean() - x.mean()), low, high, hedges_g(x, y),
                          paired_p_value(d, seed=seed), tuple(float(v) for v in d))
    x = np.array([v for _, v in sorted(a.items()) if math.isfinite(v)], dtype=float)
    y = np.array([v for _, v in sorted(b.items()) if math.isfinite(v)], dtype=float)
    missing = len(a) + len(b) - x.size - y.size
    mean_a = float(x.mean()) if x.size else NAN
    mean_b = float(y.mean()) if y.size else NAN
    low, high, p = _independent(x, y, seed, confidence)
    return Comparison(False, int(x.size + y.size), missing, mean_a, mean_b, mean_b - mean_a, low, high,
                      _hedges_g_independent(x, y), p)


def _independent(x: np.ndarray, y: np.ndarray, seed: int, confidence: float) -> tuple[float, float, float]:
    """BCa CI (else percentile) and permutation p of mean(y) − mean(x), independent samples."""
    import warnings

    if x.size < 2 or y.size < 2:
        return NAN, NAN, NAN
    if np.all(np.concatenate([x, y]) == x[0]):
        return 0.0, 0.0, 1.0

    def diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    def ci(method: str) -> tuple[float, float]:
        res = sps.bootstrap((y, x), diff, vectorized=True, n_resamples=2000, method=method,
                            confidence_level=confidence, rng=np.random.default_rng(seed))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = ci("BCa")
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = ci("percentile")
    p = sps.permutation_test((y, x), diff, permutation_type="independent", vectorized=True,
                             n_resamples=9999, rng=np.random.default_rng(seed)).pvalue
    return low, high, float(p)


def _hedges_g_independent(x: np.ndarray, y: np.ndarray) -> float:
    """Hedges' g of two independent samples: pooled-SD Cohen's d times J = 1 − 3 / (4 df − 1)."""
    if x.size < 2 or y.size < 2:
        return NAN
    df = x.size + y.size - 2
    pooled = math.sqrt(((x.size - 1) * x.var(ddof=1) + (y.size - 1) * y.var(ddof=1)) / df)
    diff = float(y.mean() - x.mean())
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / pooled * (1 - 3 / (4 * df - 1))


def margin_p_value(c: Comparison, margin: float, alternative: Literal["less", "greater"],
                   seed: int = 0) -> float:
    """One-sided p-value that a paired difference is below (`less`) or above (`greater`)
    `margin`: a sign-flip permutation test of the per-prompt differences minus the margin."""
    if not c.paired or c.n < 2 or not math.isfinite(margin):
        return NAN
    d = np.asarray(c.deltas) - margin
    if np.all(d == 0):
        return 1.0
    res = sps.permutation_test((d,), lambda v, axis=-1: np.mean(v, axis=axis), permutation_type="samples",
                               vectorized=True, n_resamples=9999, alternative=alternative,
                               rng=np.random.default_rng(seed))
    return float(res.pvalue)


def adjust(p_values: Sequence[float], families: Sequence[Hashable]) -> list[float]:
    """Holm-adjusted p-values, each within its family (see the module's multiplicity policy)."""
    out = [NAN] * len(p_values)
    for family in dict.fromkeys(families):
        idx = [i for i, f in enumerate(families) if f == family]
        for i, p in zip(idx, holm([p_values[i] for i in idx]), strict=True):
            out[i] = p
    return out


@dataclass(frozen=True)
class Effect:
    """The paired effect of steering on one metric, prompt by prompt."""

    n: int  # prompts paired (both sides have at least one finite value)
    n_excluded: int  # sample values dropped as non-finite, both sides
    mean_unsteered: float  # mean over paired prompts of the per-prompt unsteered mean
    mean_steered: float
    diff: float  # mean_steered - mean_unsteered (= mean of per-prompt differences)
    effect_size: float  # Hedges' g_av
    ci_low: float  # bootstrap CI of diff
    ci_high: float
    p_value: float  # sign-flip permutation test by prompt


def prompt_means(values: Mapping[str, Sequence[float]], keys: Sequence[str]) -> tuple[dict[str, float], int]:
    """Per-prompt mean of the finite values for every key in `keys` (NaN where none), and the
    count of non-finite values dropped."""
    means, dropped = per_prompt_means({k: list(values.get(k, [])) for k in keys})
    return {k: means.get(k, NAN) for k in keys}, dropped


def paired_effect(unsteered: Mapping[str, Sequence[float]], steered: Mapping[str, Sequence[float]],
                  seed: int = 0, confidence: float = 0.95) -> Effect:
    """Steered minus unsteered, paired by prompt key, from per-prompt means of finite values.

    `n_excluded` counts the non-finite values of every prompt on both sides. Prompts with a
    finite value on one side only are not paired. No paired prompt gives n=0 and nan values.
    """
    keys = sorted(set(unsteered) | set(steered))
    base, dropped_u = prompt_means(unsteered, keys)
    steer, dropped_s = prompt_means(steered, keys)
    c = compare_values(base, steer, seed=seed, confidence=confidence)
    return Effect(c.n, dropped_u + dropped_s, c.mean_a, c.mean_b, c.diff, c.effect_size, c.ci_low,
                  c.ci_high, c.p_value)


def fluency_cost(unsteered: Mapping[str, Sequence[float]], steered: Mapping[str, Sequence[float]],
                 seed: int = 0, confidence: float = 0.95) -> tuple[Effect, float]:
    """`paired_effect` on log-perplexities, and the perplexity ratio exp(diff)."""
    eff = paired_effect(unsteered, steered, seed=seed, confidence=confidence)
    return eff, math.exp(min(eff.diff, 700.0)) if math.isfinite(eff.diff) else NAN
