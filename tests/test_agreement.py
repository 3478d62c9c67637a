"""Agreement of two metrics over the same samples (issue 22, point 5): the AUC of one metric for a
binary one and Spearman's rho, with intervals, the samples used and those left out with why."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from harness.analyses.agreement import agreement, agreement_of
from harness.cli import main
from harness.errors import UserError
from harness.report.agreement_report import agreement_markdown, agreement_text
from harness.schema.results import RunResult, SampleRecord, TaskInfo
from harness.stats import auc, spearman

# fixed data with ties inside each class and across the classes
POSITIVE = [0.9, 0.8, 0.8, 0.55, 0.4, 0.3]
NEGATIVE = [0.7, 0.55, 0.5, 0.4, 0.4, 0.2, 0.1, 0.1]


def _pairs(positive, negative) -> float:  # noqa: ANN001
    """AUC by counting every positive-negative pair: 1 when the positive scores higher, 1/2 on a tie."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(positive, negative))
    return wins / (len(positive) * len(negative))


def test_auc_equals_brute_force_pair_counting_and_sklearn():
    point, low, high = auc(POSITIVE, NEGATIVE)
    assert point == pytest.approx(_pairs(POSITIVE, NEGATIVE), abs=1e-12)
    labels = [1] * len(POSITIVE) + [0] * len(NEGATIVE)
    assert point == pytest.approx(roc_auc_score(labels, POSITIVE + NEGATIVE), abs=1e-12)
    assert low < point < high
    assert auc([1.0, 2.0], [3.0, 4.0])[0] == 0.0  # every positive below every negative
    assert all(math.isnan(v) for v in auc([], NEGATIVE))
    one = auc([0.5], NEGATIVE)
    assert one[0] == pytest.approx(_pairs([0.5], NEGATIVE)) and math.isnan(one[1])


def test_auc_interval_covers_the_true_auc_of_two_normals():
    """Binormal scores, 20 positives and 40 negatives: the true AUC is Φ(1 / √2)."""
    rng = np.random.default_rng(1)
    true = stats.norm.cdf(1 / math.sqrt(2))
    hits = []
    for _ in range(150):
        _, low, high = auc(rng.normal(1, 1, 20), rng.normal(0, 1, 40), n_resamples=999)
        hits.append(low <= true <= high)
    assert 0.89 <= np.mean(hits) <= 0.99, np.mean(hits)


