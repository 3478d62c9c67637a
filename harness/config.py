"""Typed schemas of task, suite, steering and scorer specs (validated with pydantic)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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

    method: Literal["actadd"]
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


class ContrastPair(_Spec):
    """One (positive, negative) pair of texts whose activation difference is averaged."""

    positive: str = Field(min_length=1)
    negative: str = Field(min_length=1)


class PairFileSpec(_Spec):
    """Contrast pairs from a JSONL file next to the task file, one object per line."""

    file: str
    positive_field: str = "positive"
    negative_field: str = "negative"
    limit: int | None = Field(None, ge=1)


class MeanDiffSpec(_Spec):
    """Mean difference of activations over contrast pairs (CAA; AxBench's DiffMean).

    Each text's activations at `layer` are reduced to one vector: the mean over its
    tokens (BOS excluded) with `token: mean`, or its last token with `token: last`.
    `coeff` × mean(positive − negative) is added at every position of the prompt and of
    the generated tokens, except the BOS position (the attention sink).
    """

    method: Literal["mean_diff"]
    layer: int = Field(ge=0)
    coeff: float = Field(allow_inf_nan=False)
    pairs: list[ContrastPair] | PairFileSpec
    token: Literal["mean", "last"] = "mean"
    use_bos: bool = True
    point: HookPoint = "resid"

    @field_validator("pairs")
    @classmethod
    def _some_pairs(cls, pairs: list[ContrastPair] | PairFileSpec) -> list[ContrastPair] | PairFileSpec:
        if isinstance(pairs, list) and not pairs:
            raise ValueError("needs at least one contrast pair")
        return pairs


class PromptingSpec(_Spec):
    """The prompting baseline: no vector; `instruction` is put before every prompt.

    `chat: false` puts the instruction and a newline before the prompt as plain text;
    `chat: true` renders it as the system message of the tokenizer's chat template and
    lets the assistant's turn begin with the prompt. Scorers see only the completion.
    """

    method: Literal["prompting"]
    instruction: str = Field(min_length=1)
    chat: bool = False


class VectorFileSpec(_Spec):
    """A vector trained elsewhere: `.pt`, `.safetensors` or `.npy`, one vector per layer.

    The file holds a `[n_layers, d]` tensor, a `[d]` tensor (the vector of `layer`), or a
    mapping from layer index to `[d]` tensor. `coeff` × the vector of `layer` is added at
    every position (BOS excluded), like `mean_diff`.
    """

    method: Literal["vector_file"]
    path: str = Field(min_length=1)
    layer: int = Field(ge=0)
    coeff: float = Field(1.0, allow_inf_nan=False)
    point: HookPoint = "resid"


SteeringSpec = Annotated[ActAddSpec | MeanDiffSpec | PromptingSpec | VectorFileSpec,
                         Field(discriminator="method")]
METHODS = ("actadd", "mean_diff", "prompting", "vector_file")


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
    methods: dict[str, SteeringSpec] = Field(default_factory=dict)  # alternatives, see --method
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
