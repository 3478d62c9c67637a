"""Sentiment scorers: VADER against the library, the learned classifier on clear cases and
its reproducibility, and the HF classifier against a tiny local model's own logits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.errors import UserError
from harness.scorers import make_scorer
from harness.scorers.base import Sample, ScoringContext
from harness.scorers.embeddings import EMBEDDING_DIM, sha256, tweets_csv
from harness.scorers.sentiment_training import WEIGHTS_PATH, train

CTX = ScoringContext()
POSITIVE = [
    "I absolutely love this, it made my whole day wonderful!",
    "What a fantastic, beautiful morning. I feel so happy.",
    "Thank you so much, you are the best friend anyone could ask for.",
    "The concert was amazing and the band was brilliant.",
    "I'm thrilled with my new job, everyone is so kind and welcoming.",
    "This is the most delicious meal I have ever had. Perfect!",
    "Great news: we won the championship! So proud of the team.",
    "She has a warm smile and a generous heart; I adore her.",
]
NEGATIVE = [
    "I hate this, it ruined my entire day.",
    "What a miserable, awful morning. I feel terrible.",
    "You are the worst, I can't stand being around you.",
    "The concert was a disaster and the band was dreadful.",
    "I'm furious about losing my job, everyone there was cruel.",
    "This is the most disgusting meal I have ever had. Horrible!",
    "Terrible news: we lost everything and the team is a disgrace.",
    "He is rude, selfish and cold; I despise him.",
]


def _score(scorer, texts):
    return scorer.score([Sample("p", t, "u") for t in texts], CTX)


def _auc(pos: list[float], neg: list[float]) -> float:
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    return sum(pairs) / len(pairs)


def test_vader_matches_the_library_and_empty_is_nan():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    reference = SentimentIntensityAnalyzer()
    texts = [POSITIVE[0], NEGATIVE[0], "The meeting is at noon.", "Not bad at all :)"]
    scores = _score(make_scorer("vader"), [*texts, "  \n"])
    for text, score in zip(texts, scores, strict=False):
        assert score.values["compound"] == reference.polarity_scores(text)["compound"]
    assert math.isnan(scores[-1].values["compound"])
    assert scores[-1].reasons["compound"] == "whitespace-only completion"


def test_committed_weights_are_complete_and_good():
    weights = json.loads(WEIGHTS_PATH.read_text())
    assert len(weights["coef"]) == EMBEDDING_DIM and weights["normalize"] is True
    assert weights["n_heldout"] == 2000 and weights["heldout_auc"] >= 0.85
    assert weights["heldout_auc"] > weights["heldout_auc_vader"]
    assert weights["data"].endswith(f"sha256:{sha256(tweets_csv())}")


def test_sentiment_ranks_clear_positives_above_negatives_and_empty_is_nan():
    scorer = make_scorer("sentiment")
    scores = _score(scorer, [*POSITIVE, "", *NEGATIVE])
    probs = [s.values["p_positive"] for s in scores]
    assert all(0.0 < p < 1.0 for i, p in enumerate(probs) if i != len(POSITIVE))
    assert _auc(probs[: len(POSITIVE)], probs[len(POSITIVE) + 1:]) == 1.0
    assert math.isnan(probs[len(POSITIVE)])
    assert scores[len(POSITIVE)].reasons["p_positive"] == "empty completion"
    one_by_one = make_scorer("sentiment", {"batch_size": 1}).p_positive(POSITIVE[:3])
    np.testing.assert_allclose(one_by_one, probs[:3], atol=1e-5)


@pytest.mark.slow
def test_retraining_reproduces_committed_weights():
    committed = json.loads(WEIGHTS_PATH.read_text())
    fresh = train(seed=committed["seed"], n_train=committed["n_train"],
                  n_heldout=committed["n_heldout"])
    np.testing.assert_allclose(fresh["coef"], committed["coef"], atol=1e-4)
    assert fresh["intercept"] == pytest.approx(committed["intercept"], abs=1e-4)
    assert round(fresh["heldout_auc"], 4) == round(committed["heldout_auc"], 4)
    assert fresh["data"] == committed["data"]


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory):
    """A random 2-layer BERT classifier with a word-level tokenizer, saved locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = sorted({w.lower().strip(".,!:;'") for t in POSITIVE + NEGATIVE for w in t.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]",
                                        pad_token="[PAD]", model_max_length=64)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    path = tmp_path_factory.mktemp("tiny_classifier")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, model, tokenizer


def test_hf_classifier_is_softmax_of_the_models_logits(tiny_classifier):
    path, model, tokenizer = tiny_classifier
    texts = [POSITIVE[0], NEGATIVE[1], "unknown words only here"]
    scorer = make_scorer("hf_classifier", {"model": str(path), "batch_size": 2})
    assert scorer.label == "POSITIVE"
    scores = _score(scorer, [*texts, " "])
    with torch.no_grad():
        logits = [model(**tokenizer(t, return_tensors="pt")).logits[0] for t in texts]
    expected = [torch.softmax(lg, -1)[1].item() for lg in logits]
    got = [s.values["p_positive"] for s in scores[:3]]
    assert all(0.0 <= p <= 1.0 for p in got)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert math.isnan(scores[3].values["p_positive"])
    assert scores[3].reasons["p_positive"] == "whitespace-only completion"
    negative = make_scorer("hf_classifier", {"model": str(path), "positive_label": "NEGATIVE"})
    neg = [s.values["p_positive"] for s in _score(negative, texts)]
    np.testing.assert_allclose(neg, 1.0 - np.array(expected), atol=1e-5)


def test_hf_classifier_errors_name_the_problem(tiny_classifier, tmp_path):
    path, _, _ = tiny_classifier
    with pytest.raises(UserError, match="no label 'joy'.*NEGATIVE, POSITIVE"):
        make_scorer("hf_classifier", {"model": str(path), "positive_label": "joy"})
    with pytest.raises(UserError, match="not available locally"):
        make_scorer("hf_classifier", {"model": str(tmp_path / "missing")})
    with pytest.raises(UserError, match="not available locally"):
        make_scorer("hf_classifier", {"model": "no-such-org/no-such-classifier-xyz"})
