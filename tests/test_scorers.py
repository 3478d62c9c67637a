"""Scorers against independent references on fixed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from harness.errors import UserError
from harness.methods.actadd import Addition, build_actadd
from harness.models.tokens import encode
from harness.scorers import make_scorer
from harness.scorers.base import Sample, ScoringContext
from harness.scorers.diversity import distinct_n

CTX = ScoringContext()


def _texts(scorer, texts):
    return [s.values for s in scorer.score([Sample("p", t, "u") for t in texts], CTX)]


def test_keywords_counts_inflections_whole_words_case_insensitive():
    kw = make_scorer("keywords", {"words": ["wedding", "bride", "marry"]})
    text = "Weddings and a bride; the brides marry. Bridesmaid? weddingcake no. MARRYING!"
    # hits: Weddings, bride, brides, marry, MARRYING -> 5 of 11 words
    (v,) = _texts(kw, [text])
    assert v == {"rate": pytest.approx(100 * 5 / 11), "any": 1.0}
    (none,) = _texts(kw, ["Nothing about that here."])
    assert none == {"rate": 0.0, "any": 0.0}


def test_keywords_patterns_count_exclamations_and_empty_is_nan():
    kw = make_scorer("keywords", {"patterns": ["!"]})
    scores = kw.score([Sample("p", "Wow! Great!! ok", "u"), Sample("p", "   ", "u")], CTX)
    assert scores[0].values["rate"] == pytest.approx(100 * 3 / 3)
    assert math.isnan(scores[1].values["rate"]) and scores[1].reasons["rate"] == "whitespace-only completion"


def test_keywords_needs_words_or_patterns():
    with pytest.raises(ValueError):
        make_scorer("keywords", {})


def test_diversity_distinct_n_on_crafted_text():
    assert distinct_n(["a", "b", "a", "b"], 1) == 0.5
    assert distinct_n(["a", "b", "a", "b"], 2) == pytest.approx(2 / 3)
    (v,) = _texts(make_scorer("diversity"), ["the cat the cat the cat"])
    assert v == {"distinct1": pytest.approx(2 / 6), "distinct2": pytest.approx(2 / 5)}
    (empty,) = make_scorer("diversity").score([Sample("p", "", "u")], CTX)
    assert math.isnan(empty.values["distinct1"])


def _sample(lm, prompt, completion, condition="u", **meta):
    ids = tuple(lm.tokenizer(completion, add_special_tokens=False).input_ids)
    return Sample(prompt, completion, condition, tuple(encode(lm.tokenizer, prompt)), ids, meta)


def test_perplexity_equals_exp_of_transformers_loss(smollm):
    ctx = ScoringContext(lm=smollm, load_judge=lambda name: smollm)
    samples = [_sample(smollm, "I hate you because", " you never call me back."),
               _sample(smollm, "The weather today", " is sunny and warm, with a light breeze."),
               _sample(smollm, "Hi", "")]
    scores = make_scorer("perplexity").score(samples, ctx)
    for s, score in zip(samples[:2], scores, strict=False):
        ids = torch.tensor([list(s.prompt_ids) + list(s.completion_ids)])
        labels = ids.clone()
        labels[0, : len(s.prompt_ids)] = -100
        with torch.no_grad():
            loss = smollm.model(input_ids=ids, labels=labels).loss
        assert math.exp(score.values["logppl"]) == pytest.approx(math.exp(float(loss)), rel=1e-4)
        assert len(score.detail["token_logprobs"]) == len(s.completion_ids)
    assert math.isnan(scores[2].values["logppl"]) and scores[2].reasons


def test_fact_margin_equals_hand_written_log_softmax(smollm):
    rome = build_actadd(smollm, [Addition(6, 4.0, "The Eiffel Tower is in Rome"),
                                 Addition(6, -4.0, "The Eiffel Tower is in France")])
    ctx = ScoringContext(lm=smollm, steerings={"u": None, "s": rome})
    prompt = "The Eiffel Tower is located in the city of"
    samples = [_sample(smollm, prompt, " Paris.", "u"), _sample(smollm, prompt, " Rome!", "s"),
               _sample(smollm, "The Louvre is in", " Paris", "u", group="neighbourhood")]
    scores = make_scorer("fact", {"target": "Rome", "original": "Paris"}).score(samples, ctx)

    def logp(prompt, answer):
        ids = encode(smollm.tokenizer, prompt) + smollm.tokenizer(answer, add_special_tokens=False).input_ids
        n = len(ids) - len(encode(smollm.tokenizer, prompt))
        with torch.no_grad():
            logits = smollm.model(input_ids=torch.tensor([ids])).logits[0]
        lp = torch.log_softmax(logits, -1)
        return sum(float(lp[len(ids) - n - 1 + j, ids[len(ids) - n + j]]) for j in range(n))

    expected = logp(prompt, " Rome") - logp(prompt, " Paris")
    assert scores[0].values["margin"] == pytest.approx(expected, abs=1e-4)
    assert scores[0].values["mentions_original"] == 1.0 and scores[1].values["mentions_target"] == 1.0
    assert scores[1].values["margin"] > scores[0].values["margin"]  # steering moves toward Rome
    assert math.isnan(scores[2].values["margin"]) and scores[2].values["specificity"] in (0.0, 1.0)
    assert scores[2].not_applicable["margin"] == "neighbourhood prompt" and not scores[2].reasons


MEASUREMENT = '''
import datasets
import evaluate


class Letters(evaluate.Measurement):
    def _info(self):
        features = datasets.Features({"predictions": datasets.Value("string")})
        return evaluate.MeasurementInfo(description="letters", citation="", inputs_description="texts",
                                        features=features)

    def _compute(self, predictions, scale=1.0):
        letters = [scale * sum(c.isalpha() for c in p) for p in predictions]
        return {"letters": letters, "total": len(predictions)}
'''


def test_an_evaluate_measurement_is_a_per_sample_scorer(tmp_path):
    (tmp_path / "letters.py").write_text(MEASUREMENT)
    scorer = make_scorer("evaluate", {"module": str(tmp_path / "letters.py"), "key": "letters",
                                      "args": {"scale": 2.0}})
    scorer.preflight(ScoringContext())
    samples = [Sample("p", c, "u") for c in ["ab c", "", "1 2 x"]]
    scores = scorer.score(samples, ScoringContext())
    assert [s.values["letters"] for s in scores[::2]] == [6.0, 2.0]
    assert math.isnan(scores[1].values["letters"]) and scores[1].reasons["letters"] == "empty completion"
    total = make_scorer("evaluate", {"module": str(tmp_path / "letters.py"), "key": "total"})
    with pytest.raises(UserError, match="not one number per completion"):
        total.score(samples, ScoringContext())


def test_a_hub_evaluate_module_offline_fails_before_generation(tiny_llama, tmp_path, monkeypatch):
    from harness.runner import RunOptions, run
    from tests.test_runner import write_task

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    task = write_task(tmp_path)
    scorer = "  evaluate: {module: toxicity, key: toxicity}\n"
    task.write_text(task.read_text().replace("  perplexity: {}\n", "  perplexity: {}\n" + scorer))
    with pytest.raises(UserError, match="evaluate module 'toxicity'.*cannot be loaded"):
        run(str(task), tmp_path / "out", model=tiny_llama, options=RunOptions(progress=False))
    assert not (tmp_path / "out" / "samples.jsonl").exists()  # nothing generated
