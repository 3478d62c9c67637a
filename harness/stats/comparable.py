"""Whether two runs (or a run and a baseline) measure the same thing: `check` and `compare`
refuse to compare when they do not (exit 2), for the same reasons."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MODEL_KEYS = ("name", "sha256", "dtype")
MEASUREMENT_KEYS = ("generation", "scorers", "headline")


def measurement(task_config: Mapping[str, Any], with_prompts: bool = True) -> dict[str, Any]:
    """The parts of a task's config that define the measurement. The steering is what is under
    test, so it may differ; so may seeds and sample counts (their noise is what the statistical
    verdict absorbs)."""
    keys = (*MEASUREMENT_KEYS, "prompts") if with_prompts else MEASUREMENT_KEYS
    return {k: task_config.get(k) for k in keys}


def incomparable_reasons(model_a: Mapping[str, Any], tasks_a: Mapping[str, Mapping[str, Any]],
                         model_b: Mapping[str, Any], tasks_b: Mapping[str, Mapping[str, Any]], *,
                         labels: tuple[str, str] = ("run", "baseline"), same_tasks: bool = True,
                         same_prompts: bool = True) -> list[str]:
    """Why `a` and `b` cannot be compared (empty when they can): a different model, weights or
    dtype, different tasks, or a task whose generation settings, scorers, headline (or prompts)
    differ. `tasks_*` map a task name to its resolved config (or its `measurement`)."""
    a, b = labels
    reasons = []
    for key in MODEL_KEYS:
        if model_a.get(key) != model_b.get(key):
            reasons.append(f"different model {key}: {a} {model_a.get(key)}, {b} {model_b.get(key)}")
    if same_tasks and set(tasks_a) != set(tasks_b):
        reasons.append(f"different tasks: {a} has {sorted(tasks_a)}, {b} {sorted(tasks_b)}")
    for name in sorted(set(tasks_a) & set(tasks_b)):
        now, base = measurement(tasks_a[name], same_prompts), measurement(tasks_b[name], same_prompts)
        changed = [k for k in base if now.get(k) != base[k]]
        if changed:
            reasons.append(f"task {name}: config differs in {', '.join(changed)}")
    return reasons
