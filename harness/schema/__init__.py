"""The schema layer: every spec a user writes and every record the harness writes.

Pydantic and the standard library only, so task files validate without torch.
"""

from harness.schema.generation import GenerationSettings
from harness.schema.spec import ALPHA, FLUENCY_METRIC, STEERED, UNSTEERED, Record, Spec
from harness.schema.steering import ContrastPair, HookPoint, MethodSpec, PairFileSpec
from harness.schema.task import (
    ControlsSpec,
    Direction,
    PromptFileSpec,
    PromptRecord,
    SuiteSpec,
    TaskKind,
    TaskSpec,
)

__all__ = [
    "ALPHA",
    "FLUENCY_METRIC",
    "STEERED",
    "UNSTEERED",
    "ContrastPair",
    "ControlsSpec",
    "Direction",
    "GenerationSettings",
    "HookPoint",
    "MethodSpec",
    "PairFileSpec",
    "PromptFileSpec",
    "PromptRecord",
    "Record",
    "Spec",
    "SuiteSpec",
    "TaskKind",
    "TaskSpec",
]
