"""Typed schemas of task, suite, steering and scorer specs (validated with pydantic)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.engine import GenerationSettings
from harness.models import HookPoint

Direction = Literal["increase", "decrease"]
TaskKind = Literal["topic", "sentiment", "fact"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AdditionSpec(_Spec):
    """One ActAdd term: `coeff` × activations of `text` at `layer`."""

    layer: int = Field(ge=0)
    coeff: float = Field(allow_inf_nan=False)
    text: str = Field(min_length=1)


class ActAddSpec(_Spec):
    """ActAdd: `coeff`·(positive − negative) at `layer`, or explicit `additions`."""

    method: Literal["actadd"] = "actadd"
    layer: int | None = Field(None, ge=0)
    coeff: float | None = Field(None, allow_inf_nan=False)
    positive: str | None = Field(None, min_length=1)
    negative: str | None = Field(None, min_length=1)
    additions: list[AdditionSpec] = Field(default_factory=list)
    use_bos: bool = True
    point: HookPoint = "resid"

    @model_validator(mode="after")
    def _pair_or_additions(self) -> ActAddSpec:
        pair = [self.layer, self.coeff, self.positive, self.negative]
        if self.additions and any(v is not None for v in pair):
            raise ValueError("give either layer/coeff/positive/negative or additions, not both")
        if not self.additions and any(v is None for v in pair):
            raise ValueError("needs layer, coeff, positive and negative (or a list of additions)")
        return self

    def resolved_additions(self) -> list[AdditionSpec]:
        if self.additions:
            return list(self.additions)
        assert self.layer is not None and self.coeff is not None
        assert self.positive is not None and self.negative is not None
        return [
            AdditionSpec(layer=self.layer, coeff=self.coeff, text=self.positive),
            AdditionSpec(layer=self.layer, coeff=-self.coeff, text=self.negative),
        ]


SteeringSpec = ActAddSpec
METHODS = ("actadd",)


class PromptFileSpec(_Spec):
    """Prompts from a JSONL or CSV file next to the task file."""

    file: str
    field: str = "text"
    limit: int | None = Field(None, ge=1)


class PromptRecord(_Spec):
    """A prompt and optional fields some scorers need (fact probes: target, original, group)."""

    text: str = Field(min_length=1)
    target: str | None = None
    original: str | None = None
    group: Literal["probe", "neighbourhood"] | None = None


class TaskSpec(_Spec):
    """A task file: prompts, the behaviour to move, how to steer, how to score."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: TaskKind
    description: str = ""
    version: int = 1
    prompts: list[str | PromptRecord] | PromptFileSpec
    steering: SteeringSpec
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    samples: int = Field(4, ge=1)
    seed: int = 0
    scorers: dict[str, dict[str, Any]]
    metrics: dict[str, Direction]
    headline: str
    min_effect: float | None = None
    max_fluency_cost: float | None = None

    @field_validator("scorers")
    @classmethod
    def _known_scorers(cls, scorers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from harness.scorers import scorer_class

        for name, params in scorers.items():
            try:
                scorer_class(name).Params.model_validate(params or {})
            except ValidationError as err:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'params'}: {e['msg']}"
                                     for e in err.errors())
                raise ValueError(f"scorer '{name}': {problems}") from None
        return scorers

    @model_validator(mode="after")
    def _headline_is_a_metric(self) -> TaskSpec:
        if self.headline not in self.metrics:
            raise ValueError(f"headline '{self.headline}' must be one of metrics: {list(self.metrics)}")
        for metric in self.metrics:
            if metric.split(".")[0] not in self.scorers:
                raise ValueError(f"metric '{metric}' names no scorer of this task ({list(self.scorers)})")
        return self


class SuiteSpec(_Spec):
    """A list of tasks, optionally run smaller (fewer prompts, samples or tokens)."""

    name: str
    description: str = ""
    tasks: list[str] = Field(min_length=1)
    max_prompts: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
