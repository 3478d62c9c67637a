"""Rescoring a run's samples with a judge and measuring its agreement (issue 22, point 5):
`harness score` on a samples.jsonl keeps the other scorers' scores and replaces its own, keeps the
judge's raw replies, and `harness agreement` reads the rescored JSONL file itself."""

from __future__ import annotations

import itertools
import json

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.schema.results import SampleRecord
from harness.scorers.judge import JudgeScorer

# completions of a weddings run; whether each names a wedding word, and its (made-up) perplexity
COMPLETIONS = [
    ("We went to a wedding and the bride smiled.", 1.9),
    ("The groom forgot the rings at home.", 2.4),
    ("It rained all afternoon, so we stayed in.", 2.2),
    ("My wedding speech was far too long.", 1.1),
    ("The cat slept on the warm windowsill.", 1.5),
    ("Prices went up again this month.", 2.8),
    ("She read the report twice before lunch.", 0.9),
]
LOGPPL = {text: v for text, v in COMPLETIONS}


class ConceptStub:
    """A judge that rates the concept 2 when the text judged says "wedding", else 0, and the
    instruction and fluency 1, in the rubric's reply format."""

    identity = "stub:concept"

    def check(self) -> None: ...

    def replies(self, conversations, done) -> None:  # noqa: ANN001
        for i, conversation in enumerate(conversations):
            user = conversation[-1]["content"]
            concept = user.startswith("Rate how strongly")
            done(i, f"Rating: {2 if 'wedding' in user.split('Text:')[-1] else 0}" if concept else "Rating: 1")


def _record(i: int, text: str) -> SampleRecord:
    """A samples.jsonl line as a run writes it, already holding a perplexity score and a stale
    judge verdict (an unparseable reply) that the rescoring must replace."""
    return SampleRecord(key=f"k{i}", task="weddings", condition="steered" if i % 2 else "unsteered",
                        prompt_index=i, prompt_id=f"p{i}", prompt="Tell me about your day.", sample=0,
                        seed=i, completion=text, token_ids=[1, 2], prompt_ids=[0],
                        scores={"perplexity.logppl": LOGPPL[text], "sentiment.p_positive": float("nan"),
                                "judge.concept": float("nan")},
                        reasons={"sentiment.p_positive": "no classifier",
                                 "judge.concept": "unparseable judge reply: 'x'"},
                        replies={"judge.concept": "x"})


@pytest.fixture
def rescored(tmp_path, monkeypatch, capsys):
    """The samples.jsonl of a run, rescored by `harness score --scorer judge` (the stub judge)."""
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", "off")

    def preflight(self, ctx) -> None:  # noqa: ANN001
        self.backend = self.backend or ConceptStub()

    monkeypatch.setattr(JudgeScorer, "preflight", preflight)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(_record(i, t).model_dump_json() + "\n"
                               for i, (t, _) in enumerate(COMPLETIONS)))
    params = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "concept": "weddings"}
    assert main(["score", str(samples), "--scorer", "judge", "--params", json.dumps(params)]) == 0
    out = tmp_path / "rescored.jsonl"
    out.write_text(capsys.readouterr().out)
    return out


def test_score_keeps_other_scorers_scores_and_replaces_its_own_with_the_judges_replies(rescored):
    rows = [SampleRecord.model_validate(json.loads(line)) for line in rescored.read_text().splitlines()]
    assert [r.completion for r in rows] == [t for t, _ in COMPLETIONS]
    for r in rows:
        named = "wedding" in r.completion
        assert r.scores["perplexity.logppl"] == LOGPPL[r.completion]  # another scorer's: kept
        assert r.reasons == {"sentiment.p_positive": "no classifier"}  # the stale judge reason: gone
        assert r.scores["judge.concept"] == (2.0 if named else 0.0)
        # the harmonic mean of 2, 1, 1 is 3 / (1/2 + 1 + 1); 0 when any rating is 0
        assert r.scores["judge.score"] == pytest.approx(1.2 if named else 0.0)
        assert r.replies == {"judge.concept": f"Rating: {2 if named else 0}",
                             "judge.instruction": "Rating: 1", "judge.fluency": "Rating: 1"}


def test_agreement_reads_a_rescored_samples_file_and_matches_pair_counting(rescored, capsys):
    words = '{"words": ["wedding", "groom"]}'
    assert main(["score", str(rescored), "--scorer", "keywords", "--params", words]) == 0
    both = rescored.with_name("both.jsonl")
    both.write_text(capsys.readouterr().out)
    assert main(["agreement", str(both), "--a", "keywords.any", "--b", "perplexity.logppl", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    positive = [v for t, v in COMPLETIONS if "wedding" in t or "groom" in t]
    negative = [v for t, v in COMPLETIONS if not ("wedding" in t or "groom" in t)]
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positive, negative))
    assert (got["n"], got["n_positive"], got["n_negative"]) == (7, 3, 4)
    assert got["auc"] == pytest.approx(pairs / (len(positive) * len(negative)), abs=1e-12)
    assert sorted(got["within"]) == ["steered", "unsteered"]
    # the judge's concept rating against keyword presence: "groom" alone is rated 0 by the stub
    assert main(["agreement", str(both), "--a", "keywords.any", "--b", "judge.concept", "--json"]) == 0
    judged = json.loads(capsys.readouterr().out)
    assert judged["auc"] == pytest.approx((2 * 4 * 1.0 + 1 * 4 * 0.5) / 12)


def test_agreement_on_a_missing_samples_file_is_a_user_error_naming_it(tmp_path):
    from harness.analyses.agreement import agreement

    with pytest.raises(UserError, match="nope.jsonl: no such file"):
        agreement(tmp_path / "nope.jsonl", "keywords.any", "judge.concept")
