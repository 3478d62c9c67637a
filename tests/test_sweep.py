"""`harness sweep` on a tiny random model: configs as rows equal configs run alone, norm units,
frontier, steerability and held-out selection."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.analyses.sweep import SweepGrid, residual_norm, run_sweep, sweep_conditions
from harness.analyses.sweep_analysis import summarize_sweep
from harness.cli import main
from harness.models.tokens import encode
from harness.runner import RunOptions, resolve_tasks, run
from harness.store import read_run
from tests.test_runner import PROMPTS, write_task

QUIET = RunOptions(progress=False, overrides=["generation.greedy=true"])


@pytest.fixture(scope="module")
def sweep_dir(tiny_llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    (task,) = resolve_tasks(str(write_task(folder)), QUIET)
    run_sweep(task, folder / "out", tiny_llama, SweepGrid((1, 2), (-4.0, 0.0, 4.0, 8.0)), QUIET)
    return folder


def test_each_config_of_a_sweep_equals_that_config_run_alone(tiny_llama, sweep_dir):
    sweep, sweep_samples = read_run(sweep_dir / "out")
    for layer, coeff in ((1, 8.0), (2, -4.0)):
        options = RunOptions(progress=False, overrides=[*QUIET.overrides, f"steering.layer={layer}",
                                                        f"steering.coeff={coeff}"])
        alone = run(str(sweep_dir / "tiny_topic.yaml"), sweep_dir / f"alone{layer}", model=tiny_llama,
                    options=options)
        _, alone_samples = read_run(sweep_dir / f"alone{layer}")
        name = f"L{layer} c{coeff:+g}"
        got = {(s.prompt, s.sample): s.token_ids for s in sweep_samples if s.condition == name}
        want = {(s.prompt, s.sample): s.token_ids for s in alone_samples if s.condition == "steered"}
        assert got == want
        sweep_eff = {e.metric: e for e in sweep.effects if e.condition == name}
        for e in alone.effects:
            assert sweep_eff[e.metric].estimate.point == pytest.approx(e.estimate.point, abs=1e-9)
            mine = sweep_eff[e.metric].estimate
            assert mine.ci_low == pytest.approx(e.estimate.ci_low, abs=1e-9, nan_ok=True)
            assert mine.ci_method == e.estimate.ci_method


def test_norm_unit_scales_each_vector_to_multiples_of_the_residual_norm(tiny_llama, tmp_path):
    (task,) = resolve_tasks(str(write_task(tmp_path)), QUIET)
    conditions = sweep_conditions(SweepGrid((1, 2), (0.5, 2.0), "norm"))(tiny_llama, task)
    for layer in (1, 2):  # not the last layer: its hidden_states entry is after the final norm
        norms = []
        for prompt in PROMPTS:  # independent of harness.analyses.sweep: output_hidden_states
            ids = torch.tensor([encode(tiny_llama.tokenizer, prompt)])
            with torch.no_grad():
                hidden = tiny_llama.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
            norms += hidden[0, 1:].norm(dim=-1).tolist()
        assert residual_norm(tiny_llama, task, layer) == pytest.approx(np.mean(norms), rel=1e-5)
        for coeff in (0.5, 2.0):
            steering = conditions[f"L{layer} c{coeff:+g}"].steering
            assert steering.position_norm() == pytest.approx(coeff * np.mean(norms), rel=1e-4)


def test_frontier_best_steerability_and_selection(sweep_dir):
    run_, samples = read_run(sweep_dir / "out")
    s = summarize_sweep(run_, samples, "tiny_topic", max_fluency_cost=0.004, select_on="half")
    assert len(s.configs) == 8 and s.metric == "keywords.rate"
    pts = {c.condition: (c.effect.point, c.fluency.point) for c in s.configs}
    for c in s.configs:  # brute force: on the frontier iff nothing dominates it
        eff, cost = pts[c.condition]
        dominated = any(e >= eff and k <= cost and (e > eff or k < cost) for e, k in pts.values())
        assert c.on_frontier == (not dominated), c.condition
        assert c.within_budget == (cost <= 0.004)
    within = [c for c in s.configs if c.within_budget]
    assert s.best in {c.condition for c in within}
    assert max(c.effect.point for c in within) == next(c.effect.point for c in s.configs
                                                       if c.condition == s.best)
    for st in s.steerability:  # slope of the mean over prompts of the per-prompt means
        coeffs = [-4.0, 0.0, 4.0, 8.0]
        per_prompt: list[dict[int, float]] = []
        for k in coeffs:
            values: dict[int, list[float]] = {}
            for r in samples:
                if r.condition == f"L{st.layer} c{k:+g}":
                    values.setdefault(r.prompt_index, []).append(r.scores["keywords.rate"])
            per_prompt.append({i: float(np.nanmean(v)) for i, v in values.items() if not np.isnan(v).all()})
        shared = set.intersection(*(set(m) for m in per_prompt))  # prompts with a value at every coeff
        means = [np.mean([m[i] for i in shared]) for m in per_prompt]
        assert st.slope == pytest.approx(np.polyfit(coeffs, means, 1)[0], abs=1e-9)
        assert 0 <= st.anti_steerable <= 1 and st.n_prompts == len(shared)



def test_held_out_selection_chooses_on_one_half_and_reports_on_the_other(sweep_dir):
    run_, samples = read_run(sweep_dir / "out")
    s = summarize_sweep(run_, samples, "tiny_topic", select_on="half", seed=3)
    sel = s.selection
    assert sel is not None and sel.condition is not None  # no budget: some config is always chosen
    chosen, held = set(sel.selected_prompts), set(sel.reported_prompts)
    assert not chosen & held and chosen | held == set(run_.tasks[0].prompt_ids)  # disjoint halves, all
    assert len(chosen) == len(PROMPTS) // 2 and sel.selected_on == len(chosen)

    # by hand: mean over prompts of steered − unsteered
    def effect(condition: str, prompts: set[str]) -> float:
        per: dict[str, dict[str, list[float]]] = {}
        for r in samples:
            if r.prompt_id in prompts and r.condition in ("unsteered", condition):
                per.setdefault(r.prompt_id, {}).setdefault(r.condition, []).append(r.scores["keywords.rate"])
        return float(np.mean([np.mean(v[condition]) - np.mean(v["unsteered"]) for v in per.values()]))

    configs = [c.condition for c in s.configs]
    best_on_chosen = max(configs, key=lambda c: effect(c, chosen))
    assert effect(sel.condition, chosen) == pytest.approx(effect(best_on_chosen, chosen), abs=1e-12)
    # reported on the other half
    assert sel.estimate.point == pytest.approx(effect(sel.condition, held), abs=1e-12)


def test_sweep_command_writes_the_reports_and_rejects_prompting(tiny_llama, tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_llama.model.save_pretrained(model_dir)
    tiny_llama.tokenizer.save_pretrained(model_dir)
    task = write_task(tmp_path)
    out = tmp_path / "out"
    code = main(["sweep", str(task), "--layers", "1,3", "--coeffs", "-4,4", "--coeff-unit", "norm",
                 "--select-on", "half", "--max-fluency-cost", "1", "--model", str(model_dir),
                 "--out", str(out), "--max-prompts", "4"])
    assert code == 0, capsys.readouterr().err
    for name in ("sweep.json", "sweep.md", "sweep.html", "sweep_dose.png", "sweep_pareto.png", "run.json"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["coeff_unit"] == "norm" and {c["condition"] for c in summary["configs"]} == {
        "L1 c-4", "L1 c+4", "L3 c-4", "L3 c+4"}
    assert all(math.isfinite(c["raw_coeff"]) and c["raw_coeff"] != c["coeff"] for c in summary["configs"])
    assert "L1 c+4" in capsys.readouterr().out
    task.write_text(task.read_text().replace(
        "steering: {method: actadd, layer: 1, coeff: 8.0, positive: love, negative: hate}",
        "steering: {method: prompting, instruction: talk about towers}"))
    assert main(["sweep", str(task), "--layers", "1", "--coeffs", "1", "--model", str(model_dir),
                 "--out", str(tmp_path / "out2")]) == 2
    assert "cannot be swept" in capsys.readouterr().err


def test_iso_kl_units_calibrate_each_config_to_its_kl_target(tiny_llama, tmp_path):
    from harness.analyses.sweep import KL_TEXTS
    from harness.diagnostics.neutral_text import neutral_texts
    from harness.diagnostics.offtarget import offtarget_cost
    from tests.test_methods import write_task as write_method_task

    (task,) = resolve_tasks(str(write_method_task(tmp_path)), RunOptions(method="mean_diff"))
    conditions = sweep_conditions(SweepGrid((1,), (0.01, -0.01), "kl"))(tiny_llama, task)
    texts = neutral_texts(KL_TEXTS)
    for coeff in (0.01, -0.01):
        cond = conditions[f"L1 c{coeff:+g}"]
        assert cond.description["sweep"]["coeff_unit"] == "kl"
        assert (cond.description["coeff"] > 0) == (coeff > 0)  # the sign picks the direction
        p95 = offtarget_cost(tiny_llama, cond.steering, texts).p95_kl
        assert p95 == pytest.approx(abs(coeff), rel=0.05)
