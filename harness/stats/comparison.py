"""The one comparison core: every verdict of the harness comes from `compare_values` and
`adjust` (run effects, `compare`, `check`, sweep selection, controls), and every record nests the
`Estimate` it returns instead of copying its numbers.

Values are per-prompt means keyed by the prompt's identity (`PromptRecord.identity`); NaN marks
a prompt with no finite value. Two sets are **paired** when they hold the same prompts: the
unit is then the prompt's difference and prompts NaN on either side are left out (counted in
`n_unscorable`). Otherwise they are two independent samples of prompts.

**Intervals and tests** (chosen by the coverage simulation of `harness.stats.calibration`): paired, a
Student t interval of the mean difference and a two-sided sign-flip permutation test (which
cannot reach p < ALPHA below `harness.stats.min_prompts` prompts: the MDE is NaN there);
independent, Welch's interval and t-test.

**Multiplicity policy** (`adjust`, `Family`): p-values are Holm-adjusted within a family,
controlling the family-wise error rate at `ALPHA`. A run has two families: the metrics its tasks
declare with an expected direction plus the fluency cost (confirmatory), and every other metric
(exploratory), so extra metrics never dilute the declared ones; the effects of control conditions
and the control comparisons have families of their own. `compare` applies the confirmatory and
exploratory families over its rows; `check` adjusts its regression tests as one family (any line
may fail the run) while "holds" needs every line to pass on its own (an intersection-union test,
which needs no adjustment).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import numpy as np

from harness.schema.results import Estimate
from harness.stats import (
    CI_NONE,
    CI_T,
    CI_WELCH,
    CI_ZERO_SPREAD,
    NAN,
    TEST_NONE,
    TEST_SIGN_FLIP,
    TEST_WELCH,
    hedges_g,
    hedges_g_independent,
    holm,
    paired_p_value,
    per_prompt_means,
    pooled_sd,
    sd,
    t_ci,
    welch,
)
from harness.stats.power import minimum_detectable_difference, minimum_detectable_effect


class Family(StrEnum):
    """The multiplicity families: p-values are Holm-adjusted within each (see the module doc)."""

    CONFIRMATORY = "confirmatory"  # declared metrics and fluency costs
    EXPLORATORY = "exploratory"  # every other metric
    CONTROL_CONDITIONS = "control conditions"  # effects of the control conditions themselves
    CONTROLS_DECLARED = "controls, declared"  # specific effects and direction checks, declared metrics
    CONTROLS_OTHER = "controls, other"
    CHECK = "check"  # the regression tests of one `harness check`


@dataclass(frozen=True)
class Comparison:
    """`b` minus `a`: the estimate, and (paired) the per-prompt differences it comes from."""

    estimate: Estimate
    deltas: tuple[float, ...] = ()  # paired: per-prompt b − a of the compared prompts, in key order


def compare_values(a: Mapping[str, float], b: Mapping[str, float], *, seed: int = 0,
                   confidence: float = 0.95) -> Comparison:
    """Compare per-prompt values `b` with `a` (paired when both hold the same prompt keys)."""
    if set(a) == set(b):
        keys = [k for k in sorted(a) if math.isfinite(a[k]) and math.isfinite(b[k])]
        x = np.array([a[k] for k in keys], dtype=float)
        y = np.array([b[k] for k in keys], dtype=float)
        d = y - x
        spread = sd(d)
        enough = d.size > 1
        flat = enough and spread == 0
        low, high = (NAN, NAN) if flat else t_ci(d, confidence)
        estimate = Estimate(
            paired=True, mean_a=_mean(x), mean_b=_mean(y), point=_mean(y) - _mean(x), ci_low=low,
            ci_high=high, confidence=confidence,
            ci_method=CI_ZERO_SPREAD if flat else CI_T if enough else CI_NONE,
            p_value=paired_p_value(d, seed=seed), test=TEST_SIGN_FLIP if enough else TEST_NONE,
            n_planned=len(a), n=len(keys), n_unscorable=len(a) - len(keys), sd=spread,
            mde=minimum_detectable_effect(spread, len(keys)), effect_size=hedges_g(x, y))
        return Comparison(estimate, tuple(float(v) for v in d))
    x = np.array([v for _, v in sorted(a.items()) if math.isfinite(v)], dtype=float)
    y = np.array([v for _, v in sorted(b.items()) if math.isfinite(v)], dtype=float)
    low, high, p = welch(x, y, confidence)
    enough = x.size > 1 and y.size > 1
    spread = pooled_sd(x, y)
    flat = enough and spread == 0
    return Comparison(Estimate(
        paired=False, mean_a=_mean(x), mean_b=_mean(y), point=_mean(y) - _mean(x),
        ci_low=NAN if flat else low, ci_high=NAN if flat else high, confidence=confidence,
        ci_method=CI_ZERO_SPREAD if flat else CI_WELCH if enough else CI_NONE, p_value=p,
        test=TEST_WELCH if enough else TEST_NONE, n_planned=len(a) + len(b), n=int(x.size + y.size),
        n_unscorable=len(a) + len(b) - int(x.size + y.size), sd=spread,
        mde=minimum_detectable_difference(spread, x.size, y.size),
        effect_size=hedges_g_independent(x, y)))


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else NAN


def margin_p_value(c: Comparison, margin: float, alternative: Literal["less", "greater"],
                   seed: int = 0) -> float:
    """One-sided p-value that a paired difference is below (`less`) or above (`greater`)
    `margin`: a sign-flip permutation test of the per-prompt differences minus the margin."""
    if not c.estimate.paired or c.estimate.n < 2 or not math.isfinite(margin):
        return NAN
    return paired_p_value(np.asarray(c.deltas) - margin, seed=seed, alternative=alternative)


def adjust(p_values: Sequence[float], families: Sequence[Family]) -> list[float]:
    """Holm-adjusted p-values, each within its family (see the module's multiplicity policy)."""
    out = [NAN] * len(p_values)
    for family in dict.fromkeys(families):
        idx = [i for i, f in enumerate(families) if f == family]
        for i, p in zip(idx, holm([p_values[i] for i in idx]), strict=True):
            out[i] = p
    return out


def prompt_means(values: Mapping[str, Sequence[float]], keys: Sequence[str]) -> tuple[dict[str, float], int]:
    """Per-prompt mean of the finite values for every key in `keys` (NaN where none), and the
    count of non-finite values dropped."""
    means, dropped = per_prompt_means({k: list(values.get(k, [])) for k in keys})
    return {k: means.get(k, NAN) for k in keys}, dropped
