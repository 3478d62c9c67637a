"""Off-target cost (KL on neutral text), iso-KL strength and capability retention, on the real
embedded model: zero steering costs exactly nothing, cost grows with the coefficient, the
bisection hits its target, and the bundled cloze set is answered right unsteered."""

from __future__ import annotations

import math

import pytest
import torch

from harness.diagnostics.capability import capability, load_items
from harness.diagnostics.neutral_text import neutral_texts
from harness.diagnostics.offtarget import (
    _solve,
    iso_kl_scale,
    offtarget_cost,
    offtarget_costs,
    pooled_quantile,
    pooled_quantile_ci,
)
from harness.diagnostics.topic_ratio import Bin, topic_perplexity_ratio
from harness.errors import UserError
from harness.methods.actadd import Addition, build_actadd
from harness.models import load_model
from harness.report.offtarget_plots import perplexity_ratio_plot
from harness.schema.results import TopicRatioRecord
from harness.steering.base import Intervention, Steering
from harness.steering.session import PrefixTruncatedWarning

WEDDING_WORDS = ["wedding", "bride", "groom", "marry", "married", "marriage", "ceremony"]


@pytest.fixture(scope="module")
def lm():
    return load_model()


@pytest.fixture(scope="module")
def love_hate(lm):
    """The love_hate task's ActAdd vector at coefficient 1 (the task uses 4), layer 5."""
    return build_actadd(lm, [Addition(5, 1.0, "Love"), Addition(5, -1.0, "Hate")])


@pytest.fixture(scope="module")
def texts24():
    """The first 24 of the 200 neutral texts (about 560 tokens): few, as every forward pass on
    2 CPU cores counts."""
    return neutral_texts()[:24]


def test_neutral_texts_are_200_distinct_and_deterministic():
    texts = neutral_texts()
    assert len(texts) == 200 == len(set(texts))
    assert texts == neutral_texts()
    assert texts != neutral_texts(seed=1)
    assert all(5 <= len(t.split()) <= 40 and t == " ".join(t.split()) for t in texts)
    assert len(neutral_texts(400)) == 400


def test_kl_is_zero_at_coefficient_zero_and_grows_with_it(lm, love_hate, texts24):
    zero, one, two, four = offtarget_costs(lm, [love_hate.scaled(c) for c in (0, 1, 2, 4)], texts24)
    assert zero.n_texts == 24 and zero.n_tokens > 24
    assert abs(zero.mean_kl) <= 1e-6 and abs(zero.p95_kl) <= 1e-6 and zero.delta_logppl == 0.0
    assert zero.mean_kl_ci == (0.0, 0.0)
    assert 0 < one.mean_kl < two.mean_kl < four.mean_kl
    assert 0 < one.p95_kl < two.p95_kl < four.p95_kl
    assert one.mean_kl_ci[0] <= one.mean_kl <= one.mean_kl_ci[1]
    assert one.p95_kl_ci[0] <= one.p95_kl <= one.p95_kl_ci[1]
    assert four.delta_logppl > 0  # steering makes plain text less likely


def test_iso_kl_bisection_hits_its_target_and_is_deterministic(lm, love_hate, texts24):
    texts = texts24[:12]
    c = iso_kl_scale(lm, love_hate, texts, 1.0)
    assert c == iso_kl_scale(lm, love_hate, texts, 1.0)
    assert 0 < c < 1  # the task's Love − Hate vector passes 1 nat well below coefficient 1
    assert offtarget_cost(lm, love_hate.scaled(c), texts).p95_kl == pytest.approx(1.0, rel=0.05)


def test_iso_kl_solver_brackets_bisects_and_refuses_the_unreachable():
    calls: list[float] = []

    def f(c: float) -> float:
        calls.append(c)
        return 0.3 * c**1.7

    c = _solve(f, 50.0, 0.05, 1.0, 4096.0, 40)
    assert abs(f(c) - 50.0) <= 2.5 and len(calls) < 15
    assert _solve(f, 0.001, 0.05, 1.0, 4096.0, 40) < 1  # bracketing downwards
    with pytest.raises(UserError, match="not reached"):
        _solve(lambda c: min(c, 3.0), 10.0, 0.05, 1.0, 4096.0, 40)
    with pytest.raises(UserError, match="positive"):
        iso_kl_scale(None, Steering((Intervention(0, torch.ones(4)),)), ["x"], 0.0)  # type: ignore[arg-type]


def test_pooled_quantile_ci_resamples_texts():
    groups = [[float(i)] * 3 for i in range(20)]
    assert pooled_quantile(groups) == 18.0
    low, high = pooled_quantile_ci(groups, seed=0)
    assert low <= 18.0 <= high and (low, high) == pooled_quantile_ci(groups, seed=0)


def test_every_capability_item_is_right_unsteered_and_zero_steering_changes_nothing(lm, love_hate):
    items = load_items()
    assert len(items) >= 100 and len({it.key for it in items}) == len(items)
    assert {it.kind for it in items} >= {"fact", "arithmetic", "word"}
    assert all(it.answer.startswith(" ") for it in items)
    result = capability(lm, love_hate.scaled(0), items)
    assert result.unsteered_accuracy == 1.0, "some bundled items are answered wrong unsteered"
    assert result.accuracy == 1.0 and result.broken == ()
    assert result.accuracy_change.point == 0.0 and result.logprob_change.point == 0.0
    assert result.logprob_change.sd == 0.0  # every item unchanged
    assert result.logprob == result.unsteered_logprob < 0


def test_topic_perplexity_ratio_bins_and_masks_the_prefix(lm):
    wedding = build_actadd(lm, [Addition(10, 0.0, "I talk about weddings constantly"),
                                Addition(10, -0.0, "I do not talk about weddings constantly")])
    texts = ["Short one.",  # fewer tokens than the 10-position prefix: counted as too short
             "We went to the wedding of my cousin last weekend and the bride wore a long white dress",
             "The train to the airport was late again this morning so I missed the first meeting of the day",
             "My sister got married in June and the ceremony was held in the garden behind the old house"]
    bins = topic_perplexity_ratio(lm, wedding, WEDDING_WORDS, texts)
    assert [b.label for b in bins] == ["0", "(0%, 2%]", "(2%, 5%]", "> 5%", "too short"]
    assert [b.n for b in bins] == [1, 0, 0, 2, 1]
    assert math.isnan(bins[4].ratio)
    assert bins[0].ratio == 1.0 and bins[3].ratio == 1.0  # coefficient 0: nothing changes
    assert math.isnan(bins[1].ratio)
    with pytest.warns(PrefixTruncatedWarning):  # unmasked, the short text stays, under a cut vector
        unmasked = topic_perplexity_ratio(lm, wedding, WEDDING_WORDS, texts, mask_prefix=False)
    assert sum(b.n for b in unmasked) == 4


def test_perplexity_ratio_plot_is_a_png():
    bins = [Bin("0", 0, 0, 30, 600, 0.01, 1.01, (0.99, 1.03)), Bin("> 5%", 0.05, 1, 0, 0, math.nan, math.nan,
                                                                 (math.nan, math.nan))]
    assert perplexity_ratio_plot(bins).startswith(b"\x89PNG")
    records = [TopicRatioRecord(task="weddings", condition="steered", bin=b.label, low=b.low, high=b.high,
                                n=b.n, ratio=b.ratio, ratio_ci_low=b.ratio_ci[0], ratio_ci_high=b.ratio_ci[1])
               for b in bins]  # a run's records, as the HTML report passes them
    assert perplexity_ratio_plot(records, "weddings · steered").startswith(b"\x89PNG")
