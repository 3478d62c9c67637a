"""harness: measure what activation steering does to a language model."""

from harness.engine import Generation, GenerationSettings, generate
from harness.models import LoadedModel, load_model
from harness.steering.actadd import Addition, build_actadd
from harness.steering.base import Intervention, Steering
from harness.steering.mean_diff import build_mean_diff
from harness.steering.prompting import build_prompting
from harness.steering.vector_file import build_vector_file

__version__ = "0.1.0"

__all__ = [
    "Addition",
    "Generation",
    "GenerationSettings",
    "Intervention",
    "LoadedModel",
    "Steering",
    "build_actadd",
    "build_mean_diff",
    "build_prompting",
    "build_vector_file",
    "generate",
    "load_model",
]
