"""One registry of steering methods and scorers: a name maps to what defines it.

A method is one module that declares its spec class (a `MethodSpec`) and its builder and calls
`register_method`; a scorer is one module whose class `register_scorer` records. Every such
module, the built-in ones included, is a plugin: an entry point of the `harness.plugins` group
names it (the built-ins are declared in the harness's own pyproject.toml), and modules that are
not installed are named by `--plugin MODULE` or the `HARNESS_PLUGINS` environment variable
(comma-separated module names). Plugin modules are imported on first use of the registry, and
import torch and other heavy libraries inside their functions, so listing and validating stay
fast and torch-free.
"""

from __future__ import annotations

import importlib
import os
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

PLUGIN_GROUP = "harness.plugins"
PLUGIN_ENV = "HARNESS_PLUGINS"


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
_extra_modules: list[str] = []


def register_method(spec: type[MethodSpec], build: Builder) -> None:
    """Register a steering method under the literal value of its spec's `method` field."""
    (name,) = spec.model_fields["method"].annotation.__args__
    if spec.sweep_axes and (missing := [a for a in spec.sweep_axes if a not in spec.model_fields]):
        raise UserError(f"method '{name}' ({spec.__module__}): sweep_axes names {', '.join(missing)}, not "
                        f"field(s) of {spec.__name__} (its fields: {', '.join(spec.model_fields)})")
    _METHODS[name] = MethodEntry(name, spec, build)


def register_scorer(cls: Any) -> Any:
    """Register a scorer class (usable as a decorator); its `name` is the registry key."""
    _SCORERS[cls.name] = cls
    return cls


def add_plugins(modules: list[str]) -> None:
    """Name plugin modules that are not installed (what `--plugin MODULE` does); imported with
    the installed ones on first use of the registry, or at once if it is already in use."""
    _extra_modules.extend(modules)
    if _loaded:
        for module in modules:
            _import_plugin(module, "--plugin")


def _import_plugin(module: str, source: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"plugin module '{module}' (from {source}) cannot be imported: {err}") from None


def _load() -> None:
    """Import every plugin module once: the installed entry points of `harness.plugins` (the
    built-ins among them), then the modules named in `HARNESS_PLUGINS` and by `--plugin`."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    points = entry_points(group=PLUGIN_GROUP)
    if not any(p.value.startswith("harness.") for p in points):
        raise UserError("the harness's own methods and scorers are not registered: install the package "
                        "(`pip install -e .` or `make setup`) so its `harness.plugins` entry points exist")
    for point in points:
        point.load()
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGIN_ENV, "").split(","))):
        _import_plugin(module, PLUGIN_ENV)
    for module in _extra_modules:
        _import_plugin(module, "--plugin")


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
