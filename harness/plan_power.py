"""`harness plan RUN --effect X`: what a run can detect, and how many prompts an effect needs."""

from __future__ import annotations

from harness.power import prompts_needed
from harness.schema.results import RunResult
from harness.schema.spec import ALPHA, Record
from harness.stats import min_prompts


class PowerLine(Record):
    """One headline of a run: its prompts, their paired spread, the minimum detectable effect at
    80 % power (NaN below the fewest prompts the test can decide with), and the prompts the
    asked-for effect would need (never fewer than that minimum)."""

    task: str
    condition: str
    metric: str
    n: int
    sd: float
    observed: float
    mde: float
    min_prompts: int  # the fewest prompts at which the two-sided test can reach ALPHA
    effect: float | None
    prompts_needed: int | None


def power_lines(run: RunResult, effect: float | None = None) -> list[PowerLine]:
    """Per headline of `run`: its estimate (the same numbers as the run's table) and what follows."""
    return [PowerLine(task=h.task, condition=h.condition, metric=h.metric, n=h.estimate.n, sd=h.estimate.sd,
                      observed=h.estimate.point, mde=h.estimate.mde, min_prompts=min_prompts(ALPHA),
                      effect=effect,
                      prompts_needed=prompts_needed(h.estimate.sd, effect) if effect is not None else None)
            for h in run.headlines]
