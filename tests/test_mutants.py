"""Tests written to kill the mutants that survived `make mutation` (mutmut over stats, comparison,
check, pipeline/analyse and baseline with their fast unit tests). Each compares against scipy, a
hand-worked value or a brute-force recomputation on fixed data. The survivors left alive, and why
(equivalent mutants, mostly), are listed in the mutation report of issue 21."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest
from scipy import stats

from harness.pipeline.analyse import DISRUPTION, TaskSamples, analyse
from harness.schema.results import SampleRecord
from harness.schema.spec import ALPHA, FLUENCY_METRIC
from harness.schema.task import TaskSpec
from harness.stats import (
    auc,
    bootstrap_ci,
    hedges_g,
    hedges_g_independent,
    holm,
    line_fit,
    median_ci,
    pooled_sd,
    proportion_ci,
    sd_ci,
    spearman,
    welch,
)
from harness.stats.power import minimum_detectable_difference, minimum_detectable_effect, prompts_needed
from harness.stats.steerability import steerability

NAN = float("nan")

# ----------------------------------------------------------------------------- stats


def test_pooled_sd_is_the_pooled_t_tests_standardizer():
    x, y = [1.0, 2.0, 4.0], [3.0, 5.0, 6.0, 10.0]
    # by hand: var x = 7/3 (df 2), var y = 26/3 (df 3), pooled variance (14/3 + 26) / 5 = 92/15
    assert pooled_sd(x, y) == pytest.approx(math.sqrt(92 / 15), rel=1e-12)
    t = stats.ttest_ind(y, x, equal_var=True).statistic  # t = (ȳ − x̄) / (sp √(1/nx + 1/ny))
    assert pooled_sd(x, y) == pytest.approx((6 - 7 / 3) / (t * math.sqrt(1 / 3 + 1 / 4)), rel=1e-12)
    assert pooled_sd([1.0, 3.0], [2.0, 6.0]) == pytest.approx(math.sqrt(5.0))  # two values a side suffice
    assert math.isnan(pooled_sd([1.0], [1.0, 2.0, 3.0])) and math.isnan(pooled_sd([1.0, 2.0, 3.0], [1.0]))


def test_independent_hedges_g_is_the_pooled_d_times_j():
    x, y = [1.0, 2.0, 4.0], [3.0, 5.0, 6.0, 10.0]
    # d = (6 − 7/3) / √(92/15), J = 1 − 3 / (4·5 − 1) = 16/19
    assert hedges_g_independent(x, y) == pytest.approx((11 / 3) / math.sqrt(92 / 15) * 16 / 19, rel=1e-12)
    assert hedges_g_independent(y, x) == pytest.approx(-hedges_g_independent(x, y), rel=1e-12)
    assert hedges_g_independent([1.0, 3.0], [2.0, 6.0]) == pytest.approx(2 / math.sqrt(5) * (1 - 3 / 7))
    assert math.isnan(hedges_g_independent([1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(hedges_g_independent([1.0, 2.0, 3.0], [1.0]))


def test_welch_defaults_to_scipys_95_percent_interval_and_needs_two_values_a_side():
    x, y = [0.1, 0.4], [1.0, 1.7]
    res = stats.ttest_ind(y, x, equal_var=False)
    ci = res.confidence_interval(0.95)
    assert welch(x, y) == pytest.approx((ci.low, ci.high, res.pvalue), rel=1e-12)
    assert all(math.isnan(v) for v in welch([1.0], [1.0, 2.0, 3.0]) + welch([1.0, 2.0, 3.0], [1.0]))
    assert welch([2.0, 2.0], [2.0, 2.0, 2.0]) == (0.0, 0.0, 1.0)  # no spread, no difference


def test_bootstrap_ci_defaults_are_95_percent_2000_resamples_seed_0():
    x = np.random.default_rng(3).gamma(2.0, 1.0, 20)
    ref = stats.bootstrap((x,), np.mean, n_resamples=2000, confidence_level=0.95, method="BCa",
                          rng=np.random.default_rng(0)).confidence_interval
    assert bootstrap_ci(x) == (ref.low, ref.high)


def test_line_fit_is_the_least_squares_slope_and_its_standard_error_by_hand():
    # x̄ = 1.5, ȳ = 2.75, Sxy = 5.5, Sxx = 5: slope 1.1; residuals −0.1, 0.8, −1.3, 0.6: SSR 2.7
    slope, stderr = line_fit([0, 1, 2, 3], [1.0, 3.0, 2.0, 5.0])
    assert slope == pytest.approx(1.1, rel=1e-12)
    assert stderr == pytest.approx(math.sqrt(2.7 / 2 / 5), rel=1e-12)


def test_median_ci_is_the_symmetric_order_statistic_interval_of_brute_force_binomial_coverage():
    for n in range(1, 31):
        x = np.random.default_rng(n).normal(size=n)
        s = np.sort(x)
        # the largest k whose interval [x_(k), x_(n+1−k)] covers the median with probability ≥ 95 %
        cover = [sum(math.comb(n, i) for i in range(k, n - k + 1)) / 2**n for k in range(1, n // 2 + 1)]
        ks = [k for k, c in enumerate(cover, start=1) if c >= 0.95]
        low, high = median_ci(x)
        if not ks:  # fewer than 6 values: no interval reaches 95 %
            assert math.isnan(low) and math.isnan(high), n
        else:
            assert (low, high) == (s[max(ks) - 1], s[n - max(ks)]), n
    assert all(math.isnan(v) for v in median_ci([]))


def test_t_ci_sd_and_the_sign_flip_test_at_the_smallest_sizes_by_hand_and_scipy():
    from harness.stats import paired_p_value, sd, t_ci

    ci = stats.ttest_1samp([1.0, 3.0], 0.0).confidence_interval(0.95)
    assert t_ci([1.0, 3.0]) == pytest.approx((ci.low, ci.high), rel=1e-12)  # 2 values, 95 % by default
    assert t_ci([2.0, 2.0, 2.0]) == (2.0, 2.0) and all(math.isnan(v) for v in t_ci([2.0]))
    assert sd([1.0, 3.0]) == pytest.approx(math.sqrt(2.0)) and math.isnan(sd([5.0]))
    # two prompts: the four sign flips have means ±1.5, ±0.5, two of them as extreme as 1.5
    assert paired_p_value([1.0, 2.0]) == 0.5
    assert paired_p_value([1.0, 1.0, 1.0]) == 0.25  # all equal but not zero: 2 of 8 flips
    d = np.random.default_rng(2).normal(0.5, 1.0, 16)
    ref = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=9999,
                                 rng=np.random.default_rng(0)).pvalue
    assert paired_p_value(d) == ref  # Monte Carlo with seed 0 by default


def test_smallest_p_is_the_p_of_the_most_extreme_data_exact_and_monte_carlo():
    from harness.stats import paired_p_value, smallest_p

    for n in range(2, 17):  # exact up to 13 prompts (2**13 <= 9999), Monte Carlo from 14
        assert smallest_p(n) == paired_p_value(np.arange(1.0, n + 1)), n
        assert smallest_p(n, sides=1) == paired_p_value(np.arange(1.0, n + 1), alternative="greater"), n
    assert smallest_p(4, n_resamples=16) == 2 / 16  # 2**n == n_resamples is still exact
    assert math.isnan(smallest_p(1))


def test_proportion_upper_bound_by_hand_at_one_trial_and_nan_without_trials():
    from harness.stats import proportion_upper_bound

    # no success in n trials: the exact one-sided bound solves (1 − p)^n = α, p = 1 − α^(1/n)
    assert proportion_upper_bound(0, 1, 0.05) == pytest.approx(0.95, rel=1e-12)
    assert proportion_upper_bound(0, 3, 0.05) == pytest.approx(1 - 0.05 ** (1 / 3), rel=1e-12)
    assert math.isnan(proportion_upper_bound(0, 0, 0.05))


# ----------------------------------------------------------------------------- comparison

def test_compare_values_and_margin_p_value_are_seeded_monte_carlo_with_seed_0_by_default():
    from harness.stats.comparison import compare_values, margin_p_value

    d = np.random.default_rng(5).normal(0.3, 1.0, 16)  # 2**16 sign flips: Monte Carlo, 9999 resamples
    keys = [f"p{i:02d}" for i in range(16)]  # sorted in this order, as compare_values pairs them
    c = compare_values(dict.fromkeys(keys, 0.0), {k: float(v) for k, v in zip(keys, d, strict=True)})

    def scipy_p(values: np.ndarray, seed: int, alternative: str = "two-sided") -> float:
        return float(stats.permutation_test((values,), np.mean, permutation_type="samples", n_resamples=9999,
                                            alternative=alternative, rng=np.random.default_rng(seed)).pvalue)

    assert c.estimate.p_value == scipy_p(d, 0)
    assert margin_p_value(c, 0.1, "greater") == scipy_p(d - 0.1, 0, "greater")
    assert margin_p_value(c, 0.1, "greater", seed=3) == scipy_p(d - 0.1, 3, "greater")
    assert scipy_p(d - 0.1, 3, "greater") != scipy_p(d - 0.1, 0, "greater")


def test_compare_values_names_its_interval_and_test_only_where_there_are_enough_prompts():
    from harness.stats import CI_NONE, CI_T, CI_WELCH, TEST_NONE, TEST_SIGN_FLIP, TEST_WELCH
    from harness.stats.comparison import compare_values

    one = compare_values({"a": 0.0}, {"a": 1.0}, confidence=0.9).estimate
    assert (one.ci_method, one.test, one.confidence) == (CI_NONE, TEST_NONE, 0.9)
    two = compare_values({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 2.0}, confidence=0.9).estimate
    assert (two.ci_method, two.test, two.confidence) == (CI_T, TEST_SIGN_FLIP, 0.9)
    x = {"a0": 1.0, "a1": 2.0, "a2": 4.0, "a3": NAN}
    y = {"b0": 3.0, "b1": 5.0, "b2": 6.0, "b3": 10.0, "b4": NAN}
    ind = compare_values(x, y, confidence=0.8).estimate
    res = stats.ttest_ind([3.0, 5.0, 6.0, 10.0], [1.0, 2.0, 4.0], equal_var=False)
    ci = res.confidence_interval(0.8)
    assert (ind.ci_method, ind.test, ind.confidence, ind.paired) == (CI_WELCH, TEST_WELCH, 0.8, False)
    assert (ind.ci_low, ind.ci_high, ind.p_value) == pytest.approx((ci.low, ci.high, res.pvalue), rel=1e-12)
    assert (ind.n_planned, ind.n, ind.n_unscorable) == (9, 7, 2)
    assert ind.sd == pytest.approx(math.sqrt(92 / 15), rel=1e-12)  # pooled, as worked out above
    assert ind.effect_size == pytest.approx((11 / 3) / math.sqrt(92 / 15) * 16 / 19, rel=1e-12)
    small = compare_values({"a0": 1.0}, {"b0": 3.0, "b1": 5.0}).estimate
    assert (small.ci_method, small.test) == (CI_NONE, TEST_NONE)
    pair = compare_values({"a0": 1.0, "a1": 2.0}, {"b0": 3.0, "b1": 5.0}).estimate
    assert (pair.ci_method, pair.test) == (CI_WELCH, TEST_WELCH)


def test_margin_p_value_needs_two_paired_prompts_and_a_finite_margin():
    from harness.stats.comparison import compare_values, margin_p_value

    two = compare_values({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 2.0})
    # differences 1 and 2: the four sign flips give means 1.5, 0.5, −0.5, −1.5; one is ≥ 1.5
    assert margin_p_value(two, 0.0, "greater") == 0.25
    assert math.isnan(margin_p_value(two, math.inf, "greater"))
    assert math.isnan(margin_p_value(compare_values({"a": 0.0}, {"a": 1.0}), 0.0, "greater"))


# ---------------------------------------------------------------- pipeline/analyse

PROMPTS = [f"p{i:02d}" for i in range(16)]  # 2**16 sign flips: the seeded Monte Carlo test is used
OTHER = "m.other"
LEDGER = {"L3.resid": {"prompt": [4.0, 2.0], "decode": [8.0, 1.5]}}
SPEC_A = TaskSpec(name="a", kind="topic", prompts=["x"], steering={"method": "m"}, seed=5,
                  scorers={"m": {}, "perplexity": {"judge": "judge-lm"}}, metrics={"m.value": "increase"},
                  headline="m.value")
SPEC_B = TaskSpec(name="b", kind="topic", prompts=["x"], steering={"method": "m"}, seed=7,
                  scorers={"m": {}, "perplexity": {}}, metrics={"m.value": "decrease"}, headline="m.value")
# per condition, per metric: the per-prompt shift from unsteered
SHIFTS_A = {
    "unsteered": {"m.value": 0.0, OTHER: 0.0, FLUENCY_METRIC: 0.0},
    "steered": {"m.value": 0.5, OTHER: 0.4, FLUENCY_METRIC: 1.0},
    "r1": {"m.value": 0.1, OTHER: 0.5, FLUENCY_METRIC: 0.3},  # m.other: the randoms average the steered
    "r2": {"m.value": -0.1, OTHER: 0.3, FLUENCY_METRIC: 0.5},
    "neg": {"m.value": 0.3, OTHER: -0.4, FLUENCY_METRIC: 0.0},  # moves the headline the same way
}
CONTROLS_A = {"r1": ("steered", "random"), "r2": ("steered", "random"), "neg": ("steered", "negated")}


def _sample(task: str, condition: str, i: int, j: int, scores: dict[str, float], **extra) -> SampleRecord:
    return SampleRecord(key=f"{task}{condition}{i}{j}", task=task, condition=condition, prompt_index=i,
                        prompt_id=PROMPTS[i], prompt=PROMPTS[i], sample=j, seed=j, completion="some words",
                        token_ids=[1, 2], prompt_ids=[0], scores=scores,
                        ledger=LEDGER if condition != "unsteered" else {}, **extra)


def _task_a() -> list[SampleRecord]:
    """Two samples per prompt and condition; the neg fluency shift alternates ±0.6 (same sign as the
    steered cost on average, nowhere near significant). Steered: sample 1 of p00 flagged, of p01
    unscorable (a NaN with a reason), of p02 empty."""
    rng = np.random.default_rng(11)
    out = []
    for condition, shifts in SHIFTS_A.items():
        for i in range(len(PROMPTS)):
            for j in range(2):
                scores = {m: 0.2 * i + s + rng.normal(0, 0.05) for m, s in shifts.items()}
                if condition == "neg":
                    scores[FLUENCY_METRIC] += 0.6 if i % 2 else -0.55
                extra: dict = {}
                if i == 15:  # m.other does not apply to the last prompt
                    scores[OTHER] = NAN
                    extra = {"reasons": {OTHER: "not applicable: other group"}}
                if (condition, i) in (("r2", 7), ("r1", 8), ("r2", 8)):  # a random control without a value
                    scores["m.value"] = NAN
                    extra = {"reasons": {"m.value": "no words to score"}}
                if condition == "steered" and j == 1 and i < 3:
                    if i == 0:
                        extra = {"flagged": "non-finite logits"}
                    elif i == 1:
                        scores["m.value"] = NAN
                        extra = {"reasons": {"m.value": "no words to score"}}
                out.append(_sample("a", condition, i, j, scores, **extra))
                if extra == {} and condition == "steered" and j == 1 and i == 2:
                    out[-1] = out[-1].model_copy(update={"token_ids": []})
    return out


def _task_b() -> list[SampleRecord]:
    rng = np.random.default_rng(12)
    return [_sample("b", condition, i, j, {"m.value": 0.1 * i - shift + rng.normal(0, 0.05),
                                          FLUENCY_METRIC: 3.0 + rng.normal(0, 0.5)})
            for condition, shift in (("unsteered", 0.0), ("steered", 0.3)) for i in range(len(PROMPTS))
            for j in range(2)]


def _means(samples: list[SampleRecord], condition: str, metric: str) -> np.ndarray:
    """Per-prompt mean of the finite, unflagged values, computed here without the harness."""
    by = defaultdict(list)
    for s in samples:
        v = s.scores.get(metric, NAN)
        if s.condition == condition and not s.flagged and math.isfinite(v):
            by[s.prompt_id].append(v)
    return np.array([np.mean(by[p]) if by[p] else NAN for p in PROMPTS])


def _sign_flip_p(d: np.ndarray, seed: int) -> float:
    return float(stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=9999,
                                        rng=np.random.default_rng(seed)).pvalue)


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment written out: the k-th smallest times (m − k), running max, cap 1."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    out, running = [0.0] * len(p), 0.0
    for k, i in enumerate(order):
        running = max(running, (len(p) - k) * p[i])
        out[i] = min(running, 1.0)
    return out


def analysed():  # noqa: ANN201
    """The analysis of both tasks, and their samples."""
    a, b = _task_a(), _task_b()
    conditions_a = ["unsteered", "steered", "r1", "r2", "neg"]
    numbers = analyse([TaskSamples(SPEC_A, PROMPTS, conditions_a, CONTROLS_A, a),
                       TaskSamples(SPEC_B, PROMPTS, ["unsteered", "steered"], {}, b)])
    return numbers, a, b


@pytest.fixture(scope="module")
def run():  # noqa: ANN201
    return analysed()


def test_analyse_effects_are_the_seeded_paired_comparisons_of_every_task_condition_and_metric(run):
    numbers, a, b = run
    got = {(e.task, e.condition, e.metric): e for e in numbers.effects}
    want = {("a", c, m) for c in ("steered", "r1", "r2", "neg") for m in ("m.value", OTHER)}
    assert set(got) == want | {("b", "steered", "m.value")}
    for (task, condition, metric), e in got.items():
        samples, spec = (a, SPEC_A) if task == "a" else (b, SPEC_B)
        d = _means(samples, condition, metric) - _means(samples, "unsteered", metric)
        d = d[np.isfinite(d)]
        assert e.estimate.point == pytest.approx(d.mean(), abs=1e-12)
        assert e.estimate.p_value == _sign_flip_p(d, spec.seed)
        assert e.expected_direction == spec.metrics.get(metric) and e.headline == (metric == "m.value")
    # steered p00 sample 1 flagged, p01 sample 1 NaN: two values dropped; the prompts keep one sample each
    assert got[("a", "steered", "m.value")].n_excluded == 2
    assert got[("a", "steered", "m.value")].estimate.n == 16
    other = got[("a", "steered", OTHER)].estimate
    assert (other.n, other.n_not_applicable, other.n_unscorable) == (15, 1, 0)
    fluency = {(f.task, f.condition): f for f in numbers.fluency}
    assert set(fluency) == {("a", c) for c in ("steered", "r1", "r2", "neg")} | {("b", "steered")}
    for (task, condition), f in fluency.items():
        samples, spec = (a, SPEC_A) if task == "a" else (b, SPEC_B)
        d = _means(samples, condition, FLUENCY_METRIC) - _means(samples, "unsteered", FLUENCY_METRIC)
        assert f.estimate.p_value == _sign_flip_p(d, spec.seed)  # some are far from the 1e-4 floor
        assert f.ppl_ratio == pytest.approx(math.exp(d.mean()), rel=1e-12)
        assert f.judge == ("judge-lm" if task == "a" else "generation model")
    assert 0.2 < fluency[("a", "neg")].estimate.p_value < 1
    # the per-prompt summaries against unsteered: the headline's and the fluency cost's, per condition
    summaries = {(s.task, s.condition, s.metric) for s in numbers.summaries if s.reference == "unsteered"}
    pairs = [("a", c) for c in ("steered", "r1", "r2", "neg")] + [("b", "steered")]
    assert summaries == {(t, c, m) for t, c in pairs for m in ("m.value", FLUENCY_METRIC)}


def test_analyse_adjusts_each_family_by_holm_on_its_own(run):
    numbers, _, _ = run
    effects = {(e.task, e.condition, e.metric): e for e in numbers.effects}
    fluency = {(f.task, f.condition): f for f in numbers.fluency}
    controls = {(c.condition, c.kind, c.reference, c.metric): c for c in numbers.controls}
    families = {
        "confirmatory": [effects[("a", "steered", "m.value")], effects[("b", "steered", "m.value")],
                         fluency[("a", "steered")], fluency[("b", "steered")]],
        "exploratory": [effects[("a", "steered", OTHER)]],
        "control conditions": [r for k, r in effects.items() if k[1] != "steered"]
        + [r for k, r in fluency.items() if k[1] != "steered"],
        "controls, declared": [r for k, r in controls.items() if k[3] != OTHER],
        "controls, other": [r for k, r in controls.items() if k[3] == OTHER],
    }
    assert sum(map(len, families.values())) == len(numbers.effects) + len(numbers.fluency) + len(controls)
    for name, records in families.items():
        adjusted = _holm([r.estimate.p_value for r in records])
        for r, p in zip(records, adjusted, strict=True):
            assert r.p_adjusted == pytest.approx(p, rel=1e-12), name
            assert r.significant == (p < ALPHA), name
    assert 0 < effects[("a", "steered", "m.value")].p_adjusted < 1  # not capped: the families really differ


def test_analyse_control_records_are_steered_minus_the_mean_of_the_randoms_and_minus_the_negation(run):
    numbers, a, _ = run
    controls = {(c.kind, c.metric): c for c in numbers.controls}
    metrics = ("m.value", OTHER, FLUENCY_METRIC)
    assert set(controls) == {(k, m) for k in ("specific", "direction") for m in metrics}
    assert len(numbers.controls) == 6  # one specific and one direction record per metric, nothing else
    for (kind, metric), c in controls.items():
        steered = _means(a, "steered", metric)
        if kind == "specific":
            reference = np.nanmean([_means(a, "r1", metric), _means(a, "r2", metric)], axis=0)
            assert c.reference == "random controls (2)"
        else:
            reference = _means(a, "neg", metric)
            assert c.reference == "neg"
        d = steered - reference
        d = d[np.isfinite(d)]
        assert (c.task, c.condition, c.headline) == ("a", "steered", metric == "m.value")
        assert c.expected_direction == SPEC_A.metrics.get(metric)
        assert c.estimate.point == pytest.approx(d.mean(), abs=1e-12)
        assert c.estimate.p_value == _sign_flip_p(d, 5)
        applies = (15, 0, 1) if metric == OTHER else (15, 1, 0) if (kind, metric) == ("specific", "m.value") \
            else (16, 0, 0)
        assert (c.estimate.n, c.estimate.n_unscorable, c.estimate.n_not_applicable) == applies
    assert controls[("specific", OTHER)].estimate.p_value > 0.01  # far from the 1e-4 floor: the seed matters
    (summary,) = [s for s in numbers.summaries if s.reference == "random controls"]
    reference = np.nanmean([_means(a, "r1", "m.value"), _means(a, "r2", "m.value")], axis=0)
    assert (summary.task, summary.condition, summary.metric) == ("a", "steered", "m.value")
    steered = _means(a, "steered", "m.value")
    assert list(summary.prompts) == PROMPTS
    for p, r, s in zip(PROMPTS, reference, steered, strict=True):
        assert summary.prompts[p] == pytest.approx([r, s], abs=1e-12, nan_ok=True)


def test_analyse_labels_disruption_only_where_the_negation_significantly_moves_the_metric_the_same_way(run):
    numbers, _, _ = run
    effects = {(e.condition, e.metric): e for e in numbers.effects}
    fluency = {f.condition: f for f in numbers.fluency}
    labels = {c.metric: c.label for c in numbers.controls if c.kind == "direction"}
    # preconditions, measured: neg moves m.value significantly up like steered; m.other significantly
    # the other way; the fluency cost the same way but not significantly
    assert effects[("neg", "m.value")].significant and effects[("neg", "m.value")].estimate.point > 0
    assert effects[("neg", OTHER)].significant and effects[("neg", OTHER)].estimate.point < 0
    assert fluency["neg"].estimate.point > 0 and not fluency["neg"].significant
    assert labels == {"m.value": DISRUPTION, OTHER: None, FLUENCY_METRIC: None}
    assert all(c.label is None for c in numbers.controls if c.kind == "specific")


def test_analyse_headlines_carry_their_own_records_and_judge_the_expected_direction(run):
    numbers, _, _ = run
    by_task = {h.task: h for h in numbers.headlines}
    assert len(numbers.headlines) == 2  # one per task's steered condition, none for the controls
    effect = {(e.task, e.condition, e.metric): e for e in numbers.effects}
    controls = {(c.kind, c.metric): c for c in numbers.controls}
    fluency = next(f for f in numbers.fluency if (f.task, f.condition) == ("a", "steered"))
    h = by_task["a"]
    e = effect[("a", "steered", "m.value")]
    assert (h.condition, h.metric, h.expected_direction) == ("steered", "m.value", "increase")
    assert h.estimate == e.estimate and h.significant == e.significant
    assert h.fluency == fluency.estimate and h.ppl_ratio == fluency.ppl_ratio
    assert h.specific == controls[("specific", "m.value")].estimate and h.label == DISRUPTION
    assert h.moved_as_expected is True
    hb = by_task["b"]  # decreases as declared: moved as expected with a negative point
    assert hb.estimate.point < 0 and hb.significant and hb.moved_as_expected is True
    assert hb.specific is None and hb.label is None


def test_analyse_counts_and_ledger_are_per_task_and_condition(run):
    numbers, _, _ = run
    counts = {(c.task, c.condition): c for c in numbers.counts}
    assert set(counts) == {("a", c) for c in SHIFTS_A} | {("b", "unsteered"), ("b", "steered")}
    steered = counts[("a", "steered")]
    assert (steered.samples, steered.flagged, steered.empty, steered.unscorable) == (32, 1, 1, 1)
    assert (counts[("a", "r1")].unscorable, counts[("a", "r2")].unscorable) == (2, 4)
    others = [c for k, c in counts.items() if k not in (("a", "steered"), ("a", "r1"), ("a", "r2"))]
    assert all((c.flagged, c.empty, c.unscorable) == (0, 0, 0) for c in others)
    ledger = {(r.task, r.condition, r.site, r.kind): r for r in numbers.ledger}
    conditions = [("a", c) for c in ("steered", "r1", "r2", "neg")] + [("b", "steered")]
    assert set(ledger) == {(t, c, "L3.resid", k) for t, c in conditions for k in ("prompt", "decode")}
    for (_, _, _, kind), r in ledger.items():
        positions, norm = LEDGER["L3.resid"][kind]
        assert (r.samples, r.positions, r.norm) == (32, 32 * positions, pytest.approx(32 * norm))


# ----------------------------------------------------------------------------- check

def _decrease(run):  # noqa: ANN001, ANN202
    """`run` with its headline declared as a decrease."""
    (h,) = run.headlines
    return run.model_copy(update={"headlines": [h.model_copy(update={"expected_direction": "decrease"})]})


def _lines(result) -> dict:  # noqa: ANN001
    return {line.kind: line for line in result.lines}


def test_check_judges_a_decrease_headline_by_its_own_direction():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, REGRESSION, check
    from tests.test_check import noisy, synthetic

    base = make_baseline(_decrease(synthetic(noisy(-0.30, 0.05, 1), noisy(0.30, 0.05, 2))))
    kept = check(_decrease(synthetic(noisy(-0.30, 0.05, 3), noisy(0.30, 0.05, 4))), base)
    assert kept.status == HOLDS, kept.lines
    lost = check(_decrease(synthetic(noisy(0.0, 0.05, 3), noisy(0.30, 0.05, 4))), base)
    assert lost.status == REGRESSION and _lines(lost)["effect"].verdict == "regression"


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_check_min_effect_floor_compares_the_effect_itself_not_a_multiple(direction):
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, REGRESSION, check
    from tests.test_check import noisy, synthetic

    def run(seed: int):  # noqa: ANN202
        r = synthetic(noisy(direction * 0.30, 0.05, seed), noisy(0.30, 0.05, seed + 1))
        return r if direction > 0 else _decrease(r)

    base = make_baseline(run(1))
    assert check(run(3), base, floors={"min_effect": 0.25}).status == HOLDS
    low = check(run(3), base, floors={"min_effect": 0.45})  # 0.30 < 0.45 < 2 × 0.30
    assert low.status == REGRESSION and "below min_effect 0.45" in _lines(low)["effect"].reason


def test_check_coverage_counts_every_prompt_left_out_by_why():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import NO_BASELINE_VALUE, check
    from tests.test_check import METRIC, noisy, synthetic

    def edit(run, change):  # noqa: ANN001, ANN202
        summaries = [p.model_copy(update={"prompts": change(dict(p.prompts))}) if p.metric == METRIC else p
                     for p in run.per_prompt]
        return run.model_copy(update={"per_prompt": summaries})

    def now_change(prompts: dict) -> dict:
        for p in ("p01", "p02"):
            prompts[p] = [NAN, prompts[p][1]]
        for p in ("p03", "p04", "p05"):
            prompts[p] = [prompts[p][0], NAN]
        del prompts["p06"]  # the run lacks a prompt altogether
        return prompts

    measured = noisy(0.30, 0.05, 1)
    measured[0] = NAN  # the baseline measured p00 on the unsteered side only
    base = make_baseline(synthetic(measured, noisy(0.30, 0.05, 2)))
    now = edit(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4)), now_change)
    effect = _lines(check(now, base))["effect"]
    assert effect.coverage.planned == 24 and effect.coverage.compared == 17
    assert effect.coverage.excluded == {NO_BASELINE_VALUE: 1, "unsteered NaN in the run": 3,
                                        "steered NaN in the run": 3}
    assert effect.verdict == "inconclusive"
    assert "17 of the 23 prompts the baseline measured" in effect.reason and "needs 19" in effect.reason


@pytest.mark.parametrize(("lost", "verdict"), [(12, "holds"), (13, "inconclusive")])
def test_check_min_coverage_is_a_share_of_the_prompts_reached_exactly_at_the_boundary(lost, verdict):
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Tolerance, check
    from tests.test_check import BASE, noisy, synthetic

    effect = noisy(0.30, 0.05, 3)
    effect[:lost] = NAN  # steered NaN in the run: 24 − lost prompts compared; 0.5 × 24 = 12 needed
    result = check(synthetic(effect, noisy(0.30, 0.05, 4)), make_baseline(BASE), Tolerance(min_coverage=0.5))
    line = _lines(result)["effect"]
    assert line.coverage.compared == 24 - lost and line.verdict == verdict, line.reason


def test_check_reasons_name_what_regressed_and_holding_lines_give_none():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import BASE, noisy, synthetic

    fluency = _lines(check(synthetic(noisy(0.30, 0.05, 3), noisy(0.80, 0.05, 4)), make_baseline(BASE)))
    assert fluency["fluency"].reason == "fluency cost significantly larger than baseline"
    assert fluency["effect"].verdict == "holds" and fluency["effect"].reason == ""
    effect = _lines(check(synthetic(noisy(0.10, 0.05, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE)))
    assert effect["effect"].reason == "effect significantly smaller than baseline"


def test_check_a_run_without_the_headline_summary_is_a_regression_not_a_crash():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import REGRESSION, check
    from tests.test_check import BASE, METRIC, noisy, synthetic

    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    run = run.model_copy(update={"per_prompt": [p for p in run.per_prompt if p.metric != METRIC]})
    result = check(run, make_baseline(BASE))
    line = _lines(result)["effect"]
    assert result.status == REGRESSION
    assert line.reason == "no finite value of the headline metric in the run (all NaN, flagged or empty)"
    assert line.coverage.excluded == {"unsteered NaN in the run": 24}


def test_check_compares_effects_not_levels_when_the_unsteered_level_moves():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, check
    from tests.test_check import BASE, METRIC, noisy, synthetic

    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    lower = [p.model_copy(update={"prompts": {k: [u - 1.0, s - 1.0] for k, (u, s) in p.prompts.items()}})
             if p.metric == METRIC else p for p in run.per_prompt]  # both sides 1.0 lower, same effect
    result = check(run.model_copy(update={"per_prompt": lower}), make_baseline(BASE))
    assert result.status == HOLDS, result.lines
    assert abs(_lines(result)["effect"].change.point) < 0.05


def test_check_gate_specific_reads_the_summary_against_the_random_controls():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, REGRESSION, check
    from tests.test_check import noisy, synthetic
    from tests.test_check_evidence import _specific

    base_specific, now_specific = noisy(0.25, 0.05, 7), noisy(0.0, 0.05, 8)
    base = make_baseline(_specific(synthetic(noisy(0.30, 0.05, 1), noisy(0.30, 0.05, 2)), base_specific))
    # the effect against unsteered is kept, the effect against the random controls is gone
    now = _specific(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4)), now_specific)
    plain = check(now, base)
    assert plain.status == HOLDS
    assert _lines(plain)["effect"].baseline == base.headlines[0].estimate.point
    specific = check(now, base, gate="specific")
    line = _lines(specific)["effect"]
    assert specific.status == REGRESSION and line.verdict == "regression"
    assert line.baseline == pytest.approx(base_specific.mean(), abs=1e-9)
    assert line.now == pytest.approx(now_specific.mean(), abs=1e-9)
    # a prompt whose random controls have no value in the run is left out as such
    (summary,) = [p for p in now.per_prompt if p.reference == "random controls"]
    prompts = {**summary.prompts, "p05": [NAN, summary.prompts["p05"][1]]}
    holed = summary.model_copy(update={"prompts": prompts})
    now = now.model_copy(update={"per_prompt": [p for p in now.per_prompt if p is not summary] + [holed]})
    line = _lines(check(now, base, gate="specific"))["effect"]
    assert line.coverage.excluded == {"controls NaN in the run": 1} and line.coverage.compared == 23


def test_check_a_headline_without_a_finite_point_is_a_regression_even_with_finite_prompts():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import REGRESSION, check
    from tests.test_check import BASE, noisy, synthetic

    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    (h,) = run.headlines
    broken = h.model_copy(update={"estimate": h.estimate.model_copy(update={"point": NAN})})
    result = check(run.model_copy(update={"headlines": [broken]}), make_baseline(BASE))
    line = _lines(result)["effect"]
    assert result.status == REGRESSION
    assert line.reason == "no finite value of the headline metric in the run (all NaN, flagged or empty)"


def test_check_effect_change_uses_the_tolerance_confidence_and_a_one_sided_detectable_change():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Tolerance, check
    from harness.stats.power import minimum_detectable_effect
    from tests.test_check import BASE, noisy, synthetic

    now = noisy(0.30, 0.05, 3)
    line = _lines(check(synthetic(now, noisy(0.30, 0.05, 4)), make_baseline(BASE), Tolerance(confidence=0.8)))
    change = now - noisy(0.30, 0.05, 1)
    ci = stats.ttest_1samp(change, 0.0).confidence_interval(0.8)
    effect = line["effect"]
    assert (effect.change.ci_low, effect.change.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    sd = float(np.std(change, ddof=1))
    assert effect.detectable == pytest.approx(minimum_detectable_effect(sd, 24, sides=1), rel=1e-6)
    assert effect.detectable < minimum_detectable_effect(sd, 24, sides=2)


def test_check_a_no_effect_headline_is_never_a_regression_of_its_effect():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import NO_EFFECT, check
    from tests.test_check import noisy, synthetic

    base = make_baseline(synthetic(noisy(-0.30, 0.05, 1), noisy(0.30, 0.05, 2)), no_effect=True)
    # far further the wrong way: a significant "shrink", but there is nothing to protect
    line = _lines(check(synthetic(noisy(-1.0, 0.05, 3), noisy(0.30, 0.05, 4)), base))["effect"]
    assert line.verdict == NO_EFFECT
    assert line.p_regression is None or math.isnan(line.p_regression)


def test_check_an_undecided_effect_line_names_the_loss_and_the_one_sided_prompt_count():
    import re

    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from harness.stats.power import prompts_needed
    from tests.test_check import BASE, noisy, synthetic

    line = _lines(check(synthetic(noisy(0.15, 0.6, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE)))["effect"]
    assert line.verdict == "inconclusive"
    expected = BASE.headlines[0].estimate.point
    assert f"losing the whole baseline effect ({-expected:+.3g})" in line.reason, line.reason
    wanted = int(re.search(r"about (\d+) prompts would decide it", line.reason).group(1))
    room = line.change.point + expected
    sd = float(np.std(noisy(0.15, 0.6, 3) - noisy(0.30, 0.05, 1), ddof=1))
    one_sided, two_sided = prompts_needed(sd, room, sides=1), prompts_needed(sd, room, sides=2)
    assert one_sided != two_sided and wanted == one_sided


# ----------------------------------------------------------------------------- baseline

def test_read_baseline_messages_name_the_file_and_the_problem(tmp_path):
    import json

    from harness.analyses.baseline import make_baseline, read_baseline, write_baseline
    from harness.errors import UserError
    from harness.schema.results import SCHEMA_VERSION
    from tests.test_check import BASE

    path = tmp_path / "b.json"
    for text, words in (("{not json", f"{path}: not a readable baseline ("),
                        ("[1, 2]", f"{path}: not a readable baseline (not a JSON object)")):
        path.write_text(text)
        with pytest.raises(UserError) as err:
            read_baseline(path)
        assert str(err.value).startswith(words), err.value
    data = json.loads(make_baseline(BASE).model_dump_json())
    newer = SCHEMA_VERSION + 1
    for version, words in ((None, "schema_version 1 was written by an older harness"),
                           (newer, f"schema_version {newer} was written by another")):
        changed = {k: v for k, v in data.items() if k != "schema_version"}
        if version is not None:
            changed["schema_version"] = version
        path.write_text(json.dumps(changed))
        with pytest.raises(UserError, match=words):
            read_baseline(path)
    path.write_text(json.dumps({**data, "headlines": 5, "floors": 7}))
    with pytest.raises(UserError) as err:
        read_baseline(path)
    assert str(err.value) == (f"{path}: not a usable baseline (headlines: Input should be a valid list; "
                              "floors: Input should be a valid dictionary)")
    nested = json.loads(json.dumps(data))
    nested["headlines"][0]["task"] = 5
    path.write_text(json.dumps(nested))
    with pytest.raises(UserError, match=r"\(headlines\.0\.task: Input should be a valid string\)"):
        read_baseline(path)
    write_baseline(BASE, path)
    assert read_baseline(path) == make_baseline(BASE)


def test_write_baseline_refuses_a_wrong_way_effect_unless_asked_and_says_why_plainly(tmp_path):
    import re

    from harness.analyses.baseline import write_baseline
    from harness.errors import UserError
    from tests.test_check import noisy, synthetic

    wrong = synthetic(noisy(-0.30, 0.05, 1), noisy(0.30, 0.05, 2))
    with pytest.raises(UserError) as err:
        write_baseline(wrong, tmp_path / "b.json")
    assert re.match(r"the run: not a usable baseline \(t steered sentiment.p_positive: the effect -0\.\d+ "
                    "is not in the expected direction", str(err.value)), err.value
    assert write_baseline(wrong, tmp_path / "b.json", no_effect=True).no_effect == {"t": ["steered"]}


def test_check_an_effect_whose_observed_change_exceeds_the_baseline_effect_says_it_may_be_lost():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import BASE, noisy, synthetic

    # very noisy: the observed change (−0.49) is past losing the whole +0.30, but not significantly
    line = _lines(check(synthetic(noisy(-0.1, 2.0, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE)))["effect"]
    assert line.change.point < -BASE.headlines[0].estimate.point and line.verdict == "inconclusive"
    assert line.reason == "the run may have lost the whole baseline effect (observed change ≥ the effect)"


def test_headlines_move_as_expected_only_when_significant_and_in_the_declared_direction(run):
    from harness.pipeline.analyse import headlines

    numbers, _, _ = run
    (e,) = [e for e in numbers.effects if (e.task, e.condition, e.metric) == ("a", "steered", "m.value")]
    flipped = e.estimate.model_copy(update={"point": -e.estimate.point})
    for significant, estimate, moved in ((True, e.estimate, True), (False, e.estimate, False),
                                         (True, flipped, False), (False, flipped, False)):
        effect = e.model_copy(update={"significant": significant, "estimate": estimate})
        (h,) = headlines([SPEC_A], [effect], [])
        assert (h.significant, h.moved_as_expected) == (significant, moved)


def test_make_baseline_keeps_floors_counts_and_ledger_and_refuses_a_zero_effect():
    from harness.analyses.baseline import make_baseline
    from harness.errors import UserError
    from tests.test_check import BASE, TASK, synthetic

    config = {**BASE.config, "tasks": {TASK: {**BASE.config["tasks"][TASK], "min_effect": 0.1,
                                               "max_fluency_cost": 2.0}}}
    base = make_baseline(BASE.model_copy(update={"config": config}))
    assert base.floors == {TASK: {"min_effect": 0.1, "max_fluency_cost": 2.0}}
    assert base.counts == BASE.counts and base.ledger == BASE.ledger
    with pytest.raises(UserError, match="not in the expected direction"):  # exactly 0 protects nothing
        make_baseline(synthetic(np.zeros(24), np.full(24, 0.3)))


# --------------------------------------------------- check: the line functions, by brute force
# Synthetic runs from tests.test_check (one task, 24 prompts); p-values recomputed with scipy.

def _perm_p(x: np.ndarray, alternative: str) -> float:
    """The check's one-sided sign-flip test recomputed with scipy: 9999 resamples, seed 0."""
    return float(stats.permutation_test((np.asarray(x, dtype=float),), np.mean, permutation_type="samples",
                                        n_resamples=9999, alternative=alternative,
                                        rng=np.random.default_rng(0)).pvalue)


