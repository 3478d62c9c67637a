"""Steerability of one comparison (Tan et al., 2024, "Analyzing the generalization and reliability
of steering vectors"): a mean effect can hide prompts the steering pushes the wrong way, so every
effect also records how many prompts moved against the expected direction and how widely the
per-prompt effects spread, each with an interval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.schema.results import Steerability
from harness.schema.task import Direction
from harness.stats import NAN, proportion_ci, sd, sd_ci


def steerability(deltas: Sequence[float], direction: Direction | None,
                 confidence: float = 0.95) -> Steerability:
    """The wrong-way count and share (Clopper-Pearson interval) and the SD (chi-square interval)
    of the finite per-prompt effects `deltas`. Wrong-way is strictly against `direction` (below 0
    for "increase", above 0 for "decrease"): a tie (exactly 0) is not wrong-way but counts in n."""
    d = np.asarray(deltas, dtype=float)
    d = d[np.isfinite(d)]
    wrong = None if direction is None else int(np.sum(d < 0 if direction == "increase" else d > 0))
    if wrong is None or not d.size:
        share, low, high = NAN, NAN, NAN
    else:
        share, (low, high) = wrong / d.size, proportion_ci(wrong, d.size, confidence)
    sd_low, sd_high = sd_ci(d, confidence)
    return Steerability(n=int(d.size), wrong_way=wrong, ties=int(np.sum(d == 0)), share=share,
                        share_ci_low=low, share_ci_high=high, sd=sd(d), sd_ci_low=sd_low,
                        sd_ci_high=sd_high, confidence=confidence)
