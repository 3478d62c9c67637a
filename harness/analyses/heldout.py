"""Concept tasks the AxBench way: every method of a concept task at every strength of its grid as
conditions of one run (the sweep's builder), the strength of each method chosen on a seeded half
of the instructions by the headline metric and its score reported on the other half."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.analyses.sweep import SweepGrid, sweep_conditions
from harness.errors import UserError
from harness.models import LoadedModel
from harness.pipeline.analyse import condition_values, values_by_prompt
from harness.pipeline.plan import Condition, task_conditions
from harness.runner import RunOptions, run
from harness.schema.results import Estimate, RunResult, SampleRecord
from harness.schema.spec import STEERED, UNSTEERED
from harness.schema.spec import Record as _Record
from harness.schema.steering import MethodSpec
from harness.stats import t_ci
from harness.stats.comparison import compare_values
from harness.tasks import Task

HELDOUT_FILE = "heldout.json"


class Split(_Record):
    """The seeded halves of a task's prompts (identities): strengths are chosen on `select`,
    scores reported on `report`; the two are disjoint and cover every prompt."""

    seed: int
    select: list[str]
    report: list[str]


class MethodScore(_Record):
    """One method of one concept task: the condition chosen on the selection half and the headline
    on the reported half (mean over prompts with its t interval, and the effect vs unsteered)."""

    task: str
    method: str
    metric: str
    condition: str | None  # None: no condition had a finite score on the selection half
    coeff: float | None  # the chosen strength in the grid's unit (None for prompting)
    selection_score: float
    score: float
    ci_low: float
    ci_high: float
    n: int  # prompts of the reported half with a finite value
    n_planned: int = 0  # prompts of the reported half
    effect: Estimate | None  # chosen − unsteered on the reported half
    per_prompt: dict[str, float]  # reported half: prompt identity -> mean headline of the chosen condition


class HeldOut(_Record):
    """What `heldout.json` holds: every task's split and every method's held-out score."""

    splits: dict[str, Split]
    scores: list[MethodScore]


class MethodSummary(_Record):
    """One method over every concept task: the held-out headline pooled over (task, prompt) with
    its t interval, and `versus` the reference method (prompting when present), paired by
    (task, prompt): this method − the reference."""

    method: str
    metric: str
    n: int  # (concept, instruction) units with a finite held-out value
    n_planned: int = 0  # every reported (concept, instruction) unit
    score: float
    ci_low: float
    ci_high: float
    tasks: int
    versus: str | None
    difference: Estimate | None


def method_table(scores: Sequence[MethodScore], reference: str = "prompting") -> list[MethodSummary]:
    """The AxBench method table: each method's held-out score over every concept task."""
    pooled: dict[tuple[str, str], dict[str, float]] = {}
    for s in scores:
        units = {f"{s.task}/{p}": v for p, v in s.per_prompt.items()}
        pooled.setdefault((s.method, s.metric), {}).update(units)
    out = []
    for (method, metric), values in pooled.items():
        finite = [v for v in values.values() if math.isfinite(v)]
        low, high = t_ci(finite)
        ref = pooled.get((reference, metric))
        versus = ref is not None and method != reference and set(ref) == set(values)
        out.append(MethodSummary(
            method=method, metric=metric, n=len(finite), n_planned=len(values),
            score=float(np.mean(finite)) if finite else math.nan,
            ci_low=low, ci_high=high, tasks=len({s.task for s in scores if s.method == method}),
            versus=reference if versus else None,
            difference=compare_values(ref, values).estimate if versus and ref is not None else None))
    return out


def split_half(prompt_ids: Sequence[str], seed: int) -> Split:
    """A seeded permutation of the prompts, its first half (rounded down) to select on."""
    order = np.random.default_rng(seed).permutation(len(prompt_ids))
    half = len(prompt_ids) // 2
    return Split(seed=seed, select=[prompt_ids[i] for i in sorted(order[:half])],
                 report=[prompt_ids[i] for i in sorted(order[half:])])


def methods_of(task: Task) -> dict[str, MethodSpec]:
    """The task's steerings by name: its `steering` (named by its method), then `methods:`."""
    return {task.spec.steering.method: task.spec.steering, **task.spec.methods}


def concept_conditions(lm: LoadedModel, task: Task) -> dict[str, Condition]:
    """A concept task: unsteered, and every steering of the task at every strength listed for it
    in `concept.strengths` (`NAME L<layer> c<coeff>`, built by the sweep as `harness sweep` builds
    them), or once at its own settings (`NAME`: prompting, a steering not listed). Any other task:
    its own conditions."""
    if task.spec.concept is None:
        return task_conditions(lm, task)
    concept = task.spec.concept
    out: dict[str, Condition] = {UNSTEERED: Condition(None, {}, None)}
    for name, spec in methods_of(task).items():
        steered = Task(task.spec.model_copy(update={"steering": spec}), task.path, task.prompts)
        if name not in concept.strengths:
            out[name] = task_conditions(lm, steered)[STEERED]
            continue
        grid = SweepGrid((getattr(spec, "layer", 0),), tuple(concept.strengths[name]), concept.unit)
        swept = sweep_conditions(grid)(lm, steered)
        out |= {f"{name} {k}": c for k, c in swept.items() if k != UNSTEERED}
    return out