def _prompt_effects(run, metric: str, reference: str = "unsteered", condition: str = "steered") -> np.ndarray:  # noqa: ANN001
    """Per-prompt condition − reference of `metric`, in prompt order."""
    (summary,) = [p for p in run.per_prompt
                  if (p.metric, p.reference, p.condition) == (metric, reference, condition)]
    return np.array([s - u for u, s in (summary.prompts[k] for k in sorted(summary.prompts))])


def _with_summary(run, metric: str, prompts: dict):  # noqa: ANN001, ANN202
    """`run` with the per-prompt summary of `metric` (against unsteered) replaced by `prompts`, and the
    headline or fluency point recomputed from them so that a baseline made of it stays valid."""
    from harness.stats.comparison import compare_values

    summaries = [p.model_copy(update={"prompts": prompts})
                 if (p.metric, p.reference) == (metric, "unsteered") else p for p in run.per_prompt]
    reference, condition = ({k: v[i] for k, v in prompts.items()} for i in (0, 1))
    estimate = compare_values(reference, condition).estimate
    headlines = [h.model_copy(update={"estimate": estimate}) if h.metric == metric else h
                 for h in run.headlines]
    fluency = [f.model_copy(update={"estimate": estimate}) if f.metric == metric else f
               for f in run.fluency_cost]
    return run.model_copy(update={"per_prompt": summaries, "headlines": headlines, "fluency_cost": fluency})


