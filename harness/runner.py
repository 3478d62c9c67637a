"""Plan work items, drive the engine and scorers, cache samples, write the run."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import analysis, distributed
from harness.distributed import Cluster
from harness.engine import UNSTEERED, Row, default_batch_size, generate_rows, row_seed
from harness.models import LoadedModel, load_model
from harness.report.schema import RunResult, SampleRecord, TaskInfo
from harness.scorers import make_scorer
from harness.scorers.base import Sample, ScoringContext
from harness.steering.base import Steering
from harness.steering.build import build_steering
from harness.store import SampleLog, atomic_write_text
from harness.tasks import Task, is_suite, load_suite, load_task, select_method

STEERED = "steered"


@dataclass(frozen=True)
class Condition:
    """One condition of a task: its steering (None = unsteered) and how run.json describes it."""

    steering: Steering | None
    description: dict[str, Any]


ConditionBuilder = Callable[[LoadedModel, Task], dict[str, Condition]]


def task_conditions(lm: LoadedModel, task: Task) -> dict[str, Condition]:
    """Unsteered, and steered by the task's steering spec."""
    spec = task.spec.steering
    return {UNSTEERED: Condition(None, {}),
            STEERED: Condition(build_steering(lm, spec), spec.model_dump(mode="json"))}


@dataclass
class RunOptions:
    """What the command line may change about the tasks of a run."""

    samples: int | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    max_prompts: int | None = None
    overrides: Sequence[str] = ()
    batch_size: int | None = None
    method: str | None = None  # steer with the task's `methods[method]` instead of `steering`
    progress: bool = True


@dataclass
class ModelPool:
    """The generation model, shared with every task and with judges of the same name."""

    lm: LoadedModel
    judges: dict[str, LoadedModel] = field(default_factory=dict)

    def judge(self, name: str | None) -> LoadedModel:
        if name is None or name == self.lm.name:
            return self.lm
        if name not in self.judges:
            self.judges[name] = load_model(name, dtype=next(self.lm.model.parameters()).dtype)
        return self.judges[name]


def resolve_tasks(target: str, options: RunOptions) -> list[Task]:
    """The tasks of a task or suite name, with suite limits and command-line overrides applied."""
    names, limits = [target], RunOptions()
    if is_suite(target):
        suite = load_suite(target)
        names = suite.tasks
        limits = RunOptions(samples=suite.samples, max_new_tokens=suite.max_new_tokens,
                            max_prompts=suite.max_prompts)
    sets = []
    for key, value in (("samples", options.samples or limits.samples),
                       ("generation.max_new_tokens", options.max_new_tokens or limits.max_new_tokens),
                       ("seed", options.seed)):
        if value is not None:
            sets.append(f"{key}={value}")
    tasks = [load_task(name, [*sets, *options.overrides]) for name in names]
    max_prompts = options.max_prompts or limits.max_prompts
    if max_prompts:
        tasks = [Task(t.spec, t.path, t.prompts[:max_prompts]) for t in tasks]
    if options.method:
        tasks = [select_method(t, options.method) for t in tasks]
    return tasks


