"""Is it the direction? Matched random and negated controls, the disruption label, and power."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.methods.actadd import Addition, build_actadd
from harness.methods.mean_diff import build_mean_diff
from harness.pipeline.analyse import DISRUPTION, TaskSamples, analyse
from harness.pipeline.plan import Condition, plan_task, task_conditions, with_controls
from harness.runner import RunOptions, resolve_tasks, run
from harness.schema.results import SampleRecord
from harness.schema.task import ControlsSpec
from harness.stats import paired_p_value
from harness.stats.power import minimum_detectable_effect, prompts_needed
from tests.test_runner import write_task

PAIRS = [("I love the way", "I hate the way"), ("the light falls on the water", "the tower")]


@pytest.mark.parametrize("which", ["actadd", "mean_diff"])
def test_a_random_control_has_the_steered_vectors_norm_per_layer_and_row(tiny_llama, which):
    steering = (build_actadd(tiny_llama, [Addition(1, 8.0, "love"), Addition(1, -8.0, "hate"),
                                          Addition(3, 2.0, "tower")]) if which == "actadd"
                else build_mean_diff(tiny_llama, PAIRS, 2, 4.0))
    controls = with_controls({"steered": Condition(steering, {}, {"x": 1})},
                             ControlsSpec(random=3, negated=True))
    assert list(controls) == ["steered", "steered · random 1", "steered · random 2", "steered · random 3",
                              "steered · negated"]
    for name, cond in controls.items():
        for iv, ref in zip(cond.steering.interventions, steering.interventions, strict=True):
            norms, want = iv.vector.norm(dim=-1), ref.vector.norm(dim=-1)
            torch.testing.assert_close(norms, want, atol=1e-5, rtol=1e-6)
            if "random" in name:  # a different direction, not a rescaled copy
                cos = torch.nn.functional.cosine_similarity(iv.vector.reshape(-1), ref.vector.reshape(-1),
                                                            dim=0)
                assert abs(float(cos)) < 0.9
    torch.testing.assert_close(controls["steered · negated"].steering.interventions[0].vector,
                               -steering.interventions[0].vector)
    again = with_controls({"steered": Condition(steering, {}, {"x": 1})}, ControlsSpec(random=3))
    assert torch.equal(again["steered · random 2"].steering.interventions[0].vector,
                       controls["steered · random 2"].steering.interventions[0].vector)  # seeded


def test_controls_share_the_unsteered_samples(tiny_llama, tmp_path):
    options = RunOptions(progress=False, controls="random=2,negated")
    (task,) = resolve_tasks(str(write_task(tmp_path)), options)
    plain = plan_task(tiny_llama, task, task_conditions(tiny_llama, task))
    controlled = plan_task(tiny_llama, task,
                           with_controls(task_conditions(tiny_llama, task), task.spec.controls))
    unsteered = {i.key for i in plain.items if i.row.condition == "unsteered"}
    assert {i.key for i in controlled.items if i.row.condition == "unsteered"} == unsteered
    # 3 controls, once each
    assert len(set(controlled.keys)) == len(controlled.keys) == len(plain.keys) * 5 // 2
    result = run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama, options=options)
    kinds = {c.kind for c in result.controls}
    assert kinds == {"specific", "direction"}
    assert all(math.isfinite(c.estimate.ci_low) for c in result.controls
               if c.estimate.n >= 2 and c.metric == "perplexity.logppl")
    ledger = {(r.condition, r.kind): r.positions for r in result.ledger}
    assert ledger[("steered · random 1", "prompt")] == ledger[("steered", "prompt")] > 0  # same positions
    assert result.headlines[0].condition == "steered" and len(result.headlines) == 1  # no control headlines


def _synthetic(negated_shift: float) -> list[SampleRecord]:
    """Scores where steering adds 0.5, random controls add 0.1 and the negated vector `negated_shift`."""
    rng = np.random.default_rng(0)
    shift = {"unsteered": 0.0, "steered": 0.5, "steered · random 1": 0.1, "steered · random 2": 0.1,
             "steered · negated": negated_shift}
    out = []
    for i in range(16):
        level = rng.normal()
        for condition, s in shift.items():
            for j in range(2):
                value = level + s + rng.normal(0, 0.05)
                out.append(SampleRecord(key=f"{condition}{i}{j}", task="t", condition=condition,
                                        prompt_index=i, prompt_id=f"p{i}", prompt=f"p{i}", sample=j, seed=j,
                                        completion="x", token_ids=[1], prompt_ids=[0],
                                        scores={"m.value": value}))
    return out


@pytest.mark.parametrize(("negated_shift", "label"), [(0.4, DISRUPTION), (-0.4, None), (0.0, None)])
def test_the_disruption_label_follows_what_the_negated_vector_does(negated_shift, label):
    from harness.schema.task import TaskSpec

    spec = TaskSpec(name="t", kind="topic", prompts=["x"], steering={"method": "m"}, scorers={"m": {}},
                    metrics={"m.value": "increase"}, headline="m.value")
    controls = {"steered · random 1": ("steered", "random"), "steered · random 2": ("steered", "random"),
                "steered · negated": ("steered", "negated")}
    numbers = analyse([TaskSamples(spec, [f"p{i}" for i in range(16)], ["unsteered", "steered", *controls],
                                   controls, _synthetic(negated_shift))])
    specific = next(c for c in numbers.controls if c.kind == "specific")
    direction = next(c for c in numbers.controls if c.kind == "direction")
    s, d = specific.estimate, direction.estimate
    assert s.point == pytest.approx(0.4, abs=0.03) and s.ci_low < 0.4 < s.ci_high
    assert d.point == pytest.approx(0.5 - negated_shift, abs=0.03)
    assert direction.label == label and numbers.headlines[0].label == label
    assert numbers.headlines[0].specific == specific.estimate


def test_the_minimum_detectable_effect_is_detected_in_80_percent_of_simulated_runs():
    n, sd = 24, 1.0
    mde = minimum_detectable_effect(sd, n)
    rng = np.random.default_rng(0)
    detected = [paired_p_value(rng.normal(mde, sd, n), seed=i, n_resamples=2000) < 0.05 for i in range(1000)]
    assert 0.75 <= np.mean(detected) <= 0.85, np.mean(detected)
    assert prompts_needed(sd, mde) in (n - 1, n, n + 1)  # the two formulas invert each other
    assert prompts_needed(sd, mde / 2) > 3 * n and prompts_needed(sd, 0.0) is None


def test_love_hate_with_controls_on_the_embedded_model(smollm, tmp_path, monkeypatch):
    import harness.pipeline.diagnose as diagnose

    monkeypatch.setattr(diagnose, "NEUTRAL_TEXTS", 24)  # the diagnostics' own tests use more
    options = RunOptions(progress=False, max_prompts=8, samples=2, max_new_tokens=16,
                         controls="random=3,negated")
    result = run("love_hate", tmp_path / "run", model=smollm, options=options)
    (off,) = result.off_target
    assert off.condition == "steered" and off.n_texts == 24 and off.mean_kl > 0
    (cap,) = result.capability
    assert cap.accuracy_unsteered == 1.0 and cap.n_items >= 100
    head = [c for c in result.controls if c.headline]
    assert {c.kind for c in head} == {"specific", "direction"}
    for c in head:
        e = c.estimate
        assert e.n == 8 and e.ci_low <= e.point <= e.ci_high and math.isfinite(c.p_adjusted)
    assert result.headlines[0].specific is not None and result.headlines[0].estimate.mde > 0
    assert {c.condition for c in result.counts} == {"unsteered", "steered", "steered · random 1",
                                                    "steered · random 2", "steered · random 3",
                                                    "steered · negated"}
