"""Power of a comparison over prompts: the smallest effect a run can detect, and the number of
prompts an effect needs (one- or two-sided t-test approximation of the tests the harness runs).

The paired test is a sign-flip permutation test, which cannot give p < alpha below
`harness.stats.min_prompts` prompts whatever the effect: there the detectable effect is NaN and
no plan recommends fewer prompts.
"""

from __future__ import annotations

import math

from harness.schema.spec import ALPHA
from harness.stats import min_prompts, t_quantile

POWER = 0.8


def _quantiles(df: int, alpha: float, power: float, sides: int) -> float:
    df = max(df, 1)
    return t_quantile(1 - alpha / sides, df) + t_quantile(power, df)


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER,
                              sides: int = 2) -> float:
    """The smallest mean paired difference detected with probability `power` by a level-`alpha`
    test over `n` prompts whose per-prompt differences have standard deviation `sd`; NaN where the
    sign-flip test cannot reach `alpha` with `n` prompts, or where the differences have no spread
    (0 would claim that any change is detectable)."""
    if n < min_prompts(alpha, sides) or not math.isfinite(sd) or sd == 0:
        return math.nan
    return _quantiles(n - 1, alpha, power, sides) * sd / math.sqrt(n)


def minimum_detectable_difference(sd: float, n_a: int, n_b: int, *, alpha: float = ALPHA,
                                  power: float = POWER) -> float:
    """The smallest difference of means of two independent samples of prompts (pooled standard
    deviation `sd`) a two-sided level-`alpha` t-test detects with probability `power`."""
    if n_a < 2 or n_b < 2 or not math.isfinite(sd) or sd == 0:  # no spread: nothing to plan from
        return math.nan
    return _quantiles(n_a + n_b - 2, alpha, power, 2) * sd * math.sqrt(1 / n_a + 1 / n_b)


def prompts_needed(sd: float, effect: float, *, alpha: float = ALPHA, power: float = POWER,
                   sides: int = 2, limit: int = 1_000_000) -> int | None:
    """Prompts a paired test needs to detect a mean difference `effect` with probability `power`
    (None when `effect` is 0 or not finite, when `sd` is 0 or not finite: no spread to plan from,
    as for `minimum_detectable_effect`, or when more than `limit` would be needed); never fewer
    than the sign-flip test needs to reach `alpha` at all."""
    if not math.isfinite(effect) or effect == 0 or not math.isfinite(sd) or sd == 0:
        return None
    least = min_prompts(alpha, sides)

    def enough(n: int) -> bool:  # the t approximation detects `effect` with n prompts
        return _quantiles(n - 1, alpha, power, sides) * sd <= abs(effect) * math.sqrt(n)

    if least > limit or not enough(limit):
        return None
    low, high = least, limit
    while low < high:  # bisect for the fewest: once n prompts are enough, so are more
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return low
