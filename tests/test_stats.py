"""harness.stats against independent formulas, scipy, brute force and simulation."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from harness.stats import bootstrap_ci, hedges_g, holm, paired_p_value, per_prompt_means
from harness.stats.comparison import compare_values, margin_p_value, prompt_means

NAN, INF = float("nan"), float("inf")
# Lakens (2013), Frontiers in Psychology 4:863, Table 1: ratings of two movies by 10 people.
MOVIE_1 = [9, 7, 8, 9, 8, 9, 9, 10, 9, 9]
MOVIE_2 = [9, 6, 7, 8, 7, 9, 8, 8, 8, 7]


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def _prompts(rng, n_prompts, n_samples, shift):
    """Per-prompt scores: a prompt level, a per-prompt steering response averaging `shift`,
    and sample noise, so samples of one prompt are correlated."""
    level = rng.normal(0.0, 1.0, n_prompts)
    response = shift + rng.normal(0.0, 0.5, n_prompts)
    base = {f"p{i}": list(level[i] + rng.normal(0, 1, n_samples)) for i in range(n_prompts)}
    steer = {f"p{i}": list(level[i] + response[i] + rng.normal(0, 1, n_samples))
             for i in range(n_prompts)}
    return base, steer


# ---------------------------------------------------------------- hedges_g

def test_hedges_g_matches_numpy_formula():
    rng = np.random.default_rng(1)
    u = rng.normal(0, 1, 15)
    s = u + rng.normal(0.4, 0.7, 15)
    sd = np.sqrt((np.var(u, ddof=1) + np.var(s, ddof=1)) / 2)
    expected = (s.mean() - u.mean()) / sd * (1 - 3 / (4 * 14 - 1))
    assert hedges_g(u, s) == pytest.approx(expected, rel=1e-12)
    assert hedges_g(s, u) == pytest.approx(-expected, rel=1e-12)


def test_hedges_g_hand_worked():
    # means 2.5 -> 4, variances 5/3 and 8/3, J = 1 - 3/11 = 8/11
    assert hedges_g([1, 2, 3, 4], [2, 4, 4, 6]) == pytest.approx(
        1.5 / math.sqrt(13 / 6) * 8 / 11, rel=1e-12)


def test_hedges_g_lakens_movie_example():
    g = hedges_g(MOVIE_2, MOVIE_1)
    # variances 8.1/9 and 6.1/9, mean difference 1, J = 1 - 3/35 = 32/35
    assert g == pytest.approx(1 / math.sqrt(7.1 / 9) * 32 / 35, rel=1e-12)
    # Lakens' published d_av = 1.13 standardizes by the mean of the two SDs; ours by their root mean
    # square. Both round to 1.13 on this example, so the published value cannot tell them apart: the
    # exact value above does, and the two differ by more than float noise.
    d_mean_sd = 1 / ((math.sqrt(8.1 / 9) + math.sqrt(6.1 / 9)) / 2)
    assert abs(g / (32 / 35) - d_mean_sd) > 1e-3


def test_hedges_g_degenerate():
    assert math.isnan(hedges_g([1.0], [2.0]))
    assert math.isnan(hedges_g([], []))
    assert hedges_g([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]) == 0.0
    assert hedges_g([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]) == INF
    assert hedges_g([2.0, 2.0, 2.0], [1.0, 1.0, 1.0]) == -INF
    with pytest.raises(ValueError):
        hedges_g([1.0, 2.0], [1.0, 2.0, 3.0])


# ------------------------------------------------------------ bootstrap_ci

def test_bootstrap_ci_equals_scipy():
    x = np.random.default_rng(2).gamma(2.0, 1.0, 30)
    ref = stats.bootstrap((x,), _mean, n_resamples=500, confidence_level=0.9, method="BCa",
                          rng=np.random.default_rng(7)).confidence_interval
    got = bootstrap_ci(x, confidence=0.9, seed=7, n_resamples=500)
    assert got == (ref.low, ref.high)
    assert got == bootstrap_ci(list(x), confidence=0.9, seed=7, n_resamples=500)
    assert got != bootstrap_ci(x, confidence=0.9, seed=8, n_resamples=500)
    assert got[0] < x.mean() < got[1]


def test_bootstrap_ci_degenerate():
    assert bootstrap_ci([0.25] * 5) == (0.25, 0.25)
    assert all(math.isnan(v) for v in bootstrap_ci([1.0]))
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_bootstrap_ci_falls_back_to_percentile():
    data, seed, n_res = [0.0, 1.0], 4, 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        bca = stats.bootstrap((data,), _mean, n_resamples=n_res, method="BCa",
                              rng=np.random.default_rng(seed)).confidence_interval
    assert math.isnan(bca.low)  # this case does exercise the fallback
    pct = stats.bootstrap((data,), _mean, n_resamples=n_res, method="percentile",
                          rng=np.random.default_rng(seed)).confidence_interval
    assert bootstrap_ci(data, seed=seed, n_resamples=n_res) == (pct.low, pct.high)


def test_bootstrap_ci_coverage():
    # bootstrap intervals use the plug-in SD with no t correction: about 0.93 expected at n=24
    rng = np.random.default_rng(3)
    true_mean, draws = 0.3, 1000
    hits = sum(lo <= true_mean <= hi for lo, hi in (
        bootstrap_ci(rng.normal(true_mean, 1.0, 24), seed=i, n_resamples=999)
        for i in range(draws)))
    assert 0.91 <= hits / draws <= 0.98


# ---------------------------------------------------------- paired_p_value

def test_paired_p_value_exact_equals_enumeration():
    # multiples of 1/2 make every sign-flipped sum exact, so ties are compared exactly
    d = np.array([1.5, -0.5, 2.0, 3.0, 0.5, 1.0, 2.5, -1.0])
    observed = abs(d.mean())
    flips = [abs((np.array(signs) * d).mean()) for signs in itertools.product([1, -1], repeat=8)]
    expected = sum(f >= observed for f in flips) / 2**8
    assert paired_p_value(d) == expected
    assert paired_p_value(d, seed=123) == expected  # exact: the seed does not matter
    assert paired_p_value(-d) == expected


def test_paired_p_value_monte_carlo_is_seeded_scipy():
    d = np.random.default_rng(4).normal(0.3, 1.0, 20)
    ref = stats.permutation_test((d,), _mean, permutation_type="samples", n_resamples=999,
                                 rng=np.random.default_rng(5)).pvalue
    assert paired_p_value(d, seed=5, n_resamples=999) == ref
    assert paired_p_value(d, seed=5, n_resamples=999) == paired_p_value(d, seed=5,
                                                                        n_resamples=999)


def test_paired_p_value_agrees_with_parametric_tests():
    rng = np.random.default_rng(5)
    u = rng.normal(0, 1, 30)
    strong = u + rng.normal(1.0, 1.0, 30)
    null = u + rng.normal(0.0, 1.0, 30)
    assert paired_p_value(strong - u) < 0.01
    assert stats.ttest_rel(strong, u).pvalue < 0.01
    assert stats.wilcoxon(strong, u).pvalue < 0.01
    p_null = paired_p_value(null - u)  # a draw with no true effect: same verdict as scipy's
    assert p_null == pytest.approx(stats.ttest_rel(null, u).pvalue, abs=0.05)
    assert p_null == pytest.approx(stats.wilcoxon(null, u).pvalue, abs=0.05)
    centred = null - u - np.mean(null - u)  # no effect in the sample itself
    assert paired_p_value(centred) > 0.9
    assert stats.ttest_1samp(centred, 0.0).pvalue > 0.9


def test_paired_p_value_degenerate():
    assert paired_p_value([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(paired_p_value([2.0]))
    assert math.isnan(paired_p_value([]))


# -------------------------------------------------------------------- holm

def test_holm_hand_worked():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == []


def test_holm_nan_do_not_count():
    out = holm([NAN, 0.01, NAN, 0.04])
    assert math.isnan(out[0]) and math.isnan(out[2])
    assert out[1] == pytest.approx(0.02) and out[3] == pytest.approx(0.04)


# ----------------------------------------------------------- compare_values

def test_per_prompt_means_drop_non_finite():
    means, dropped = per_prompt_means({"a": [1.0, NAN, 3.0], "b": [INF, -INF], "c": [5.0]})
    assert means == {"a": 2.0, "c": 5.0}
    assert dropped == 3


def _compare(base, steer, seed=0, confidence=0.95):  # noqa: ANN001, ANN202
    """The run's path: per-prompt means of the finite values, then `compare_values`."""
    keys = sorted(set(base) | set(steer))
    a, dropped_a = prompt_means(base, keys)
    b, dropped_b = prompt_means(steer, keys)
    return compare_values(a, b, seed=seed, confidence=confidence).estimate, dropped_a + dropped_b


