"""harness: measure what activation steering does to a language model.

Public names are imported on first use, so `import harness.schema` (task validation) never
loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.version import __version__

_PUBLIC = {  # public name -> "module:attribute"
    "Addition": "harness.methods.actadd:Addition",
    "Evaluation": "harness.api:Evaluation",
    "GenerationSettings": "harness.schema.generation:GenerationSettings",
    "Generation": "harness.engine:Generation",
    "Intervention": "harness.steering.base:Intervention",
    "LoadedModel": "harness.models:LoadedModel",
    "RunOptions": "harness.runner:RunOptions",
    "RunResult": "harness.schema.results:RunResult",
    "Steering": "harness.steering.base:Steering",
    "SweepGrid": "harness.analyses.sweep:SweepGrid",
    "TaskSpec": "harness.schema.task:TaskSpec",
    "Tolerance": "harness.analyses.check:Tolerance",
    "baseline": "harness.analyses.baseline:make_baseline",
    "build_actadd": "harness.methods.actadd:build_actadd",
    "build_mean_diff": "harness.methods.mean_diff:build_mean_diff",
    "build_prompting": "harness.methods.prompting:build_prompting",
    "build_vector_file": "harness.methods.vector_file:build_vector_file",
    "build_steering": "harness.api:build_steering",
    "check": "harness.analyses.check:check",
    "compare": "harness.analyses.compare:compare_runs",
    "evaluate": "harness.api:evaluate",
    "generate": "harness.engine:generate",
    "load_model": "harness.models:load_model",
    "load_task": "harness.tasks:load_task",
    "read_baseline": "harness.analyses.baseline:read_baseline",
    "read_run": "harness.store:read_run",
    "steer": "harness.api:steer",
    "sweep": "harness.analyses.sweep:run_sweep",
    "task_from_spec": "harness.tasks:task_from_spec",
    "write_baseline": "harness.analyses.baseline:write_baseline",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    module, _, attribute = _PUBLIC[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
