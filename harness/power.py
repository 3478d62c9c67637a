"""Power of a paired comparison over prompts: the smallest effect a run can detect, and the
number of prompts an effect needs (one- or two-sided t-test approximation of the paired tests)."""

from __future__ import annotations

import math

from scipy import stats

from harness.schema.spec import ALPHA

POWER = 0.8


def _quantiles(n: int, alpha: float, power: float, sides: int) -> float:
    df = max(n - 1, 1)
    return float(stats.t.ppf(1 - alpha / sides, df) + stats.t.ppf(power, df))


def minimum_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER,
                              sides: int = 2) -> float:
    """The smallest mean paired difference detected with probability `power` by a level-`alpha`
    test over `n` prompts whose per-prompt differences have standard deviation `sd`."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return _quantiles(n, alpha, power, sides) * sd / math.sqrt(n)


def prompts_needed(sd: float, effect: float, *, alpha: float = ALPHA, power: float = POWER,
                   sides: int = 2, limit: int = 1_000_000) -> int | None:
    """Prompts a paired test needs to detect a mean difference `effect` with probability `power`
    (None when `effect` is 0 or not finite, or more than `limit` would be needed)."""
    if not math.isfinite(effect) or effect == 0 or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    n = 2
    for _ in range(50):  # fixed point of n = (t-quantiles(n) * sd / effect)^2
        new = max(2, math.ceil((_quantiles(n, alpha, power, sides) * sd / abs(effect)) ** 2))
        if new == n or new > limit:
            break
        n = new
    return n if n <= limit else None