def _exact(effects) -> dict:  # noqa: ANN001
    """Per-prompt [unsteered, steered] pairs with dyadic values: every mean and difference is exact."""
    from tests.test_check import PROMPTS

    return {p: [0.5, 0.5 + float(e)] for p, e in zip(PROMPTS, effects, strict=True)}


def _holm2(p: list[float]) -> list[float]:
    """Holm's adjustment of two p-values, written out."""
    low, high = sorted(p)
    adjusted = {low: min(2 * low, 1.0), high: min(max(2 * low, high), 1.0)}
    return [adjusted[v] for v in p]


def test_check_fluency_coverage_names_unsteered_as_the_reference_left_out():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Coverage, check
    from harness.schema.spec import FLUENCY_METRIC
    from tests.test_check import BASE, noisy, synthetic

    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    (summary,) = [p for p in run.per_prompt if p.metric == FLUENCY_METRIC]
    prompts = dict(summary.prompts)
    for p in ("p01", "p02"):
        prompts[p] = [NAN, prompts[p][1]]
    prompts["p03"] = [prompts["p03"][0], NAN]
    holed = summary.model_copy(update={"prompts": prompts})
    run = run.model_copy(update={"per_prompt": [p if p is not summary else holed for p in run.per_prompt]})
    line = _lines(check(run, make_baseline(BASE)))["fluency"]
    assert line.coverage == Coverage(planned=24, compared=21, excluded={"unsteered NaN in the run": 2,
                                                                        "steered NaN in the run": 1})