def test_compare_values_excludes_and_pairs():
    base = {"a": [1.0, NAN, 3.0], "b": [2.0, INF], "d": [NAN], "u_only": [0.0]}
    steer = {"a": [4.0, 4.0], "b": [5.0, NAN, -INF], "d": [1.0], "s_only": [9.0]}
    eff, dropped = _compare(base, steer)
    assert eff.n == 2  # a and b: d has no finite unsteered value, the others one side only
    assert (eff.n_planned, eff.n_unscorable) == (5, 3)
    assert dropped == 5
    assert (eff.mean_a, eff.mean_b) == (2.0, 4.5)
    assert eff.point == eff.mean_b - eff.mean_a == 2.5


def test_compare_values_uses_the_components():
    base, steer = _prompts(np.random.default_rng(6), 12, 3, 0.5)
    eff, dropped = _compare(base, steer, seed=3, confidence=0.9)
    keys = sorted(base)
    u = np.array([np.mean(base[k]) for k in keys])
    s = np.array([np.mean(steer[k]) for k in keys])
    assert eff.n == 12 and dropped == 0
    assert eff.point == eff.mean_b - eff.mean_a
    assert eff.point == pytest.approx(np.mean(s - u), rel=1e-12)
    assert eff.effect_size == pytest.approx(hedges_g(u, s), rel=1e-12)
    ci = stats.ttest_rel(s, u).confidence_interval(0.9)
    assert (eff.ci_low, eff.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert eff.p_value == paired_p_value(s - u, seed=3)


def test_compare_values_nothing_paired():
    eff, dropped = _compare({"a": [1.0]}, {"b": [2.0, NAN]})
    assert (eff.n, dropped) == (0, 1)
    for v in (eff.mean_a, eff.mean_b, eff.point, eff.effect_size, eff.ci_low, eff.ci_high, eff.p_value,
              eff.mde):
        assert math.isnan(v)


def test_independent_samples_get_welchs_interval_and_test():
    rng = np.random.default_rng(9)
    a = {f"a{i}": float(v) for i, v in enumerate(rng.normal(0, 1, 9))}
    b = {f"b{i}": float(v) for i, v in enumerate(rng.normal(1, 2, 7))}
    e = compare_values(a, b).estimate
    ref = stats.ttest_ind(list(b.values()), list(a.values()), equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert not e.paired and e.n == 16 and e.ci_method == "Welch t"
    assert (e.ci_low, e.ci_high, e.p_value) == pytest.approx((ci.low, ci.high, ref.pvalue), rel=1e-12)


def test_margin_p_value_is_the_sign_flip_test_of_the_shifted_differences():
    # multiples of 1/4 keep every sign-flipped sum exact
    d = np.array([0.75, 0.25, 1.25, -0.25, 0.5, 1.0, 0.75])
    c = compare_values({f"p{i}": 0.0 for i in range(7)}, {f"p{i}": float(v) for i, v in enumerate(d)})
    shifted = d - 0.5
    flips = np.array([(np.array(s) * shifted).mean() for s in itertools.product([1, -1], repeat=7)])
    assert margin_p_value(c, 0.5, "greater") == np.mean(flips >= shifted.mean())
    assert margin_p_value(c, 0.5, "less") == np.mean(flips <= shifted.mean())


# -------------------------------------------------------------- calibration

def test_null_false_positive_rate_and_power():
    rng = np.random.default_rng(8)
    null = [_compare(*_prompts(rng, 24, 4, 0.0), seed=i)[0].p_value for i in range(300)]
    shifted = [_compare(*_prompts(rng, 24, 4, 0.7), seed=i)[0].p_value for i in range(100)]
    assert np.mean(np.array(null) < 0.05) <= 0.08
    assert np.mean(np.array(shifted) < 0.05) >= 0.8
