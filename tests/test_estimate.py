"""One estimate, computed once: every record of a run nests the `Estimate` its numbers come from,
and the headline's minimum detectable effect comes from the headline's own per-prompt deltas."""

from __future__ import annotations

import numpy as np
import pytest

from harness.pipeline.analyse import TaskSamples, analyse
from harness.plan_power import power_lines
from harness.power import minimum_detectable_effect
from harness.schema.results import RunResult, SampleRecord, TaskInfo
from harness.schema.spec import FLUENCY_METRIC
from harness.schema.task import TaskSpec

N_PROMPTS = 12
SPEC = TaskSpec(name="t", kind="topic", prompts=["x"], steering={"method": "m"}, scorers={"m": {}},
                metrics={"m.value": "increase"}, headline="m.value")


def _samples(seed: int = 0) -> tuple[list[SampleRecord], np.ndarray, np.ndarray]:
    """Two samples per prompt: the headline moves by 0.3 with a small per-prompt spread (0.1), the
    log-perplexity by 1.0 with a large one (2.0). Returns the samples and each metric's per-prompt
    steered − unsteered means, computed here independently of the harness."""
    rng = np.random.default_rng(seed)
    head = rng.normal(0.3, 0.1, N_PROMPTS)
    ppl = rng.normal(1.0, 2.0, N_PROMPTS)
    noise = rng.normal(0, 0.01, (2, N_PROMPTS, 2, 2))  # condition, prompt, sample, metric
    out = []
    for c, condition in enumerate(("unsteered", "steered")):
        for i in range(N_PROMPTS):
            for j in range(2):
                value = 0.5 + 0.02 * i + c * head[i] + noise[c, i, j, 0]
                logppl = 3.0 + c * ppl[i] + noise[c, i, j, 1]
                out.append(SampleRecord(key=f"{condition}{i}{j}", task="t", condition=condition,
                                        prompt_index=i, prompt_id=f"p{i}", prompt=f"p{i}", sample=j, seed=j,
                                        completion="x", token_ids=[1], prompt_ids=[0],
                                        scores={"m.value": value, FLUENCY_METRIC: logppl}))
    by = {(s.condition, s.prompt_index, m): [] for s in out for m in s.scores}
    for s in out:
        for m, v in s.scores.items():
            by[(s.condition, s.prompt_index, m)].append(v)

    def deltas(metric: str) -> np.ndarray:
        return np.array([np.mean(by[("steered", i, metric)]) - np.mean(by[("unsteered", i, metric)])
                         for i in range(N_PROMPTS)])

    return out, deltas("m.value"), deltas(FLUENCY_METRIC)


def _run(numbers) -> RunResult:  # noqa: ANN001
    return RunResult(config={"tasks": {}}, config_hash="x", model={}, versions={}, started="", finished="",
                     tasks=[TaskInfo(name="t", kind="topic", prompt_ids=[f"p{i}" for i in range(N_PROMPTS)])],
                     effects=numbers.effects, fluency_cost=numbers.fluency, headlines=numbers.headlines,
                     per_prompt=numbers.summaries)


def test_the_headline_mde_comes_from_the_headline_deltas_not_the_perplexity():
    samples, head, ppl = _samples()
    numbers = analyse([TaskSamples(SPEC, [f"p{i}" for i in range(N_PROMPTS)], ["unsteered", "steered"], {},
                                   samples)])
    (headline,) = numbers.headlines
    want = minimum_detectable_effect(float(np.std(head, ddof=1)), N_PROMPTS)
    wrong = minimum_detectable_effect(float(np.std(ppl, ddof=1)), N_PROMPTS)
    assert wrong > 10 * want  # the two metrics' spreads really differ
    assert headline.mde == pytest.approx(want, rel=1e-9)
    (line,) = power_lines(_run(numbers))  # `harness plan` agrees with the run table
    assert line.mde == pytest.approx(headline.mde, rel=1e-12)
    assert line.sd == pytest.approx(float(np.std(head, ddof=1)), rel=1e-9)