def test_spearman_is_pearson_of_ranks_and_its_interval_covers():
    x, y = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0], [2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0]
    rho, low, high, p = spearman(x, y)
    ranks = np.corrcoef(stats.rankdata(x), stats.rankdata(y))[0, 1]  # midranks for ties
    assert rho == pytest.approx(ranks, abs=1e-12) and low < rho < high and 0 < p < 1
    rng = np.random.default_rng(0)
    for r, n in ((0.0, 20), (0.6, 40)):
        true = 6 / math.pi * math.asin(r / 2)  # Spearman's rho of a bivariate normal
        hits = []
        for _ in range(400):
            z = rng.multivariate_normal([0, 0], [[1, r], [r, 1]], n)
            _, lo, hi, _ = spearman(z[:, 0], z[:, 1])
            hits.append(lo <= true <= hi)
        assert 0.93 <= np.mean(hits) <= 0.98, (r, n, np.mean(hits))
    assert all(math.isnan(v) for v in spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def _sample(i: int, condition: str, scores: dict[str, float], **extra) -> SampleRecord:
    return SampleRecord(key=f"{condition}{i}", task="weddings", condition=condition, prompt_index=i // 2,
                        prompt_id=f"p{i // 2}", prompt="x", sample=i % 2, seed=i, completion="x",
                        token_ids=[1], prompt_ids=[0], scores=scores, **extra)


def _samples() -> list[SampleRecord]:
    """The fixed data as keywords.any (label) and a perplexity score, plus samples left out: one
    flagged, two empty (NaN with a reason), and a task that scores neither metric."""
    out = [_sample(i, "steered", {"keywords.any": 1.0, "perplexity.logppl": v})
           for i, v in enumerate(POSITIVE)]
    out += [_sample(10 + i, "unsteered", {"keywords.any": 0.0, "perplexity.logppl": v})
            for i, v in enumerate(NEGATIVE)]
    out.append(_sample(30, "steered", {"keywords.any": 1.0, "perplexity.logppl": 5.0},
                       flagged="non-finite logits"))
    out += [_sample(31 + i, "unsteered", {"keywords.any": math.nan, "perplexity.logppl": math.nan},
                    reasons={"keywords.any": "empty completion", "perplexity.logppl": "empty completion"})
            for i in range(2)]
    out.append(SampleRecord(key="other", task="love_hate", condition="steered", prompt_index=0, prompt_id="q",
                            prompt="x", sample=0, seed=0, completion="x", token_ids=[1], prompt_ids=[0],
                            scores={"sentiment.p_positive": 0.5}))
    return out


def test_agreement_of_samples_counts_used_and_excluded_samples_with_why():
    ag = agreement_of(_samples(), "keywords.any", "perplexity.logppl")
    assert (ag.tasks, ag.n_samples, ag.n, ag.n_prompts) == (["weddings"], 17, 14, 7)
    assert ag.excluded == {"keywords.any: empty completion": 2, "flagged: non-finite logits": 1}
    assert (ag.label, ag.n_positive, ag.n_negative) == ("keywords.any", 6, 8)
    assert ag.auc == pytest.approx(_pairs(POSITIVE, NEGATIVE), abs=1e-12)
    assert (ag.auc, ag.auc_ci_low, ag.auc_ci_high) == pytest.approx(auc(POSITIVE, NEGATIVE))
    rho = spearman([1.0] * 6 + [0.0] * 8, POSITIVE + NEGATIVE)
    assert (ag.spearman, ag.spearman_ci_low, ag.spearman_ci_high, ag.spearman_p) == pytest.approx(rho)
    swapped = agreement_of(_samples(), "perplexity.logppl", "keywords.any")  # the label is found either way
    assert (swapped.label, swapped.auc) == ("keywords.any", ag.auc)
    steered = agreement_of(_samples(), "keywords.any", "perplexity.logppl", conditions=["steered"])
    assert (steered.n, steered.n_negative, steered.auc_note) == (6, 0, "no negative sample of keywords.any")
    assert math.isnan(steered.auc) and "keywords.any constant" in steered.spearman_note


def test_agreement_refuses_metrics_no_task_scores_together():
    with pytest.raises(UserError, match="no sample scores judge.concept"):
        agreement_of(_samples(), "keywords.any", "judge.concept")
    with pytest.raises(UserError, match="no task scores both"):
        agreement_of(_samples(), "keywords.any", "sentiment.p_positive")
    # asked for explicitly, the other task's samples are counted as not scoring the metric
    ag = agreement_of(_samples(), "keywords.any", "perplexity.logppl", tasks=["weddings", "love_hate"])
    assert ag.excluded["keywords.any: not scored"] == 1


def test_agreement_command_reads_a_run_folder_and_prints_the_report(tmp_path, capsys):
    run = RunResult(config={"target": "t"}, config_hash="x", model={}, versions={}, started="", finished="",
                    tasks=[TaskInfo(name="weddings", kind="topic")], effects=[], fluency_cost=[],
                    headlines=[])
    (tmp_path / "run.json").write_text(run.model_dump_json())
    (tmp_path / "samples.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in _samples()))
    ag = agreement(tmp_path, "keywords.any", "perplexity.logppl")
    assert main(["agreement", str(tmp_path), "--a", "keywords.any", "--b", "perplexity.logppl"]) == 0
    out = capsys.readouterr().out
    assert out == agreement_text(ag)
    assert f"AUC of perplexity.logppl for keywords.any (6 positive, 8 negative): {ag.auc:.3f}" in out
    assert "14 of 17 used, from 7 prompts" in out and "2 keywords.any: empty completion" in out
    assert "only 6 positive: too narrow" in out  # under 10 of a class the bootstrap interval undercovers
    args = ["agreement", str(tmp_path), "--a", "keywords.any", "--b", "perplexity.logppl"]
    assert main([*args, "--json"]) == 0
    back = type(ag).model_validate_json(capsys.readouterr().out)  # strict JSON; NaN != NaN, so compare text
    assert back.model_dump_json() == ag.model_dump_json() and math.isnan(back.within["steered"].auc)
    table = agreement_markdown([ag])
    assert "| weddings | all | keywords.any | perplexity.logppl | 14 of 17 (7) |" in table
    assert "| weddings | steered | keywords.any | perplexity.logppl | 6 of 7 (3) |" in table


def test_a_pooled_agreement_driven_by_the_conditions_alone_vanishes_within_each_condition():
    """Steering raises both metrics: within each condition the score does not tell the label (AUC
    exactly 0.5 by construction), pooled it does, and the pooled agreement carries both within."""
    labels = {"unsteered": [1, 1, 0, 0, 0, 0, 0, 0], "steered": [1, 1, 1, 1, 1, 1, 0, 0]}
    scores = {"unsteered": [1, 2, 1, 2, 1, 2, 1, 2], "steered": [11, 12, 11, 12, 11, 12, 11, 12]}
    samples = [_sample(10 * c + i, condition, {"keywords.any": float(labels[condition][i]),
                                               "perplexity.logppl": float(scores[condition][i])})
               for c, condition in enumerate(labels) for i in range(8)]
    ag = agreement_of(samples, "keywords.any", "perplexity.logppl")
    positive = [s for c in labels for s, t in zip(scores[c], labels[c], strict=True) if t]
    negative = [s for c in labels for s, t in zip(scores[c], labels[c], strict=True) if not t]
    assert ag.auc == pytest.approx(_pairs(positive, negative)) and ag.auc > 0.7
    assert sorted(ag.within) == ["steered", "unsteered"]
    assert all(w.auc == 0.5 and w.n == 8 and not w.within for w in ag.within.values())
    assert "within each condition" in agreement_text(ag)
    assert not agreement_of(samples, "keywords.any", "perplexity.logppl", conditions=["steered"]).within


def test_agreement_by_construction_is_flagged_and_a_real_one_is_not():
    """keywords.any is keywords.rate > 0: AUC 1 by construction; a constant score: AUC 0.5 by construction."""
    rates = [0.0, 0.0, 0.1, 0.0, 0.3, 0.2, 0.0, 0.05]
    samples = [_sample(i, "steered", {"keywords.any": float(r > 0), "keywords.rate": r,
                                      "perplexity.logppl": 3.0, "judge.score": float(i % 3)})
               for i, r in enumerate(rates)]
    same = agreement_of(samples, "keywords.any", "keywords.rate")
    assert same.auc == 1.0 and len(same.warnings) == 2
    assert "one scorer (keywords)" in same.warnings[0] and "separates" in same.warnings[1]
    assert "warning: keywords.any and keywords.rate come from one scorer" in agreement_text(same)
    assert "Warning: keywords.rate separates keywords.any's classes perfectly" in agreement_markdown([same])
    constant = agreement_of(samples, "keywords.any", "perplexity.logppl")
    assert constant.auc == 0.5 and constant.warnings == [
        "perplexity.logppl is constant over the samples: its AUC is 0.5 by construction, whatever the "
        "metrics measure"]
    independent = agreement_of(samples, "keywords.any", "judge.score")
    assert 0.0 < independent.auc < 1.0 and independent.warnings == []
