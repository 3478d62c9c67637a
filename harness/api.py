"""The Python entry points: steer any Hugging Face model in a `with` block, build a steering from a
spec, and evaluate a task in one call."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import registry
from harness.errors import UserError
from harness.models import DEFAULT_MODEL, LoadedModel
from harness.schema.generation import GenerationSettings
from harness.schema.results import RunResult
from harness.schema.steering import MethodSpec
from harness.steering.base import Steering
from harness.steering.session import SteeringSession
from harness.vectors import VectorSet


def build_steering(lm: LoadedModel, spec: MethodSpec | Mapping[str, Any],
                   settings: GenerationSettings | None = None) -> Steering:
    """The steering of a method spec (an object, or a mapping like a task file's `steering:`)."""
    if not isinstance(spec, MethodSpec):
        spec = registry.method(str(spec.get("method"))).spec.model_validate(dict(spec))
    return registry.method(spec.method).build(lm, spec, settings or GenerationSettings())


@contextmanager
def steer(model: nn.Module | LoadedModel, steering: Steering, *, has_bos: bool = True
          ) -> Iterator[SteeringSession]:
    """Steer every forward pass of `model` inside the block, e.g. `model.generate(...)`.

    Works on any Hugging Face causal LM and any of our steerings, with or without the KV cache,
    on padded batches: positions are read from each call's attention mask. `has_bos`: the inputs
    begin with a BOS token, which every-position vectors leave alone. The hooks are removed on
    exit and on error; the session's `ledgers` say what the steering changed in each sequence.
    A prompting steering has no vectors: put its `preamble` before your prompt yourself.
    """
    net = model.model if isinstance(model, LoadedModel) else model
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


def evaluate(task: str | Path, model: str | LoadedModel = DEFAULT_MODEL, *, out: str | Path | None = None,
             **options: Any) -> RunResult:
    """Run a task or suite (a bundled name or a YAML path) and return its results.

    `options` are `harness.runner.RunOptions` fields (samples, max_new_tokens, max_prompts,
    overrides, method, seed, batch_size, progress). With `out`, the run is written there, so it
    can be reported, checked or resumed like any other; without, it runs in a temporary folder
    that is removed before returning (the result holds every number).
    """
    from harness.runner import RunOptions, run

    if out is not None:
        return run(str(task), Path(out), model=model, options=RunOptions(**options))
    with tempfile.TemporaryDirectory(prefix="harness-run-") as folder:
        return run(str(task), Path(folder), model=model, options=RunOptions(**options))
