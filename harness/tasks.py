"""Find and load task and suite files; errors name the file, line, field and value."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from harness.config import (
    METHODS,
    MeanDiffSpec,
    PairFileSpec,
    PromptFileSpec,
    PromptRecord,
    SteeringSpec,
    SuiteSpec,
    TaskSpec,
    VectorFileSpec,
)
from harness.errors import UserError

TASKS_DIR = Path(os.environ.get("HARNESS_TASKS_DIR", Path(__file__).resolve().parent.parent / "tasks"))


@dataclass(frozen=True)
class Task:
    """A validated task with its prompts loaded."""

    spec: TaskSpec
    path: Path
    prompts: list[PromptRecord]

    @property
    def name(self) -> str:
        return self.spec.name


def find(name: str, kind: str = "task") -> Path:
    """Resolve a task or suite name (or a path) to its YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"{kind} file not found: {path}")
        return path
    folder = TASKS_DIR / "suites" if kind == "suite" else TASKS_DIR
    matches = sorted(p for p in folder.rglob(f"{name}.yaml") if kind == "suite" or "suites" not in p.parts)
    if not matches:
        raise UserError(f"no {kind} named '{name}' under {folder}; known: {', '.join(known(kind))}")
    return matches[0]


def known(kind: str = "task") -> list[str]:
    if kind == "suite":
        return sorted(p.stem for p in (TASKS_DIR / "suites").glob("*.yaml"))
    return sorted(p.stem for p in TASKS_DIR.rglob("*.yaml") if "suites" not in p.parts)


def is_suite(name: str) -> bool:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        data = read_yaml(path)[0] if path.is_file() else None
        return isinstance(data, dict) and "tasks" in data
    return (TASKS_DIR / "suites" / f"{name}.yaml").is_file()


def read_yaml(path: Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    """The parsed document and the line (1-based) of every key path in it."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    lines: dict[tuple[str, ...], int] = {}
    _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: Any, path: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    if node is None:
        return
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            lines[sub] = key.start_mark.line + 1
            _index_lines(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, str(i)), lines)


def validation_message(path: Path, err: ValidationError, lines: dict[tuple[str, ...], int]) -> str:
    """One line per schema error: file:line: field: what is wrong (found value)."""
    out = []
    for e in err.errors():
        loc = _field_path(e["loc"])
        key = loc
        while key and key not in lines:
            key = key[:-1]
        line = lines.get(key, 1)
        field = ".".join(loc) or "(top level)"
        found = "" if e["type"] == "missing" else f" (found {e['input']!r})"[:120]
        out.append(f"{path}:{line}: {field}: {e['msg']}{found}")
    return "\n".join(out)


def _field_path(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The document path of an error location, without pydantic's union-member names."""
    out: list[str] = []
    for part in map(str, loc):
        if part.startswith(("str", "list[", "PromptRecord", "PairFileSpec")):
            continue
        if part in METHODS and (out[-1:] == ["steering"] or out[-2:-1] == ["methods"]):
            continue  # the discriminator tag of the steering union
        out.append(part)
    return tuple(out)


def _validate(model: type[Any], path: Path, data: Any, lines: dict[tuple[str, ...], int]) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"{path}:1: expected a mapping of fields, found {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError(validation_message(path, err, lines)) from None


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply `--set a.b=value` overrides (value parsed as YAML) to a raw task document."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"bad --set {item!r}: expected FIELD.PATH=VALUE, e.g. steering.layer=4")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"bad --set {item!r}: '{part}' is not a mapping")
        node[leaf] = yaml.safe_load(raw)
    return data


def load_task(name_or_path: str, overrides: Sequence[str] = ()) -> Task:
    """Load, validate and resolve one task (prompts included)."""
    path = find(name_or_path)
    data, lines = read_yaml(path)
    if isinstance(data, dict):
        data = apply_overrides(data, overrides)
    spec: TaskSpec = _validate(TaskSpec, path, data, lines)
    prompts = load_prompts(spec.prompts, path, lines)
    if not prompts:
        raise UserError(f"{path}:{lines.get(('prompts',), 1)}: prompts: no prompts")
    _check_fact_answers(spec, prompts, path, lines)
    spec = spec.model_copy(update={
        "steering": _resolve_files(spec.steering, path, lines, ("steering",)),
        "methods": {k: _resolve_files(v, path, lines, ("methods", k)) for k, v in spec.methods.items()},
    })
    return Task(spec, path, prompts)


def select_method(task: Task, method: str) -> Task:
    """The task steered by its alternative `methods[method]` (or its own steering of that method)."""
    spec = task.spec
    if method in spec.methods:
        chosen = spec.methods[method]
    elif spec.steering.method == method:
        chosen = spec.steering
    else:
        have = sorted({spec.steering.method, *spec.methods})
        raise UserError(f"{task.path}: task '{spec.name}' has no steering for method '{method}' "
                        f"(it has: {', '.join(have)}); add it under `methods:`")
    return Task(spec.model_copy(update={"steering": chosen}), task.path, task.prompts)


def _resolve_files(spec: SteeringSpec, task_path: Path, lines: dict[tuple[str, ...], int],
                   key: tuple[str, ...]) -> SteeringSpec:
    """Load a mean_diff pair file into the spec and make a vector file's path absolute,
    both relative to the task file, so the resolved spec in run.json is self-contained."""
    if isinstance(spec, MeanDiffSpec) and isinstance(spec.pairs, PairFileSpec):
        from harness.prompt_files import read_pair_file

        files = spec.pairs
        where = f"{task_path}:{lines.get((*key, 'pairs', 'file'), 1)}"
        pairs = read_pair_file(task_path.parent / files.file, files.positive_field,
                               files.negative_field, where)
        return spec.model_copy(update={"pairs": pairs[: files.limit] if files.limit else pairs})
    if isinstance(spec, VectorFileSpec):
        where = f"{task_path}:{lines.get((*key, 'path'), 1)}"
        file = (task_path.parent / spec.path).resolve()
        if not file.is_file():
            raise UserError(f"{where}: steering vector file not found: {file}")
        return spec.model_copy(update={"path": str(file)})
    return spec


def _check_fact_answers(spec: TaskSpec, prompts: list[PromptRecord], path: Path,
                        lines: dict[tuple[str, ...], int]) -> None:
    """Fail at load, not after generation, when a fact prompt has no answers to compare."""
    if "fact" not in spec.scorers:
        return
    defaults = spec.scorers["fact"] or {}
    for i, p in enumerate(prompts):
        if not (p.target or defaults.get("target")) or not (p.original or defaults.get("original")):
            line = lines.get(("prompts", str(i)), lines.get(("prompts",), 1))
            raise UserError(f"{path}:{line}: prompts.{i}: the fact scorer needs `target` and "
                            f"`original` answers (on the prompt or in scorers.fact); found {p.text!r}")


def load_suite(name_or_path: str) -> SuiteSpec:
    path = find(name_or_path, "suite")
    data, lines = read_yaml(path)
    return _validate(SuiteSpec, path, data, lines)


def load_prompts(
    prompts: list[str | PromptRecord] | PromptFileSpec, task_path: Path, lines: dict[tuple[str, ...], int]
) -> list[PromptRecord]:
    if isinstance(prompts, list):
        return [p if isinstance(p, PromptRecord) else PromptRecord(text=p) for p in prompts]
    from harness.prompt_files import read_prompt_file

    where = f"{task_path}:{lines.get(('prompts', 'file'), 1)}"
    records = read_prompt_file(task_path.parent / prompts.file, prompts.field, where)
    return records[: prompts.limit] if prompts.limit else records
