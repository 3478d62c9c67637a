"""Run a task or suite end to end: plan → generate → score → analyse → write (`harness.pipeline`)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import distributed
from harness.distributed import Cluster
from harness.engine import SEMANTICS_VERSION, default_batch_size
from harness.errors import UserError
from harness.models import LoadedModel, load_model
from harness.pipeline.analyse import TaskSamples, analyse
from harness.pipeline.diagnose import diagnose
from harness.pipeline.generate import generate_missing, planned_records
from harness.pipeline.plan import ConditionBuilder, TaskPlan, plan_task, task_conditions, with_controls
from harness.pipeline.pool import ModelPool
from harness.pipeline.score import preflight, score_task
from harness.pipeline.write import notes, write_run
from harness.schema.results import RunResult, SampleRecord, TaskInfo
from harness.schema.spec import UNSTEERED
from harness.schema.task import ControlsSpec
from harness.scorers import Scorer
from harness.tasks import Task, is_suite, load_suite, load_task, with_settings


@dataclass
class RunOptions:
    """What the command line (or a notebook) may change about the tasks of a run; applied as typed
    values after the task file is validated (`overrides` are `--set` strings, applied before)."""

    samples: int | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    max_prompts: int | None = None
    overrides: Sequence[str] = ()
    batch_size: int | None = None
    method: str | None = None  # steer with the task's `methods[method]` instead of `steering`
    controls: str | ControlsSpec | None = None  # `random=R,negated` or a spec: controls of every task
    diagnose: bool = False  # off-target cost, capability retention (also on whenever controls are)
    progress: bool = True


def resolve_tasks(target: str, options: RunOptions) -> list[Task]:
    """The tasks of a task or suite name, with `--set` overrides (which apply to the steering
    `--method` chose), then suite limits and typed options applied."""
    names, limits, controls = [target], RunOptions(), None
    if is_suite(target):
        suite = load_suite(target)
        names = suite.tasks
        limits = RunOptions(samples=suite.samples, max_new_tokens=suite.max_new_tokens,
                            max_prompts=suite.max_prompts)
        controls = suite.controls
    tasks = [load_task(name, options.overrides, method=options.method) for name in names]
    return [configure(t, options, limits, controls) for t in tasks]


def configure(task: Task, options: RunOptions, limits: RunOptions | None = None,
              controls: ControlsSpec | None = None) -> Task:
    """A validated task with the typed options (else a suite's `limits` and `controls`) applied."""
    limits = limits or RunOptions()
    asked = options.controls
    controls = controls_spec(asked) if isinstance(asked, str) else asked or controls
    max_new_tokens = options.max_new_tokens or limits.max_new_tokens
    generation = {"max_new_tokens": max_new_tokens} if max_new_tokens else None
    task = with_settings(task, samples=options.samples or limits.samples, seed=options.seed,
                         generation=generation, controls=controls)
    return task.limited(options.max_prompts or limits.max_prompts)


def controls_spec(text: str) -> ControlsSpec:
    """`--controls random=3,negated[,seed=1]` as a `ControlsSpec`."""
    fields: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        if key == "negated" and not sep:
            fields["negated"] = True
        elif key in ("random", "seed") and sep and value.isdigit():
            fields[key] = int(value)
        else:
            raise UserError(f"bad --controls {text!r}: expected random=R, negated and seed=S, "
                            "comma-separated, e.g. random=3,negated")
    return ControlsSpec(**fields)


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
class _Context:
    """What finishing a run needs besides its plans and samples."""

    target: str
    out: Path
    pool: ModelPool
    scorers: dict[str, dict[str, Scorer]]
    options: RunOptions
    extra: dict[str, Any]
    started: str
    timings: dict[str, float]


def _run_locked(target: str, out: Path, tasks: list[Task], pool: ModelPool, options: RunOptions,
                build: ConditionBuilder, extra: dict[str, Any], cluster: Cluster | None = None) -> RunResult:
    rank, world = (cluster.rank, cluster.world) if cluster else (0, 1)
    chat = [t.name for t in tasks if t.spec.generation.chat]
    if chat and not getattr(pool.lm.tokenizer, "chat_template", None):
        raise UserError(f"model '{pool.lm.name}' has no chat template, and task(s) {', '.join(chat)} set "
                        "generation.chat: true (use a chat model, or --set generation.chat=false)")
    scorers = preflight(pool, tasks) if rank == 0 else {}  # a missing asset fails before generating
    ctx = _Context(target, out, pool, scorers, options, extra, _now(), {})
    log = distributed.open_log(out, cluster)
    if cluster:
        cluster.barrier("reading the finished samples")  # before any rank appends to its shard
    size = options.batch_size or default_batch_size(pool.lm)
    plans: list[tuple[TaskPlan, list[int]]] = []
    batches = 0
    for task in tasks:
        plan = plan_task(pool.lm, task, with_controls(build(pool.lm, task), task.spec.controls))
        owners = distributed.deal(len(plan.items), size, world, batches)
        batches += -(-len(plan.items) // size)
        if cluster and cluster.is_main:
            distributed.report_resume(task.name, plan.keys, owners, log.records)
        start = time.perf_counter()
        generate_missing(pool, plan, [i for i, o in enumerate(owners) if o == rank], log,
                         batch_size=options.batch_size, progress=options.progress and rank == 0)
        ctx.timings[f"generate.{task.name}"] = round(time.perf_counter() - start, 3)
        plans.append((plan, owners))
    if cluster is None:
        return _finish([p for p, _ in plans], log.records, ctx)
    found = distributed.collect(cluster, [(p.task.name, p.keys, o) for p, o in plans], log.records)
    return cluster.share(
        lambda: _finish([p for p, _ in plans], found or {}, ctx),
        "waiting for the main process to score and write the run")


def _finish(plans: list[TaskPlan], found: dict[str, dict[str, Any]], ctx: _Context) -> RunResult:
    """Score every task's samples, compute the statistics and write the run (main process only)."""
    records: list[SampleRecord] = []
    scored = []
    for plan in plans:
        task = plan.task
        task_records = score_task(ctx.pool, task, plan.conditions, planned_records(plan, found),
                                  ctx.scorers[task.name], progress=ctx.options.progress, timings=ctx.timings)
        records += task_records
        controls = {c: (v.control_of, v.control) for c, v in plan.conditions.items() if v.control_of}
        scored.append(TaskSamples(task.spec, [p.identity() for p in task.prompts], list(plan.conditions),
                                  controls, task_records))
    numbers = analyse(scored)
    wanted = ctx.options.diagnose or any(p.task.spec.controls.active for p in plans)
    off, cap, topic = diagnose(ctx.pool, plans, progress=ctx.options.progress, timings=ctx.timings) \
        if wanted else ([], [], [])
    tasks = [plan.task for plan in plans]
    infos = [TaskInfo(name=t.name, kind=t.spec.kind, description=t.spec.description,
                      conditions={c: v.description for c, v in p.conditions.items() if c != UNSTEERED},
                      n_prompts=len(t.prompts), prompt_ids=s.prompt_ids)
             for t, p, s in zip(tasks, plans, scored, strict=True)]
    result = RunResult(
        config={"target": ctx.target, "model": ctx.pool.lm.name,
                "tasks": {t.name: _resolved(t, "steering" in ctx.extra) for t in tasks}, **ctx.extra},
        config_hash=hashlib.sha256("\n".join(k for p in plans for k in p.keys).encode()).hexdigest()[:16],
        model=ctx.pool.lm.identity(), versions=_versions(), started=ctx.started, finished=_now(), tasks=infos,
        effects=numbers.effects, fluency_cost=numbers.fluency, headlines=numbers.headlines,
        per_prompt=numbers.summaries, flagged_samples=sum(1 for r in records if r.flagged),
        counts=numbers.counts, ledger=numbers.ledger, controls=numbers.controls, off_target=off,
        capability=cap, topic_ratio=topic, notes=notes(records), timings=ctx.timings,
    )
    write_run(ctx.out, result, records, ctx.pool.lm)
    distributed.remove_shards(ctx.out)  # samples.jsonl now holds every sample
    return result


def _resolved(task: Task, replaced: bool = False) -> dict[str, Any]:
    """The task as run; `replaced`: its steering was replaced by the run's (`config.steering`), so
    the file's `steering` and `methods`, which steered nothing, are not recorded as if they had."""
    spec = task.spec.model_dump(mode="json", exclude={"steering", "methods"} if replaced else None)
    if replaced:
        spec["steering"] = "replaced: see config.steering"
    return {**spec, "prompts": [p.model_dump(mode="json") for p in task.prompts]}


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from harness.version import __version__

    return {"harness": __version__, "engine_semantics": str(SEMANTICS_VERSION), "torch": torch.__version__,
            "transformers": transformers.__version__}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