def choose(samples: Sequence[SampleRecord], task: str, metric: str, candidates: dict[str, float | None],
           select: Sequence[str], sign: float) -> tuple[str | None, float]:
    """The candidate condition with the best mean `metric` over the `select` prompts (ties: the
    smaller |coefficient|), and that mean. A sample without a finite value (an empty, flagged or
    unrated completion; a prompt with none) counts as the worst sample value of any condition of the
    task on the selection half, so a strength cannot win by emptying the prompts or samples it does
    badly on. Reads only the `select` prompts."""
    chosen = set(select)
    mine = [s for s in samples if s.prompt_id in chosen and s.task == task]
    per = {cond: values_by_prompt(mine, task, cond, metric) for cond in candidates}
    seen = [v for s in mine if not s.flagged and isinstance(v := s.scores.get(metric), float | int)
            and math.isfinite(v)]
    if not seen:
        return None, math.nan
    worst = min(seen) if sign > 0 else max(seen)
    best, best_key, best_score = None, (-math.inf, -math.inf), math.nan
    for cond, coeff in candidates.items():
        if not any(math.isfinite(v) for values in per[cond].values() for v in values):
            continue
        scored = (per[cond].get(p) or [math.nan] for p in select)
        score = float(np.mean([np.mean([v if math.isfinite(v) else worst for v in vs]) for vs in scored]))
        key = (sign * score, -abs(coeff or 0.0))
        if key > best_key:
            best, best_key, best_score = cond, key, score
    return best, best_score


def heldout_scores(run_result: RunResult, samples: Sequence[SampleRecord], splits: dict[str, Split],
                   metric: str | None = None) -> list[MethodScore]:
    """Per concept task and method (and unsteered, for reference): choose on the split's `select`
    half by the headline (or `metric`, higher is better), report on `report`."""
    out = []
    for info in run_result.tasks:
        if info.name not in splits:
            continue
        split = splits[info.name]
        head = next(e for e in run_result.effects if e.task == info.name and e.headline)
        by = metric or head.metric
        sign = -1.0 if not metric and head.expected_direction == "decrease" else 1.0
        by_method: dict[str, dict[str, float | None]] = {UNSTEERED: {UNSTEERED: None}}  # the baseline row
        for cond, desc in info.conditions.items():
            if "control" in desc:  # a matched control is no candidate
                continue
            method = cond.split(" ", 1)[0]
            by_method.setdefault(method, {})[cond] = desc.get("sweep", {}).get("coeff")
        for method, candidates in by_method.items():
            chosen, selection_score = choose(samples, info.name, by, candidates, split.select, sign)
            out.append(_reported(samples, info.name, by, method, chosen, candidates, selection_score, split))
    return out


def _reported(samples: Sequence[SampleRecord], task: str, metric: str, method: str, chosen: str | None,
              candidates: dict[str, float | None], selection_score: float, split: Split) -> MethodScore:
    if chosen is None:
        return MethodScore(task=task, method=method, metric=metric, condition=None, coeff=None,
                           selection_score=math.nan, score=math.nan, ci_low=math.nan, ci_high=math.nan, n=0,
                           n_planned=len(split.report), effect=None, per_prompt={})
    steered = condition_values(samples, task, chosen, metric, split.report)[0]
    base = condition_values(samples, task, UNSTEERED, metric, split.report)[0]
    finite = [v for v in steered.values() if math.isfinite(v)]
    low, high = t_ci(finite)
    return MethodScore(task=task, method=method, metric=metric, condition=chosen, coeff=candidates[chosen],
                       selection_score=selection_score, score=float(np.mean(finite)) if finite else math.nan,
                       ci_low=low, ci_high=high, n=len(finite), n_planned=len(split.report),
                       effect=compare_values(base, steered).estimate, per_prompt=steered)


def run_concepts(target: str, out: Path, lm: LoadedModel, options: RunOptions, tasks: list[Task]
                 ) -> tuple[RunResult, HeldOut]:
    """Run the tasks (concept tasks with every method and strength), then choose and report each
    concept task's strengths on its held-out halves; the splits go into run.json's config, the
    scores into `heldout.json` next to it."""
    from harness.store import read_run

    few = [f"{t.name} ({len(t.prompts)})" for t in tasks if t.spec.kind == "concept" and len(t.prompts) < 2]
    if few:
        raise UserError(f"a concept task chooses its strength on half of its instructions and reports on the "
                        f"other half, so it needs at least 2; too few: {', '.join(few)}")
    splits = {t.name: split_half([p.identity() for p in t.prompts], t.spec.concept.split_seed)
              for t in tasks if t.spec.kind == "concept" and t.spec.concept is not None}
    result = run(target, out, model=lm, options=options, tasks=tasks, conditions=concept_conditions,
                 extra={"heldout": {name: s.model_dump(mode="json") for name, s in splits.items()}})
    held = HeldOut(splits=splits, scores=heldout_scores(result, read_run(out)[1], splits))
    (out / HELDOUT_FILE).write_text(held.model_dump_json(indent=1))
    return result, held
