"""Find, load and validate task and suite files; errors name the file, line, field and value.

Torch-free: `harness validate` runs on this module, the schema layer and the registry's
plugin modules only.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError, create_model

from harness import registry
from harness.errors import UserError
from harness.schema.steering import MethodSpec
from harness.schema.task import DatasetSpec, PromptFileSpec, PromptRecord, SuiteSpec, TaskSpec

BUILTIN_METRICS = ("completion.empty", "completion.tokens")
"""Metrics every sample gets without a scorer: whether the completion ended at once, its length."""

Lines = dict[tuple[str, ...], int]


def tasks_dir() -> Path:
    """Where bundled tasks live: `$HARNESS_TASKS_DIR`, the installed package's copy, or the
    repository's `tasks/` folder (an editable install)."""
    if os.environ.get("HARNESS_TASKS_DIR"):
        return Path(os.environ["HARNESS_TASKS_DIR"])
    package = Path(__file__).resolve().parent.parent
    packaged = package / "bundled_tasks"
    return packaged if packaged.is_dir() else package.parent / "tasks"


@dataclass(frozen=True)
class Task:
    """A validated task with its prompts loaded; `path` is the task file."""

    spec: TaskSpec
    path: Path
    prompts: list[PromptRecord]

    @property
    def name(self) -> str:
        return self.spec.name

    def limited(self, max_prompts: int | None) -> Task:
        """The task on its first `max_prompts` prompts."""
        return Task(self.spec, self.path, self.prompts[:max_prompts]) if max_prompts else self


def find(name: str, kind: str = "task") -> Path:
    """Resolve a task or suite name (or a path) to its YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"{kind} file not found: {path}")
        return path
    root = tasks_dir()
    folder = root / "suites" if kind == "suite" else root
    matches = sorted(p for p in folder.rglob(f"{name}.yaml") if kind == "suite" or "suites" not in p.parts)
    if not matches:
        raise UserError(f"no {kind} named '{name}' under {folder}; known: {', '.join(known(kind))}")
    return matches[0]


def known(kind: str = "task") -> list[str]:
    root = tasks_dir()
    if kind == "suite":
        return sorted(p.stem for p in (root / "suites").glob("*.yaml"))
    return sorted(p.stem for p in root.rglob("*.yaml") if "suites" not in p.relative_to(root).parts)


def is_suite(name: str) -> bool:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        data = read_yaml(path)[0] if path.is_file() else None
        return isinstance(data, dict) and "tasks" in data
    return (tasks_dir() / "suites" / f"{name}.yaml").is_file()


def read_yaml(path: Path) -> tuple[Any, Lines]:
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
    lines: Lines = {}
    _index_lines(node, (), lines)
    return data, lines


def _index_lines(node: Any, path: tuple[str, ...], lines: Lines) -> None:
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


def _line(lines: Lines, key: tuple[str, ...]) -> int:
    while key and key not in lines:
        key = key[:-1]
    return lines.get(key, 1)


def validation_message(path: Path, err: ValidationError, lines: Lines) -> str:
    """One line per schema error: file:line: field: what is wrong (found value)."""
    out = []
    for e in err.errors():
        loc = _field_path(e["loc"])
        field = ".".join(loc) or "(top level)"
        found = "" if e["type"] == "missing" else f" (found {e['input']!r})"[:120]
        out.append(f"{path}:{_line(lines, loc)}: {field}: {e['msg']}{found}")
    return "\n".join(out)


def _field_path(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The document path of an error location, without pydantic's union-member names."""
    out: list[str] = []
    names = registry.methods()
    for part in map(str, loc):
        if part.startswith(("str", "list[", "PromptRecord", "PairFileSpec", "PromptFileSpec", "DatasetSpec",
                            "PairDatasetSpec")):
            continue
        if part in names and (out[-1:] == ["steering"] or out[-2:-1] == ["methods"]):
            continue  # the discriminator tag of the steering union
        out.append(part)
    return tuple(out)


@functools.cache
def _task_model(specs: tuple[type[MethodSpec], ...]) -> type[TaskSpec]:
    union = Annotated[Union[specs], Field(discriminator="method")]  # noqa: UP007 (a runtime tuple)
    return create_model("TaskSpec", __base__=TaskSpec, steering=(union, ...),
                        methods=(dict[str, union], Field(default_factory=dict)))


def task_model() -> type[TaskSpec]:
    """`TaskSpec` whose steering is the union of every method registered now."""
    return _task_model(tuple(e.spec for e in registry.methods().values()))


def _validate(model: type[Any], path: Path, data: Any, lines: Lines) -> Any:
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


