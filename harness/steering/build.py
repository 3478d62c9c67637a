"""Turn a steering spec from a task file into the vectors of a condition."""

from __future__ import annotations

from harness.config import ActAddSpec, SteeringSpec
from harness.models import LoadedModel
from harness.steering.actadd import Addition, build_actadd
from harness.steering.base import Steering


def build_steering(lm: LoadedModel, spec: SteeringSpec) -> Steering:
    """The steering of `spec` on the loaded model (method dispatch)."""
    if isinstance(spec, ActAddSpec):
        adds = [Addition(a.layer, a.coeff, a.text) for a in spec.resolved_additions()]
        return build_actadd(lm, adds, use_bos=spec.use_bos, point=spec.point)
    raise TypeError(f"no builder for steering spec {type(spec).__name__}")
