"""Generate the planned samples not yet in the run folder, appending each batch as it is done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness.engine import Generation, generate_rows
from harness.pipeline.plan import TaskPlan, WorkItem
from harness.pipeline.pool import ModelPool
from harness.schema.results import SampleRecord
from harness.store import SampleLog


def sample_record(item: WorkItem, task: str, g: Generation) -> SampleRecord:
    """The record of a generated sample, its scores still to come."""
    return SampleRecord(
        key=item.key, task=task, condition=item.row.condition, prompt_index=item.prompt_index,
        prompt_id=item.prompt_id, prompt=item.row.prompt, sample=item.row.sample, seed=item.row.seed,
        completion=g.completion, token_ids=g.token_ids, prompt_ids=g.prompt_ids, flagged=g.flagged,
        ledger=[e.model_copy(update={"norm": round(e.norm, 3)}) for e in g.ledger],
    )


def generate_missing(pool: ModelPool, plan: TaskPlan, share: Sequence[int], log: SampleLog, *,
                     batch_size: int | None, progress: bool) -> int:
    """Generate the items of `share` (indices into the plan) whose identity is not in `log`; each
    identity once, even when several conditions or tasks share it. Returns how many were made."""
    todo: dict[str, WorkItem] = {}
    for i in share:
        item = plan.items[i]
        if item.key not in log.records:
            todo.setdefault(item.key, item)
    items = list(todo.values())
    steerings = {c: v.steering for c, v in plan.conditions.items()}
    done = 0
    batches = generate_rows(pool.lm, [it.row for it in items], steerings, plan.task.spec.generation,
                            batch_size=batch_size, progress=progress)
    for batch in batches:
        made = items[done : done + len(batch)]
        log.append(sample_record(item, plan.task.name, g).model_dump(mode="json")
                   for item, g in zip(made, batch, strict=True))
        done += len(batch)
    return done


def planned_records(plan: TaskPlan, found: dict[str, dict[str, Any]]) -> list[SampleRecord]:
    """The stored sample of every planned item, labelled with this plan's task, condition and
    prompt (a stored sample may have been made for another task or condition of the same identity)."""
    out = []
    for item in plan.items:
        stored = SampleRecord.model_validate(found[item.key])
        out.append(stored.model_copy(update={
            "task": plan.task.name, "condition": item.row.condition, "prompt_index": item.prompt_index,
            "prompt_id": item.prompt_id, "prompt": item.row.prompt, "sample": item.row.sample,
            "seed": item.row.seed}))
    return out
