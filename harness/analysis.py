"""Turn scored samples into effect records: per metric, steered vs unsteered, paired by prompt."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from harness.config import TaskSpec
from harness.engine import UNSTEERED
from harness.report.schema import EffectRecord, FluencyRecord, Headline, PromptSummary, SampleRecord
from harness.stats import Effect, fluency_cost, holm, paired_effect

FLUENCY_METRIC = "perplexity.logppl"
ALPHA = 0.05


def scores_by_prompt(
    samples: Sequence[SampleRecord], task: str, condition: str, metric: str
) -> dict[str, list[float]]:
    """Metric values of one condition grouped by prompt; flagged samples count as NaN."""
    out: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        if s.task == task and s.condition == condition and metric in s.scores:
            out[str(s.prompt_index)].append(float("nan") if s.flagged else s.scores[metric])
    return dict(out)


def task_effects(
    spec: TaskSpec, conditions: Sequence[str], samples: Sequence[SampleRecord], seed: int
) -> tuple[list[EffectRecord], list[FluencyRecord], list[PromptSummary]]:
    """Effects of every metric and the fluency cost of every steered condition of one task.

    `p_adjusted` is filled in later by `adjust`, across all metrics of the run.
    """
    metrics = sorted({m for s in samples if s.task == spec.name for m in s.scores} - {FLUENCY_METRIC})
    effects, fluency, summaries = [], [], []
    for condition in conditions:
        if condition == UNSTEERED:
            continue
        for metric in metrics:
            base = scores_by_prompt(samples, spec.name, UNSTEERED, metric)
            steer = scores_by_prompt(samples, spec.name, condition, metric)
            eff = paired_effect(base, steer, seed=seed)
            effects.append(_effect_record(spec, condition, metric, eff))
            if metric == spec.headline:
                summaries.append(_summary(spec.name, condition, metric, base, steer))
        base = scores_by_prompt(samples, spec.name, UNSTEERED, FLUENCY_METRIC)
        steer = scores_by_prompt(samples, spec.name, condition, FLUENCY_METRIC)
        if base:
            eff, ratio = fluency_cost(base, steer, seed=seed)
            fluency.append(FluencyRecord(
                task=spec.name, condition=condition, judge=str(spec.scorers[FLUENCY_METRIC.split(".")[0]]
                                                               .get("judge") or "generation model"),
                n=eff.n, mean_unsteered=eff.mean_unsteered, mean_steered=eff.mean_steered,
                diff=eff.diff, ci_low=eff.ci_low, ci_high=eff.ci_high, p_value=eff.p_value,
                ppl_ratio=ratio,
            ))
            summaries.append(_summary(spec.name, condition, FLUENCY_METRIC, base, steer))
    return effects, fluency, summaries


def _effect_record(spec: TaskSpec, condition: str, metric: str, eff: Effect) -> EffectRecord:
    return EffectRecord(
        task=spec.name, condition=condition, metric=metric,
        expected_direction=spec.metrics.get(metric), headline=metric == spec.headline,
        n=eff.n, n_excluded=eff.n_excluded, mean_unsteered=eff.mean_unsteered,
        mean_steered=eff.mean_steered, diff=eff.diff, effect_size=eff.effect_size,
        ci_low=eff.ci_low, ci_high=eff.ci_high, p_value=eff.p_value,
        p_adjusted=eff.p_value, significant=False,
    )


def _summary(task: str, condition: str, metric: str, base: dict[str, list[float]],
             steer: dict[str, list[float]]) -> PromptSummary:
    def mean(xs: list[float]) -> float:
        finite = [x for x in xs if math.isfinite(x)]
        return sum(finite) / len(finite) if finite else float("nan")

    prompts = {k: [mean(base[k]), mean(steer[k])] for k in sorted(base.keys() & steer.keys())}
    return PromptSummary(task=task, condition=condition, metric=metric, prompts=prompts)


def adjust(effects: list[EffectRecord]) -> list[EffectRecord]:
    """Holm-correct p-values and mark significance, in two families: the metrics a task
    declares with an expected direction (the confirmatory tests of the run), and all other
    metrics (exploratory: diversity, mention rates, ...), so extra metrics never dilute the
    declared ones."""
    out = list(effects)
    for declared in (True, False):
        idx = [i for i, e in enumerate(effects) if (e.expected_direction is not None) == declared]
        adjusted = holm([effects[i].p_value for i in idx])
        for i, p in zip(idx, adjusted, strict=True):
            out[i] = effects[i].model_copy(update={"p_adjusted": p, "significant": bool(p < ALPHA)})
    return out


def headlines(
    specs: Sequence[TaskSpec], effects: Sequence[EffectRecord], fluency: Sequence[FluencyRecord]
) -> list[Headline]:
    """The headline line of every task and steered condition."""
    cost = {(f.task, f.condition): f for f in fluency}
    out = []
    for spec in specs:
        for e in effects:
            if e.task != spec.name or e.metric != spec.headline:
                continue
            sign = 1 if spec.metrics[spec.headline] == "increase" else -1
            f = cost.get((e.task, e.condition))
            out.append(Headline(
                task=e.task, condition=e.condition, metric=e.metric,
                expected_direction=spec.metrics[spec.headline], diff=e.diff, ci_low=e.ci_low,
                ci_high=e.ci_high, effect_size=e.effect_size, significant=e.significant,
                moved_as_expected=e.significant and sign * e.diff > 0,
                fluency_diff=f.diff if f else None, ppl_ratio=f.ppl_ratio if f else None,
            ))
    return out