def _two_conditions(first, second):  # noqa: ANN001, ANN202
    """`first` with a second steered condition, "strong", made of `second`'s steered records."""
    def strong(records):  # noqa: ANN001, ANN202
        return [r.model_copy(update={"condition": "strong"}) for r in records if r.condition == "steered"]

    return first.model_copy(update={k: getattr(first, k) + strong(getattr(second, k)) for k in
                                    ("headlines", "fluency_cost", "per_prompt", "counts", "ledger")})


def test_check_fluency_line_compares_each_conditions_own_fluency_points():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import noisy, synthetic

    base = make_baseline(_two_conditions(synthetic(noisy(0.30, 0.05, 1), noisy(0.30, 0.05, 2)),
                                         synthetic(noisy(0.60, 0.05, 5), noisy(1.20, 0.05, 6))))
    run = _two_conditions(synthetic(noisy(0.30, 0.05, 3), noisy(0.35, 0.05, 4)),
                          synthetic(noisy(0.60, 0.05, 7), noisy(1.10, 0.05, 8)))
    fluency = {line.condition: line for line in check(run, base).lines if line.kind == "fluency"}
    assert set(fluency) == {"steered", "strong"}
    for condition, line in fluency.items():
        (b,) = [f for f in base.fluency_cost if f.condition == condition]
        (n,) = [f for f in run.fluency_cost if f.condition == condition]
        assert (line.baseline, line.now) == (b.estimate.point, n.estimate.point), condition
    assert fluency["steered"].baseline < 0.5 < fluency["strong"].baseline  # the two really differ


