"""Turn scored samples into a run's numbers: effects per metric (steered vs unsteered, paired by
prompt), fluency cost, headlines, per-prompt summaries, sample counts and the steering ledger."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from harness.comparison import Comparison, adjust, compare_values, prompt_means
from harness.schema.results import (
    ConditionCounts,
    EffectRecord,
    FluencyRecord,
    Headline,
    LedgerRecord,
    PromptSummary,
    SampleRecord,
)
from harness.schema.spec import ALPHA, FLUENCY_METRIC, UNSTEERED
from harness.schema.task import TaskSpec


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
    return compare_values(base, steer, seed=seed), dropped_u + dropped_s, summary


def task_effects(spec: TaskSpec, prompt_ids: Sequence[str], conditions: Sequence[str],
                 samples: Sequence[SampleRecord], seed: int
                 ) -> tuple[list[EffectRecord], list[FluencyRecord], list[PromptSummary]]:
    """Effects of every metric and the fluency cost of every steered condition of one task.

    `p_adjusted` is filled in later by `adjust_run`, across the whole run.
    """
    mine = [s for s in samples if s.task == spec.name]
    metrics = sorted({m for s in mine for m in s.scores} - {FLUENCY_METRIC})
    effects, fluency, summaries = [], [], []
    for condition in (c for c in conditions if c != UNSTEERED):
        for metric in metrics:
            c, dropped, summary = compare_conditions(mine, spec.name, condition, metric, prompt_ids, seed)
            effects.append(EffectRecord(
                task=spec.name, condition=condition, metric=metric,
                expected_direction=spec.metrics.get(metric), headline=metric == spec.headline,
                n=c.n, n_excluded=dropped, mean_unsteered=c.mean_a, mean_steered=c.mean_b, diff=c.diff,
                effect_size=c.effect_size, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value,
                p_adjusted=c.p_value, significant=False))
            if metric == spec.headline:
                summaries.append(summary)
        if any(FLUENCY_METRIC in s.scores for s in mine):
            c, _, summary = compare_conditions(mine, spec.name, condition, FLUENCY_METRIC, prompt_ids, seed)
            judge = (spec.scorers.get(FLUENCY_METRIC.split(".")[0]) or {}).get("judge") or "generation model"
            fluency.append(FluencyRecord(
                task=spec.name, condition=condition, judge=str(judge), n=c.n, mean_unsteered=c.mean_a,
                mean_steered=c.mean_b, diff=c.diff, ci_low=c.ci_low, ci_high=c.ci_high, p_value=c.p_value,
                ppl_ratio=math.exp(min(c.diff, 700.0)) if math.isfinite(c.diff) else math.nan))
            summaries.append(summary)
    return effects, fluency, summaries


def adjust_run(effects: list[EffectRecord], fluency: list[FluencyRecord]
               ) -> tuple[list[EffectRecord], list[FluencyRecord]]:
    """Holm-adjust every p-value of a run in its family (`harness.comparison`): declared metrics
    and fluency costs are confirmatory, every other metric exploratory."""
    families = ["confirmatory" if e.expected_direction else "exploratory" for e in effects]
    families += ["confirmatory"] * len(fluency)
    adjusted = adjust([e.p_value for e in effects] + [f.p_value for f in fluency], families)
    out_e = [e.model_copy(update={"p_adjusted": p, "significant": bool(p < ALPHA)})
             for e, p in zip(effects, adjusted[: len(effects)], strict=True)]
    out_f = [f.model_copy(update={"p_adjusted": p, "significant": bool(p < ALPHA)})
             for f, p in zip(fluency, adjusted[len(effects):], strict=True)]
    return out_e, out_f


def headlines(specs: Sequence[TaskSpec], effects: Sequence[EffectRecord],
              fluency: Sequence[FluencyRecord]) -> list[Headline]:
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


def condition_counts(samples: Sequence[SampleRecord], task: str,
                     conditions: Sequence[str]) -> list[ConditionCounts]:
    """Samples, flagged and empty completions of every condition of `task`."""
    out = []
    for condition in conditions:
        mine = [s for s in samples if s.task == task and s.condition == condition]
        out.append(ConditionCounts(task=task, condition=condition, samples=len(mine),
                                   flagged=sum(1 for s in mine if s.flagged),
                                   empty=sum(1 for s in mine if not s.token_ids and not s.flagged)))
    return out


def ledger_records(samples: Sequence[SampleRecord], task: str,
                   conditions: Sequence[str]) -> list[LedgerRecord]:
    """The steering ledger of every steered condition of `task`, summed over its samples."""
    out = []
    for condition in (c for c in conditions if c != UNSTEERED):
        mine = [s for s in samples if s.task == task and s.condition == condition]
        totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for s in mine:
            for site, kinds in s.ledger.items():
                for kind, (n, norm) in kinds.items():
                    totals[(site, kind)][0] += n
                    totals[(site, kind)][1] += norm
        out += [LedgerRecord(task=task, condition=condition, site=site, kind=kind, samples=len(mine),
                             positions=int(n), norm=float(norm))
                for (site, kind), (n, norm) in sorted(totals.items())]
    return out
