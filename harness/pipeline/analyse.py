"""Turn scored samples into a run's numbers: effects per metric (steered vs unsteered, paired by
prompt, with their steerability), fluency cost, headlines, per-prompt summaries, sample counts and the
steering ledger."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.pipeline.score import coverage, is_unscorable, prompt_status
from harness.schema.results import (
    ConditionCounts,
    ControlRecord,
    EffectRecord,
    FluencyRecord,
    Headline,
    LedgerRecord,
    PromptSummary,
    SampleRecord,
)
from harness.schema.spec import ALPHA, UNSTEERED
from harness.schema.task import TaskSpec
from harness.scorers import make_scorer
from harness.stats.comparison import Comparison, Family, adjust, compare_values, prompt_means
from harness.stats.steerability import steerability
from harness.tasks import fluency_metric


def values_by_prompt(samples: Sequence[SampleRecord], task: str, condition: str, metric: str
                     ) -> dict[str, list[float]]:
    """Metric values of one condition grouped by prompt identity; flagged samples count as NaN."""
    out: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.task == task and s.condition == condition and metric in s.scores:
            out[s.prompt_id].append(float("nan") if s.flagged else s.scores[metric])
    return dict(out)


def condition_values(samples: Sequence[SampleRecord], task: str, condition: str, metric: str,
                     prompt_ids: Sequence[str]) -> tuple[dict[str, float], int]:
    """Per-prompt means of one condition over every prompt of the task (NaN where none is finite),
    and the count of non-finite sample values dropped."""
    return prompt_means(values_by_prompt(samples, task, condition, metric), prompt_ids)


def compare_conditions(samples: Sequence[SampleRecord], task: str, condition: str, metric: str,
                       prompt_ids: Sequence[str], seed: int) -> tuple[Comparison, int, PromptSummary]:
    """`condition` vs unsteered on `metric`: the comparison, the values dropped, the per-prompt means."""
    base, dropped_u = condition_values(samples, task, UNSTEERED, metric, prompt_ids)
    steer, dropped_s = condition_values(samples, task, condition, metric, prompt_ids)
    summary = PromptSummary(task=task, condition=condition, metric=metric,
                            prompts={k: [base[k], steer[k]] for k in prompt_ids})
    c = covered(compare_values(base, steer, seed=seed), samples, task, [UNSTEERED, condition], metric,
                prompt_ids)
    return c, dropped_u + dropped_s, summary


def covered(c: Comparison, samples: Sequence[SampleRecord], task: str, sides: Sequence[str | Sequence[str]],
            metric: str, prompt_ids: Sequence[str]) -> Comparison:
    """`c` with the prompts it left out split by why (`pipeline.score.coverage`): those the metric
    does not apply to, and the unscorable rest (flagged, degenerate, non-finite, missing)."""
    na = coverage(*(prompt_status(samples, task, side, metric, prompt_ids) for side in sides)).not_applicable
    e = c.estimate
    update = {"n_not_applicable": na, "n_unscorable": e.n_planned - e.n - na}
    return dataclasses.replace(c, estimate=e.model_copy(update=update))


def task_effects(spec: TaskSpec, prompt_ids: Sequence[str], conditions: Sequence[str],
                 samples: Sequence[SampleRecord], seed: int
                 ) -> tuple[list[EffectRecord], list[FluencyRecord], list[PromptSummary]]:
    """Effects of every metric and the fluency cost of every steered condition of one task.

    `p_adjusted` is filled in later by `adjust_run`, across the whole run.
    """
    mine = [s for s in samples if s.task == spec.name]
    fluent = fluency_metric(spec)
    metrics = sorted({m for s in mine for m in s.scores} - {fluent})
    effects, fluency, summaries = [], [], []
    for condition in (c for c in conditions if c != UNSTEERED):
        for metric in metrics:
            c, dropped, summary = compare_conditions(mine, spec.name, condition, metric, prompt_ids, seed)
            effects.append(EffectRecord(
                task=spec.name, condition=condition, metric=metric,
                expected_direction=spec.metrics.get(metric), headline=metric == spec.headline,
                estimate=c.estimate, n_excluded=dropped, p_adjusted=c.estimate.p_value, significant=False,
                steerability=steerability(c.deltas, spec.metrics.get(metric))))
            if metric == spec.headline:
                summaries.append(summary)
        if fluent and any(fluent in s.scores for s in mine):
            c, _, summary = compare_conditions(mine, spec.name, condition, fluent, prompt_ids, seed)
            scorer = fluent.split(".")[0]
            diff = c.estimate.point
            fluency.append(FluencyRecord(
                task=spec.name, condition=condition, metric=fluent, estimate=c.estimate,
                judge=make_scorer(scorer, spec.scorers[scorer]).judge_name(),
                ppl_ratio=math.exp(min(diff, 700.0)) if math.isfinite(diff) else math.nan,
                p_adjusted=c.estimate.p_value, significant=False))
            summaries.append(summary)
    return effects, fluency, summaries


DISRUPTION = "disruption, not direction"
Controls = dict[str, tuple[str, str]]  # control condition -> (condition it controls, "random" | "negated")


def adjust_run(effects: list[EffectRecord], fluency: list[FluencyRecord], controls: list[ControlRecord],
               control_conditions: set[str]
               ) -> tuple[list[EffectRecord], list[FluencyRecord], list[ControlRecord]]:
    """Holm-adjust every p-value of a run in its family (`harness.stats.comparison`): declared metrics and
    fluency costs are confirmatory, every other metric exploratory; the effects of the control
    conditions and the specific effects and direction checks form families of their own, so asking
    for controls never changes a headline's p-value."""
    def family(declared: bool, condition: str) -> Family:
        if condition in control_conditions:
            return Family.CONTROL_CONDITIONS
        return Family.CONFIRMATORY if declared else Family.EXPLORATORY

    families = [family(bool(e.expected_direction), e.condition) for e in effects]
    families += [family(True, f.condition) for f in fluency]
    fluent = {(f.task, f.metric) for f in fluency}
    families += [Family.CONTROLS_DECLARED if c.expected_direction or (c.task, c.metric) in fluent
                 else Family.CONTROLS_OTHER for c in controls]
    p_values = [r.estimate.p_value for r in (*effects, *fluency, *controls)]
    adjusted = iter(adjust(p_values, families))

    def mark(record, p):  # noqa: ANN001, ANN202
        return record.model_copy(update={"p_adjusted": p, "significant": bool(p < ALPHA)})

    return ([mark(e, next(adjusted)) for e in effects], [mark(f, next(adjusted)) for f in fluency],
            [mark(c, next(adjusted)) for c in controls])


