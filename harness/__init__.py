"""harness: measure what activation steering does to a language model.

Public names are imported on first use, so `import harness.schema` (task validation) never
loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from harness.version import __version__

_PUBLIC = {
    "Addition": "harness.methods.actadd",
    "GenerationSettings": "harness.schema.generation",
    "Generation": "harness.engine",
    "Intervention": "harness.steering.base",
    "LoadedModel": "harness.models",
    "RunResult": "harness.schema.results",
    "Steering": "harness.steering.base",
    "build_actadd": "harness.methods.actadd",
    "build_mean_diff": "harness.methods.mean_diff",
    "build_prompting": "harness.methods.prompting",
    "build_vector_file": "harness.methods.vector_file",
    "build_steering": "harness.api",
    "evaluate": "harness.api",
    "generate": "harness.engine",
    "load_model": "harness.models",
    "steer": "harness.api",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
