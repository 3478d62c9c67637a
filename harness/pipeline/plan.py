"""Plan a task: its conditions, and one work item per (prompt, sample, condition) with a stable
identity, so a run can be resumed, sharded over processes and never reuse a stale sample."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import registry
from harness.engine import SEMANTICS_VERSION, Row, row_seed
from harness.errors import UserError
from harness.models import LoadedModel
from harness.schema.spec import STEERED, UNSTEERED
from harness.schema.task import ControlsSpec
from harness.steering.base import Steering
from harness.tasks import Task


@dataclass(frozen=True)
class Condition:
    """One condition of a task: its steering (None = unsteered), how run.json describes it, and
    what defines it for sample identity (None for unsteered). A matched control names the
    condition it controls (`control_of`) and its kind ("random" or "negated")."""

    steering: Steering | None
    description: dict[str, Any]
    identity: dict[str, Any] | None
    control_of: str | None = None
    control: str | None = None


ConditionBuilder = Callable[[LoadedModel, Task], dict[str, Condition]]


def task_conditions(lm: LoadedModel, task: Task) -> dict[str, Condition]:
    """Unsteered, and steered by the task's steering spec (built by its registered method)."""
    spec = task.spec.steering
    steering = registry.method(spec.method).build(lm, spec, task.spec.generation)
    return {UNSTEERED: Condition(None, {}, None),
            STEERED: Condition(steering, spec.model_dump(mode="json"), spec.identity())}


def with_controls(conditions: dict[str, Condition], spec: ControlsSpec) -> dict[str, Condition]:
    """`conditions` plus the matched controls of every steered condition:
    `NAME · random R` (seeded random vectors with the same norm per layer and row) and
    `NAME · negated`. They are ordinary conditions, so they share the unsteered samples and seeds.

    A null steering (coefficient 0) gets none: every control of it would be unsteered too. A
    control that cannot differ from its condition (any control of prompting, which has no vector;
    the negation of an ablation or of a clamp to 0, the same steering) is refused with a UserError
    saying why when no steered condition could have its controls; beside conditions that can (the
    vector methods of a concept task beside its prompting), that condition gets none and a warning
    names it."""
    if not spec.active:
        return conditions
    out = dict(conditions)
    refused: dict[str, str] = {}
    for name, cond in conditions.items():
        if cond.steering is None or cond.steering.is_null() or cond.control:
            continue
        try:
            out |= _controls_of(name, cond, cond.steering, spec)
        except ValueError as err:
            refused[name] = str(err)
    if refused and len(out) == len(conditions):
        name, err = next(iter(refused.items()))
        raise UserError(f"condition '{name}': a matched control that would not differ from it is "
                        f"refused: {err}; ask only for controls that can differ (random ones for an "
                        "ablation, none for prompting)")
    if refused:
        warnings.warn(f"no matched controls for {', '.join(refused)}: "
                      f"{'; '.join(dict.fromkeys(refused.values()))}", UserWarning, stacklevel=2)
    return out


def _controls_of(name: str, cond: Condition, steering: Steering, spec: ControlsSpec) -> dict[str, Condition]:
    """The matched controls of one steered condition; ValueError when one cannot differ from it."""
    out: dict[str, Condition] = {}
    for r in range(1, spec.random + 1):
        seed = int(hashlib.sha256(json.dumps([spec.seed, cond.identity, r], sort_keys=True).encode())
                   .hexdigest()[:12], 16)
        ident = {"control": "random", "of": cond.identity, "index": r, "seed": spec.seed}
        out[f"{name} · random {r}"] = Condition(steering.randomized(seed),
                                                {"control": "random", "of": name, "index": r}, ident,
                                                name, "random")
    if spec.negated:
        out[f"{name} · negated"] = Condition(
            steering.negated(), {"control": "negated", "of": name},
            {"control": "negated", "of": cond.identity}, name, "negated")
    return out


@dataclass(frozen=True)
class WorkItem:
    """One sample to have: its identity, the engine row that produces it, and its prompt."""

    key: str
    row: Row
    prompt_index: int
    prompt_id: str


@dataclass(frozen=True)
class TaskPlan:
    """Every sample of a task, in plan order (unsteered and steered rows of a prompt side by side)."""

    task: Task
    conditions: dict[str, Condition]
    items: list[WorkItem]

    @property
    def keys(self) -> list[str]:
        return [item.key for item in self.items]


def model_identity(lm: LoadedModel) -> dict[str, Any]:
    """What of the model determines a sample: its content hash (every file but documentation, or
    its config, tensors and tokenizer: `LoadedModel.sha256`) and dtype, never a name or a path."""
    return {"weights": lm.sha256, "dtype": lm.identity()["dtype"]}


def sample_key(model: dict[str, Any], prompt: str, condition: dict[str, Any] | None,
               generation: dict[str, Any], seed: int, sample: int) -> str:
    """The identity of one sample: a hash of everything that determines its tokens (model weights
    and dtype, prompt text, steering, generation settings, seed and the engine's semantics version).
    Scorers, metrics, names and file paths are not part of it: changing a scorer rescores."""
    blob = json.dumps({"model": model, "prompt": prompt, "steering": condition, "generation": generation,
                       "seed": seed, "sample": sample, "semantics": SEMANTICS_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def plan_task(lm: LoadedModel, task: Task, conditions: dict[str, Condition]) -> TaskPlan:
    spec = task.spec
    model = model_identity(lm)
    generation = spec.generation.model_dump(mode="json")
    items = []
    for i, prompt in enumerate(task.prompts):
        for s in range(spec.samples):
            seed = row_seed(spec.seed, prompt.text, s)
            for name, cond in conditions.items():
                key = sample_key(model, prompt.text, cond.identity, generation, seed, s)
                items.append(WorkItem(key, Row(prompt.text, name, s, seed), i, prompt.identity()))
    return TaskPlan(task, conditions, items)
