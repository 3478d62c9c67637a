"""One estimate, computed once: every record of a run nests the `Estimate` its numbers come from,
and the headline's minimum detectable effect comes from the headline's own per-prompt deltas."""

from __future__ import annotations

import inspect
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.analyses.plan_power import power_lines
from harness.pipeline.analyse import TaskSamples, analyse
from harness.schema.results import RunResult, SampleRecord, TaskInfo
from harness.schema.spec import FLUENCY_METRIC
from harness.schema.task import TaskSpec
from harness.stats.comparison import Family, compare_values
from harness.stats.power import minimum_detectable_effect

N_PROMPTS = 12
SPEC = TaskSpec(name="t", kind="topic", prompts=["x"], steering={"method": "m"},
                scorers={"m": {}, "perplexity": {}}, metrics={"m.value": "increase"}, headline="m.value")


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
    assert headline.estimate.mde == pytest.approx(want, rel=1e-9)
    (line,) = power_lines(_run(numbers))  # `harness plan` agrees with the run table
    assert line.mde == headline.estimate.mde
    assert line.sd == pytest.approx(float(np.std(head, ddof=1)), rel=1e-9)


def test_every_record_nests_the_estimate_of_its_own_per_prompt_values():
    samples, head, ppl = _samples()
    numbers = analyse([TaskSamples(SPEC, [f"p{i}" for i in range(N_PROMPTS)], ["unsteered", "steered"], {},
                                   samples)])
    (effect,) = numbers.effects
    (fluency,) = numbers.fluency
    (headline,) = numbers.headlines
    assert headline.estimate == effect.estimate and headline.fluency == fluency.estimate
    for e, deltas in ((effect.estimate, head), (fluency.estimate, ppl)):
        t = stats.ttest_1samp(deltas, 0.0)
        ci = t.confidence_interval(0.95)
        assert e.point == pytest.approx(deltas.mean(), abs=1e-12)
        assert (e.ci_low, e.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
        assert e.sd == pytest.approx(np.std(deltas, ddof=1), rel=1e-9)
        assert (e.n, e.n_planned, e.n_unscorable, e.paired) == (N_PROMPTS, N_PROMPTS, 0, True)
        assert e.mde == pytest.approx(minimum_detectable_effect(e.sd, N_PROMPTS), rel=1e-12)
        assert e.ci_method == "Student t" and e.test == "sign-flip permutation"
    assert fluency.ppl_ratio == pytest.approx(np.exp(fluency.estimate.point))


def test_a_prompt_without_a_finite_value_is_counted_as_unscorable():
    samples, _, _ = _samples()
    samples = [s.model_copy(update={"scores": {"m.value": float("nan")}})
               if s.prompt_index < 3 and s.condition == "steered" else s for s in samples]
    numbers = analyse([TaskSamples(SPEC, [f"p{i}" for i in range(N_PROMPTS)], ["unsteered", "steered"], {},
                                   samples)])
    e = next(e for e in numbers.effects if e.metric == "m.value").estimate
    assert (e.n, e.n_planned, e.n_unscorable) == (N_PROMPTS - 3, N_PROMPTS, 3)


def test_a_run_json_of_the_previous_schema_is_refused_with_a_message_to_rerun(tmp_path):
    from harness.errors import UserError
    from harness.schema.results import SCHEMA_VERSION
    from harness.store import read_run

    (tmp_path / "run.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION - 1}))
    with pytest.raises(UserError, match="older harness"):
        read_run(tmp_path)


def test_the_multiplicity_families_are_one_enum():
    import harness.analyses.compare
    import harness.pipeline.analyse

    for module in (harness.analyses.compare, harness.pipeline.analyse):
        source = inspect.getsource(module)
        assert '"confirmatory"' not in source and '"exploratory"' not in source
    assert {f.value for f in Family} >= {"confirmatory", "exploratory", "check"}


def test_plan_accounts_for_the_holm_family_a_headline_is_judged_in():
    """With a fluency cost beside the headline, Holm doubles the smallest p: at 6 prompts a headline
    that moves every prompt a lot is still not significant, so plan asks for at least 7."""
    samples, _, _ = _samples()
    six = [s for s in samples if s.prompt_index < 6]
    six = [s.model_copy(update={"scores": {**s.scores, "m.value": s.scores["m.value"] + 5.0}})
           if s.condition == "steered" else s for s in six]
    numbers = analyse([TaskSamples(SPEC, [f"p{i}" for i in range(6)], ["unsteered", "steered"], {}, six)])
    (effect,) = numbers.effects
    assert effect.estimate.p_value == 2 / 64 < 0.05  # every prompt moved: the smallest p at n = 6
    assert effect.p_adjusted == 2 * 2 / 64 and not effect.significant
    (line,) = power_lines(_run(numbers), effect=10.0)
    assert line.family == 2 and line.min_prompts == 7 and line.prompts_needed == 7
    assert math.isnan(line.mde_family) and math.isfinite(line.mde)


def test_only_stats_calls_scipy():
    """Every statistic comes from harness.stats (scorers may use scipy for their own scores)."""
    root = Path(__file__).resolve().parent.parent / "harness"
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if re.search(r"^\s*(from|import) scipy", p.read_text(encoding="utf-8"), re.M)
                   and p.parent.name != "scorers")
    assert users == ["stats/__init__.py"]


def test_a_constant_per_prompt_difference_has_no_interval_and_no_mde_only_its_exact_p():
    """8 of 8 prompts moving by exactly +1 is strong evidence (sign-flip p = 2/256), but the t
    interval would be the point [1, 1] and the MDE 0: claims no sample of 8 prompts supports."""
    from harness.report.cells import estimate, text
    from harness.stats import CI_ZERO_SPREAD

    keys = [f"p{i}" for i in range(8)]
    flat = compare_values({k: 0.0 for k in keys}, {k: 1.0 for k in keys}).estimate
    assert math.isnan(flat.ci_low) and math.isnan(flat.ci_high) and math.isnan(flat.mde)
    assert flat.ci_method == CI_ZERO_SPREAD and flat.point == 1.0 and flat.sd == 0.0
    assert flat.p_value == 2 / 256
    assert math.isnan(minimum_detectable_effect(0.0, 8, sides=1))  # check's "detectable" column too
    assert text(estimate(flat)) == f"+1.000 ({CI_ZERO_SPREAD})"
    nearly = compare_values({k: 0.0 for k in keys}, {**{k: 1.0 for k in keys}, "p0": 0.9}).estimate
    assert nearly.ci_method == "Student t" and nearly.ci_low < nearly.point < nearly.ci_high
    assert 0 < nearly.mde < 1
    unpaired = compare_values({"a": 2.0, "b": 2.0}, {"x": 2.0, "y": 2.0, "z": 2.0}).estimate
    assert unpaired.ci_method == CI_ZERO_SPREAD and math.isnan(unpaired.ci_low) and math.isnan(unpaired.mde)


def test_check_does_not_promise_a_prompt_count_from_prompts_that_all_moved_alike():
    from harness.analyses.check import _more

    keys = [f"p{i}" for i in range(4)]
    flat = compare_values({k: 0.0 for k in keys}, {k: 0.5 for k in keys})
    assert "no spread to plan" in _more(flat, 0.5) and "would decide it" not in _more(flat, 0.5)
    spread = compare_values({k: 0.0 for k in keys}, {"p0": 0.4, "p1": 0.6, "p2": 0.5, "p3": 0.45})
    assert "would decide it" in _more(spread, 0.5)
