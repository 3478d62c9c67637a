"""Task and suite files: prompts, the behaviour to move, how to steer and score (pydantic only).

`TaskSpec.steering` is typed as the base `MethodSpec` here; `harness.taskfile` validates task
files against a subclass whose steering is the union of every registered method.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.schema.generation import GenerationSettings
from harness.schema.spec import Spec
from harness.schema.steering import MethodSpec

Direction = Literal["increase", "decrease"]
TaskKind = Literal["topic", "sentiment", "fact", "concept"]


class PromptFileSpec(Spec):
    """Prompts from a JSONL or CSV file next to the task file."""

    file: str
    field: str = "text"
    limit: int | None = Field(None, ge=1)


class DatasetSpec(Spec):
    """Rows of a dataset through `datasets`: a local `save_to_disk` folder, a parquet / arrow /
    JSON / CSV file (relative to the task file), or a hub id in the local cache (online only when
    the user is). `field` holds the prompt text; `target_field`, `original_field` and
    `group_field` fill a prompt record's answers; `seed` shuffles before `limit` is taken."""

    dataset: str = Field(min_length=1)
    split: str = "train"
    config: str | None = None
    field: str = "text"
    target_field: str | None = None
    original_field: str | None = None
    group_field: str | None = None
    limit: int | None = Field(None, ge=1)
    seed: int | None = None


class PromptRecord(Spec):
    """A prompt and optional fields some scorers need (fact probes: target, original, group;
    concept scorers: the concept, which a concept task fills in from its description)."""

    text: str = Field(min_length=1)
    target: str | None = None
    original: str | None = None
    group: Literal["probe", "neighbourhood"] | None = None
    concept: str | None = None

    def identity(self) -> str:
        """A stable id of the record (its content, not its position in the task): samples and
        per-prompt values of two runs pair by it."""
        blob = json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class ControlsSpec(Spec):
    """Matched controls of every steered condition: `random` seeded random vectors with the same
    norm per layer (and per row of an ActAdd vector), and the `negated` vector. They share the
    unsteered samples and seeds; the run reports each metric's specific effect (steered − mean of
    the random controls) and the direction check (steered vs negated)."""

    random: int = Field(0, ge=0)
    negated: bool = False
    seed: int = 0

    @property
    def active(self) -> bool:
        return self.random > 0 or self.negated


class ConceptSpec(Spec):
    """A concept task's concept and its held-out strength selection (AxBench). `description`: the
    concept as the judge and the similarity scorer read it. `strengths`: per steering of the task
    (its `steering`, named by its method, or a `methods:` name), the coefficients to choose from,
    in `unit` (raw, norm or kl, as `harness sweep --coeff-unit`); a steering not listed runs at its
    own coefficient. `split_seed` seeds the halves of the prompts: one to choose on, one to report."""

    description: str = Field(min_length=1)
    strengths: dict[str, list[float]] = Field(default_factory=dict)
    unit: Literal["raw", "norm", "kl"] = "raw"
    split_seed: int = 0

    @field_validator("strengths")
    @classmethod
    def _some_strengths(cls, strengths: dict[str, list[float]]) -> dict[str, list[float]]:
        for name, coeffs in strengths.items():
            if not coeffs or len(set(coeffs)) != len(coeffs):
                raise ValueError(f"{name}: needs distinct coefficients, found {coeffs}")
        return strengths


class TaskSpec(Spec):
    """A task file: prompts, the behaviour to move, how to steer, how to score."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: TaskKind
    description: str = ""
    version: int = 1
    prompts: list[str | PromptRecord] | PromptFileSpec | DatasetSpec
    steering: MethodSpec
    methods: dict[str, MethodSpec] = Field(default_factory=dict)  # alternatives, see --method
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    samples: int = Field(4, ge=1)
    seed: int = 0
    scorers: dict[str, dict[str, Any] | None]
    metrics: dict[str, Direction]
    headline: str
    min_effect: float | None = None
    max_fluency_cost: float | None = None
    controls: ControlsSpec = Field(default_factory=ControlsSpec)
    concept: ConceptSpec | None = None  # kind concept only

    @model_validator(mode="after")
    def _headline_is_a_metric(self) -> TaskSpec:
        if self.headline not in self.metrics:
            raise ValueError(f"headline '{self.headline}' must be one of metrics: {list(self.metrics)}")
        return self

    @model_validator(mode="after")
    def _concept_of_a_concept_task(self) -> TaskSpec:
        if (self.kind == "concept") != (self.concept is not None):
            raise ValueError("a task of kind concept needs `concept:` (its description), and only it has one")
        steerings = {self.steering.method, *self.methods}
        if self.concept and (unknown := sorted(set(self.concept.strengths) - steerings)):
            raise ValueError(f"concept.strengths names no steering of the task: {unknown} "
                             f"(it has {sorted(steerings)})")
        return self


class SuiteSpec(Spec):
    """A list of tasks, optionally run smaller (fewer prompts, samples or tokens)."""

    name: str
    description: str = ""
    tasks: list[str] = Field(min_length=1)
    max_prompts: int | None = Field(None, ge=1)
    samples: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    controls: ControlsSpec | None = None  # matched controls for every task of the suite
