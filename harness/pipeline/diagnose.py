"""Forward-only diagnostics of every steered condition (not of its controls): off-target cost on
neutral text, capability retention on cloze items and, for topic tasks, the perplexity ratio of
texts by their share of topic words. Free of sampling noise; run on the main process."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from harness.diagnostics.capability import capability
from harness.diagnostics.neutral_text import neutral_texts, topic_texts
from harness.diagnostics.offtarget import offtarget_cost
from harness.diagnostics.topic_ratio import topic_perplexity_ratio
from harness.errors import UserError
from harness.pipeline.plan import TaskPlan
from harness.pipeline.pool import ModelPool
from harness.pipeline.score import task_scorers
from harness.schema.results import CapabilityRecord, OffTargetRecord, TopicRatioRecord
from harness.tasks import Task

NEUTRAL_TEXTS = 200


def diagnosed(plan: TaskPlan) -> list[str]:
    """The conditions diagnosed: steered, with vectors, not a control."""
    return [c for c, v in plan.conditions.items()
            if v.steering is not None and v.steering.interventions and not v.control_of]


def topic_words(task: Task) -> list[str]:
    """The words of the topics the task's scorers measure (each scorer's `topic_words`)."""
    words: list[str] = []
    for name, scorer in task_scorers(task).items():
        found = scorer.topic_words()
        if isinstance(found, str) or not all(isinstance(w, str) for w in found):
            raise UserError(f"task '{task.name}': scorer '{name}' topic_words() returned {found!r}, "
                            "not a list of words")
        words += found
    return words


def diagnose(pool: ModelPool, plans: Sequence[TaskPlan], *, progress: bool, timings: dict[str, float]
             ) -> tuple[list[OffTargetRecord], list[CapabilityRecord], list[TopicRatioRecord]]:
    texts = neutral_texts(NEUTRAL_TEXTS)
    words_of = {plan.task.name: topic_words(plan.task) for plan in plans
                if plan.task.spec.kind == "topic" and diagnosed(plan)}
    off, cap, topic = [], [], []
    work = [(plan, c) for plan in plans for c in diagnosed(plan)]
    for plan, name in tqdm(work, desc="diagnose", disable=not progress):
        start = time.perf_counter()
        task, steering = plan.task, plan.conditions[name].steering
        o = offtarget_cost(pool.lm, steering, texts, seed=task.spec.seed)
        off.append(OffTargetRecord(
            task=task.name, condition=name, n_texts=o.n_texts, n_tokens=o.n_tokens, mean_kl=o.mean_kl,
            mean_kl_ci_low=o.mean_kl_ci[0], mean_kl_ci_high=o.mean_kl_ci[1], p95_kl=o.p95_kl,
            p95_kl_ci_low=o.p95_kl_ci[0], p95_kl_ci_high=o.p95_kl_ci[1], delta_logppl=o.delta_logppl,
            delta_logppl_ci_low=o.delta_logppl_ci[0], delta_logppl_ci_high=o.delta_logppl_ci[1]))
        c = capability(pool.lm, steering, seed=task.spec.seed)
        cap.append(CapabilityRecord(
            task=task.name, condition=name, n_items=c.n_items, accuracy_unsteered=c.unsteered_accuracy,
            accuracy_steered=c.accuracy, accuracy_diff=c.accuracy_change.point,
            accuracy_ci_low=c.accuracy_change.ci_low, accuracy_ci_high=c.accuracy_change.ci_high,
            logprob_unsteered=c.unsteered_logprob, logprob_steered=c.logprob,
            logprob_diff=c.logprob_change.point, logprob_ci_low=c.logprob_change.ci_low,
            logprob_ci_high=c.logprob_change.ci_high, broken=list(c.broken)))
        words = words_of.get(task.name, [])
        if task.spec.kind == "topic" and words:
            bins = topic_perplexity_ratio(pool.lm, steering, words, topic_texts(words), seed=task.spec.seed)
            topic += [TopicRatioRecord(task=task.name, condition=name, bin=b.label, low=b.low, high=b.high,
                                       n=b.n, ratio=b.ratio, ratio_ci_low=b.ratio_ci[0],
                                       ratio_ci_high=b.ratio_ci[1]) for b in bins]
        timings[f"diagnose.{task.name}.{name}"] = round(time.perf_counter() - start, 3)
    return off, cap, topic
