"""`harness plan RUN --effect X`: what a run can detect, and how many prompts an effect needs."""

from __future__ import annotations

import math

from harness.comparison import compare_values
from harness.power import minimum_detectable_effect, prompts_needed
from harness.schema.results import RunResult
from harness.schema.spec import Record


class PowerLine(Record):
    """One headline of a run: its prompts, their paired spread, the minimum detectable effect at
    80 % power, and the prompts the asked-for effect would need."""

    task: str
    condition: str
    metric: str
    n: int
    sd: float
    observed: float
    mde: float
    effect: float | None
    prompts_needed: int | None


def power_lines(run: RunResult, effect: float | None = None) -> list[PowerLine]:
    """Per headline of `run`: the spread of its per-prompt effects and what follows from it."""
    out = []
    for head in run.headlines:
        summary = next((p for p in run.per_prompt if (p.task, p.condition, p.metric, p.reference)
                        == (head.task, head.condition, head.metric, "unsteered")), None)
        if summary is None:
            continue
        c = compare_values({k: u for k, (u, _) in summary.prompts.items()},
                           {k: s for k, (_, s) in summary.prompts.items()})
        sd = float(_sd(c.deltas))
        out.append(PowerLine(task=head.task, condition=head.condition, metric=head.metric, n=c.n, sd=sd,
                             observed=c.diff, mde=minimum_detectable_effect(sd, c.n), effect=effect,
                             prompts_needed=prompts_needed(sd, effect) if effect is not None else None))
    return out


def _sd(values: tuple[float, ...]) -> float:
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
