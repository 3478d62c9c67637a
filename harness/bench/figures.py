"""The figures of `harness bench` (each the median of repeated measurements, with its interval,
raw measurements and target), and how calls are timed side by side.

A figure meets or misses its target only when its whole interval lies on one side of the target;
otherwise it is undecided. A ratio is the median of per-round ratios of two calls timed in the
same round, so a change in machine load between rounds cancels out of each ratio."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from harness.stats import median_ci

SWEEP_K = 8
SWEEP_PROMPTS = 4
TARGETS = {"steered_vs_plain": 0.95, "unsteered_vs_plain": 0.97, "sweep_speedup": 0.7 * SWEEP_K,
           "perplexity_vs_forward": 0.9, "load_seconds_cached": 3.0, "k64_vs_k1": 0.9,
           "sampler_share_device": 0.05}
CONFIDENCE = 0.95
MIN_REPEATS = math.ceil(math.log2(2 / (1 - CONFIDENCE)))  # 6: fewer rounds give no interval of the median
Verdict = Literal["meets", "misses", "undecided"]


class Figure(BaseModel):
    """One figure: the median of `n` measurements (of per-round ratios, for a ratio) with a
    distribution-free `CONFIDENCE` interval of that median (`low`, `high`; None below
    `MIN_REPEATS` measurements). A ratio keeps the medians of its two raw measurements."""

    value: float
    unit: str  # "x" for a ratio, "s", "MB", "nats", "share"
    low: float | None = None
    high: float | None = None
    n: int = 1
    numerator: float | None = None
    denominator: float | None = None
    raw_unit: str | None = None  # of numerator and denominator: "tokens/s" or "s"
    target: float | None = None
    at_most: bool = False  # the target is an upper bound
    verdict: Verdict | None = None  # None: no target


def verdict(low: float | None, high: float | None, target: float, at_most: bool = False) -> Verdict:
    """`meets` or `misses` only when the interval [low, high] lies wholly on one side of `target`
    (a bound it may touch on the good side); `undecided` when it straddles it or is missing."""
    if low is None or high is None:
        return "undecided"
    if at_most:
        return "meets" if high <= target else "misses" if low > target else "undecided"
    return "meets" if low >= target else "misses" if high < target else "undecided"


def measured(values: Sequence[float], unit: str, target: float | None = None, *, at_most: bool = False,
             num: float | None = None, den: float | None = None, raw_unit: str | None = None) -> Figure:
    """The figure of repeated measurements `values`: their median, its interval and verdict."""
    ci = median_ci(values, CONFIDENCE)
    low, high = (None, None) if math.isnan(ci[0]) else ci
    return Figure(value=statistics.median(values), unit=unit, low=low, high=high, n=len(values),
                  numerator=num, denominator=den, raw_unit=raw_unit, target=target, at_most=at_most,
                  verdict=None if target is None else verdict(low, high, target, at_most))


def ratio(num: Sequence[float], den: Sequence[float], raw_unit: str, target: float | None = None) -> Figure:
    """The figure of per-round ratios num[i] / den[i], each pair measured in the same round."""
    return measured([a / b for a, b in zip(num, den, strict=True)], "x", target,
                    num=statistics.median(num), den=statistics.median(den), raw_unit=raw_unit)


def per_second(work: float, seconds: Sequence[float]) -> list[float]:
    """Throughput of each round: `work` (tokens) over its seconds."""
    return [work / s for s in seconds]


class BenchResult(BaseModel):
    """All figures of `harness bench`; suite and dtype figures are None when skipped."""

    model: dict[str, Any]
    settings: dict[str, Any]
    steered_vs_plain: Figure
    unsteered_vs_plain: Figure
    unsteered_matches_plain: bool  # greedy engine rows give plain generate's tokens
    sampled_vs_plain: Figure  # the engine's seeded sampling (run defaults) vs plain sampling
    sweep_speedup: Figure
    perplexity_vs_forward: Figure
    k4_vs_k1: Figure | None = None  # tokens/s with 4 distinct steering configs per batch of 64 ÷ with 1
    k16_vs_k1: Figure | None = None
    k64_vs_k1: Figure | None = None
    sampler_share_device: Figure | None = None  # share of generation time in the device-side sampler
    sampler_share_host: Figure | None = None  # the same for the host-side sampler it replaced
    bf16_vs_fp32: Figure | None = None  # tokens/s of steered generation, bfloat16 / float32
    bf16_max_abs_dlogprob: Figure | None = None  # largest |Δ log P(token)| of the perplexity scorer
    bf16_mean_abs_dlogppl: Figure | None = None  # mean |Δ logppl| per completion
    bf16_same_completions: Figure | None = None  # share of greedy completions identical in both
    load_seconds_first: Figure | None = None
    load_seconds_cached: Figure | None = None
    peak_rss_mb: Figure | None = None
    quick_suite_seconds: Figure | None = None
    details: dict[str, float] = {}  # raw measurements behind the notes
    notes: list[str] = []

    def figures(self) -> dict[str, Figure]:
        return {k: v for k, v in self if isinstance(v, Figure)}


def side_by_side(calls: dict[str, Callable[[], object]], repeats: int,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, list[float]]:
    """Seconds of each call in each of `repeats` rounds, after one warm-up call each. A round
    calls each once, in the given order in even rounds and reversed in odd ones (AB BA AB ...),
    so neither call always runs first and a drift in load reaches both calls of a round alike."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(repeats):
        for name in list(calls)[:: -1 if r % 2 else 1]:
            start = clock()
            calls[name]()
            times[name].append(clock() - start)
    return times
