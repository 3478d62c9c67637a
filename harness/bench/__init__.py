"""`harness bench`: the engine against plain `generate`, batched against sequential sweeps, the
perplexity scorer against a bare forward pass, bfloat16 against float32, and (bench_suite) model
load and quick-suite figures. Every pair is measured side by side in one process on the same
inputs: one warm-up call each, then `repeats` interleaved rounds; each figure is the median of its
per-round ratios with an interval (bench_figures)."""

from __future__ import annotations

import copy
import os
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from harness.bench.figures import (
    MIN_REPEATS,
    SWEEP_K,
    SWEEP_PROMPTS,
    TARGETS,
    BenchResult,
    Figure,
    measured,
    per_second,
    ratio,
    side_by_side,
)
from harness.bench.scale import K_BATCH, batch_rows, k_scaling, sampler_share
from harness.bench.suite import explain, measure_suite
from harness.engine import Generation, generate_batch
from harness.methods.actadd import Addition, build_actadd
from harness.models import DEFAULT_MODEL, EMBEDDED, LoadedModel, load_model
from harness.models.tokens import encode, left_pad
from harness.schema.generation import GenerationSettings
from harness.scorers.base import Sample, ScoringContext
from harness.scorers.perplexity import PerplexityParams, PerplexityScorer

PROMPTS = (
    "I hate you because", "The Eiffel Tower is in", "We talked about the weather and",
    "My favourite thing about the city is", "I hate waiting in line, so", "Yesterday my neighbour told me",
    "The best way to cook rice is", "When the meeting ended, everyone",
)
def engine_rows(lm: LoadedModel, prompts: Sequence[str], steerings: Sequence[Any],
                settings: GenerationSettings) -> list[Generation]:
    """One engine batch of `prompts`, each row emitting exactly `max_new_tokens` tokens."""
    rows, _ = batch_rows(prompts, len(prompts), 1)
    return generate_batch(lm, rows, list(steerings), settings, min_new_tokens=settings.max_new_tokens)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


@contextmanager
def full_length(lm: LoadedModel, n: int) -> Iterator[None]:
    """Make every plain `generate` call emit exactly `n` tokens per row (EOS masked until then),
    as the engine's rows do, so both do the same work whatever the steering does to the text."""
    config = lm.model.generation_config
    saved = config.min_new_tokens
    config.min_new_tokens = n
    try:
        yield
    finally:
        config.min_new_tokens = saved


