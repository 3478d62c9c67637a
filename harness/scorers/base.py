"""The one small interface every scorer implements, and what it receives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.models import LoadedModel
from harness.steering.base import Steering


@dataclass(frozen=True)
class Sample:
    """One completion as scorers see it. `meta` carries the prompt record's extra fields."""

    prompt: str
    completion: str
    condition: str
    prompt_ids: tuple[int, ...] = ()
    completion_ids: tuple[int, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Score:
    """A scorer's result for one sample: metric -> value, NaN with a reason when unscorable."""

    values: dict[str, float]
    reasons: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)


def unscorable(metrics: Sequence[str], reason: str) -> Score:
    """A score of NaN for every metric, with the reason recorded (never 0)."""
    return Score({m: float("nan") for m in metrics}, {m: reason for m in metrics})


@dataclass
class ScoringContext:
    """What model-based scorers may use: the generation model, each condition's steering,
    and a judge loader that returns the already-loaded model when the name matches."""

    lm: LoadedModel | None = None
    steerings: Mapping[str, Steering | None] = field(default_factory=dict)
    load_judge: Callable[[str | None], LoadedModel] | None = None


class Scorer(Protocol):
    """Scores a batch of samples; `metrics` names what each `Score.values` holds."""

    name: str
    metrics: tuple[str, ...]

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]: ...
