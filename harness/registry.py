"""One registry of steering methods and scorers: a name maps to what defines it.

A method is one module that declares its spec class (a `MethodSpec`) and its builder and calls
`register_method`; a scorer is one module whose class `register_scorer` records. Built-in
modules are imported on first use; other packages add theirs through the `harness.plugins`
entry-point group (each entry point names a module that registers on import). Plugin modules
import torch and other heavy libraries inside their functions, so listing and validating stay
fast and torch-free.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from harness.errors import UserError
from harness.schema.steering import MethodSpec

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.schema.generation import GenerationSettings
    from harness.steering.base import Steering

    Builder = Callable[[LoadedModel, MethodSpec, GenerationSettings], Steering]

BUILTIN_METHODS = ("actadd", "mean_diff", "prompting", "vector_file")
BUILTIN_SCORERS = ("keywords", "sentiment", "vader", "hf_classifier", "perplexity", "fact", "diversity",
                   "evaluate_module")
PLUGIN_GROUP = "harness.plugins"


@dataclass(frozen=True)
class MethodEntry:
    """A registered steering method: its spec class and the function that builds its vectors."""

    name: str
    spec: type[MethodSpec]
    build: Builder

    @property
    def summary(self) -> str:
        return (self.spec.__doc__ or "").strip().splitlines()[0] if self.spec.__doc__ else ""


_METHODS: dict[str, MethodEntry] = {}
_SCORERS: dict[str, Any] = {}
_loaded = False


def register_method(spec: type[MethodSpec], build: Builder) -> None:
    """Register a steering method under the literal value of its spec's `method` field."""
    (name,) = spec.model_fields["method"].annotation.__args__
    _METHODS[name] = MethodEntry(name, spec, build)


def register_scorer(cls: Any) -> Any:
    """Register a scorer class (usable as a decorator); its `name` is the registry key."""
    _SCORERS[cls.name] = cls
    return cls


def _load() -> None:
    """Import the built-in method and scorer modules and every plugin module, once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for name in BUILTIN_METHODS:
        importlib.import_module(f"harness.methods.{name}")
    for name in BUILTIN_SCORERS:
        importlib.import_module(f"harness.scorers.{name}")
    for point in entry_points(group=PLUGIN_GROUP):
        point.load()


def methods() -> dict[str, MethodEntry]:
    """Every registered steering method by name."""
    _load()
    return dict(_METHODS)


def method(name: str) -> MethodEntry:
    """The method registered as `name`; an unknown name lists the known ones."""
    known = methods()
    if name not in known:
        raise UserError(f"unknown steering method '{name}': known methods are {', '.join(sorted(known))}")
    return known[name]


def scorers() -> dict[str, Any]:
    """Every registered scorer class by name."""
    _load()
    return dict(_SCORERS)


def scorer_class(name: str) -> Any:
    """The scorer class registered as `name`; an unknown name lists the known ones."""
    known = scorers()
    if name not in known:
        raise UserError(f"unknown scorer '{name}': known scorers are {', '.join(sorted(known))}")
    return known[name]