def run_bench(
    model: str | LoadedModel = DEFAULT_MODEL,
    *,
    repeats: int = MIN_REPEATS,
    batch_size: int | None = None,
    max_new_tokens: int = 32,
    dtype: str = "float32",
    compare_bf16: bool = True,
    loads: bool = True,
    suite: bool = True,
    suite_target: str = "quick",
    suite_args: Sequence[str] = (),
    device: str = "cpu",
    scale: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure every figure of `harness bench` on `model` (a name/path, or an already loaded model).

    `batch_size`: rows of the engine-vs-plain batch (default: the 8 bench prompts); the sweep
    batch always holds all its k x 4 rows. `loads` measures first and cached load in fresh
    processes; `suite` runs `harness run SUITE_TARGET [SUITE_ARGS]` in one. `compare_bf16`
    measures a bfloat16 copy against the float32 model (only when `dtype` is float32). `scale`
    measures throughput as distinct configs per batch grow (K-scaling) and the sampler's share.
    `repeats` rounds per figure: below `MIN_REPEATS` no figure gets an interval or a verdict.
    """

    say = progress or (lambda _msg: None)
    load_avg = os.getloadavg()[0]
    lm = model if isinstance(model, LoadedModel) else load_model(model, dtype=dtype, device=device)
    dtype = str(next(lm.model.parameters()).dtype).removeprefix("torch.")
    greedy = GenerationSettings(max_new_tokens=max_new_tokens, greedy=True, repetition_penalty=1.0)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch_size or len(PROMPTS))]
    layer = min(3, lm.n_layers - 1)
    love = build_actadd(lm, [Addition(layer, 1.0, "Love"), Addition(layer, -1.0, "Hate")])
    info: dict[str, Any] = {"batch_size": len(prompts), "max_new_tokens": max_new_tokens, "repeats": repeats,
                            "dtype": dtype, "threads": torch.get_num_threads(), "sweep_k": SWEEP_K,
                            "sweep_prompts": SWEEP_PROMPTS, "steering": f"ActAdd Love-Hate, layer {layer}",
                            "kv_cache": bool(lm.model.generation_config.use_cache),
                            "load_average": round(load_avg, 2), "device": _device_name(lm.device)}
    figures: dict[str, Any] = {}
    details: dict[str, float] = {}
    with full_length(lm, max_new_tokens):
        say("engine vs plain generate (greedy, then sampled)")
        figures.update(_engine_vs_plain(lm, prompts, love.scaled(4.0), greedy, repeats))
        say(f"sweep: {SWEEP_K} configs one by one vs batched")
        sweep_gens, figures["sweep_speedup"] = _sweep(lm, prompts[:SWEEP_PROMPTS], love, greedy, repeats,
                                                      details)
        say("perplexity scorer vs bare forward")
        figures["perplexity_vs_forward"] = _perplexity(lm, sweep_gens, repeats)
        if scale:
            say(f"K-scaling: 1, 4, 16, 64 distinct configs in a batch of {K_BATCH} rows")
            figures.update(k_scaling(lm, PROMPTS, love, greedy, repeats, details))
            say("sampler share of generation: device-side vs the host-side sampler it replaced")
            figures.update(sampler_share(lm, prompts, love.scaled(4.0), greedy.model_copy(
                update={"greedy": False, "repetition_penalty": 1.2}), repeats, details))
        if compare_bf16 and dtype == "float32":
            say("bfloat16 vs float32")
            figures.update(_bf16(lm, prompts, love.scaled(4.0), greedy, sweep_gens, repeats))
    notes: list[str] = []
    if loads or suite:
        spec = model if isinstance(model, str) else lm.name if lm.name in EMBEDDED else lm.source
        figures.update(measure_suite(spec, dtype, loads=loads, suite=suite, target=suite_target,
                                     extra_args=[*suite_args, "--device", device], say=say, notes=notes,
                                     repeats=repeats))
    result = BenchResult(model=lm.identity(), settings=info, details=details, notes=notes, **figures)
    result.notes.extend(explain(result))
    return result


def _engine_vs_plain(lm: LoadedModel, prompts: list[str], steering: Any, greedy: GenerationSettings,
                     repeats: int) -> dict[str, Any]:
    """Greedy steered and unsteered engine rows vs plain `generate`; then the engine's sampling
    (per-row seeded, the run defaults) vs plain `generate(do_sample=True)` with the same warpers."""
    tok = lm.tokenizer
    ids, mask = left_pad([encode(tok, p) for p in prompts], tok.pad_token_id)
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    sampled = greedy.model_copy(update={"greedy": False, "repetition_penalty": 1.2})
    out: dict[str, Any] = {}

    def plain(name: str, **kw: Any) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad():
                out[name] = lm.model.generate(
                    input_ids=ids, attention_mask=mask, max_new_tokens=greedy.max_new_tokens,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kw)[:, ids.shape[1]:]
        return call

    def engine(name: str, steer: Any, settings: GenerationSettings) -> Callable[[], None]:
        def call() -> None:
            out[name] = engine_rows(lm, prompts, [steer] * len(prompts), settings)
        return call

    secs = side_by_side({"plain": plain("plain", do_sample=False),
                         "steered": engine("steered", steering, greedy),
                         "unsteered": engine("unsteered", None, greedy)}, repeats)
    warpers = {"top_p": sampled.top_p, "top_k": 0, "temperature": 1.0, "repetition_penalty": 1.2}
    secs |= side_by_side({"plain_sampled": plain("plain_sampled", do_sample=True, **warpers),
                          "sampled": engine("sampled", steering, sampled)}, repeats)

    def tps(name: str) -> list[float]:
        made = out[name]
        tokens = made.numel() if isinstance(made, torch.Tensor) else sum(len(g.token_ids) for g in made)
        return per_second(tokens, secs[name])

    return {"steered_vs_plain": ratio(tps("steered"), tps("plain"), "tokens/s", TARGETS["steered_vs_plain"]),
            "unsteered_vs_plain": ratio(tps("unsteered"), tps("plain"), "tokens/s",
                                        TARGETS["unsteered_vs_plain"]),
            "unsteered_matches_plain": [g.token_ids for g in out["unsteered"]] == out["plain"].tolist(),
            "sampled_vs_plain": ratio(tps("sampled"), tps("plain_sampled"), "tokens/s")}


def _sweep(lm: LoadedModel, prompts: list[str], base: Any, settings: GenerationSettings,
           repeats: int, details: dict[str, float]) -> tuple[list[Generation], Figure]:
    configs = {f"coeff{c}": base.scaled(float(c)) for c in range(1, SWEEP_K + 1)}
    out: dict[str, list[Generation]] = {}

    def one_by_one() -> None:
        for steer in configs.values():
            engine_rows(lm, prompts, [steer] * len(prompts), settings)

    def batched() -> None:
        every = [p for p in prompts for _ in configs]
        out["batched"] = engine_rows(lm, every, [s for _ in prompts for s in configs.values()], settings)

    secs = side_by_side({"sequential": one_by_one, "batched": batched}, repeats)
    seq, bat = statistics.median(secs["sequential"]), statistics.median(secs["batched"])
    steps = settings.max_new_tokens
    details["sweep_ms_per_step_sequential"] = 1000 * seq / (len(configs) * steps)
    details["sweep_ms_per_step_batched"] = 1000 * bat / steps
    params = sum(p.numel() for p in lm.model.parameters())
    details["sweep_batched_gflops"] = 2 * params * len(out["batched"]) * steps / bat / 1e9
    return out["batched"], ratio(secs["sequential"], secs["batched"], "s", TARGETS["sweep_speedup"])


def _samples(gens: list[Generation]) -> list[Sample]:
    return [Sample(g.row.prompt, g.completion, g.row.condition, tuple(g.prompt_ids), tuple(g.token_ids))
            for g in gens]


def _scorer_logprobs(lm: LoadedModel, samples: list[Sample], batch: int) -> list[list[float]]:
    ctx = ScoringContext(lm=lm, load_judge=lambda _name: lm)
    scores = PerplexityScorer(PerplexityParams(batch_size=batch)).score(samples, ctx)
    return [s.detail.get("token_logprobs", []) for s in scores]


def _perplexity(lm: LoadedModel, gens: list[Generation], repeats: int) -> Figure:
    samples = _samples(gens)
    batch = len(samples)
    rows = [list(s.prompt_ids) + list(s.completion_ids) for s in samples]
    tensors = [left_pad(rows[i : i + batch], lm.tokenizer.pad_token_id) for i in range(0, len(rows), batch)]
    tokens = sum(map(len, rows))

    def forward() -> None:
        with torch.no_grad():
            for ids, mask in tensors:
                lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device))

    secs = side_by_side({"scorer": lambda: _scorer_logprobs(lm, samples, batch), "forward": forward}, repeats)
    target = TARGETS["perplexity_vs_forward"]
    return ratio(per_second(tokens, secs["scorer"]), per_second(tokens, secs["forward"]), "tokens/s", target)


def _bf16(lm: LoadedModel, prompts: list[str], steering: Any, settings: GenerationSettings,
          gens: list[Generation], repeats: int) -> dict[str, Figure]:
    model = copy.deepcopy(lm.model).to(torch.bfloat16)
    half = LoadedModel(model, lm.tokenizer, lm.name, lm.source, lm.sha256)
    out: dict[str, list[Generation]] = {}

    def run(name: str, m: LoadedModel) -> Callable[[], None]:
        def call() -> None:
            out[name] = engine_rows(m, prompts, [steering] * len(prompts), settings)
        return call

    secs = side_by_side({"float32": run("float32", lm), "bfloat16": run("bfloat16", half)}, repeats)
    tokens = {name: sum(len(g.token_ids) for g in out[name]) for name in out}
    samples = _samples(gens)
    full, low = (_scorer_logprobs(m, samples, len(samples)) for m in (lm, half))
    deltas = [abs(a - b) for fa, fb in zip(full, low, strict=True) for a, b in zip(fa, fb, strict=True)]
    ppl = [abs(sum(fa) / len(fa) - sum(fb) / len(fb)) for fa, fb in zip(full, low, strict=True) if fa]
    same = [a.token_ids == b.token_ids for a, b in zip(out["float32"], out["bfloat16"], strict=True)]
    return {"bf16_vs_fp32": ratio(per_second(tokens["bfloat16"], secs["bfloat16"]),
                                  per_second(tokens["float32"], secs["float32"]), "tokens/s"),
            "bf16_max_abs_dlogprob": measured([max(deltas)], "nats"),
            "bf16_mean_abs_dlogppl": measured([statistics.fmean(ppl)], "nats"),
            "bf16_same_completions": measured([sum(same) / len(same)], "share")}
