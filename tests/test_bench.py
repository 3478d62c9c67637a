"""`harness bench` on a tiny random model: all figures present and sane (nothing asserted about
times); the interleaving of calls, and the interval and verdict of a figure on fixed synthetic timings."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.bench import run_bench
from harness.bench.figures import MIN_REPEATS, BenchResult, measured, per_second, ratio, side_by_side, verdict
from harness.cli.commands import cmd_bench
from tests.conftest import save_tiny_model

TASK = """\
name: tiny_bench
kind: topic
prompts: ["I love the way", "The tower", "We talked about"]
steering: {method: actadd, layer: 1, coeff: 4, positive: love, negative: hate}
generation: {max_new_tokens: 4}
samples: 1
scorers:
  keywords: {words: [love, tower]}
  perplexity: {}
metrics: {keywords.rate: increase}
headline: keywords.rate
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny_bench"))


def check_figures(result: BenchResult) -> None:
    for name, fig in result.figures().items():
        assert math.isfinite(fig.value), name
        if fig.unit == "x":
            assert 0 < fig.value < 100, name
            assert fig.numerator > 0 and fig.denominator > 0, name
        elif fig.unit == "share":
            assert 0 <= fig.value <= 1, name
        elif fig.unit == "nats":
            assert 0 <= fig.value < 100, name
        else:
            assert fig.value > 0, name
        assert (fig.verdict is None) == (fig.target is None), name
        if fig.low is not None:
            assert fig.low <= fig.value <= fig.high, name


@pytest.mark.slow  # every figure end to end (~70 s); the statistics of the figures are tested below
def test_bench_gives_every_figure_on_a_tiny_model(tiny_dir, tmp_path):
    task = tmp_path / "tiny_bench.yaml"
    task.write_text(TASK)
    result = run_bench(str(tiny_dir), repeats=1, max_new_tokens=3, suite_target=str(task))
    assert None not in dict(result).values(), [k for k, v in result if v is None]
    assert set(result.figures()) == {
        "steered_vs_plain", "unsteered_vs_plain", "sampled_vs_plain", "sweep_speedup",
        "perplexity_vs_forward", "bf16_vs_fp32", "bf16_max_abs_dlogprob", "bf16_mean_abs_dlogppl",
        "bf16_same_completions", "k4_vs_k1", "k16_vs_k1", "k64_vs_k1", "sampler_share_device",
        "sampler_share_host", "load_seconds_first", "load_seconds_cached", "peak_rss_mb",
        "quick_suite_seconds"}
    check_figures(result)
    assert result.unsteered_matches_plain  # greedy engine rows are exactly plain generate's
    assert result.model["source"] == str(tiny_dir.resolve())
    assert result.settings["batch_size"] == 8 and result.settings["kv_cache"]
    assert result.details["sweep_ms_per_step_batched"] > 0
    # every K-scaling batch made exactly 64 rows x 3 tokens: the ratios compare equal work
    assert [result.details[f"k{k}_tokens"] for k in (1, 4, 16, 64)] == [64 * 3] * 4
    assert result.details["sampler_device_ms_per_step"] > 0 and result.details["sampler_host_ms_per_step"] > 0
    assert 0 < result.sampler_share_device.value < 1 and 0 < result.sampler_share_host.value < 1
    assert result.settings["device"].startswith("cpu")
    assert result.k64_vs_k1.target == 0.9 and result.sampler_share_device.at_most
    # one round gives no interval: every figure with a target is undecided, never met on one reading
    assert all(f.verdict == "undecided" and f.low is None for f in result.figures().values() if f.target)


def test_bench_json_command_without_subprocesses(tiny_dir, capsys):
    args = argparse.Namespace(model=str(tiny_dir), dtype="float32", repeats=MIN_REPEATS, batch_size=3,
                              max_new_tokens=2,
                              no_suite=True, no_loads=True, no_bf16=True, no_scale=True, device="cpu",
                              json=True)
    assert cmd_bench(args) == 0
    data = json.loads(capsys.readouterr().out)
    result = BenchResult.model_validate(data)
    check_figures(result)
    assert result.settings["batch_size"] == 3
    assert data["load_seconds_first"] is None and data["bf16_vs_fp32"] is None and data["k64_vs_k1"] is None
    for name in ("steered_vs_plain", "unsteered_vs_plain", "sweep_speedup", "perplexity_vs_forward"):
        assert set(data[name]) >= {"value", "low", "high", "n", "numerator", "denominator", "raw_unit",
                                   "target", "verdict"}
        # enough rounds for an interval of the median; a figure with a target gets one of three verdicts
        assert data[name]["n"] == MIN_REPEATS and data[name]["low"] is not None, name
        assert data[name]["verdict"] in ("meets", "misses", "undecided"), name