def test_check_no_finite_fluency_cost_exactly_when_the_runs_prompts_or_its_point_are_not_finite():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from harness.schema.spec import FLUENCY_METRIC
    from tests.test_check import BASE, noisy, synthetic

    reason = "no finite fluency cost in the run (all NaN, flagged or empty)"
    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    (f,) = run.fluency_cost
    nan_point = [f.model_copy(update={"estimate": f.estimate.model_copy(update={"point": NAN})})]
    finite_point = synthetic(noisy(0.30, 0.05, 3), np.full(24, NAN)).model_copy(update={"fluency_cost": [f]})
    assert np.isfinite(_prompt_effects(run, FLUENCY_METRIC)).all()
    assert not np.isfinite(_prompt_effects(finite_point, FLUENCY_METRIC)).any()
    for broken in (run.model_copy(update={"fluency_cost": nan_point}),  # finite prompts, NaN point
                   finite_point,  # finite point, no finite prompt
                   run.model_copy(update={"fluency_cost": []})):  # no fluency record at all
        line = _lines(check(broken, make_baseline(BASE)))["fluency"]
        assert (line.verdict, line.reason, line.change) == ("regression", reason, None)
    line = _lines(check(run, make_baseline(BASE)))["fluency"]
    assert (line.verdict, line.reason) == ("holds", "")


def test_check_fluency_change_uses_the_tolerance_confidence_and_a_one_sided_detectable_change():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Tolerance, check
    from harness.schema.spec import FLUENCY_METRIC
    from harness.stats.power import minimum_detectable_effect
    from tests.test_check import BASE, noisy, synthetic

    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.08, 4))
    line = _lines(check(run, make_baseline(BASE), Tolerance(confidence=0.8)))["fluency"]
    growth = _prompt_effects(run, FLUENCY_METRIC) - _prompt_effects(BASE, FLUENCY_METRIC)
    ci = stats.ttest_1samp(growth, 0.0).confidence_interval(0.8)
    assert (line.change.ci_low, line.change.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-9)
    sd = float(np.std(growth, ddof=1))
    assert line.detectable == pytest.approx(minimum_detectable_effect(sd, 24, sides=1), rel=1e-9)
    assert line.detectable < minimum_detectable_effect(sd, 24, sides=2)


def test_check_regression_p_values_are_holm_over_the_effect_and_fluency_tests_by_brute_force():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from harness.schema.spec import FLUENCY_METRIC
    from tests.test_check import BASE, METRIC, noisy, synthetic

    base = make_baseline(BASE)
    expected = BASE.headlines[0].estimate.point
    run = synthetic(noisy(0.22, 0.1, 3), noisy(0.32, 0.05, 4))
    change = _prompt_effects(run, METRIC) - _prompt_effects(BASE, METRIC)
    growth = _prompt_effects(run, FLUENCY_METRIC) - _prompt_effects(BASE, FLUENCY_METRIC)
    raw = [_perm_p(change + 0.25 * expected, "less"), _perm_p(growth - 0.15, "greater")]
    assert 0.001 < raw[0] < 0.4  # the effect's doubled p-value is not capped: Holm shows
    want = _holm2(raw)
    for floors, verdicts in (({}, ("holds", "holds")), ({"min_effect": 0.5}, ("regression", "holds")),
                             ({"max_fluency_cost": 0.1}, ("holds", "regression"))):
        lines = _lines(check(run, base, floors=floors))
        got = [lines["effect"].p_regression, lines["fluency"].p_regression]
        assert got == pytest.approx(want, rel=1e-12), floors
        assert (lines["effect"].verdict, lines["fluency"].verdict) == verdicts, floors


def test_check_max_fluency_cost_is_a_ceiling_strictly_above_the_runs_fluency_point():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, REGRESSION, check
    from tests.test_check import BASE, noisy, synthetic

    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    cost = run.fluency_cost[0].estimate.point
    at = check(run, make_baseline(BASE), floors={"max_fluency_cost": cost})
    assert at.status == HOLDS and _lines(at)["fluency"].verdict == "holds"  # equal is not above
    ceiling = round(cost - 0.01, 3)
    above = check(run, make_baseline(BASE), floors={"max_fluency_cost": ceiling})
    line = _lines(above)["fluency"]
    assert above.status == REGRESSION
    assert (line.verdict, line.reason) == ("regression", f"fluency cost above max_fluency_cost {ceiling}")
    assert line.now == cost and math.isfinite(line.p_regression)
    # the baseline's own floor applies when no floor is given
    config = {**BASE.config, "tasks": {"t": {**BASE.config["tasks"]["t"], "max_fluency_cost": ceiling}}}
    floored = make_baseline(BASE.model_copy(update={"config": config}))
    assert _lines(check(run, floored))["fluency"].reason == f"fluency cost above max_fluency_cost {ceiling}"


def test_check_p_holds_exactly_alpha_is_not_evidence_for_the_effect_or_the_fluency_line():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from harness.schema.spec import ALPHA, FLUENCY_METRIC
    from tests.test_check import BASE, METRIC, noisy, synthetic

    # found by bisection: these shifts put the one-sided p-value (k / 10000) at exactly 500 / 10000
    effect_run = synthetic(noisy(0.462890625, 1.0, 3), noisy(0.30, 0.05, 4))
    change = _prompt_effects(effect_run, METRIC) - _prompt_effects(BASE, METRIC)
    assert _perm_p(change + BASE.headlines[0].estimate.point, "greater") == ALPHA  # precondition
    effect = _lines(check(effect_run, make_baseline(BASE)))["effect"]
    assert effect.p_holds == ALPHA and effect.verdict == "inconclusive", effect.reason
    fluency_run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30 + 0.052606201171875006, 0.3, 4))
    growth = _prompt_effects(fluency_run, FLUENCY_METRIC) - _prompt_effects(BASE, FLUENCY_METRIC)
    assert _perm_p(growth - 0.15, "less") == ALPHA  # precondition
    fluency = _lines(check(fluency_run, make_baseline(BASE)))["fluency"]
    assert fluency.p_holds == ALPHA and fluency.verdict == "inconclusive", fluency.reason


def test_check_min_effect_floor_is_strictly_below_an_effect_equal_to_it_holds():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, check
    from tests.test_check import BASE, noisy, synthetic

    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    result = check(run, make_baseline(BASE), floors={"min_effect": run.headlines[0].estimate.point})
    assert result.status == HOLDS and _lines(result)["effect"].verdict == "holds"


def test_check_the_effect_line_shows_the_baselines_recorded_headline_point():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import BASE, noisy, synthetic

    # a headline point within the baseline's agreement tolerance (1e-9) of its per-prompt mean
    (h,) = BASE.headlines
    point = h.estimate.point + 5e-10
    nudged = h.model_copy(update={"estimate": h.estimate.model_copy(update={"point": point})})
    base = make_baseline(BASE.model_copy(update={"headlines": [nudged]}))
    line = _lines(check(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4)), base))["effect"]
    assert line.baseline == nudged.estimate.point != h.estimate.point


def test_check_a_no_effect_line_says_what_the_baseline_moved_and_that_there_is_nothing_to_protect():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import NO_EFFECT, check
    from tests.test_check import noisy, synthetic

    base = make_baseline(synthetic(noisy(-0.30, 0.05, 1), noisy(0.30, 0.05, 2)), no_effect=True)
    line = _lines(check(synthetic(noisy(0.0, 0.05, 3), noisy(0.30, 0.05, 4)), base))["effect"]
    moved = base.headlines[0].estimate.point
    assert line.verdict == NO_EFFECT
    assert line.reason == (f"the baseline (written with --no-effect) moved {moved:+.3g}, not in the expected "
                           "direction (increase): nothing to protect")


def _specific_run(base_specific, now_specific):  # noqa: ANN001, ANN202
    """A baseline and a run whose specific effects (steered − random controls) are these."""
    from harness.analyses.baseline import make_baseline
    from tests.test_check import noisy, synthetic
    from tests.test_check_evidence import _specific

    base = make_baseline(_specific(synthetic(noisy(0.30, 0.05, 1), noisy(0.30, 0.05, 2)), base_specific))
    return base, _specific(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4)), now_specific)


@pytest.mark.parametrize("base_specific", [-0.2, 0.0])
def test_check_gate_specific_with_no_specific_effect_in_the_baseline_is_inconclusive(base_specific):
    from harness.analyses.check import INCONCLUSIVE, check
    from tests.test_check import METRIC, noisy

    # the effect against unsteered is +0.30, but against the random controls it is ≤ 0: nothing to
    # protect, however well the run does (its specific effect is +0.3, significantly above 0)
    specific = np.zeros(24) if base_specific == 0.0 else noisy(base_specific, 0.05, 7)
    base, run = _specific_run(specific, noisy(0.3, 0.05, 8))
    result = check(run, base, gate="specific")
    line = _lines(result)["effect"]
    point = line.baseline
    assert (point == 0.0) if base_specific == 0.0 else (point < 0)
    assert result.status == INCONCLUSIVE and line.verdict == "inconclusive"
    assert line.reason == (f"the baseline's specific effect {METRIC} ({point:+.3g}) is not in the expected "
                           "direction (increase): there is no effect to protect")
    assert math.isfinite(line.p_regression)  # its regression test still counts in Holm's family


