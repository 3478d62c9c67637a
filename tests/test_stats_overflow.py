"""Huge magnitudes (found by attacking the harness, issue 21): where the variances overflow float
range, Hedges' g is NaN, not 0.0 next to a mean difference of 2.5e300 and p = 0.03."""

import math

import numpy as np

from harness.stats import hedges_g, hedges_g_independent
from harness.stats.comparison import compare_values


def test_hedges_g_is_nan_not_zero_when_the_spread_overflows():
    u = -1e300 * (1 + np.arange(6) / 10)
    s = 1e300 * (1 + np.arange(6) / 10)
    with np.errstate(over="ignore"):
        assert np.isinf(u.var(ddof=1))  # the premise: the variance is beyond float range
        assert math.isnan(hedges_g(u, s))  # was 0.0
        assert math.isnan(hedges_g_independent(u, s))
        a, b = ({f"p{i}": v for i, v in enumerate(x)} for x in (u, s))
        e = compare_values(a, b).estimate
    assert e.point > 1e300 and math.isnan(e.effect_size)


def test_hedges_g_of_ordinary_values_is_unchanged():
    u, s = [0.1, 0.4, 0.2, 0.5], [0.6, 0.7, 0.9, 0.8]
    scale = math.sqrt((np.var(u, ddof=1) + np.var(s, ddof=1)) / 2)
    assert math.isclose(hedges_g(u, s), (np.mean(s) - np.mean(u)) / scale * (1 - 3 / (4 * 3 - 1)))
