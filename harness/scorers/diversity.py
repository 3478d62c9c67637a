"""Distinct-n of a completion: share of unique word n-grams, low for degenerate repetition."""

from __future__ import annotations

import re
from collections.abc import Sequence

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text, unscorable

_WORD = re.compile(r"\w+|[^\w\s]")


class DiversityParams(Spec):
    """Distinct-n takes no parameters."""


def distinct_n(tokens: Sequence[str], n: int) -> float:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


@register_scorer
class DiversityScorer(BaseScorer):
    """`distinct1`, `distinct2`: unique / total word unigrams and bigrams (lower-cased); a
    punctuation mark is a word, so "!!!!" is scored (1/4, 1/3). Unscorable: a completion with
    fewer than two words, which has no bigram."""

    name = "diversity"
    metrics = ("distinct1", "distinct2")
    Params = DiversityParams

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        return [self._score_one(s.completion) for s in samples]

    def _score_one(self, text: str) -> Score:
        tokens = _WORD.findall(text.lower())
        if not tokens:
            return no_text(self.metrics, text)
        if len(tokens) < 2:
            return unscorable(self.metrics, "fewer than two words")
        return Score({"distinct1": distinct_n(tokens, 1), "distinct2": distinct_n(tokens, 2)})