class FakeClock:
    """A clock that each fake call moves forward by the seconds it is given."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_side_by_side_interleaves_rounds_and_alternates_their_order():
    order: list[str] = []
    calls = {name: (lambda name=name: order.append(name)) for name in "ABC"}
    times = side_by_side(calls, 4)
    # warm-up ABC, then rounds ABC CBA ABC CBA: never all of A before all of B
    assert "".join(order) == "ABC" + "ABC" + "CBA" + "ABC" + "CBA"
    assert {name: len(t) for name, t in times.items()} == {"A": 4, "B": 4, "C": 4}


def test_side_by_side_returns_each_rounds_seconds_paired_by_round():
    clock = FakeClock()
    seconds = {"A": iter([9.0, 1.0, 2.0, 3.0]), "B": iter([9.0, 10.0, 20.0, 30.0])}  # first: warm-up

    def call(name: str):  # noqa: ANN202
        return lambda: setattr(clock, "now", clock.now + next(seconds[name]))

    assert side_by_side({"A": call("A"), "B": call("B")}, 3, clock=clock) == {
        "A": [1.0, 2.0, 3.0], "B": [10.0, 20.0, 30.0]}


def brute_force_median_interval(values: list[float]) -> tuple[float | None, float | None]:
    """[x(k), x(n+1-k)] for the largest k with P(Binomial(n, 1/2) <= k - 1) <= 2.5 %, by counting."""
    n, xs, k = len(values), sorted(values), 0
    while sum(math.comb(n, i) for i in range(k + 1)) / 2**n <= 0.025:
        k += 1
    return (None, None) if k == 0 else (xs[k - 1], xs[n - k])


def test_median_interval_is_the_binomial_order_statistic_interval():
    rng = np.random.default_rng(0)
    for n in range(1, 31):
        values = rng.lognormal(0.0, 0.3, n).tolist()
        fig = measured(values, "s")
        assert (fig.low, fig.high) == brute_force_median_interval(values), n
        assert fig.value == float(np.median(values)) and fig.n == n
    assert MIN_REPEATS == 6 and measured([1.0] * 5, "s").low is None and measured([1.0] * 6, "s").low == 1.0


def simulated_ratios(rng: np.random.Generator, n: int, true_ratio: float) -> tuple[list[float], list[float]]:
    """n rounds of two calls' tokens/s on a machine whose load drifts from round to round (the same
    for both calls of a round) with independent lognormal jitter per call; true median ratio given."""
    load = rng.uniform(0.3, 1.0, n)
    den = 100.0 * load * rng.lognormal(0.0, 0.05, n)
    num = 100.0 * true_ratio * load * rng.lognormal(0.0, 0.05, n)
    return num.tolist(), den.tolist()


@pytest.mark.parametrize("n", [6, 9, 24])
def test_ratio_interval_covers_the_true_ratio_at_least_95_percent(n):
    # exact coverage 0.969, 0.961, 0.977 at n = 6, 9, 24; 1000 runs measure it within about 0.006
    rng = np.random.default_rng(n)
    covered = sum(fig.low <= 0.97 <= fig.high
                  for fig in (ratio(*simulated_ratios(rng, n, 0.97), "tokens/s") for _ in range(1000)))
    assert covered / 1000 >= 0.945


def test_a_figure_exactly_at_its_target_rarely_meets_or_misses_it():
    # the old rule (median ratio >= target) said "met" for about half of these runs
    rng = np.random.default_rng(1)
    figs = [ratio(*simulated_ratios(rng, MIN_REPEATS, 0.95), "tokens/s", 0.95) for _ in range(1000)]
    verdicts = [f.verdict for f in figs]
    assert verdicts.count("meets") / 1000 <= 0.025 and verdicts.count("misses") / 1000 <= 0.025
    assert sum(f.value >= 0.95 for f in figs) / 1000 > 0.4


def test_verdicts_on_fixed_timings():
    plain = [1.0] * 6  # seconds per round of plain generate; the same tokens in each call
    # the issue's three readings of steered / plain (0.935, 0.993, 1.088) and three more like them:
    # the median is 0.98 >= 0.95, but the interval [0.935, 1.088] holds 0.95, so undecided, not met
    steered = [1 / r for r in (0.935, 0.993, 1.088, 0.96, 1.01, 0.97)]
    fig = ratio(per_second(256, steered), per_second(256, plain), "tokens/s", 0.95)
    assert fig.value == pytest.approx(0.9815) and (fig.low, fig.high) == pytest.approx((0.935, 1.088))
    assert fig.verdict == "undecided" and fig.numerator == pytest.approx(256 * 0.9815)
    steady = [1 / r for r in (0.97, 0.99, 1.01, 0.98, 1.02, 0.975)]
    assert ratio(steady, [1.0] * 6, "s", 0.95).verdict == "meets"
    # the sweep speed-up: sequential / batched seconds, every round well under 5.6
    sweep = ratio([16.1, 16.5, 15.8, 16.2, 16.9, 15.9], [4.0, 4.02, 3.98, 4.1, 4.05, 4.0], "s", 5.6)
    assert fig.n == 6 and sweep.verdict == "misses" and sweep.high < 5.6
    # an upper bound (at most), and too few rounds for any verdict however far from the target
    assert measured([0.01, 0.012, 0.011, 0.013, 0.01, 0.012], "share", 0.05, at_most=True).verdict == "meets"
    straddles = [0.04, 0.06, 0.05, 0.045, 0.055, 0.07]
    assert measured(straddles, "share", 0.05, at_most=True).verdict == "undecided"
    assert measured([0.06, 0.07, 0.08, 0.09, 0.1, 0.2], "share", 0.05, at_most=True).verdict == "misses"
    assert measured([9.0, 9.1, 9.2, 9.3, 9.4], "s", 3.0, at_most=True).verdict == "undecided"
    assert measured([2.0] * 6, "s").verdict is None


def test_verdict_needs_the_whole_interval_on_one_side():
    assert verdict(0.95, 1.2, 0.95) == "meets"  # touching the bound on the good side
    assert verdict(0.8, 0.9499, 0.95) == "misses"
    assert verdict(0.9, 1.0, 0.95) == "undecided"
    assert verdict(None, None, 0.95) == "undecided"
    assert verdict(2.0, 3.0, 3.0, at_most=True) == "meets"
    assert verdict(3.01, 4.0, 3.0, at_most=True) == "misses"
    assert verdict(3.0, 4.0, 3.0, at_most=True) == "undecided"


def test_notes_name_the_interval_of_an_undecided_or_missed_figure():
    from harness.bench.suite import explain

    plain = [1.0] * 6
    issue = ratio([0.935, 0.993, 1.088, 0.96, 1.01, 0.97], plain, "tokens/s", 0.95)
    few = ratio([1.0, 1.01, 0.99], [1.0] * 3, "tokens/s", 0.97)
    sweep = ratio([16.1, 16.5, 15.8, 16.2, 16.9, 15.9], [4.0, 4.02, 3.98, 4.1, 4.05, 4.0], "s", 5.6)
    result = BenchResult(model={}, settings={"threads": 2, "load_average": 0.0}, steered_vs_plain=issue,
                         unsteered_vs_plain=few, unsteered_matches_plain=True,
                         sampled_vs_plain=ratio(plain, plain, "s"),
                         sweep_speedup=sweep, perplexity_vs_forward=ratio(plain, plain, "s", 0.9))
    notes = explain(result)
    assert len(notes) == 3, notes
    assert "steered_vs_plain = 0.982 [0.935, 1.09]" in notes[0] and "neither meets nor misses" in notes[0]
    assert "unsteered_vs_plain" in notes[1] and "--repeats 6" in notes[1] and "undecided" in notes[1]
    assert notes[2].startswith("sweep_speedup = 4 [3.95, 4.17]") and "misses its target" in notes[2]