def test_check_gate_specific_without_the_headlines_controls_summary_in_the_baseline_is_inconclusive():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import INCONCLUSIVE, Coverage, check
    from tests.test_check import noisy, synthetic
    from tests.test_check_evidence import _specific

    # the baseline summarised random controls for "steered" only; the run has them for both conditions
    base = make_baseline(_two_conditions(
        _specific(synthetic(noisy(0.30, 0.05, 1), noisy(0.30, 0.05, 2)), noisy(0.2, 0.05, 7)),
        synthetic(noisy(0.60, 0.05, 5), noisy(0.30, 0.05, 6))))
    steered = _specific(synthetic(noisy(0.60, 0.05, 9), noisy(0.30, 0.05, 10)), noisy(0.2, 0.05, 11))
    first = _specific(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4)), noisy(0.2, 0.05, 8))
    run = _two_conditions(first, steered)
    result = check(run, base, gate="specific")
    lines = {line.condition: line for line in result.lines if line.kind == "effect"}
    assert lines["steered"].verdict == "holds"
    line = lines["strong"]
    assert result.status == INCONCLUSIVE and line.verdict == "inconclusive"
    assert line.coverage == Coverage(planned=0, compared=0) and math.isnan(line.baseline)


def test_check_an_effect_change_exactly_the_whole_baseline_effect_may_have_lost_it():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import METRIC, noisy, synthetic

    base = make_baseline(_with_summary(synthetic(noisy(0.3, 0.05, 1), noisy(0.3, 0.05, 2)), METRIC,
                                       _exact(np.full(24, 0.25))))
    alternating = np.tile([1.0, -1.0], 12)  # mean exactly 0: the change is exactly −0.25
    run = _with_summary(synthetic(noisy(0.3, 0.05, 3), noisy(0.3, 0.05, 4)), METRIC, _exact(alternating))
    line = _lines(check(run, base))["effect"]
    assert line.change.point == -0.25 == -base.headlines[0].estimate.point
    assert line.verdict == "inconclusive"
    assert line.reason == "the run may have lost the whole baseline effect (observed change ≥ the effect)"


def test_check_a_fluency_growth_exactly_at_the_tolerance_may_have_grown_by_more():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Tolerance, check
    from harness.schema.spec import FLUENCY_METRIC
    from tests.test_check import BASE, noisy, synthetic

    base = make_baseline(_with_summary(BASE, FLUENCY_METRIC, _exact(np.full(24, 0.25))))
    grown = 0.25 + 0.125 + np.tile([1.0, -1.0], 12)  # growth exactly 0.125 on average, not significant
    run = _with_summary(synthetic(noisy(0.30, 0.05, 3), noisy(0.3, 0.05, 4)), FLUENCY_METRIC, _exact(grown))
    line = _lines(check(run, base, Tolerance(fluency=0.125)))["fluency"]
    assert line.change.point == 0.125 and line.verdict == "inconclusive"
    assert line.reason == "the fluency cost may have grown by more than the tolerance (+0.125 nats)"
    # below the tolerance: how many prompts would decide it, one-sided, from the room left
    from harness.stats.power import prompts_needed

    line = _lines(check(run, base, Tolerance(fluency=0.25)))["fluency"]
    need = prompts_needed(float(np.std(grown - 0.25, ddof=1)), 0.25 - 0.125, sides=1)
    assert line.reason == ("the growth's CI still includes +0.25 nats (the tolerance); "
                           f"24 prompts, about {need} prompts would decide it")


def _with_counts(run, steered: tuple[int, ...] | None, unsteered: tuple[int, ...] | None):  # noqa: ANN001, ANN202
    """`run` with these (samples, flagged, empty, unscorable) counts; None leaves the condition out."""
    from harness.schema.results import ConditionCounts
    from tests.test_check import TASK

    counts = [ConditionCounts(task=TASK, condition=c, samples=n[0], flagged=n[1], empty=n[2], unscorable=n[3])
              for c, n in (("unsteered", unsteered), ("steered", steered)) if n is not None]
    return run.model_copy(update={"counts": counts})