def choose_method(data: dict[str, Any], method: str, path: Path) -> dict[str, Any]:
    """The raw document steered by its alternative `methods[method]` (or its own steering of that
    method), before any `--set`, so overrides apply to the chosen method."""
    alternatives = data.get("methods") or {}
    steering = data.get("steering") or {}
    chosen = None
    if isinstance(alternatives, dict) and method in alternatives:
        chosen = {**data, "steering": copy.deepcopy(alternatives[method])}  # --set changes this one only
    elif isinstance(steering, dict) and steering.get("method") == method:
        chosen = data
    if chosen is not None and data.get("kind") == "concept":
        return _only_method(chosen, method)
    if chosen is not None:
        return chosen
    have = sorted({str(steering.get("method")) if isinstance(steering, dict) else "?",
                   *(alternatives if isinstance(alternatives, dict) else {})})
    raise UserError(f"{path}: task '{data.get('name')}' has no steering for method '{method}' "
                    f"(it has: {', '.join(have)}); add it under `methods:`")


def _only_method(data: dict[str, Any], method: str) -> dict[str, Any]:
    """A concept task runs every steering it has; with a chosen method it runs that one only (and
    its strengths), beside unsteered."""
    concept = data.get("concept")
    if isinstance(concept, dict) and isinstance(concept.get("strengths"), dict):
        strengths = {k: v for k, v in concept["strengths"].items() if k == method}
        concept = {**concept, "strengths": strengths}
    return {**data, "methods": {}, "concept": concept}


def load_task(name_or_path: str, overrides: Sequence[str] = (), method: str | None = None) -> Task:
    """Load, validate and resolve one task (prompts, pair files and vector paths included).

    `method` picks the task's alternative steering of that name (`methods:`); `overrides`
    (`--set` strings) then apply to the chosen steering.
    """
    path = find(name_or_path)
    data, lines = read_yaml(path)
    if isinstance(data, dict):
        if method:
            data = choose_method(data, method, path)
        data = apply_overrides(data, overrides)
    return _task(data, path, lines)


def task_from_spec(spec: TaskSpec | dict[str, Any], base: Path | None = None) -> Task:
    """A task built in Python (a `TaskSpec` or a mapping shaped like a task file), validated and
    resolved exactly as a file is; relative prompt, pair and vector files are read from `base`
    (default: the working directory), and errors name the task as `<task NAME>`."""
    data = spec.model_dump(mode="python", exclude_unset=True) if isinstance(spec, TaskSpec) else dict(spec)
    folder = (base or Path.cwd()).resolve()
    return _task(data, folder / f"<task {data.get('name', '?')}>", {})


def _task(data: Any, path: Path, lines: Lines) -> Task:
    """Validate a task document, check its scorers, prompts and answers, resolve its files."""
    spec: TaskSpec = _validate(task_model(), path, data, lines)
    _check_scorers(spec, path, lines)
    prompts = load_prompts(spec.prompts, path, lines)
    if spec.concept is not None:  # each prompt carries the concept its scorers rate (its own kept)
        prompts = [p if p.concept else p.model_copy(update={"concept": spec.concept.description})
                   for p in prompts]
    if not prompts:
        raise UserError(f"{path}:{lines.get(('prompts',), 1)}: prompts: no prompts")
    _check_unique(prompts, path, lines)
    _check_prompts_for_scorers(spec, prompts, path, lines)

    def resolve(steering: MethodSpec, key: tuple[str, ...]) -> MethodSpec:
        return steering.resolve(path.parent, lambda field: f"{path}:{_line(lines, (*key, *field))}")

    spec = spec.model_copy(update={
        "steering": resolve(spec.steering, ("steering",)),
        "methods": {k: resolve(v, ("methods", k)) for k, v in spec.methods.items()},
    })
    return Task(spec, path, prompts)


def with_settings(task: Task, **fields: Any) -> Task:
    """The task with typed settings changed (`samples`, `seed`, `steering`, `controls`, and
    `generation`: a mapping of the generation fields to change), validated as a task file is."""
    changed = {k: v for k, v in fields.items() if v is not None}
    if not changed:
        return task
    data = {**dict(task.spec), **changed}
    if "generation" in changed:
        data["generation"] = {**task.spec.generation.model_dump(), **changed["generation"]}
    try:
        spec = type(task.spec).model_validate(data)
    except ValidationError as err:
        raise UserError(validation_message(task.path, err, {})) from None
    return Task(spec, task.path, task.prompts)


