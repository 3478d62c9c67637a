"""VADER lexicon sentiment: the rule-based compound polarity in [-1, 1]."""

from __future__ import annotations

from collections.abc import Sequence

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text


class VaderParams(Spec):
    """VADER takes no parameters."""


@register_scorer
class VaderScorer(BaseScorer):
    """`compound`: VADER's normalised polarity; the pos/neu/neg proportions go in `detail`.

    Any visible text is scored (punctuation alone reads as neutral, 0); an empty or
    whitespace-only completion is unscorable."""

    name = "vader"
    metrics = ("compound",)
    Params = VaderParams

    def __init__(self, params: VaderParams):
        super().__init__(params)
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.analyzer = SentimentIntensityAnalyzer()

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        return [self._score_one(s.completion) for s in samples]

    def _score_one(self, text: str) -> Score:
        if not text.strip():
            return no_text(self.metrics, text)
        polarity = self.analyzer.polarity_scores(text)
        detail = {k: polarity[k] for k in ("pos", "neu", "neg")}
        return Score({"compound": float(polarity["compound"])}, detail=detail)
