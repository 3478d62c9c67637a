"""Score every sample of a task with every scorer of the task, plus the built-in completion
metrics; check every scorer's assets before the first generation."""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Literal, NamedTuple

from tqdm.auto import tqdm

from harness.errors import UserError
from harness.pipeline.plan import Condition
from harness.pipeline.pool import ModelPool
from harness.schema.results import SampleRecord
from harness.scorers import Scorer, make_scorer
from harness.scorers.base import Sample, Score, ScoringContext, is_not_applicable
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


def checked(name: str, scorer: Scorer, scores: Sequence[Score], n_samples: int) -> Sequence[Score]:
    """`scores` if they keep the scorer's contract: one Score per sample, a value for every metric
    the scorer declares and no other, and for each NaN value (only those) one reason of one kind,
    unscorable or not applicable. Else a UserError naming the scorer and what is wrong."""
    def fail(what: str) -> UserError:
        return UserError(f"scorer {name!r} ({type(scorer).__name__}) {what}")

    if len(scores) != n_samples:
        raise fail(f"returned {len(scores)} scores for {n_samples} samples")
    declared = set(scorer.metrics)
    for i, score in enumerate(scores):
        if missing := sorted(declared - set(score.values)):
            raise fail(f"gave sample {i} no value for {missing} (it declares {sorted(declared)})")
        if extra := sorted(set(score.values) - declared):
            raise fail(f"gave sample {i} values for {extra}, which it does not declare {sorted(declared)}")
        nan = {m for m, v in score.values.items() if v != v}
        unscorable, not_applicable = set(score.reasons), set(score.not_applicable)
        mislabelled = any(is_not_applicable(why) for why in score.reasons.values())
        if unscorable | not_applicable != nan or unscorable & not_applicable or mislabelled:
            raise fail(f"gave sample {i} NaN for {sorted(nan)} with reasons for {sorted(unscorable)} "
                       f"(unscorable) and {sorted(not_applicable)} (not applicable): every NaN needs "
                       "one reason of one kind, and a number none")
    return scores


def record_replies(name: str, score: Score) -> dict[str, str]:
    """A judge's raw replies (or, in expected mode, its rating probabilities) as samples.jsonl keeps
    them, keyed `scorer.metric`."""
    said = {f"{name}.{m}": r for m, r in score.detail.get("replies", {}).items()}
    return said | {f"{name}.{m}": "P(0, 1, 2) = " + ", ".join(f"{q:.3g}" for q in probs)
                   for m, probs in score.detail.get("probabilities", {}).items()}


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
    replies: list[dict[str, str]] = [{} for _ in records]  # a judge's raw replies, kept to audit it
    for name, scorer in tqdm(scorers.items(), desc=f"score {task.name}", disable=not progress):
        start = time.perf_counter()
        for i, score in enumerate(checked(name, scorer, scorer.score(samples, ctx), len(samples))):
            scores[i].update({f"{name}.{m}": v for m, v in score.values.items()})
            reasons[i].update(score.record_reasons(name))
            replies[i].update(record_replies(name, score))
            if scorer.token_logprobs:
                token_lps[i] = score.detail.get("token_logprobs", token_lps[i])
        timings[f"score.{task.name}.{name}"] = round(time.perf_counter() - start, 3)
    return [r.model_copy(update={"scores": s, "reasons": why, "token_logprobs": lp, "replies": said})
            for r, s, why, lp, said in zip(records, scores, reasons, token_lps, replies, strict=True)]


Status = Literal["finite", "not applicable", "unscorable"]


class Coverage(NamedTuple):
    """How the planned prompts of a comparison fare: `finite` + `not_applicable` + `unscorable`
    = `planned`."""

    planned: int
    finite: int
    not_applicable: int
    unscorable: int


def sample_status(record: SampleRecord, metric: str) -> Status:
    """A sample's `metric`: a finite value; NaN because the metric does not apply to its prompt;
    or unscorable (a flagged sample, a text the scorer cannot score, a non-finite value)."""
    value = record.scores.get(metric, math.nan)
    if not record.flagged and math.isfinite(value):
        return "finite"
    reason = record.reasons.get(metric, "")
    return "not applicable" if not record.flagged and is_not_applicable(reason) else "unscorable"


def prompt_status(samples: Sequence[SampleRecord], task: str, condition: str | Collection[str], metric: str,
                  prompt_ids: Sequence[str]) -> dict[str, Status]:
    """Per prompt of one condition (or of several pooled, as the mean of the random controls pools
    them): finite if any sample is; else not applicable if a sample says the metric does not apply
    to the prompt; else unscorable (also: a prompt without samples)."""
    conditions = {condition} if isinstance(condition, str) else set(condition)
    seen: dict[str, set[Status]] = {p: set() for p in prompt_ids}
    for s in samples:
        if s.task == task and s.condition in conditions and s.prompt_id in seen:
            seen[s.prompt_id].add(sample_status(s, metric))
    return {p: next((st for st in ("finite", "not applicable") if st in got), "unscorable")
            for p, got in seen.items()}


def coverage(*sides: Mapping[str, Status]) -> Coverage:
    """Coverage of a comparison of conditions paired by prompt (each side from `prompt_status`): a
    prompt counts if finite on every side, is not applicable if so on any side, else unscorable."""
    prompts = list(sides[0])
    paired = ["not applicable" if any(s[p] == "not applicable" for s in sides)
              else "finite" if all(s[p] == "finite" for s in sides) else "unscorable" for p in prompts]
    return Coverage(len(prompts), paired.count("finite"), paired.count("not applicable"),
                    paired.count("unscorable"))


def is_unscorable(record: SampleRecord) -> bool:
    """A degenerate sample beyond the empty ones: some scorer could not score its text."""
    return any(v != v and not is_not_applicable(record.reasons.get(m, "")) for m, v in record.scores.items())
