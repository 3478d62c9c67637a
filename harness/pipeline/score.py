"""Score every sample of a task with every scorer of the task, plus the built-in completion
metrics; check every scorer's assets before the first generation."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from harness.pipeline.plan import Condition
from harness.pipeline.pool import ModelPool
from harness.schema.results import SampleRecord
from harness.scorers import Scorer, make_scorer
from harness.scorers.base import Sample, ScoringContext
from harness.tasks import Task


def context(pool: ModelPool, task: Task, conditions: dict[str, Condition] | None = None) -> ScoringContext:
    return ScoringContext(lm=pool.lm, steerings={c: v.steering for c, v in (conditions or {}).items()},
                          load_judge=pool.judge, use_bos=task.spec.generation.use_bos,
                          chat=task.spec.generation.chat)


def task_scorers(task: Task) -> dict[str, Scorer]:
    return {name: make_scorer(name, params) for name, params in task.spec.scorers.items()}


def preflight(pool: ModelPool, tasks: Sequence[Task]) -> dict[str, dict[str, Scorer]]:
    """Build every scorer of every task and let it check its assets (encoders, judges,
    classifiers), so a missing one fails before minutes of generation, not after. Returns the
    scorers by task, to score with."""
    built = {}
    for task in tasks:
        ctx = context(pool, task)
        built[task.name] = task_scorers(task)
        for scorer in built[task.name].values():
            scorer.preflight(ctx)
    return built


def completion_scores(record: SampleRecord) -> dict[str, float]:
    """The built-in metrics: `completion.empty` (the completion ended at once) and its length."""
    return {"completion.empty": float(not record.token_ids),
            "completion.tokens": float(len(record.token_ids))}


def score_task(pool: ModelPool, task: Task, conditions: dict[str, Condition], records: list[SampleRecord],
               scorers: dict[str, Scorer], *, progress: bool, timings: dict[str, float]
               ) -> list[SampleRecord]:
    """Every scorer of `task` on every record; each scorer's seconds go into `timings`."""
    ctx = context(pool, task, conditions)
    samples = [Sample(r.prompt, r.completion, r.condition, tuple(r.prompt_ids), tuple(r.token_ids),
                      task.prompts[r.prompt_index].model_dump(exclude_none=True)) for r in records]
    scores = [completion_scores(r) for r in records]
    reasons: list[dict[str, str]] = [{} for _ in records]
    token_lps: list[list[float] | None] = [None for _ in records]
    for name, scorer in tqdm(scorers.items(), desc=f"score {task.name}", disable=not progress):
        start = time.perf_counter()
        for i, score in enumerate(scorer.score(samples, ctx)):
            scores[i].update({f"{name}.{m}": v for m, v in score.values.items()})
            reasons[i].update({f"{name}.{m}": r for m, r in score.reasons.items()})
            token_lps[i] = score.detail.get("token_logprobs", token_lps[i])
        timings[f"score.{task.name}.{name}"] = round(time.perf_counter() - start, 3)
    return [r.model_copy(update={"scores": s, "reasons": why, "token_logprobs": lp})
            for r, s, why, lp in zip(records, scores, reasons, token_lps, strict=True)]
