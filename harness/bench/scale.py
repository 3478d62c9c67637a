"""`harness bench` figures for scale: throughput as the number of distinct steering configs per
batch grows, and the sampler's share of a decode step, before (a host-side sampler drawing row by
row, as the engine had until engine semantics 2) and after (the device-side sampler)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from harness.bench.figures import TARGETS, Figure, measured, per_second, ratio, side_by_side
from harness.engine import Generation, Row, SamplerFactory, generate_batch, row_seed
from harness.engine.sampling import RowSeededSampler
from harness.models import LoadedModel
from harness.schema.generation import GenerationSettings
from harness.steering.base import Steering

K_VALUES = (1, 4, 16, 64)
K_BATCH = 64


class HostRowSampler(LogitsProcessor):
    """The engine's sampler before engine semantics 2, kept to measure against: it copies the
    `[batch, vocab]` probabilities to the host and draws each row from its own `torch.Generator`
    in a Python loop, so the device waits once per token."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_k: int, top_p: float, width: int,
                 device: torch.device):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        warpers: list[LogitsProcessor] = []
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warp = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(self.warp(input_ids, scores).float(), dim=-1).cpu()
        rows = zip(probs, self.generators, strict=True)
        picks = [int(torch.multinomial(p, 1, generator=g)) for p, g in rows]
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks)), torch.tensor(picks, device=scores.device)] = 0.0
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timed:
    """A sampler factory whose processors add the seconds they spend to `seconds`, one entry per
    batch it built a sampler for (in call order)."""

    def __init__(self, factory: SamplerFactory):
        self.factory = factory
        self.seconds: list[float] = []

    def __call__(self, *args: Any) -> LogitsProcessor:
        inner = self.factory(*args)
        timed = self
        timed.seconds.append(0.0)

        class Timed(LogitsProcessor):
            def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
                _sync(scores.device)
                start = time.perf_counter()
                out = inner(input_ids, scores)
                _sync(scores.device)
                timed.seconds[-1] += time.perf_counter() - start
                return out

        return Timed()


def batch_rows(prompts: Sequence[str], n: int, configs: int) -> tuple[list[Row], list[int]]:
    """`n` rows over the prompts, row i steered by config i mod `configs` (its index per row)."""
    rows = []
    for i in range(n):
        prompt, sample = prompts[i % len(prompts)], i // len(prompts)
        rows.append(Row(prompt, f"c{i % configs}", sample, row_seed(0, prompt, sample)))
    return rows, [i % configs for i in range(n)]


def k_scaling(lm: LoadedModel, prompts: Sequence[str], base: Steering, settings: GenerationSettings,
              repeats: int, details: dict[str, float], batch: int = K_BATCH) -> dict[str, Figure]:
    """Tokens/s of one batch whose rows carry K distinct steering configs (K = 1, 4, 16, 64), each
    as a ratio to K = 1, measured side by side; every row emits exactly `max_new_tokens` tokens."""
    out: dict[str, list[Generation]] = {}
    calls = {}
    for k in (k for k in K_VALUES if k <= batch):
        rows, config = batch_rows(prompts, batch, k)
        steerings = [base.scaled(1.0 + 0.25 * c) for c in config]

        def call(rows: list[Row] = rows, steerings: list[Steering] = steerings, k: int = k) -> None:
            out[f"k{k}"] = generate_batch(lm, rows, steerings, settings,
                                          min_new_tokens=settings.max_new_tokens)

        calls[f"k{k}"] = call
    secs = side_by_side(calls, repeats)
    tps = {name: per_second(sum(len(g.token_ids) for g in out[name]), secs[name]) for name in calls}
    details.update({f"{name}_tokens_per_s": round(statistics.median(v), 1) for name, v in tps.items()})
    details.update({f"{name}_tokens": float(sum(len(g.token_ids) for g in out[name])) for name in calls})
    return {f"k{name[1:]}_vs_k1": ratio(tps[name], tps["k1"], "tokens/s",
                                        TARGETS["k64_vs_k1"] if name == "k64" else None)
            for name in calls if name != "k1"}


def sampler_share(lm: LoadedModel, prompts: Sequence[str], steering: Steering, settings: GenerationSettings,
                  repeats: int, details: dict[str, float]) -> dict[str, Figure]:
    """The share of generation time spent in the sampler, for the device-side sampler and for the
    host-side one it replaced, on the same rows (sampled, run defaults), side by side: the median
    of each round's share, with its interval."""
    rows, _ = batch_rows(prompts, len(prompts), 1)
    timed = {"device": _Timed(RowSeededSampler), "host": _Timed(HostRowSampler)}

    def call(name: str):  # noqa: ANN202
        def run() -> None:
            generate_batch(lm, rows, [steering] * len(rows), settings,
                           min_new_tokens=settings.max_new_tokens, sampler=timed[name])
        return run

    secs = side_by_side({name: call(name) for name in timed}, repeats)
    out = {}
    for name, t in timed.items():
        sampler = t.seconds[1:]  # the first is the warm-up call's
        step = statistics.median(sampler) / settings.max_new_tokens
        details[f"sampler_{name}_ms_per_step"] = round(1000 * step, 3)
        target = TARGETS["sampler_share_device"] if name == "device" else None
        shares = [a / b for a, b in zip(sampler, secs[name], strict=True)]
        out[f"sampler_share_{name}"] = measured(shares, "share", target, at_most=True)
    return out
