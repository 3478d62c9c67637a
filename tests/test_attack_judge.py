"""Attacks on the LLM-judge parts: each test fails on the code it was written against and names
the wrong number or claim it caught. Fast, no real model."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from pydantic import ValidationError

from harness.errors import UserError
from harness.pipeline.score import checked
from harness.scorers import make_scorer
from harness.scorers.base import Sample, ScoringContext
from harness.scorers.judge import load_rubric, parse_rating


@pytest.fixture(autouse=True)
def judge_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", str(tmp_path / "verdicts.sqlite"))


class RecordingJudge:
    """Answers every question with `reply` and keeps the conversations it was asked."""

    def __init__(self, reply: str, identity: str = "stub:attack"):
        self.reply, self.identity, self.asked = reply, identity, []

    def check(self) -> None: ...

    def replies(self, conversations, done) -> None:
        for i, c in enumerate(conversations):
            self.asked.append(c)
            done(i, self.reply)


def stubbed(reply: str, **params):
    scorer = make_scorer("judge", params)
    scorer.backend = RecordingJudge(reply)
    return scorer


# 1. A judge that echoes the scale after "Rating:" gets a rating (0 or 1) it never gave.
@pytest.mark.parametrize("reply", [
    "Rating: 0-2", "Rating: 0 to 2", "Rating: 0, 1 or 2", "Rating: 1 or 2", "Rating: **0**-**2**",
    "Rating: 2\u20131", "Rating: 1,5",
])
def test_a_labelled_rating_followed_by_more_scale_numbers_is_no_rating(reply):
    assert parse_rating(reply) is None  # "0, 1 or 2" alone is refused; after "Rating:" it is read as 0


def test_a_judge_echoing_the_scale_scores_nan_not_zero():
    scorer = stubbed("Rating: 0-2")
    s = scorer.score([Sample("Tell me about it.", "A lovely wedding.", "steered",
                             meta={"concept": "weddings"})], ScoringContext())[0]
    assert math.isnan(s.values["score"]), s.values  # currently 0.0: the harmonic mean's hard zero


# 2. A leading minus sign is swallowed: "-1" (out of scale) is read as 1.
@pytest.mark.parametrize("reply", ["-1", "-2", "(-1)"])
def test_a_negative_reply_is_no_rating(reply):
    assert parse_rating(reply) is None


# 3. A rubric may use {concept} in its instruction or fluency question, but the verdict key of
#    those criteria leaves the concept out: two concepts share one verdict (and one question).
def test_a_rubric_asking_the_concept_in_every_question_keys_every_verdict_by_concept(tmp_path):
    rubric, _ = load_rubric("axbench")
    own = tmp_path / "concept_everywhere.json"
    own.write_text(json.dumps({**rubric.model_dump(), "name": "everywhere",
                               "fluency": "Is this text about {concept} fluent? {completion}"}))
    scorer = stubbed("Rating: 2", rubric=str(own))
    items = [Sample("Write a note.", "Same text.", "steered", meta={"concept": k}) for k in ("dogs", "music")]
    scorer.score(items, ScoringContext())
    fluency_questions = [c[-1]["content"] for c in scorer.backend.asked if "fluent?" in c[-1]["content"]]
    assert any("music" in q for q in fluency_questions), fluency_questions  # only the dogs one was asked


# 4. Expected mode reads the bare digit's token after an answer prefix ending in a space. With a
#    GPT-2-style tokenizer (" 2" is one token) "Rating: 2" never ends in that token: the rating
#    probabilities are read from a continuation the tokenizer never produces, silently.
class Gpt2StyleTokenizer:
    """Pieces as GPT-2's pre-tokenizer splits them: a space sticks to the word or number after it."""

    chat_template = None
    pad_token_id = 0
    bos_token_id = 0
    eos_token_id = 0

    def __init__(self):
        self.vocab: dict[str, int] = {"<|endoftext|>": 0}

    def _id(self, piece: str) -> int:
        return self.vocab.setdefault(piece, len(self.vocab))

    def __call__(self, text, add_special_tokens=False, **_):
        class Out:
            pass

        out = Out()
        pieces = re.findall(r" ?\d+| ?[A-Za-z]+| ?[^\sA-Za-z\d]+|\s+(?!\S)|\s+", text)
        out.input_ids = [self._id(p) for p in pieces]
        return out


def test_expected_mode_refuses_or_reads_the_token_the_prefix_is_followed_by():
    from harness.models import LoadedModel
    from harness.scorers.judge_backends import LocalJudge

    tok = Gpt2StyleTokenizer()
    lm = LoadedModel(torch.nn.Linear(1, 1), tok, "gpt2-like", "test", sha256="0" * 64)
    scorer = make_scorer("judge", {"mode": "expected"})
    prefix = scorer.rubric.answer_prefix
    try:
        scorer.preflight(ScoringContext(load_judge=lambda name: lm))
    except UserError:
        return  # refused: fine
    ids = LocalJudge(lm, 8, 1).rating_token_ids()
    for r, rid in zip("012", ids, strict=True):
        natural = tok(prefix + r).input_ids
        assert natural == [*tok(prefix).input_ids, rid], (r, natural, tok(prefix).input_ids, rid)