def control_records(spec: TaskSpec, prompt_ids: Sequence[str], controls: Controls,
                    samples: Sequence[SampleRecord], seed: int
                    ) -> tuple[list[ControlRecord], list[PromptSummary]]:
    """Per steered condition with matched controls and per metric (fluency included): the specific
    effect (steered − mean of the random controls) and the direction check (steered − negated),
    paired by prompt; and the headline's per-prompt values against the random controls."""
    mine = [s for s in samples if s.task == spec.name]
    metrics = sorted({m for s in mine for m in s.scores})
    records, summaries = [], []
    for base in dict.fromkeys(b for b, _ in controls.values()):
        randoms = [c for c, (b, kind) in controls.items() if b == base and kind == "random"]
        negated = [c for c, (b, kind) in controls.items() if b == base and kind == "negated"]
        for metric in metrics:
            steered = condition_values(mine, spec.name, base, metric, prompt_ids)[0]
            compared: list[tuple[str, str, list[str], dict[str, float]]] = []
            if randoms:
                values = np.array([[condition_values(mine, spec.name, c, metric, prompt_ids)[0][p]
                                    for p in prompt_ids] for c in randoms])
                reference = dict(zip(prompt_ids, _finite_mean(values).tolist(), strict=True))
                compared.append(("specific", f"random controls ({len(randoms)})", randoms, reference))
                if metric == spec.headline:
                    summaries.append(PromptSummary(
                        task=spec.name, condition=base, metric=metric, reference="random controls",
                        prompts={p: [reference[p], steered[p]] for p in prompt_ids}))
            for name in negated:
                compared.append(("direction", name, [name],
                                 condition_values(mine, spec.name, name, metric, prompt_ids)[0]))
            for kind, reference_name, sides, reference in compared:
                c = covered(compare_values(reference, steered, seed=seed), mine, spec.name, [sides, base],
                            metric, prompt_ids)
                records.append(ControlRecord(
                    task=spec.name, condition=base, metric=metric, kind=kind, reference=reference_name,
                    expected_direction=spec.metrics.get(metric), headline=metric == spec.headline,
                    estimate=c.estimate, p_adjusted=c.estimate.p_value, significant=False))
    return records, summaries


def disruption_labels(controls: list[ControlRecord], effects: Sequence[EffectRecord],
                      control_map: Controls) -> list[ControlRecord]:
    """Label a direction check "disruption, not direction" when the negated vector moves the metric
    significantly (vs unsteered) in the same direction as the steered vector does."""
    effect = {(e.task, e.condition, e.metric): e for e in effects}
    negation = {(b, c) for c, (b, kind) in control_map.items() if kind == "negated"}
    out = []
    for rec in controls:
        if rec.kind == "direction" and (rec.condition, rec.reference) in negation:
            steered = effect.get((rec.task, rec.condition, rec.metric))
            negated = effect.get((rec.task, rec.reference, rec.metric))
            same_way = (steered is not None and negated is not None and negated.significant
                        and steered.estimate.point * negated.estimate.point > 0)
            rec = rec.model_copy(update={"label": DISRUPTION if same_way else None})
        out.append(rec)
    return out


