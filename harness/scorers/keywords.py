"""Topic-word rate: hits per 100 words and whether a completion mentions the topic at all."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from pydantic import Field, model_validator

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text, unscorable

_WORD = re.compile(r"[A-Za-z0-9']+")


class KeywordParams(Spec):
    """`words` are whole words matched case-insensitively with common inflections
    (s, es, ed, d, ing, er, ers), not inside a longer word ("c++" and "U.S." match too);
    `patterns` are extra regular expressions, matched as written (add `\\b` yourself for whole
    words; `!` counts exclamation marks). Words and texts are compared in Unicode NFC form."""

    words: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _something_to_count(self) -> KeywordParams:
        if not self.words and not self.patterns:
            raise ValueError("needs at least one of `words` or `patterns`")
        for w in self.words:
            if not w.strip() or w != w.strip():
                raise ValueError(f"word {w!r} is empty or has surrounding whitespace (it would match "
                                 "between words)")
        for p in self.patterns:
            try:
                re.compile(p)
            except re.error as err:
                raise ValueError(f"pattern {p!r} is not a valid regular expression: {err}") from None
        return self


@register_scorer
class KeywordScorer(BaseScorer):
    """`rate`: topic words (and pattern matches) per 100 words of the completion; `any`: 1 if any
    occurs.

    What the scorer reads decides what it cannot score: a word list reads words, so a text without
    a word ("...", "!!!", whitespace) is *unscorable*; `patterns` can match any character, so with
    patterns only a text without a visible character is. A scored text without words counts as one
    word: "!!!!!!!!" under `patterns: ["!"]` is 800 per 100 words, as "Wow!!!!!!!!" is.
    """

    name = "keywords"
    metrics = ("rate", "any")
    Params = KeywordParams

    def topic_words(self) -> Sequence[str]:
        return self.params.words

    def __init__(self, params: KeywordParams):
        super().__init__(params)
        alternatives = [rf"(?<!\w){re.escape(_nfc(w))}(?:s|es|ed|d|ing|er|ers)?(?!\w)" for w in params.words]
        alternatives += [f"(?:{p})" for p in params.patterns]
        self.pattern = re.compile("|".join(alternatives), re.IGNORECASE)

    def hits(self, text: str) -> int:
        return len(self.pattern.findall(_nfc(text)))

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        return [self._score_one(s.completion) for s in samples]

    def _score_one(self, text: str) -> Score:
        if not text.strip():
            return no_text(self.metrics, text)
        n_words = len(_WORD.findall(text))
        if n_words == 0 and not self.params.patterns:
            return unscorable(self.metrics, "no words")
        hits = self.hits(text)
        return Score({"rate": 100.0 * hits / max(n_words, 1), "any": float(hits > 0)})


def _nfc(text: str) -> str:
    """Unicode NFC form: "café" typed as e + combining accent matches "café"."""
    return unicodedata.normalize("NFC", text)