# 5. Rating probabilities that are NaN (a float16 overflow) give a NaN rating with no reason:
#    `mass < min_mass` is False for NaN, so the scorer breaks its contract and the run fails.
class NanProbabilityJudge:
    identity = "stub:nan-probs"

    def check(self) -> None: ...

    def rating_probabilities(self, conversations, done, reply_start="") -> None:
        for i, _ in enumerate(conversations):
            done(i, [math.nan, math.nan, math.nan])


def test_nan_rating_probabilities_are_nan_with_a_reason():
    scorer = make_scorer("judge", {"mode": "expected"})
    scorer.backend = NanProbabilityJudge()
    items = [Sample("Write a note.", "Some text.", "steered", meta={"concept": "dogs"})]
    scores = checked("judge", scorer, scorer.score(items, ScoringContext()), 1)  # UserError now
    assert math.isnan(scores[0].values["concept"]) and "concept" in scores[0].reasons


# 6. `--judge-key-env` takes any string: the key itself given by mistake (`--judge-key-env
#    $MY_KEY`) is accepted, written to run.json as the variable's name and echoed in errors.
def test_a_key_given_as_the_key_variable_name_is_refused_without_echoing_it():
    from harness.tasks.concepts import judge_params

    key = "sk-proj-Abc123Def456-ghi789"
    with pytest.raises((UserError, ValidationError)) as err:
        judge_params("http://127.0.0.1:9/v1::some-model", key)
    assert key not in str(err.value)


# 7. Within one condition a 0-2 judge rating that happens to take only 0 and 1 becomes the AUC's
#    label, while the pooled row (where it also takes 2) reports no AUC: the within column then
#    measures another thing (AUC of `a` for "judge said 1") under the same header.
def test_within_condition_agreement_keeps_the_pooled_choice_of_label():
    from harness.analyses.agreement import agreement_of
    from harness.schema.results import SampleRecord

    def rec(cond, i, a, b):
        return SampleRecord(key=f"{cond}{i}", task="t", condition=cond, prompt_index=i, prompt_id=f"p{i}",
                            prompt="p", sample=0, seed=0, completion="c", token_ids=[], prompt_ids=[],
                            scores={"sentiment.p": a, "judge.concept": b})

    samples = [rec("steered", i, a, b) for i, (a, b) in enumerate([(0.3, 1), (0.2, 0), (0.9, 1), (0.1, 0)])]
    samples += [rec("unsteered", i, a, b) for i, (a, b) in enumerate([(0.3, 2), (0.2, 0), (0.5, 1)])]
    pooled = agreement_of(samples, "sentiment.p", "judge.concept")
    assert pooled.label is None  # judge.concept takes 0, 1, 2: not binary
    assert pooled.within["steered"].label == pooled.label  # now "judge.concept"


# 8. Credentials inside a served judge's base_url were written to run.json and error messages.
@pytest.mark.parametrize("url", ["http://user:sk-secret@127.0.0.1:9/v1", "http://127.0.0.1:9/v1?key=sk-secret"])
def test_credentials_in_the_base_url_are_refused_without_echoing_them(url):
    from harness.tasks.concepts import judge_params

    with pytest.raises(UserError) as err:
        judge_params(f"{url}::some-model")
    assert "sk-secret" not in str(err.value)


# 9. The "worst value" an unscored sample counts as in the held-out choice came from every sample,
#    flagged ones included: a flagged outlier made the penalty harsher than any real sample.
def test_the_worst_value_of_the_heldout_choice_ignores_flagged_samples():
    from harness.analyses.heldout import choose
    from harness.schema.results import SampleRecord

    def rec(cond, i, v, flagged=None):
        return SampleRecord(key=f"{cond}{i}{v}", task="t", condition=cond, prompt_index=i, prompt_id=f"p{i}",
                            prompt="p", sample=0, seed=0, completion="c", token_ids=[], prompt_ids=[],
                            scores={"m": v}, flagged=flagged)

    samples = [rec("a", 0, 1.0), rec("a", 1, 1.0), rec("b", 0, 2.0), rec("b", 1, math.nan),
               rec("c", 0, -100.0, flagged="non-finite logits")]
    best, score = choose(samples, "t", "m", {"a": 1.0, "b": 2.0}, ["p0", "p1"], 1.0)
    assert score == 1.5 and best == "b"  # b's unscored sample counts as the worst real value, 1.0
