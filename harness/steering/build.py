"""Turn a steering spec from a task file into the vectors of a condition."""

from __future__ import annotations

from pathlib import Path

from harness.config import ActAddSpec, MeanDiffSpec, PromptingSpec, SteeringSpec, VectorFileSpec
from harness.models import LoadedModel, hook_module
from harness.steering.actadd import Addition, build_actadd
from harness.steering.base import Steering
from harness.steering.mean_diff import build_mean_diff
from harness.steering.prompting import build_prompting
from harness.steering.vector_file import build_vector_file


def build_steering(lm: LoadedModel, spec: SteeringSpec) -> Steering:
    """The steering of `spec` on the loaded model (method dispatch)."""
    if isinstance(spec, ActAddSpec):
        adds = [Addition(a.layer, a.coeff, a.text) for a in spec.resolved_additions()]
        return build_actadd(lm, adds, use_bos=spec.use_bos, point=spec.point)
    if isinstance(spec, PromptingSpec):
        return build_prompting(lm, spec.instruction, spec.chat)
    hook_module(lm.model, spec.layer, spec.point)  # a layer out of range fails with the layer count
    if isinstance(spec, MeanDiffSpec):
        assert isinstance(spec.pairs, list), "pair files are loaded with the task"
        return build_mean_diff(lm, [(p.positive, p.negative) for p in spec.pairs], spec.layer,
                               spec.coeff, token=spec.token, point=spec.point, use_bos=spec.use_bos)
    if isinstance(spec, VectorFileSpec):
        return build_vector_file(lm, Path(spec.path), spec.layer, spec.coeff, spec.point)
    raise TypeError(f"no builder for steering spec {type(spec).__name__}")
