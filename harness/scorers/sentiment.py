"""Learned sentiment: logistic regression on MiniLM embeddings, trained on labelled tweets."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text
from harness.scorers.embeddings import EMBEDDING_DIM, EMBEDDING_MODEL, embed, minilm_dir
from harness.scorers.sentiment_training import WEIGHTS_PATH


class SentimentParams(Spec):
    """`batch_size`: completions embedded per forward pass of the encoder."""

    batch_size: int = Field(64, ge=1)


@register_scorer
class SentimentScorer(BaseScorer):
    """`p_positive`: P(positive) from the committed classifier (`data/sentiment_lr.json`,
    rebuilt by `scripts/train_sentiment.py`) applied to the completion's embedding. Any visible
    text has an embedding and is scored ("!!!" included); an empty or whitespace-only completion
    is unscorable."""

    name = "sentiment"
    metrics = ("p_positive",)
    Params = SentimentParams

    def __init__(self, params: SentimentParams):
        super().__init__(params)
        weights = json.loads(WEIGHTS_PATH.read_text())
        if weights["embedding_model"] != EMBEDDING_MODEL or len(weights["coef"]) != EMBEDDING_DIM:
            raise ValueError(f"{WEIGHTS_PATH} was not trained on {EMBEDDING_MODEL} embeddings")
        self.coef = np.asarray(weights["coef"], dtype=np.float64)
        self.intercept = float(weights["intercept"])

    def preflight(self, ctx: ScoringContext) -> None:
        minilm_dir()

    def p_positive(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) for each text."""
        logits = embed(texts, self.params.batch_size).astype(np.float64) @ self.coef
        return 1.0 / (1.0 + np.exp(-(logits + self.intercept)))

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        texts = [s.completion for s in samples]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        probs = dict(zip(todo, self.p_positive([texts[i] for i in todo]), strict=True))
        return [
            Score({"p_positive": float(probs[i])}) if i in probs
            else no_text(self.metrics, texts[i])
            for i in range(len(texts))
        ]
