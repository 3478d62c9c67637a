"""Every interval the harness prints covers what it claims, and no test rejects a null more often
than α, at every size from 2 to 48 prompts (simulated, fixed seed); and no plan or MDE relies on
a size at which the test cannot reach α."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from harness.schema.spec import ALPHA
from harness.stats import min_prompts, paired_p_value, smallest_p, t_ci
from harness.stats.calibration import SIZES, calibrate, sign_flip_p_values
from harness.stats.power import minimum_detectable_effect, prompts_needed

REPS = 400
# 3.5 binomial standard errors at REPS runs: a calibrated method falls outside with p < 0.001
SLACK = 3.5 * math.sqrt(0.95 * 0.05 / REPS)
FPR_SLACK = 3.5 * math.sqrt(ALPHA * (1 - ALPHA) / REPS)
SIGN_FLIP_SLACK = 3.5 * math.sqrt(ALPHA * (1 - ALPHA) / (20 * REPS))  # simulated on 20 x REPS runs


@pytest.fixture(scope="module")
def rows():
    return {n: calibrate(n, REPS) for n in SIZES}


@pytest.mark.parametrize("n", SIZES)
def test_the_printed_intervals_cover_95_percent_at_every_size(rows, n):
    row = rows[n]
    assert abs(row.t_coverage - 0.95) <= SLACK, row
    assert abs(row.welch_coverage - 0.95) <= SLACK, row


@pytest.mark.parametrize("n", SIZES)
def test_no_test_rejects_a_null_more_often_than_alpha(rows, n):
    row = rows[n]
    for fpr in (row.sign_flip_fpr, row.margin_less_fpr, row.margin_greater_fpr):
        assert fpr <= ALPHA + SIGN_FLIP_SLACK, row
    assert row.welch_fpr <= ALPHA + FPR_SLACK, row
    if n < min_prompts(ALPHA):  # the two-sided test cannot reach α at all
        assert row.sign_flip_fpr == 0.0


def test_the_replaced_bca_interval_does_undercover_at_small_sizes():
    """Why the paired CI is a t interval: BCa covers far less than 95 % with few prompts."""
    assert calibrate(4, 200, bca=True).bca_coverage < 0.85


@pytest.mark.parametrize("n", [2, 5, 6, 8, 13])
@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_the_vectorized_sign_flip_equals_the_harness_test(n, alternative):
    x = np.random.default_rng(n).normal(0.2, 1.0, (5, n))
    want = [paired_p_value(row, alternative=alternative) for row in x]
    assert sign_flip_p_values(x, alternative) == pytest.approx(want, abs=1e-12)


def test_the_sign_flip_p_equals_brute_force_enumeration_at_6_prompts():
    d = np.array([1.5, -0.5, 2.0, 3.0, 0.5, 1.0])  # multiples of 1/2: every flipped mean is exact
    flips = np.array([(np.array(s) * d).mean() for s in itertools.product([1, -1], repeat=6)])
    less, greater = np.mean(flips <= d.mean()), np.mean(flips >= d.mean())
    assert paired_p_value(d) == min(1.0, 2 * min(less, greater))
    assert paired_p_value(d, alternative="greater") == greater == 3 / 64  # d, and d with -0.5 flipped up
    assert paired_p_value(d, alternative="less") == less
    assert smallest_p(6) == 2 / 64 < ALPHA < smallest_p(5) == 2 / 32


def test_the_t_interval_is_scipys():
    d = np.random.default_rng(1).normal(0.3, 1.0, 7)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.9)
    assert t_ci(d, 0.9) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_the_minimum_prompts_follow_from_the_attainable_p():
    assert min_prompts(ALPHA) == 6 and min_prompts(ALPHA, sides=1) == 5
    assert min_prompts(0.01) == 8  # 2 / 2**8 = 0.0078
    # the sign-flip test itself: 5 prompts all moving the same way are not significant, 6 are
    assert paired_p_value([1.0, 2.0, 3.0, 4.0, 5.0]) == 2 / 32
    assert paired_p_value([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == 2 / 64


def test_plan_never_recommends_a_size_at_which_the_test_cannot_reach_alpha():
    for effect in (100.0, 10.0, 3.0, 1.0):
        assert prompts_needed(1.0, effect) >= 6
        assert prompts_needed(1.0, effect, sides=1) >= 5
    assert prompts_needed(0.0, 1.0) is None  # no observed spread: no plan, not "6 is enough"
    assert prompts_needed(1.0, 0.5) == prompts_needed(1.0, 0.5)  # the t formula still rules above it
    assert prompts_needed(1.0, 0.5) > 30


def test_the_mde_is_nan_where_the_test_cannot_reach_alpha():
    assert all(math.isnan(minimum_detectable_effect(1.0, n)) for n in range(0, 6))
    assert math.isfinite(minimum_detectable_effect(1.0, 6))
    assert math.isnan(minimum_detectable_effect(1.0, 4, sides=1))
    assert math.isfinite(minimum_detectable_effect(1.0, 5, sides=1))