def _upper(k: int, n: int) -> float:
    """The exact one-sided 95 % upper bound of a proportion, from scipy's two-sided 90 % interval."""
    return float(stats.binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").high)


def _enough(limit: float) -> int:
    """The fewest samples, none degenerate, whose upper bound is within `limit` (brute force)."""
    return next(n for n in range(1, 10_000) if _upper(0, n) <= limit)


def test_check_degenerate_line_shows_steered_minus_unsteered_shares_of_the_baseline_and_the_run():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import BASE

    base = make_baseline(_with_counts(BASE, (96, 6, 2, 2), (96, 4, 0, 0)))  # 10/96 − 4/96
    run = _with_counts(BASE, (96, 1, 1, 1), (96, 1, 0, 0))  # 3/96 − 1/96
    line = _lines(check(run, base))["degenerate"]
    assert line.baseline == pytest.approx(6 / 96, abs=1e-15) and line.now == pytest.approx(2 / 96, abs=1e-15)
    assert line.verdict == "holds"
    line = _lines(check(run, make_baseline(_with_counts(BASE, None, None))))["degenerate"]
    assert math.isnan(line.baseline) and line.verdict == "holds"  # no baseline counts: the run decides


@pytest.mark.parametrize(("steered", "unsteered"), [((40, 1, 1, 2), (40, 0, 0, 0)),
                                                    ((40, 6, 0, 0), (40, 2, 0, 0))])
def test_check_degenerate_too_few_samples_names_the_count_its_exact_bound_and_the_samples_needed(
        steered, unsteered):
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import BASE

    # an excess at (not above) the 10 % tolerance, but 40 samples cannot bound it: inconclusive
    line = _lines(check(_with_counts(BASE, steered, unsteered), make_baseline(BASE)))["degenerate"]
    bad, share_u = sum(steered[1:]), unsteered[1] / 40
    assert line.now == pytest.approx(0.1, abs=1e-12) and line.verdict == "inconclusive"
    assert line.reason == (f"too few samples: {bad} of 40 steered samples are degenerate, their share may "
                           f"be up to {_upper(bad, 40):.0%} (95% upper bound), over the unsteered "
                           f"{share_u:.0%} + 10%; with none degenerate, {_enough(share_u + 0.1)} samples "
                           "would decide it")
    assert _enough(0.1) == 29 and _enough(0.15) == 19  # the brute force, by hand: 1 − 0.05^(1/n)


def test_check_degenerate_holds_when_the_exact_bound_minus_the_unsteered_share_is_at_most_the_tolerance():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Tolerance, check
    from harness.stats import proportion_upper_bound
    from tests.test_check import BASE

    # a bound exactly at the tolerance holds
    at = proportion_upper_bound(0, 96, 0.05)
    assert at == pytest.approx(_upper(0, 96), rel=1e-9)
    run = _with_counts(BASE, (96, 0, 0, 0), (96, 0, 0, 0))
    assert _lines(check(run, make_baseline(BASE), Tolerance(degenerate=at)))["degenerate"].verdict == "holds"
    below = _lines(check(run, make_baseline(BASE), Tolerance(degenerate=at * 0.999)))["degenerate"]
    assert below.verdict == "inconclusive"
    # the bound is compared above the unsteered share: 10 of 96 on both sides holds (bound 0.17 − 0.10)
    same = _with_counts(BASE, (96, 10, 0, 0), (96, 10, 0, 0))
    assert _upper(10, 96) - 10 / 96 < 0.1 < _upper(10, 96) + 10 / 96
    assert _lines(check(same, make_baseline(BASE)))["degenerate"].verdict == "holds"


def test_check_degenerate_regression_and_missing_counts_say_so_with_their_coverage():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Coverage, check
    from tests.test_check import BASE

    line = _lines(check(_with_counts(BASE, (96, 30, 0, 0), (96, 0, 0, 0)), make_baseline(BASE)))["degenerate"]
    assert (line.verdict, line.reason) == ("regression", "31% more of the steered samples are flagged, "
                                           "empty or unscorable than unsteered (tolerance 10%)")
    one = (96, 0, 0, 0)
    for steered, unsteered, planned in ((one, None, 96), (None, (80, 0, 0, 0), 80), (None, None, 0)):
        line = _lines(check(_with_counts(BASE, steered, unsteered), make_baseline(BASE)))["degenerate"]
        assert (line.verdict, line.reason) == ("inconclusive",
                                               "the run counts no samples of this condition or of unsteered")
        assert line.coverage == Coverage(unit="samples", planned=planned, compared=planned)


def _with_ledger(run, *records: tuple[str, str, int, int, float]):  # noqa: ANN001, ANN202
    """`run` with these (site, kind, samples, positions, norm) ledger records of its steered condition."""
    from harness.schema.results import LedgerRecord
    from tests.test_check import TASK

    return run.model_copy(update={"ledger": [
        LedgerRecord(task=TASK, condition="steered", site=site, kind=kind, samples=samples,
                     positions=positions, norm=norm) for site, kind, samples, positions, norm in records]})


def test_check_ledger_line_is_the_norm_per_sample_and_covers_the_samples_counted():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Coverage, check
    from tests.test_check import BASE

    base = make_baseline(BASE)  # 480 over 96 samples: 5 per sample
    line = _lines(check(_with_ledger(BASE, ("L5.resid", "prompt", 90, 90, 540.0)), base))["ledger"]
    assert (line.baseline, line.now, line.verdict) == (5.0, 6.0, "holds")
    assert line.coverage == Coverage(unit="samples", planned=96, compared=90,
                                     excluded={"no ledger record": 6})
    line = _lines(check(BASE, base))["ledger"]
    assert line.coverage == Coverage(unit="samples", planned=96, compared=96)
    line = _lines(check(_with_ledger(BASE), base))["ledger"]  # no record at all
    assert (line.now, line.verdict) == (0.0, "regression")
    assert line.coverage == Coverage(unit="samples", planned=96, compared=0,
                                     excluded={"no ledger record": 96})
    line = _lines(check(_with_counts(BASE, None, (96, 0, 0, 0)), base))["ledger"]  # no counts of steered
    assert line.coverage == Coverage(unit="samples", planned=0, compared=0)


def test_check_ledger_regressions_name_every_lost_pass_and_the_norm_floor_is_strictly_below():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import Tolerance, check
    from tests.test_check import BASE

    both = make_baseline(_with_ledger(BASE, ("L5.resid", "prompt", 96, 96, 480.0),
                                      ("L5.resid", "decode", 96, 1, 10.0)))
    line = _lines(check(_with_ledger(BASE, ("L5.resid", "prompt", 96, 0, 0.0)), both))["ledger"]
    assert line.verdict == "regression"
    assert line.reason == ("the steering changed no position in prompt passes and decode passes, where the "
                           "baseline's did (steering not applied)")
    # one position in the baseline's decode passes is enough to count; a kind it never changed is not lost
    line = _lines(check(_with_ledger(BASE, ("L5.resid", "prompt", 96, 96, 480.0)), both))["ledger"]
    assert line.reason == ("the steering changed no position in decode passes, where the baseline's did "
                           "(steering not applied)")
    idle = make_baseline(_with_ledger(BASE, ("L5.resid", "prompt", 96, 96, 480.0),
                                      ("L5.resid", "decode", 96, 0, 0.0)))
    assert _lines(check(BASE, idle))["ledger"].verdict == "holds"
    # norm per sample: exactly half the baseline's holds, less is a regression (also below 1 per sample)
    half = _with_ledger(BASE, ("L5.resid", "prompt", 96, 96, 240.0))
    assert _lines(check(half, make_baseline(BASE)))["ledger"].verdict == "holds"
    small = make_baseline(_with_ledger(BASE, ("L5.resid", "prompt", 96, 96, 48.0)))  # 0.5 per sample
    line = _lines(check(_with_ledger(BASE, ("L5.resid", "prompt", 96, 96, 9.6)), small))["ledger"]
    assert (line.verdict, line.reason) == ("regression", "the steering added 0.1 per sample, under 0.5 x the "
                                           "baseline's 0.5")
    assert _lines(check(half, make_baseline(BASE), Tolerance(ledger=0.6)))["ledger"].verdict == "regression"


def test_check_ledger_sums_positions_over_sites_and_says_when_the_baseline_changed_none():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import check
    from tests.test_check import BASE

    # two sites of one kind: the baseline's steering changed positions if any site did
    two = _with_ledger(BASE, ("L5.resid", "prompt", 96, 96, 480.0), ("L7.resid", "prompt", 96, 0, 0.0))
    assert _lines(check(two, make_baseline(two)))["ledger"].verdict == "holds"
    none = make_baseline(_with_ledger(BASE, ("L5.resid", "prompt", 96, 0, 0.0)))
    line = _lines(check(BASE, none))["ledger"]
    assert line.verdict == "inconclusive"
    assert line.reason == ("the baseline's ledger shows no position changed by this condition: nothing to "
                           "compare whether the steering applied")
    inf = _with_ledger(BASE, ("L5.resid", "prompt", 96, 96, math.inf))
    line = _lines(check(inf, make_baseline(BASE)))["ledger"]
    assert line.verdict == "regression"
    assert line.reason == "the steering added a non-finite norm (inf) per sample"


def test_check_incomparable_reasons_name_the_run_first_and_the_missing_condition():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import INCOMPARABLE, check
    from tests.test_check import BASE, noisy, synthetic

    result = check(synthetic(noisy(0.3, 0.05, 3), noisy(0.3, 0.05, 4), dtype="bfloat16"), make_baseline(BASE))
    assert (result.status, result.lines) == (INCOMPARABLE, [])
    assert result.reasons == ["different model dtype: run bfloat16, baseline float32"]
    base = make_baseline(_two_conditions(BASE, synthetic(noisy(0.6, 0.05, 5), noisy(0.3, 0.05, 6))))
    result = check(BASE, base)
    assert (result.status, result.lines, result.reasons) == (INCOMPARABLE, [], [
        "run has no condition strong of task t"])
    result = check(BASE, make_baseline(BASE), gate="specific")
    assert (result.status, result.lines) == (INCOMPARABLE, [])
    assert result.reasons == [f"the {who} has no random controls to gate on (run it with --controls random=R)"
                              for who in ("run", "baseline")]


def test_check_floors_given_override_the_baselines_and_none_keeps_the_baselines():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, REGRESSION, check
    from tests.test_check import BASE, noisy, synthetic

    config = {**BASE.config, "tasks": {"t": {**BASE.config["tasks"]["t"], "min_effect": 0.45}}}
    base = make_baseline(BASE.model_copy(update={"config": config}))
    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    for floors in (None, {}, {"min_effect": None}):
        result = check(run, base, floors=floors)
        assert result.status == REGRESSION and "below min_effect 0.45" in _lines(result)["effect"].reason
    assert check(run, base, floors={"min_effect": 0.1}).status == HOLDS


def test_check_lines_come_per_condition_in_kind_order_and_protect_only_what_the_baseline_protects():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import NO_EFFECT, REGRESSION, check
    from tests.test_check import noisy, synthetic

    def pair(steered: float, strong: float, seed: int):  # noqa: ANN202
        return _two_conditions(synthetic(noisy(steered, 0.05, seed), noisy(0.30, 0.05, seed + 1)),
                               synthetic(noisy(strong, 0.05, seed + 2), noisy(0.30, 0.05, seed + 3)))

    base = make_baseline(pair(0.30, -0.30, 1), no_effect=True)  # strong moved the wrong way
    assert base.no_effect == {"t": ["strong"]}
    result = check(pair(0.05, -0.9, 11), base)  # steered lost its effect; strong has none to lose
    assert [(line.condition, line.kind) for line in result.lines] == [
        (c, k) for c in ("steered", "strong") for k in ("effect", "fluency", "degenerate", "ledger")]
    effects = {line.condition: line for line in result.lines if line.kind == "effect"}
    assert effects["steered"].verdict == "regression" and effects["strong"].verdict == NO_EFFECT
    assert result.status == REGRESSION and result.allowed_inconclusive == 0


def test_check_status_regression_outranks_inconclusive_and_allowed_counts_only_when_it_holds():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import HOLDS, INCONCLUSIVE, REGRESSION, check
    from tests.test_check import BASE, noisy, synthetic

    vague = synthetic(noisy(0.15, 0.6, 3), noisy(0.30, 0.05, 4))  # effect inconclusive, the rest holds
    worse = _with_counts(synthetic(noisy(0.15, 0.6, 3), noisy(0.30, 0.05, 4)), (96, 40, 0, 0), (96, 0, 0, 0))
    for run, allow, status, allowed in ((vague, False, INCONCLUSIVE, 0), (vague, True, HOLDS, 1),
                                        (worse, False, REGRESSION, 0), (worse, True, REGRESSION, 0)):
        result = check(run, make_baseline(BASE), allow_inconclusive=allow)
        assert (result.status, result.allowed_inconclusive) == (status, allowed), (allow, result.lines)
        assert _lines(result)["effect"].verdict == "inconclusive"


def test_check_without_a_fluency_record_in_the_baseline_has_no_fluency_line_and_gate_specific_keeps_it():
    from harness.analyses.check import HOLDS, check
    from tests.test_check import noisy

    base, run = _specific_run(noisy(0.2, 0.05, 7), noisy(0.2, 0.05, 8))
    plain, specific = check(run, base), check(run, base, gate="specific")
    assert plain.status == specific.status == HOLDS
    # the fluency cost is always against unsteered, whichever reference the headline is gated on
    assert _lines(specific)["fluency"] == _lines(plain)["fluency"]
    bare = base.model_copy(update={"fluency_cost": []})
    assert [line.kind for line in check(run, bare).lines] == ["effect", "degenerate", "ledger"]


def test_check_a_holm_adjusted_p_of_exactly_alpha_is_not_a_regression():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import INCONCLUSIVE, check
    from harness.schema.spec import ALPHA, FLUENCY_METRIC
    from tests.test_check import BASE, noisy, synthetic

    # found by bisection: the fluency growth's raw one-sided p is 250 / 10000, Holm (2 tests) doubles it
    run = synthetic(noisy(0.30, 0.05, 3), noisy(0.30 + 0.31901855468750007, 0.3, 4))
    growth = _prompt_effects(run, FLUENCY_METRIC) - _prompt_effects(BASE, FLUENCY_METRIC)
    assert _perm_p(growth - 0.15, "greater") == 0.025  # precondition, by scipy
    result = check(run, make_baseline(BASE))
    line = _lines(result)["fluency"]
    assert line.p_regression == ALPHA and line.verdict == "inconclusive" and result.status == INCONCLUSIVE


def test_check_a_floor_regression_keeps_its_reason_when_the_test_is_also_significant():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import REGRESSION, check
    from tests.test_check import BASE, noisy, synthetic

    shrunk = synthetic(noisy(0.10, 0.05, 3), noisy(0.30, 0.05, 4))  # significantly smaller, and below 0.2
    result = check(shrunk, make_baseline(BASE), floors={"min_effect": 0.2})
    line = _lines(result)["effect"]
    assert result.status == REGRESSION and line.p_regression < ALPHA
    assert (line.verdict, line.reason) == ("regression", "effect below min_effect 0.2")
    # a baseline written without floors for the task (hand-made) is read as having none
    bare = make_baseline(BASE).model_copy(update={"floors": {}})
    steady = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    assert _lines(check(steady, bare))["effect"].verdict == "holds"

# ------------------------------------- stats, power, steerability: the second mutmut pass
# (mutants of harness.stats, harness.stats.power and harness.stats.steerability)

def _t_power_sum(df: int, alpha: float = 0.05, sides: int = 2) -> float:
    """t_{1 − α/sides, df} + t_{0.8, df}: the normal-approximation power formula with t quantiles."""
    return float(stats.t.ppf(1 - alpha / sides, df) + stats.t.ppf(0.8, df))


def _brute_needed(sd: float, effect: float, sides: int) -> int:
    """The fewest prompts, from the fewest at which the sign-flip test reaches 0.05 (6 two-sided,
    5 one-sided), whose t-approximation detectable effect is at most `effect`."""
    n = 6 if sides == 2 else 5
    while _t_power_sum(n - 1, sides=sides) * sd / math.sqrt(n) > effect:
        n += 1
    return n


def test_minimum_detectable_effect_is_the_t_approximation_at_fixed_sizes():
    # two-sided by default: (t_.975,5 + t_.8,5) / √6 = (2.5706 + 0.9195) / 2.4495 = 1.4248
    assert minimum_detectable_effect(1.0, 6) == pytest.approx(1.4248, abs=1e-4)
    one_sided = 2 * _t_power_sum(9, sides=1) / math.sqrt(10)
    assert minimum_detectable_effect(2.0, 10, sides=1) == pytest.approx(one_sided)
    # α = 0.3 one-sided reaches p < α with 2 prompts (smallest p 1/4): one degree of freedom
    assert minimum_detectable_effect(1.0, 2, alpha=0.3, sides=1) == pytest.approx(
        (stats.t.ppf(0.7, 1) + stats.t.ppf(0.8, 1)) / math.sqrt(2))
    assert math.isnan(minimum_detectable_effect(1.0, 5))  # two-sided needs 6 prompts
    assert math.isfinite(minimum_detectable_effect(1.0, 5, sides=1))
    assert math.isnan(minimum_detectable_effect(NAN, 10))


def test_minimum_detectable_difference_of_two_independent_samples_by_scipys_t():
    # (t_.975,7 + t_.8,7) × 2 × √(1/3 + 1/6)
    assert minimum_detectable_difference(2.0, 3, 6) == pytest.approx(_t_power_sum(7) * 2 * math.sqrt(0.5))
    assert minimum_detectable_difference(2.0, 6, 3) == pytest.approx(_t_power_sum(7) * 2 * math.sqrt(0.5))
    assert minimum_detectable_difference(1.0, 2, 2) == pytest.approx(_t_power_sum(2))  # 2 a side suffice
    for args in ((1.0, 1, 5), (1.0, 5, 1), (NAN, 5, 5)):
        assert math.isnan(minimum_detectable_difference(*args)), args


@pytest.mark.parametrize("sides", [1, 2])
def test_prompts_needed_is_the_fewest_prompts_whose_detectable_effect_reaches_the_effect(sides):
    # includes effects at which the old fixed-point iteration oscillated between n and n + 1 and
    # answered one prompt too few (1.319 one-sided: 5 instead of 6; 1.387 two-sided: 6 instead of 7)
    effects = [0.3, 0.5, 0.75, 0.975140007569576, 1.1926998818042585, 1.319056131124131, 1.387168848243594,
               2.0, 5.0]
    for effect in effects:
        kwargs = {} if sides == 2 else {"sides": 1}  # two-sided is the default
        assert prompts_needed(1.0, effect, **kwargs) == _brute_needed(1.0, effect, sides), effect
        assert prompts_needed(2.0, -2 * effect, **kwargs) == _brute_needed(1.0, effect, sides), effect


def test_prompts_needed_is_none_beyond_the_limit_not_the_minimum():
    assert prompts_needed(1.0, 1e-4) is None  # needs about 785 million: was 6, the minimum
    assert prompts_needed(1.0, 1e-200) is None
    n = prompts_needed(1.0, 0.0033)  # about 720 thousand, although the first guess is over a million
    assert n is not None
    assert _t_power_sum(n - 1) / math.sqrt(n) <= 0.0033 < _t_power_sum(n - 2) / math.sqrt(n - 1)
    # an effect needing exactly 1,000,001 prompts: over the default limit of a million
    effect = _t_power_sum(1_000_000) / math.sqrt(1_000_001) * (1 + 1e-12)
    assert prompts_needed(1.0, effect) is None
    assert prompts_needed(1.0, effect, limit=2_000_000) == 1_000_001
    assert prompts_needed(1.0, 2.0, limit=10) == _brute_needed(1.0, 2.0, 2)
    assert prompts_needed(1.0, 0.5, limit=10) is None
    assert prompts_needed(1.0, 100.0, limit=6) == 6 and prompts_needed(1.0, 100.0, limit=5) is None  # least 6


def test_prompts_needed_is_none_for_a_zero_or_non_finite_effect_or_sd_and_the_minimum_for_huge_effects():
    # an observed spread of 0 is no basis for a plan (8 prompts moving alike say little of the 9th)
    for sd, effect in ((1.0, 0.0), (1.0, math.inf), (1.0, NAN), (NAN, 1.0), (math.inf, 1.0), (0.0, 1.0)):
        assert prompts_needed(sd, effect) is None, (sd, effect)
        assert prompts_needed(sd, effect, sides=1) is None, (sd, effect)
    assert prompts_needed(1.0, 100.0) == 6 and prompts_needed(1.0, 100.0, sides=1) == 5


# ----------------------------------------------------------------------------- holm, intervals

def test_holm_caps_at_one_and_leaves_nans_out_of_m():
    # m = 3 (the NaN does not count): 0.01 × 3, 0.03 × 2, 0.04 × 1 raised to the running max 0.06
    assert holm([0.01, 0.04, 0.03, NAN])[:3] == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.6, NAN, 0.7])  # 1.2 and 0.7 → running max 1.2 → capped at 1
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == 1.0