def headlines(specs: Sequence[TaskSpec], effects: Sequence[EffectRecord], fluency: Sequence[FluencyRecord],
              controls: Sequence[ControlRecord] = (),
              control_conditions: set[str] = frozenset()) -> list[Headline]:
    """The headline line of every task and steered condition (not of its controls): effect, fluency
    cost, and the specific effect and direction label if controlled. Every number is the effect's own
    estimate (its minimum detectable effect from the same per-prompt deltas)."""
    cost = {(f.task, f.condition): f for f in fluency}
    checks = {(c.task, c.condition, c.kind): c for c in controls if c.headline}
    out = []
    for spec in specs:
        for e in effects:
            if e.task != spec.name or e.metric != spec.headline or e.condition in control_conditions:
                continue
            specific = checks.get((e.task, e.condition, "specific"))
            direction = checks.get((e.task, e.condition, "direction"))
            sign = 1 if spec.metrics[spec.headline] == "increase" else -1
            f = cost.get((e.task, e.condition))
            out.append(Headline(
                task=e.task, condition=e.condition, metric=e.metric,
                expected_direction=spec.metrics[spec.headline], estimate=e.estimate,
                significant=e.significant, moved_as_expected=e.significant and sign * e.estimate.point > 0,
                fluency=f.estimate if f else None, ppl_ratio=f.ppl_ratio if f else None,
                specific=specific.estimate if specific else None,
                label=direction.label if direction else None, steerability=e.steerability,
            ))
    return out


def _finite_mean(values: np.ndarray) -> np.ndarray:
    """Column means over the finite entries (NaN where a column has none)."""
    finite = np.isfinite(values)
    total = np.where(finite, values, 0.0).sum(axis=0)
    count = finite.sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def condition_counts(samples: Sequence[SampleRecord], task: str,
                     conditions: Sequence[str]) -> list[ConditionCounts]:
    """Samples of every condition of `task`, and its degenerate ones: flagged, else empty, else
    unscorable (a scorer could not score the text; a metric that does not apply is no defect)."""
    out = []
    for condition in conditions:
        mine = [s for s in samples if s.task == task and s.condition == condition]
        out.append(ConditionCounts(task=task, condition=condition, samples=len(mine),
                                   flagged=sum(1 for s in mine if s.flagged),
                                   empty=sum(1 for s in mine if not s.token_ids and not s.flagged),
                                   unscorable=sum(1 for s in mine if s.token_ids and not s.flagged
                                                  and is_unscorable(s))))
    return out


def ledger_records(samples: Sequence[SampleRecord], task: str,
                   conditions: Sequence[str]) -> list[LedgerRecord]:
    """The steering ledger of every steered condition of `task`, summed over its samples."""
    out = []
    for condition in (c for c in conditions if c != UNSTEERED):
        mine = [s for s in samples if s.task == task and s.condition == condition]
        totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for s in mine:
            for e in s.ledger:
                totals[(e.site, e.kind)][0] += e.positions
                totals[(e.site, e.kind)][1] += e.norm
        out += [LedgerRecord(task=task, condition=condition, site=site, kind=kind, samples=len(mine),
                             positions=int(n), norm=float(norm))
                for (site, kind), (n, norm) in sorted(totals.items())]
    return out


@dataclass(frozen=True)
class TaskSamples:
    """A task's scored samples and what the analysis needs to know about its conditions."""

    spec: TaskSpec
    prompt_ids: list[str]
    conditions: list[str]
    controls: Controls  # control condition -> (the condition it controls, kind)
    records: list[SampleRecord]


@dataclass
class Analysis:
    """Every number of a run, p-values adjusted across the run."""

    effects: list[EffectRecord] = field(default_factory=list)
    fluency: list[FluencyRecord] = field(default_factory=list)
    summaries: list[PromptSummary] = field(default_factory=list)
    controls: list[ControlRecord] = field(default_factory=list)
    counts: list[ConditionCounts] = field(default_factory=list)
    ledger: list[LedgerRecord] = field(default_factory=list)
    headlines: list[Headline] = field(default_factory=list)


def analyse(tasks: Sequence[TaskSamples]) -> Analysis:
    """Effects, fluency costs, controls, counts and ledger of every task, adjusted as one run."""
    out = Analysis()
    control_map: Controls = {}
    for t in tasks:
        e, f, s = task_effects(t.spec, t.prompt_ids, t.conditions, t.records, t.spec.seed)
        c, cs = control_records(t.spec, t.prompt_ids, t.controls, t.records, t.spec.seed)
        out.effects += e
        out.fluency += f
        out.summaries += s + cs
        out.controls += c
        out.counts += condition_counts(t.records, t.spec.name, t.conditions)
        out.ledger += ledger_records(t.records, t.spec.name, t.conditions)
        control_map.update(t.controls)
    adjusted = adjust_run(out.effects, out.fluency, out.controls, set(control_map))
    out.effects, out.fluency, out.controls = adjusted
    out.controls = disruption_labels(out.controls, out.effects, control_map)
    specs = [t.spec for t in tasks]
    out.headlines = headlines(specs, out.effects, out.fluency, out.controls, set(control_map))
    return out
