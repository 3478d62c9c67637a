"""Keyword scorer edges found by attacking it (issue 21, "attack the harness"): words that end
or start with punctuation, empty words, and Unicode forms. Counts are checked by hand."""

import unicodedata

import pytest
from pydantic import ValidationError

from harness.scorers.keywords import KeywordParams, KeywordScorer


def _hits(words: list[str], text: str) -> int:
    return KeywordScorer(KeywordParams(words=words)).hits(text)


@pytest.mark.parametrize(("word", "text", "expected"), [
    ("c++", "I love c++ and C++.", 2),  # \b after "+" never matched: 0 before the fix
    ("C#", "I write C# daily, c#!", 2),
    ("U.S.", "The U.S. is big", 1),
    ("wedding", "WEDDING weddings Wedding's weddingcake", 3),  # still whole words only
])
def test_keywords_ending_in_punctuation_match_as_whole_words(word, text, expected):
    assert _hits([word], text) == expected


def test_keyword_matches_the_decomposed_unicode_form_of_the_same_word():
    text = unicodedata.normalize("NFD", "the café is nice")
    assert _hits(["café"], text) == 1  # 0 before: e + combining accent is not é


@pytest.mark.parametrize("word", ["", " ", " love"])
def test_empty_or_padded_keyword_is_refused_not_counted_between_words(word):
    # "" used to match at every word boundary: 200 per 100 words of "hello world foo"
    with pytest.raises(ValidationError, match="empty or has surrounding whitespace"):
        KeywordParams(words=[word])
