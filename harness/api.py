"""The Python entry points: steer any Hugging Face model in a `with` block, build a steering from a
spec, and evaluate a task in one call."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from harness import registry
from harness.analyses.heldout import HeldOut, run_concepts
from harness.errors import UserError
from harness.models import DEFAULT_MODEL, LoadedModel
from harness.pipeline.plan import Condition, ConditionBuilder, task_conditions
from harness.runner import RunOptions, configure, resolve_tasks, run
from harness.schema.generation import GenerationSettings
from harness.schema.results import RunResult, SampleRecord
from harness.schema.spec import STEERED, UNSTEERED
from harness.schema.steering import HookPoint, MethodSpec
from harness.schema.task import TaskSpec
from harness.steering.base import Steering, placed
from harness.steering.session import SteeringSession
from harness.store import read_run
from harness.tasks import Task, task_from_spec, with_settings
from harness.vectors import VectorSet


def build_steering(lm: LoadedModel, spec: MethodSpec | Mapping[str, Any],
                   settings: GenerationSettings | None = None) -> Steering:
    """The steering of a method spec (an object, or a mapping like a task file's `steering:`)."""
    if not isinstance(spec, MethodSpec):
        spec = registry.method(str(spec.get("method"))).spec.model_validate(dict(spec))
    return registry.method(spec.method).build(lm, spec, settings or GenerationSettings())


@contextmanager
def steer(model: nn.Module | LoadedModel, steering: Steering | torch.Tensor, *, layer: int | None = None,
          coeff: float | None = None, point: HookPoint | None = None, has_bos: bool = True
          ) -> Iterator[SteeringSession]:
    """Steer every forward pass of `model` inside the block, e.g. `model.generate(...)`:
    `with steer(lm, love):` for a `Steering`, `with steer(lm, vector, layer=6, coeff=4):` to add
    `coeff` × a `[d]` vector to the output of decoder block `layer` at every position after BOS.

    Works on any Hugging Face causal LM and any of our steerings, with or without the KV cache,
    on padded batches: positions are read from each call's attention mask. `has_bos`: the inputs
    begin with a BOS token, which every-position vectors leave alone. The hooks are removed on
    exit and on error; the session's `ledgers` say what the steering changed in each sequence.
    A prompting steering has no vectors: put its `preamble` before your prompt yourself.
    """
    net = model.model if isinstance(model, LoadedModel) else model
    if isinstance(steering, torch.Tensor):
        if layer is None:
            raise UserError("a steering vector needs its layer: steer(model, vector, layer=L, coeff=c)")
        steering = Steering((placed(layer, steering.detach().float(), 1.0 if coeff is None else coeff,
                                    point or "resid"),))
    elif layer is not None or coeff is not None or point is not None:
        raise UserError("layer, coeff and point go with a vector; a Steering carries its own "
                        "(scale it with steering.scaled(c))")
    session = SteeringSession(net, steering, has_bos=has_bos)
    with session.attached():
        yield session


EVERY_POSITION_TOOLS = {"gguf-control-vector": "llama.cpp", "lm-eval-steered": "lm-evaluation-harness"}
"""Formats whose tool adds a vector at every position of every forward pass, the BOS included."""


def steering_to_vectors(steering: Steering, format_: str = "harness", *, use_bos: bool = True) -> VectorSet:
    """The `[d]` add vectors of a steering as a `VectorSet` (to write with `harness.vectors`).

    ActAdd's `[n, d]` prefix vectors and clamp / ablate operators have no file form shared by the
    peer tools, so they are refused. For a format of `EVERY_POSITION_TOOLS` the tool will add the
    vectors at every position, the BOS included, so a steering it would not reproduce is refused
    too: one acting on the prompt's or the generated tokens only, and one that leaves the BOS
    alone (`steer_bos: false`, our default) when the prompts begin with one (`use_bos`). Export a
    steering with `steer_bos: true` and give the tool prompts that begin with BOS, as ours do
    (lm-eval: `add_bos_token=True`); reading the file back, `steer_bos: true` reproduces it."""
    tool = EVERY_POSITION_TOOLS.get(format_)
    vectors: dict[int, torch.Tensor] = {}
    points = set()
    for iv in steering.interventions:
        if iv.positions == "prefix" or iv.operator != "add":
            raise UserError(f"a {iv.positions} / {iv.operator} intervention at layer {iv.layer} cannot be "
                            "exported: control-vector files hold [d] vectors added at every position")
        if tool and iv.positions != "all":
            raise UserError(f"{tool} adds its vectors at every position; the intervention at layer "
                            f"{iv.layer} acts on the {iv.positions} tokens only, so {tool}'s tokens would "
                            "differ from ours")
        if tool and use_bos and not iv.steer_bos:
            raise UserError(f"{tool} adds its vectors at every position, the BOS included; this steering "
                            f"leaves the BOS alone (steer_bos: false), so {tool}'s tokens would differ from "
                            "ours: export it with steering.steer_bos=true (and give the tool prompts that "
                            "begin with BOS, lm-eval: add_bos_token=True), or with generation.use_bos=false")
        vectors[iv.layer] = vectors.get(iv.layer, 0) + iv.vector.float().cpu()
        points.add(iv.point)
    if not vectors or len(points) > 1:
        raise UserError("nothing to export: the steering has no vectors (or mixes hook points)")
    return VectorSet(vectors=vectors, format=format_, point=points.pop())


class Evaluation(RunResult):
    """What `evaluate` returns: every number of the run (run.json's fields) and its samples."""

    samples: list[SampleRecord] = Field(default_factory=list, exclude=True)
    heldout: HeldOut | None = Field(default=None, exclude=True)  # concept tasks: heldout.json's table


TaskLike = str | Path | Task | TaskSpec | Mapping[str, Any]
SteeringLike = Steering | MethodSpec | Mapping[str, Any] | torch.Tensor | str | Path


def evaluate(task: TaskLike, model: str | LoadedModel = DEFAULT_MODEL, *,
             steering: SteeringLike | None = None, layer: int | None = None, coeff: float | None = None,
             options: RunOptions | None = None, out: str | Path | None = None) -> Evaluation:
    """Run a task and return its numbers and samples.

    `task`: a bundled task or suite name, a YAML path, a `Task`, or a `TaskSpec` (or a mapping
    shaped like a task file) built in Python. `steering` replaces the task's steering: a method
    spec (or mapping like a task file's `steering:`), a `Steering` built in Python, or a vector
    (a `[d]` tensor, or a vector file of any tool) with `layer` and `coeff`. `options` are typed
    `RunOptions`, applied after the task is validated. With `out` the run is written there, to be
    reported, checked or resumed like any other; without, in a temporary folder removed before
    returning. Concept tasks without `steering` run as `harness run` runs them: every method at
    every strength, each chosen on half the instructions and reported on the other (`heldout`).
    """
    options = options or RunOptions()
    if not isinstance(task, str | Path) and (options.overrides or options.method):
        raise UserError("RunOptions overrides and method apply to a task file or name as it is read; "
                        "for a task object, change it (its steering, or steering=) instead")
    if isinstance(task, str | Path):
        target, tasks = str(task), resolve_tasks(str(task), options)
    else:
        built = task if isinstance(task, Task) else task_from_spec(task)
        target, tasks = built.name, [configure(built, options)]
    conditions, extra = task_conditions, {}
    given = _steering(steering, layer, coeff)
    if isinstance(given, MethodSpec):
        tasks = [with_settings(t, steering=given) for t in tasks]
    elif given is not None:
        identity = {"python steering": steering_hash(given)}
        conditions, extra = _conditions_of(given, identity), {"steering": identity}

    def go(folder: Path) -> Evaluation:
        if given is None and any(t.spec.concept for t in tasks):  # as `harness run`: held-out strengths
            result, held = run_concepts(target, folder, model, options, tasks)
            return _evaluation(result, folder, held)
        return _evaluation(run(target, folder, model=model, options=options, tasks=tasks,
                               conditions=conditions, extra=extra), folder)

    if out is not None:
        return go(Path(out))
    with tempfile.TemporaryDirectory(prefix="harness-run-") as folder:
        return go(Path(folder))


def _evaluation(result: RunResult, folder: Path, heldout: HeldOut | None = None) -> Evaluation:
    return Evaluation(**dict(result), samples=read_run(folder)[1], heldout=heldout)


def _steering(steering: SteeringLike | None, layer: int | None, coeff: float | None
              ) -> Steering | MethodSpec | None:
    """A resolved method spec (files read), or a `Steering` object, from what `evaluate` got."""
    if isinstance(steering, torch.Tensor):
        if layer is None:
            raise UserError("a steering vector needs its layer: evaluate(..., steering=v, layer=L, coeff=c)")
        return Steering((placed(layer, steering.detach().float().cpu(), 1.0 if coeff is None else coeff),))
    if isinstance(steering, str | Path):
        steering = {"method": "vector_file", "path": str(steering), "layer": layer, "coeff": coeff}
    elif layer is not None or coeff is not None:
        raise UserError("layer and coeff go with a vector (a tensor or a vector file); a spec or a Steering "
                        "carries its own")
    if steering is None or isinstance(steering, Steering):
        return steering
    spec = steering if isinstance(steering, MethodSpec) else (
        registry.method(str(steering.get("method"))).spec.model_validate(dict(steering)))
    return spec.resolve(Path.cwd(), lambda field: f"steering.{'.'.join(field)}")


def steering_hash(steering: Steering) -> str:
    """The content hash of a steering built in Python: every intervention's place, operator and
    vector bytes, and its preamble (what its samples are keyed by, as a spec is by its fields)."""
    digest = hashlib.sha256(steering.preamble.encode())
    for iv in steering.interventions:
        digest.update(json.dumps([iv.layer, iv.point, iv.positions, iv.operator, iv.value, iv.steer_bos,
                                  list(iv.vector.shape)]).encode())
        digest.update(iv.vector.detach().float().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def _conditions_of(steering: Steering, identity: dict[str, Any]) -> ConditionBuilder:
    # run.json says where the vectors act and how large they are, not only their hash
    where = [{"layer": iv.layer, "point": iv.point, "positions": iv.positions, "operator": iv.operator,
              "norm": float(iv.vector.float().norm()), "value": iv.value} for iv in steering.interventions]

    def build(lm: LoadedModel, task: Task) -> dict[str, Condition]:
        return {UNSTEERED: Condition(None, {}, None),
                STEERED: Condition(steering, {"method": "python steering", **identity,
                                              "interventions": where}, identity)}
    return build
