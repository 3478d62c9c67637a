"""harness: measure what activation steering does to a language model."""

from harness.engine import Generation, GenerationSettings, generate
from harness.models import LoadedModel, load_model
from harness.steering.actadd import Addition, build_actadd
from harness.steering.base import Intervention, Steering

__version__ = "0.1.0"

__all__ = [
    "Addition",
    "Generation",
    "GenerationSettings",
    "Intervention",
    "LoadedModel",
    "Steering",
    "build_actadd",
    "generate",
    "load_model",
]
