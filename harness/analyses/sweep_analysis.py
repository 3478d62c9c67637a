"""What a sweep says: per-config effects, the effect-vs-fluency frontier, the best config
under a fluency budget, steerability per layer, and an honest held-out selection."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.analyses.heldout import choose
from harness.errors import UserError
from harness.pipeline.analyse import condition_values
from harness.schema.results import Estimate, RunResult, SampleRecord
from harness.schema.spec import UNSTEERED
from harness.schema.spec import Record as _Record
from harness.schema.task import Direction
from harness.stats import line_fit
from harness.stats.comparison import compare_values


class ConfigResult(_Record):
    """One config of the grid: its headline effect and fluency cost (all prompts)."""

    condition: str
    layer: int
    coeff: float  # in the grid's unit
    raw_coeff: float  # the multiplier actually applied to the unit vector
    effect: Estimate  # the headline metric, steered − unsteered
    p_adjusted: float
    significant: bool
    fluency: Estimate | None  # Δ log-perplexity
    on_frontier: bool = False
    within_budget: bool = True


class Steerability(_Record):
    """Per layer (Tan et al. 2024): slope of the headline metric over the coefficients, and
    the share of prompts whose own slope points against the expected direction."""

    layer: int
    slope: float
    slope_stderr: float
    anti_steerable: float
    n_prompts: int


class Selection(_Record):
    """The best config chosen on one half of the prompts, its effect reported on the other."""

    condition: str | None
    selected_on: int
    reported_on: int
    selection_diff: float
    estimate: Estimate | None  # the chosen config's effect on the other half (None: nothing chosen)
    selected_prompts: list[str] = []  # identities of the prompts each half holds
    reported_prompts: list[str] = []


class SweepSummary(_Record):
    task: str
    metric: str
    direction: Direction
    coeff_unit: str
    max_fluency_cost: float | None
    configs: list[ConfigResult]
    best: str | None  # largest effect in the expected direction within the fluency budget
    steerability: list[Steerability]
    selection: Selection | None = None


def summarize_sweep(run: RunResult, samples: Sequence[SampleRecord], task: str, *,
                    max_fluency_cost: float | None = None, select_on: str = "all",
                    seed: int = 0) -> SweepSummary:
    """The sweep summary of `task` in a sweep run (`select_on="half"` adds the selection)."""
    info = next((t for t in run.tasks if t.name == task), None)
    sweep = {c: d["sweep"] for c, d in (info.conditions if info else {}).items() if "sweep" in d}
    if not sweep:
        raise UserError(f"run has no sweep of task '{task}'")
    head = next(e for e in run.effects if e.task == task and e.headline)
    direction = head.expected_direction or "increase"
    sign = 1.0 if direction == "increase" else -1.0
    effects = {e.condition: e for e in run.effects if e.task == task and e.metric == head.metric}
    fluency = {f.condition: f for f in run.fluency_cost if f.task == task}
    configs = []
    for cond, where in sweep.items():
        e, f = effects[cond], fluency.get(cond)
        configs.append(ConfigResult(
            condition=cond, layer=where["layer"], coeff=where["coeff"],
            raw_coeff=where.get("raw_coeff", info.conditions[cond].get("coeff", where["coeff"])),
            effect=e.estimate,
            p_adjusted=e.p_adjusted, significant=e.significant, fluency=f.estimate if f else None,
            within_budget=max_fluency_cost is None
            or (f is not None and f.estimate.point <= max_fluency_cost),
        ))
    _mark_frontier(configs, sign)
    eligible = [c for c in configs if c.within_budget and math.isfinite(c.effect.point)]
    best = max(eligible, key=lambda c: (sign * c.effect.point, -(c.fluency.point if c.fluency else 0.0)),
               default=None)
    return SweepSummary(
        task=task, metric=head.metric, direction=direction, coeff_unit=str(
            next(iter(sweep.values())).get("coeff_unit", "raw")),
        max_fluency_cost=max_fluency_cost, configs=configs, best=best.condition if best else None,
        steerability=_steerability(samples, task, head.metric, sweep, sign, info.prompt_ids),
        selection=_select_on_half(samples, task, head.metric, list(sweep), sign, max_fluency_cost, seed,
                                  info.prompt_ids, next((f.metric for f in fluency.values()), None))
        if select_on == "half" else None,
    )


def _mark_frontier(configs: list[ConfigResult], sign: float) -> None:
    """Pareto frontier: no other config has at least the effect at no more fluency cost."""
    points = [(c, sign * c.effect.point, c.fluency.point) for c in configs
              if c.fluency is not None and math.isfinite(c.effect.point) and math.isfinite(c.fluency.point)]
    for c, eff, cost in points:
        c.on_frontier = not any(e2 >= eff and k2 <= cost and (e2 > eff or k2 < cost)
                                for _, e2, k2 in points)


def _steerability(samples: Sequence[SampleRecord], task: str, metric: str,
                  sweep: dict[str, dict], sign: float, prompt_ids: list[str]) -> list[Steerability]:
    out = []
    for layer in sorted({w["layer"] for w in sweep.values()}):
        conds = sorted((w["coeff"], c) for c, w in sweep.items() if w["layer"] == layer)
        if len({k for k, _ in conds}) < 2:
            continue
        means = [condition_values(samples, task, c, metric, prompt_ids)[0] for _, c in conds]
        prompts = [p for p in prompt_ids if all(math.isfinite(m[p]) for m in means)]
        if len(prompts) < 2:
            continue
        x = np.array([k for k, _ in conds])
        y = np.array([[m[p] for p in prompts] for m in means])  # [coeffs, prompts]
        slope, stderr = line_fit(x, y.mean(axis=1))
        slopes = np.polyfit(x, y, 1)[0]
        out.append(Steerability(layer=layer, slope=slope, slope_stderr=stderr,
                                anti_steerable=float(np.mean(sign * slopes < 0)),
                                n_prompts=len(prompts)))
    return out


def _select_on_half(samples: Sequence[SampleRecord], task: str, metric: str, conditions: list[str],
                    sign: float, budget: float | None, seed: int, prompt_ids: list[str],
                    fluency_metric: str | None) -> Selection:
    """Choose the best config on a seeded half of the prompts (as a concept task's strength: an
    unscored prompt or sample counts as the worst value seen, `heldout.choose`), report it on the
    other half."""
    order = np.random.default_rng(seed).permutation(len(prompt_ids))
    half = len(prompt_ids) // 2
    select = [prompt_ids[i] for i in sorted(order[:half])]
    report = [prompt_ids[i] for i in sorted(order[half:])]

    def effect(cond: str, which: list[str], on: str = metric) -> Estimate:
        base = condition_values(samples, task, UNSTEERED, on, which)[0]
        return compare_values(base, condition_values(samples, task, cond, on, which)[0], seed=seed).estimate

    within = {c: None for c in conditions if budget is None or (
        fluency_metric is not None and effect(c, select, fluency_metric).point <= budget)}
    best, _ = choose(samples, task, metric, within, select, sign)
    best_diff = sign * effect(best, select).point if best is not None else math.nan
    if best is None or not math.isfinite(best_diff):
        return Selection(condition=None, selected_on=len(select), reported_on=len(report),
                         selection_diff=float("nan"), estimate=None, selected_prompts=select,
                         reported_prompts=report)
    held = effect(best, report)
    return Selection(condition=best, selected_on=len(select), reported_on=held.n,
                     selection_diff=sign * best_diff, estimate=held, selected_prompts=select,
                     reported_prompts=report)
