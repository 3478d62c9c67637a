"""The one small interface every scorer implements, and what it receives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.schema.task import PromptRecord
    from harness.steering.base import Steering


@dataclass(frozen=True)
class Sample:
    """One completion as scorers see it. `meta` carries the prompt record's extra fields.

    `prompt_ids` / `completion_ids`: the tokens the generation model saw and produced (None when
    unknown, e.g. text from elsewhere: model-based scorers then tokenize the text)."""

    prompt: str
    completion: str
    condition: str
    prompt_ids: tuple[int, ...] | None = None
    completion_ids: tuple[int, ...] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


NOT_APPLICABLE = "not applicable: "  # the prefix of a not-applicable reason in samples.jsonl


@dataclass(frozen=True)
class Score:
    """A scorer's result for one sample: metric -> value, and for every NaN value why, of one of
    two kinds. `reasons`: the text cannot be scored (empty, whitespace only, nothing the scorer
    can read): the sample is degenerate, and counted so. `not_applicable`: the metric has no
    meaning for this sample whatever its text (a fact probe's margin on a neighbourhood prompt).
    samples.jsonl keeps both in one `reasons` map: a not-applicable reason starts with
    `NOT_APPLICABLE`, every other reason means unscorable."""

    values: dict[str, float]
    reasons: dict[str, str] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)

    def record_reasons(self, scorer: str) -> dict[str, str]:
        """Both kinds of reason as samples.jsonl writes them, keyed `scorer.metric`."""
        out = {f"{scorer}.{m}": why for m, why in self.reasons.items()}
        return out | {f"{scorer}.{m}": NOT_APPLICABLE + why for m, why in self.not_applicable.items()}


def is_not_applicable(reason: str) -> bool:
    """Whether a samples.jsonl reason says the metric does not apply (else: the text is unscorable)."""
    return reason.startswith(NOT_APPLICABLE)


def unscorable(metrics: Sequence[str], reason: str) -> Score:
    """A score of NaN for every metric, with the reason recorded (never 0)."""
    return Score({m: float("nan") for m in metrics}, {m: reason for m in metrics})


def no_text(metrics: Sequence[str], text: str) -> Score:
    """Unscorable for lack of text: the completion is empty or whitespace only."""
    return unscorable(metrics, "empty completion" if not text else "whitespace-only completion")


def indicator(condition: bool, value: float) -> float:
    """1.0 / 0.0 for `condition`, NaN when the `value` it was computed from is NaN (NaN in, NaN out)."""
    return float("nan") if value != value else float(condition)


@dataclass
class ScoringContext:
    """What model-based scorers may use: the generation model, each condition's steering, a judge
    loader that returns the already-loaded model when the name matches, and how prompts were
    tokenized (the shared BOS token first; the chat template)."""

    lm: LoadedModel | None = None
    steerings: Mapping[str, Steering | None] = field(default_factory=dict)
    load_judge: Callable[[str | None], LoadedModel] | None = None
    use_bos: bool = True
    chat: bool = False


class Scorer(Protocol):
    """Scores a batch of samples; `metrics` names what each `Score.values` holds. What it needs
    and which roles it can play are declared as in `BaseScorer`; the harness asks the
    declarations, never a scorer's name."""

    name: str
    metrics: tuple[str, ...]
    needs_model: bool
    fluency_metric: str | None
    token_logprobs: bool

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]: ...

    def preflight(self, ctx: ScoringContext) -> None: ...

    def topic_words(self) -> Sequence[str]: ...

    def judge_name(self) -> str: ...


class BaseScorer:
    """Defaults for scorer classes: metrics from the class, no assets to check, no model needed,
    no role beyond its metrics. A subclass declares what it needs and what it can be:

    - `needs_model`: it scores with the generation model (`ScoringContext.lm`), so `harness
      score` loads one for it;
    - `fluency_metric`: one of its metrics, in nats per token, whose steered − unsteered
      difference is the fluency cost (at most one scorer of a task may declare one);
    - `token_logprobs`: its `Score.detail["token_logprobs"]` shades the report's tokens;
    - `prompt_problem`: what a prompt record lacks for it, checked when the task file loads;
    - `topic_words`: the words of the topic it measures, for the topic diagnostics.
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    Params: ClassVar[type[BaseModel]]
    needs_model: ClassVar[bool] = False
    fluency_metric: ClassVar[str | None] = None
    token_logprobs: ClassVar[bool] = False

    def __init__(self, params: BaseModel):
        self.params = params

    @classmethod
    def metric_names(cls, params: BaseModel) -> tuple[str, ...]:
        """The metrics a scorer with these parameters reports (validation checks task metrics)."""
        return cls.metrics

    @classmethod
    def prompt_problem(cls, params: BaseModel, prompt: PromptRecord) -> str | None:
        """What `prompt` lacks to be scored with these parameters, or None (checked at load)."""
        return None

    def topic_words(self) -> Sequence[str]:
        """The words of the topic this scorer measures; none unless it measures a topic."""
        return ()

    def judge_name(self) -> str:
        """The model whose probabilities its `fluency_metric` reads."""
        return "generation model"

    def preflight(self, ctx: ScoringContext) -> None:
        """Fail now, before any generation, when an asset this scorer needs is missing."""