def test_proportion_ci_of_one_trial_and_at_another_confidence_is_clopper_pearson_by_beta_quantiles():
    assert proportion_ci(0, 1) == pytest.approx((0.0, 0.975))  # 1 − 0.025^(1/1)
    assert proportion_ci(1, 1) == pytest.approx((0.025, 1.0))
    low, high = proportion_ci(3, 10, 0.8)  # Beta(k, n − k + 1) and Beta(k + 1, n − k) at 0.1 / 0.9
    assert (low, high) == pytest.approx((stats.beta.ppf(0.1, 3, 8), stats.beta.ppf(0.9, 4, 7)), abs=1e-12)


def test_sd_ci_bounds_put_the_chi_square_tail_probabilities_where_they_belong():
    for x, confidence in (([1.0, 3.0], 0.95), ([1.0, 2.0, 4.0, 8.0, 9.0], 0.9)):
        low, high = sd_ci(x, confidence)
        n, scaled = len(x), (len(x) - 1) * np.var(x, ddof=1)  # (n − 1) s² / σ² ~ χ²(n − 1)
        assert stats.chi2.sf(scaled / low**2, n - 1) == pytest.approx((1 - confidence) / 2, rel=1e-9)
        assert stats.chi2.cdf(scaled / high**2, n - 1) == pytest.approx((1 - confidence) / 2, rel=1e-9)


def test_steerability_uses_its_confidence_for_both_intervals():
    d = np.array([-0.3, 0.1, 0.2, -0.1, 0.5, 0.4, 0.3, 0.25, 0.1, 0.6])
    s = steerability(d, "increase", confidence=0.8)
    ci = stats.binomtest(2, 10).proportion_ci(0.8, method="exact")
    assert s.confidence == 0.8 and (s.share_ci_low, s.share_ci_high) == pytest.approx((ci.low, ci.high))
    scaled = 9 * np.var(d, ddof=1)
    assert stats.chi2.sf(scaled / s.sd_ci_low**2, 9) == pytest.approx(0.1, rel=1e-9)
    assert stats.chi2.cdf(scaled / s.sd_ci_high**2, 9) == pytest.approx(0.1, rel=1e-9)


# ----------------------------------------------------------------------------- auc, spearman

def _pair_auc(positive: np.ndarray, negative: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC by comparing every positive-negative pair (a tie counts one half), vectorized."""
    p, n = np.moveaxis(positive, axis, -1)[..., :, None], np.moveaxis(negative, axis, -1)[..., None, :]
    return np.mean((p > n) + 0.5 * (p == n), axis=(-2, -1))


def test_auc_interval_is_scipys_bca_bootstrap_of_pair_counting_with_2000_resamples_seed_0():
    pos, neg = np.array([0.9, 0.4, 0.7, 0.8, 0.3, 0.65]), np.array([0.1, 0.5, 0.2, 0.35, 0.6, 0.05, 0.3])
    for confidence in (0.95, 0.8):
        kwargs = {} if confidence == 0.95 else {"confidence": confidence}
        ref = stats.bootstrap((pos, neg), _pair_auc, vectorized=True, n_resamples=2000,
                              confidence_level=confidence, method="BCa",
                              rng=np.random.default_rng(0)).confidence_interval
        point, low, high = auc(pos, neg, **kwargs)
        assert point == pytest.approx(_pair_auc(pos, neg))
        assert (low, high) == pytest.approx((ref.low, ref.high))


def test_auc_of_perfect_separation_falls_back_to_the_percentile_interval_and_small_samples():
    assert auc([3.0, 4.0, 5.0], [0.0, 1.0, 2.0]) == (1.0, 1.0, 1.0)  # every resample is 1: BCa is NaN
    point, low, high = auc([1.0, 3.0], [0.0, 2.0])  # two a side give an interval
    assert point == 0.75 and math.isfinite(low) and math.isfinite(high)
    one = auc([1.0, 2.0, 3.0], [0.0])  # one negative: a point, no interval
    assert one[0] == 1.0 and math.isnan(one[1]) and math.isnan(one[2])


def test_spearman_interval_at_four_pairs_by_hand_and_at_rho_plus_minus_one():
    # rho = 1 − 6 Σd² / (n (n² − 1)) = 1 − 12 / 60 = 0.8; z = atanh 0.8 = 1.098612,
    # se = √((1 + 0.8² / 2) / (4 − 3)) = 1.148913, half = 1.959964 se = 2.251832:
    # (tanh(−1.153220), tanh(3.350444)) = (−0.818816, 0.997543)
    rho, low, high, _ = spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert (rho, low, high) == pytest.approx((0.8, -0.818816, 0.997543), abs=2e-6)
    rho, low, high, _ = spearman([1.0, 2.0, 3.0, 4.0], [4.0, 2.0, 3.0, 1.0])  # the mirror image
    assert (rho, low, high) == pytest.approx((-0.8, -0.997543, 0.818816), abs=2e-6)
    for sign in (1.0, -1.0):  # finite bounds at rho = ±1 exactly (scipy's rho of 4 pairs in order is exact)
        rho, low, high, _ = spearman([1.0, 2.0, 3.0, 4.0], [sign * v for v in (1.0, 2.0, 3.0, 4.0)])
        assert rho == sign and -1.0 <= low <= high <= 1.0
        assert (low, high) == pytest.approx((sign, sign), abs=1e-9)


def test_spearman_of_two_pairs_has_rho_but_no_interval_and_no_pairs_give_nan():
    rho, low, high, _ = spearman([1.0, 2.0], [3.0, 5.0])
    assert rho == pytest.approx(1.0) and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in spearman([], []))


def test_hedges_g_is_nan_where_only_the_spread_overflows_float_range():
    u, s = -1e300 * (1 + np.arange(6) / 10), 1e300 * (1 + np.arange(6) / 10)  # mean difference 2.5e300
    with np.errstate(over="ignore"):
        assert np.isinf(np.var(u, ddof=1)) and math.isfinite(float(np.mean(s) - np.mean(u)))
        assert math.isnan(hedges_g(u, s)) and math.isnan(hedges_g_independent(u, s))  # not 0.0


# ------------------------------------------ check: which significance establishes the baseline effect

def test_check_a_headline_significant_only_before_holm_is_no_established_effect():
    from harness.analyses.baseline import make_baseline
    from harness.analyses.check import INCONCLUSIVE, check
    from tests.test_check import BASE

    # raw p far below 0.05, but the run recorded it as not significant (Holm-adjusted over its family)
    (h,) = BASE.headlines
    assert h.estimate.p_value < 0.001
    held = BASE.model_copy(update={"headlines": [h.model_copy(update={"significant": False})]})
    result = check(held, make_baseline(held))  # a self-check: the change is exactly 0 per prompt
    line = _lines(result)["effect"]
    assert result.status == INCONCLUSIVE and line.verdict == "inconclusive"
    assert "was not significant in its own run" in line.reason
    assert line.reason.endswith("write the baseline with --no-effect (then fluency, degenerate samples and "
                                "the ledger still gate) or from a run with more prompts")


def test_check_gate_specific_needs_the_specific_effect_itself_significant_in_the_baseline():
    from harness.analyses.check import INCONCLUSIVE, check
    from tests.test_check import noisy

    # vs unsteered the baseline moved +0.30 (significant); vs its random controls +0.066, p = 0.21
    specific = noisy(0.05, 0.3, 11)
    p = stats.ttest_1samp(specific, 0.0).pvalue
    assert specific.mean() > 0 and p > 0.05
    base, run = _specific_run(specific, noisy(0.3, 0.05, 8))
    assert base.headlines[0].significant
    result = check(run, base, gate="specific")
    line = _lines(result)["effect"]
    assert result.status == INCONCLUSIVE and line.verdict == "inconclusive"
    assert line.baseline == pytest.approx(specific.mean())
    assert "was not significant in its own run" in line.reason
    assert line.reason.endswith("write the baseline from a run with more prompts")
    # the same run, gated on the effect against unsteered, is judged on the headline's significance
    assert _lines(check(run, base))["effect"].verdict == "holds"