def _check_scorers(spec: TaskSpec, path: Path, lines: Lines) -> None:
    """Every scorer is registered with valid parameters, and every metric is one it reports."""
    reported: dict[str, tuple[str, ...]] = {}
    for name, params in spec.scorers.items():
        where = f"{path}:{_line(lines, ('scorers', name))}"
        try:
            cls = registry.scorer_class(name)
        except UserError as err:
            raise UserError(f"{where}: scorers.{name}: {err}") from None
        try:
            parsed = cls.Params.model_validate(params or {})
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
                                 for e in err.errors())
            raise UserError(f"{where}: scorers.{name}: scorer '{name}': {problems}") from None
        reported[name] = tuple(cls.metric_names(parsed))
        if cls.fluency_metric and cls.fluency_metric not in reported[name]:
            raise UserError(f"{where}: scorers.{name}: scorer '{name}' declares fluency_metric "
                            f"'{cls.fluency_metric}', which is not one of its metrics "
                            f"({', '.join(reported[name])})")
    fluent = [name for name in spec.scorers if registry.scorer_class(name).fluency_metric]
    if len(fluent) > 1:
        where = f"{path}:{_line(lines, ('scorers', fluent[1]))}"
        raise UserError(f"{where}: scorers {' and '.join(fluent)} both declare a fluency metric; a task "
                        "measures its fluency cost with one")
    for metric in spec.metrics:
        where = f"{path}:{_line(lines, ('metrics', metric))}"
        scorer, _, leaf = metric.partition(".")
        if metric in BUILTIN_METRICS:
            continue
        if scorer not in reported:
            raise UserError(f"{where}: metric '{metric}' names no scorer of this task "
                            f"({', '.join(reported)})")
        if leaf not in reported[scorer]:
            raise UserError(f"{where}: metric '{metric}': scorer '{scorer}' reports "
                            f"{', '.join(f'{scorer}.{m}' for m in reported[scorer])}")


def _check_unique(prompts: list[PromptRecord], path: Path, lines: Lines) -> None:
    """Prompts pair across runs by their identity, so a task may not hold one twice."""
    seen: dict[str, int] = {}
    for i, p in enumerate(prompts):
        first = seen.setdefault(p.identity(), i)
        if first != i:
            where = f"{path}:{_line(lines, ('prompts', str(i)))}"
            raise UserError(f"{where}: prompts.{i} repeats prompts.{first} ({p.text!r}); "
                            "each prompt may appear once")


def _check_prompts_for_scorers(spec: TaskSpec, prompts: list[PromptRecord], path: Path, lines: Lines) -> None:
    """Fail at load, not after generation, when a prompt lacks what a scorer of the task needs
    (each scorer's `prompt_problem`, e.g. a fact prompt without its answers)."""
    for name, params in spec.scorers.items():
        cls = registry.scorer_class(name)
        parsed = cls.Params.model_validate(params or {})
        for i, p in enumerate(prompts):
            line = lines.get(("prompts", str(i)), lines.get(("prompts",), 1))
            try:
                problem = cls.prompt_problem(parsed, p)
            except Exception as err:  # a plugin's check that fails is named, not a bare traceback
                raise UserError(f"{path}:{line}: prompts.{i}: scorer '{name}' ({cls.__module__}) "
                                f"failed checking the prompt: {type(err).__name__}: {err}") from err
            if problem:
                raise UserError(f"{path}:{line}: prompts.{i}: {problem}; found {p.text!r}")


def fluency_metric(spec: TaskSpec) -> str | None:
    """The task's fluency metric (`scorer.metric`): the one its registered scorers declare, if
    any (loading the task refused two)."""
    known = registry.scorers()
    declared = [f"{name}.{known[name].fluency_metric}" for name in spec.scorers
                if name in known and known[name].fluency_metric]
    return declared[0] if declared else None


def load_suite(name_or_path: str) -> SuiteSpec:
    path = find(name_or_path, "suite")
    data, lines = read_yaml(path)
    return _validate(SuiteSpec, path, data, lines)


def load_prompts(prompts: list[str | PromptRecord] | PromptFileSpec | DatasetSpec, task_path: Path,
                 lines: Lines) -> list[PromptRecord]:
    if isinstance(prompts, list):
        return [p if isinstance(p, PromptRecord) else PromptRecord(text=p) for p in prompts]
    if isinstance(prompts, DatasetSpec):
        from harness.tasks.dataset_rows import dataset_prompts

        where = f"{task_path}:{lines.get(('prompts', 'dataset'), 1)}"
        return dataset_prompts(prompts, task_path.parent, where)
    from harness.tasks.prompt_files import read_prompt_file

    where = f"{task_path}:{lines.get(('prompts', 'file'), 1)}"
    records = read_prompt_file(task_path.parent / prompts.file, prompts.field, where)
    return records[: prompts.limit] if prompts.limit else records


def validate(paths: Sequence[str]) -> list[str]:
    """`harness validate`: every file's problems (empty when all are valid); suites are checked
    with the tasks they name."""
    problems = []
    for name in paths:
        try:
            if is_suite(name):
                suite = load_suite(name)
                for task in suite.tasks:
                    load_task(task)
            else:
                load_task(name)
        except UserError as err:
            problems.append(str(err))
    return problems