def task_hash(task: Task, lm: LoadedModel) -> str:
    """Identity of everything that determines a task's samples: config, prompts and model."""
    blob = json.dumps({"spec": task.spec.model_dump(mode="json"),
                       "prompts": [p.model_dump(mode="json") for p in task.prompts],
                       "model": lm.identity()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(target: str, out: Path, *, model: str | LoadedModel = "smollm2-135m",
        options: RunOptions | None = None, tasks: list[Task] | None = None,
        conditions: ConditionBuilder = task_conditions, extra: dict[str, Any] | None = None) -> RunResult:
    """Run a task or suite end to end and write run.json, samples.jsonl and the reports.

    `tasks`: the already resolved tasks of `target` (resolved here when not given).
    `conditions`: the conditions of each task (a sweep gives one per config); `extra` is
    recorded in run.json's config.

    Under `accelerate launch` (several processes) every process generates its share of the
    samples on its own device and the main process scores them and writes the run; every
    process returns the same result (see harness.distributed).
    """
    options = options or RunOptions()
    tasks = tasks if tasks is not None else resolve_tasks(target, options)
    cluster = distributed.cluster()
    device = cluster.device if cluster else "cpu"
    pool = ModelPool(model if isinstance(model, LoadedModel) else load_model(model, device=device))
    if cluster:
        cluster.place(pool.lm)
    with distributed.run_lock(out, cluster):
        return _run_locked(target, out, tasks, pool, options, conditions, extra or {}, cluster)


@dataclass
class _Plan:
    """Every sample of a task: its row, its cache key and its prompt's index, in plan order."""

    task: Task
    conditions: dict[str, Condition]
    rows: list[Row]
    keys: list[str]
    prompt_index: list[int]


def _run_locked(target: str, out: Path, tasks: list[Task], pool: ModelPool, options: RunOptions,
                build: ConditionBuilder, extra: dict[str, Any], cluster: Cluster | None = None) -> RunResult:
    started = _now()
    rank, world = (cluster.rank, cluster.world) if cluster else (0, 1)
    log = distributed.open_log(out, cluster)
    if cluster:
        cluster.barrier("reading the finished samples")  # before any rank appends to its shard
    size = options.batch_size or default_batch_size(pool.lm)
    plans, batches, timings = [], 0, {}
    for task in tasks:
        plan = _plan_task(pool, task, build(pool.lm, task))
        owners = distributed.deal(len(plan.rows), size, world, batches)
        batches += -(-len(plan.rows) // size)
        if cluster and cluster.is_main:
            distributed.report_resume(task.name, plan.keys, owners, log.records)
        start = time.perf_counter()
        _generate_task(pool, plan, [i for i, o in enumerate(owners) if o == rank], log, options,
                       progress=options.progress and rank == 0)
        timings[f"generate.{task.name}"] = round(time.perf_counter() - start, 3)
        plans.append((plan, owners))
    if cluster is None:
        return _finish(target, out, plans, log.records, pool, options, extra, started, timings)
    found = distributed.collect(cluster, [(p.task.name, p.keys, o) for p, o in plans], log.records)
    return cluster.share(
        lambda: _finish(target, out, plans, found or {}, pool, options, extra, started, timings),
        "waiting for the main process to score and write the run")


def _finish(target: str, out: Path, plans: list[tuple[_Plan, list[int]]], found: dict[str, dict[str, Any]],
            pool: ModelPool, options: RunOptions, extra: dict[str, Any], started: str,
            timings: dict[str, float]) -> RunResult:
    """Score every task's samples, compute the statistics and write the run (main process only)."""
    tasks = [plan.task for plan, _ in plans]
    records: list[SampleRecord] = []
    infos, effects, fluency, summaries = [], [], [], []
    for plan, _ in plans:
        task, conditions = plan.task, plan.conditions
        task_records = [SampleRecord.model_validate(found[k]) for k in plan.keys]
        task_records = _score_task(pool, task, conditions, task_records, options, timings)
        records += task_records
        e, f, s = analysis.task_effects(task.spec, list(conditions), task_records, task.spec.seed)
        effects += e
        fluency += f
        summaries += s
        infos.append(TaskInfo(name=task.name, kind=task.spec.kind, description=task.spec.description,
                              conditions={c: v.description for c, v in conditions.items() if c != UNSTEERED},
                              n_prompts=len(task.prompts)))
    effects = analysis.adjust(effects)
    result = RunResult(
        config={"target": target, "model": pool.lm.name,
                "tasks": {t.name: _resolved(t) for t in tasks}, **extra},
        config_hash=hashlib.sha256(json.dumps([task_hash(t, pool.lm) for t in tasks]).encode())
        .hexdigest()[:16],
        model=pool.lm.identity(), versions=_versions(), started=started, finished=_now(),
        tasks=infos, effects=effects, fluency_cost=fluency,
        headlines=analysis.headlines([t.spec for t in tasks], effects, fluency),
        per_prompt=summaries, flagged_samples=sum(1 for r in records if r.flagged),
        notes=_notes(records), timings=timings,
    )
    _write_run(out, result, records, pool.lm)
    distributed.remove_shards(out)  # samples.jsonl now holds every sample
    return result


def _notes(records: list[SampleRecord]) -> list[str]:
    """What a reader must know about excluded samples and values."""
    notes = []
    flagged = [r for r in records if r.flagged]
    if flagged:
        notes.append(f"{len(flagged)} samples flagged and excluded from statistics "
                     f"({'; '.join(sorted({r.flagged for r in flagged if r.flagged}))})")
        print(f"warning: {notes[-1]}", file=sys.stderr)
    return notes


def _resolved(task: Task) -> dict[str, Any]:
    return {**task.spec.model_dump(mode="json"), "prompts": [p.model_dump(mode="json") for p in task.prompts]}


def _plan_task(pool: ModelPool, task: Task, conditions: dict[str, Condition]) -> _Plan:
    spec, digest = task.spec, task_hash(task, pool.lm)
    plan = [(i, Row(p.text, c, s, row_seed(spec.seed, p.text, s)))
            for i, p in enumerate(task.prompts) for s in range(spec.samples) for c in conditions]
    # A condition's samples are keyed by what defines it, so a changed config is never reused.
    tag = {c: hashlib.sha256(f"{digest}{json.dumps(v.description, sort_keys=True)}".encode())
           .hexdigest()[:12] for c, v in conditions.items()}
    return _Plan(task, conditions, [row for _, row in plan],
                 [f"{tag[row.condition]}:{row.condition}:{i}:{row.sample}" for i, row in plan],
                 [i for i, _ in plan])


def _generate_task(pool: ModelPool, plan: _Plan, share: list[int], log: SampleLog, options: RunOptions,
                   progress: bool) -> None:
    """Generate the samples of `share` (indices into the plan) not yet in `log`, appending each batch."""
    todo = [i for i in share if plan.keys[i] not in log.records]
    at = {id(plan.rows[i]): i for i in todo}
    steerings = {c: v.steering for c, v in plan.conditions.items()}
    for batch in generate_rows(pool.lm, [plan.rows[i] for i in todo], steerings, plan.task.spec.generation,
                               batch_size=options.batch_size, progress=progress):
        log.append(SampleRecord(
            key=plan.keys[at[id(g.row)]], task=plan.task.name, condition=g.row.condition,
            prompt_index=plan.prompt_index[at[id(g.row)]], prompt=g.row.prompt, sample=g.row.sample,
            seed=g.row.seed, completion=g.completion, token_ids=g.token_ids, prompt_ids=g.prompt_ids,
            flagged=g.flagged,
        ).model_dump(mode="json") for g in batch)


def _score_task(pool: ModelPool, task: Task, conditions: dict[str, Condition],
                records: list[SampleRecord], options: RunOptions,
                timings: dict[str, float]) -> list[SampleRecord]:
    """Every scorer of `task` on every record; each scorer's seconds go into `timings`."""
    from tqdm.auto import tqdm

    ctx = ScoringContext(lm=pool.lm, steerings={c: v.steering for c, v in conditions.items()},
                         load_judge=pool.judge)
    samples = [Sample(r.prompt, r.completion, r.condition, tuple(r.prompt_ids), tuple(r.token_ids),
                      task.prompts[r.prompt_index].model_dump(exclude_none=True)) for r in records]
    scores: list[dict[str, float]] = [{} for _ in records]
    reasons: list[dict[str, str]] = [{} for _ in records]
    token_lps: list[list[float] | None] = [None for _ in records]
    for name, params in tqdm(task.spec.scorers.items(), desc=f"score {task.name}",
                             disable=not options.progress):
        start = time.perf_counter()
        for i, score in enumerate(make_scorer(name, params).score(samples, ctx)):
            scores[i].update({f"{name}.{m}": v for m, v in score.values.items()})
            reasons[i].update({f"{name}.{m}": r for m, r in score.reasons.items()})
            token_lps[i] = score.detail.get("token_logprobs", token_lps[i])
        timings[f"score.{task.name}.{name}"] = round(time.perf_counter() - start, 3)
    return [r.model_copy(update={"scores": s, "reasons": why, "token_logprobs": lp})
            for r, s, why, lp in zip(records, scores, reasons, token_lps, strict=True)]


def _write_run(out: Path, result: RunResult, records: list[SampleRecord], lm: LoadedModel) -> None:
    from harness.report.io import write_reports

    atomic_write_text(out / "samples.jsonl",
                      "".join(r.model_dump_json() + "\n" for r in records))
    atomic_write_text(out / "run.json", result.model_dump_json(indent=2))
    token_texts = {r.key: [lm.tokenizer.decode([t]) for t in r.token_ids] for r in records}
    write_reports(result, records, out, token_texts=token_texts)


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from harness import __version__

    return {"harness": __version__, "torch": torch.__version__, "transformers": transformers.__version__}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
