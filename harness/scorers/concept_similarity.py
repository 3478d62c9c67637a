"""Judge-free concept score: cosine similarity of the completion's MiniLM embedding to the
concept description's."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text
from harness.scorers.embeddings import embed, minilm_dir


class ConceptSimilarityParams(Spec):
    """`concept`: the concept compared with (else each prompt's `concept` field, as a concept task
    fills it); `batch_size`: texts embedded per forward pass of the encoder."""

    concept: str | None = Field(None, min_length=1)
    batch_size: int = Field(64, ge=1)


@register_scorer
class ConceptSimilarityScorer(BaseScorer):
    """`similarity`: cosine of the unit MiniLM embeddings of the completion and of the concept
    (-1 to 1; unrelated English text is typically 0-0.2). An empty or whitespace-only completion is
    unscorable; a sample without a concept is not applicable. Both NaN with the reason, never 0."""

    name = "concept_similarity"
    metrics = ("similarity",)
    Params = ConceptSimilarityParams

    def preflight(self, ctx: ScoringContext) -> None:
        minilm_dir()

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        concepts = [self.params.concept or s.meta.get("concept") for s in samples]
        todo = [i for i, s in enumerate(samples) if s.completion.strip() and concepts[i]]
        unique = sorted({concepts[i] for i in todo})
        vectors = embed([samples[i].completion for i in todo] + unique, self.params.batch_size)
        concept_vec = dict(zip(unique, vectors[len(todo):], strict=True))
        sims = {i: float(vectors[k] @ concept_vec[concepts[i]]) for k, i in enumerate(todo)}
        out = []
        for i, s in enumerate(samples):
            if not s.completion.strip():
                out.append(no_text(self.metrics, s.completion))
            elif i not in sims:
                out.append(Score({"similarity": float("nan")}, not_applicable={
                    "similarity": "no concept (set the scorer's `concept` or the prompt's `concept` field)"}))
            else:
                out.append(Score({"similarity": sims[i]}))
        return out
