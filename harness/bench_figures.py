"""The figures of `harness bench` (each a measured value with its raw measurements and target),
and how two calls are timed side by side."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

SWEEP_K = 8
SWEEP_PROMPTS = 4
TARGETS = {"steered_vs_plain": 0.95, "unsteered_vs_plain": 0.97, "sweep_speedup": 0.7 * SWEEP_K,
           "perplexity_vs_forward": 0.9, "load_seconds_cached": 3.0, "k64_vs_k1": 0.9,
           "sampler_share_device": 0.05}


class Figure(BaseModel):
    """One measured figure; a ratio keeps its two raw measurements (`numerator`/`denominator`)."""

    value: float
    unit: str  # "x" for a ratio, "s", "MB", "nats", "share"
    numerator: float | None = None
    denominator: float | None = None
    raw_unit: str | None = None  # of numerator and denominator: "tokens/s" or "s"
    target: float | None = None
    at_most: bool = False  # the target is an upper bound
    met: bool | None = None


def figure(value: float, unit: str, target: float | None = None, *, at_most: bool = False,
           num: float | None = None, den: float | None = None, raw_unit: str | None = None) -> Figure:
    met = None if target is None else (value <= target if at_most else value >= target)
    return Figure(value=value, unit=unit, numerator=num, denominator=den, raw_unit=raw_unit,
                  target=target, at_most=at_most, met=met)


def ratio(num: float, den: float, raw_unit: str, target: float | None = None) -> Figure:
    return figure(num / den, "x", target, num=num, den=den, raw_unit=raw_unit)


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


def side_by_side(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each call: one warm-up each, then `repeats` rounds calling each in turn."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
