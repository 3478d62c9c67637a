"""`harness plan RUN --effect X`: what a run can detect, and how many prompts an effect needs.

A headline is significant when its Holm-adjusted p-value is below ALPHA: with m tests in its
family (the run's declared metrics and fluency costs), its raw p must be below ALPHA / m at the
first step, so the plan is made at that level and never below the fewest prompts at which the
sign-flip test can reach it."""

from __future__ import annotations

from harness.schema.results import RunResult
from harness.schema.spec import ALPHA, Record
from harness.stats import min_prompts
from harness.stats.power import minimum_detectable_effect, prompts_needed


class PowerLine(Record):
    """One headline of a run: its prompts, their paired spread, the minimum detectable effect at
    80 % power (the run table's, one test at ALPHA; NaN below the fewest prompts the test can
    decide with) and in its Holm family, and the prompts the asked-for effect would need."""

    task: str
    condition: str
    metric: str
    n: int
    sd: float
    observed: float
    mde: float  # as in the run's table: one test at ALPHA
    family: int  # tests in the headline's Holm family (declared metrics and fluency costs of the run)
    mde_family: float  # at ALPHA / family, what the first Holm step needs
    min_prompts: int  # the fewest prompts at which the test can reach ALPHA / family
    effect: float | None
    prompts_needed: int | None  # at ALPHA / family, never below min_prompts


def family_size(run: RunResult) -> int:
    """The tests in the run's confirmatory family: declared metrics and fluency costs of the steered
    conditions that have a headline (control conditions form a family of their own)."""
    steered = {(h.task, h.condition) for h in run.headlines}
    declared = sum(1 for e in run.effects if e.expected_direction and (e.task, e.condition) in steered)
    return max(1, declared + sum(1 for f in run.fluency_cost if (f.task, f.condition) in steered))


def power_lines(run: RunResult, effect: float | None = None) -> list[PowerLine]:
    """Per headline of `run`: its estimate (the same numbers as the run's table) and what follows."""
    m = family_size(run)
    level = ALPHA / m
    out = []
    for h in run.headlines:
        e = h.estimate
        out.append(PowerLine(
            task=h.task, condition=h.condition, metric=h.metric, n=e.n, sd=e.sd, observed=e.point, mde=e.mde,
            family=m, mde_family=minimum_detectable_effect(e.sd, e.n, alpha=level),
            min_prompts=min_prompts(level), effect=effect,
            prompts_needed=prompts_needed(e.sd, effect, alpha=level) if effect is not None else None))
    return out
