"""Steering is never silently absent or ignored (issue 21, points 2, 9, 10 and the vector part of
3): invariants over every method x operator x positions setting on a tiny random model, and the
refusals that keep a setting from being ignored."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from safetensors.torch import save_file

from harness.analyses.sweep import SweepGrid, residual_norm, sweep_conditions
from harness.api import build_steering, steer
from harness.cli import main
from harness.engine import Row, generate, generate_batch
from harness.errors import UserError
from harness.methods.mean_diff import MeanDiffSpec
from harness.methods.vector_file import VectorFileSpec
from harness.models.tokens import encode
from harness.pipeline.plan import Condition, plan_task, task_conditions, with_controls
from harness.runner import RunOptions, resolve_tasks, run
from harness.schema.generation import GenerationSettings
from harness.schema.results import LedgerEntry
from harness.schema.task import ControlsSpec
from harness.steering.base import PREAMBLE_SITE, Intervention, Steering
from harness.steering.session import SteeringNotAppliedError, SteeringScaleWarning
from harness.tasks import load_task
from tests.conftest import save_tiny_model

PAIRS = [{"positive": "I love the way", "negative": "I hate the way"},
         {"positive": "the light falls on the water", "negative": "the tower"}]
GREEDY = GenerationSettings(max_new_tokens=3, greedy=True, repetition_penalty=1.0)
PROMPT = "The tower is"
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def vectors(tiny_llama, tmp_path_factory) -> Path:
    """A safetensors file with one random vector per layer of the tiny model."""
    path = tmp_path_factory.mktemp("vectors") / "v.safetensors"
    width = tiny_llama.model.config.hidden_size
    gen = torch.Generator().manual_seed(1)
    save_file({f"layer.{i}": 0.2 * torch.randn(width, generator=gen) for i in range(tiny_llama.n_layers)},
              str(path))
    return path


def _spec(method: str, vectors: Path, operator: str, positions: str, steer_bos: bool,
          coeff: float) -> dict[str, object]:
    if method == "actadd":
        return {"method": "actadd", "layer": 1, "coeff": coeff, "positive": "Love", "negative": "Hate"}
    if method == "prompting":
        return {"method": "prompting", "instruction": "Talk about towers."}
    common = {"operator": operator, "positions": positions, "steer_bos": steer_bos,
              "coeff": None if operator == "ablate" else coeff}  # ablate takes none
    if method == "mean_diff":
        return {"method": "mean_diff", "layer": 1, "pairs": PAIRS, **common}
    return {"method": "vector_file", "path": str(vectors), "layers": [1, 2], **common}


def _decode_logits(lm, steering: Steering | None) -> torch.Tensor:  # noqa: ANN001
    """Logits of one decode step after the prompt, so every positions setting acts somewhere:
    the prompt pass (all / prompt) or the decode step (all / generated)."""
    ids = torch.tensor([encode(lm.tokenizer, PROMPT)])
    with torch.no_grad(), steer(lm, steering) if steering else nullcontext():
        first = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        mask = torch.ones(1, ids.shape[1] + 1, dtype=torch.long)
        nxt = first.logits[:, -1:].argmax(-1)
        step = lm.model(input_ids=nxt, attention_mask=mask, past_key_values=first.past_key_values)
        return step.logits[0, -1]


settings_space = st.tuples(st.sampled_from(["actadd", "mean_diff", "vector_file", "prompting"]),
                           st.sampled_from(["add", "clamp", "ablate"]),
                           st.sampled_from(["all", "prompt", "generated"]), st.booleans(),
                           st.one_of(st.just(0.0), st.floats(-8, 8).filter(lambda c: abs(c) > 0.05)))


def _valid(method: str, operator: str, positions: str, steer_bos: bool) -> bool:
    return method not in ("mean_diff", "vector_file") or not (steer_bos and positions == "generated")


# --- point 2: a setting the method does not use is refused ---------------------------------


@pytest.mark.parametrize("method", ["mean_diff", "vector_file"])
def test_a_coefficient_with_ablate_is_refused_naming_the_field(method, tmp_path):
    spec = {"method": method, "layer": 1, "operator": "ablate", "coeff": 4.0,
            **({"pairs": PAIRS} if method == "mean_diff" else {"path": str(tmp_path / "v.pt")})}
    cls = MeanDiffSpec if method == "mean_diff" else VectorFileSpec
    with pytest.raises(ValidationError, match=r"coeff: operator 'ablate' .* coeff=4 would be ignored"):
        cls.model_validate(spec)
    ablate = cls.model_validate({**spec, "coeff": None})
    with pytest.raises(ValueError, match="uses no coefficient"):
        ablate.at(1, 4.0)  # a sweep's coefficient axis


def test_steer_bos_with_generated_positions_is_refused():
    with pytest.raises(ValidationError, match="steer_bos: positions 'generated' never include the BOS"):
        MeanDiffSpec.model_validate({"method": "mean_diff", "layer": 1, "coeff": 2, "pairs": PAIRS,
                                     "positions": "generated", "steer_bos": True})


def test_steer_bos_without_a_bos_is_refused(tiny_llama):
    spec = {"method": "mean_diff", "layer": 1, "coeff": 2, "pairs": PAIRS, "steer_bos": True}
    with pytest.raises(UserError, match="steer_bos: generation.use_bos is false"):
        build_steering(tiny_llama, spec, GenerationSettings(use_bos=False))
    assert build_steering(tiny_llama, spec, GenerationSettings(use_bos=True)).interventions[0].steer_bos


def test_operator_ablate_via_set_is_refused_with_exit_2(capsys):
    """The issue's command: `--method mean_diff --set steering.operator=ablate` kept coeff 2 and
    ignored it; the negated control equalled the steered condition."""
    assert main(["run", "love_hate", "--method", "mean_diff", "--set", "steering.operator=ablate",
                 "--controls", "negated", "--out", "/nonexistent/never-written"]) == 2
    assert "coeff: operator 'ablate'" in capsys.readouterr().err
    unset = ["steering.operator=ablate", "steering.coeff=null"]
    (task,) = resolve_tasks("love_hate", RunOptions(method="mean_diff", overrides=unset))
    assert task.spec.steering.coeff is None


def test_a_sweep_over_coefficients_of_an_ablation_is_refused(tiny_llama, tmp_path):
    task = _task_file(tmp_path, "{method: mean_diff, layer: 1, operator: ablate, "
                                "pairs: [{positive: I love, negative: I hate}]}")
    with pytest.raises(UserError, match="uses no coefficient.*cannot be swept"):
        sweep_conditions(SweepGrid((1,), (0.0, 4.0)))(tiny_llama, load_task(str(task)))
    with pytest.raises(UserError, match="repeat a value"):
        SweepGrid((1,), (4.0, 4.0))


def test_a_norm_unit_sweep_clamps_the_projection_at_c_times_the_residual_norm(tiny_llama, tmp_path):
    """A clamp's strength is its value, not its direction's norm: the norm unit divided by |v|."""
    task = load_task(str(_task_file(tmp_path, "{method: mean_diff, layer: 1, coeff: 1, operator: clamp, "
                                              "pairs: [{positive: I love, negative: I hate}]}")))
    conditions = sweep_conditions(SweepGrid((1,), (2.0,), "norm"))(tiny_llama, task)
    (iv,) = conditions["L1 c+2"].steering.interventions
    assert iv.operator == "clamp" and iv.vector.norm() != pytest.approx(1.0)
    assert iv.value == pytest.approx(2.0 * residual_norm(tiny_llama, task, 1), rel=1e-6)


def test_the_negated_control_of_an_ablation_or_prompting_is_refused_not_planned_as_a_copy():
    width = 8
    ablation = Steering((Intervention(1, torch.ones(width), operator="ablate"),))
    clamp0 = Steering((Intervention(1, torch.ones(width), operator="clamp", value=0.0),))
    prompting = Steering((), preamble="Be nice.\n")
    for steering in (ablation, clamp0):
        with pytest.raises(ValueError, match="its negation is the same steering"):
            steering.negated()
        conditions = {"steered": Condition(steering, {}, {"x": 1})}
        with pytest.raises(UserError, match="condition 'steered': a matched control .* refused"):
            with_controls(conditions, ControlsSpec(negated=True))
        assert set(with_controls(conditions, ControlsSpec(random=2))) == {"steered", "steered · random 1",
                                                                         "steered · random 2"}
    with pytest.raises(UserError, match="prompting instruction has no vector"):
        with_controls({"steered": Condition(prompting, {}, {"x": 1})}, ControlsSpec(random=1))
    # beside a condition that can have controls (a concept task's vectors beside its prompting), the one
    # that cannot gets none and is named in a warning, instead of refusing the whole run
    vector = Steering((Intervention(1, torch.ones(width)),))
    mixed = {"prompting": Condition(prompting, {}, {"p": 1}), "actadd": Condition(vector, {}, {"a": 1}),
             "ablation": Condition(ablation, {}, {"b": 1})}
    with pytest.warns(UserWarning, match="no matched controls for prompting, ablation"):
        planned = with_controls(mixed, ControlsSpec(negated=True))
    assert set(planned) == {"prompting", "actadd", "ablation", "actadd · negated"}
    with pytest.raises(ValueError, match="no strength"):
        ablation.scaled(2.0)


# --- invariants over every method x operator x positions -------------------------------------


@FAST
@given(settings_space)
def test_every_setting_either_is_refused_or_its_negated_control_differs_when_it_changes_anything(
        tiny_llama, vectors, setting):
    method, operator, positions, steer_bos, coeff = setting
    if not _valid(method, operator, positions, steer_bos):
        return
    spec = _spec(method, vectors, operator, positions, steer_bos, coeff)
    if method == "prompting":
        steering = build_steering(tiny_llama, spec)
        with pytest.raises(ValueError):
            steering.negated()
        return
    steering = build_steering(tiny_llama, spec)
    vector = method in ("mean_diff", "vector_file")
    if vector and (operator == "ablate" or operator == "clamp" and coeff == 0):
        with pytest.raises(ValueError, match="its negation is the same steering"):
            steering.negated()
        return
    plain = _decode_logits(tiny_llama, None)
    steered = _decode_logits(tiny_llama, steering)
    negated = _decode_logits(tiny_llama, steering.negated())
    if not torch.allclose(steered, plain, atol=1e-5, rtol=0):
        assert not torch.allclose(negated, steered, atol=1e-5, rtol=0), spec
    if method in ("actadd", "mean_diff", "vector_file") and operator == "add" and coeff == 0:
        assert steering.is_null() and torch.equal(steered, plain)  # coefficient 0 is unsteered


@FAST
@given(settings_space)
def test_every_site_of_every_steering_changes_positions(tiny_llama, vectors, setting):
    method, operator, positions, steer_bos, coeff = setting
    if not _valid(method, operator, positions, steer_bos) or coeff == 0:
        return
    spec = _spec(method, vectors, operator, positions, steer_bos, coeff)
    steering = build_steering(tiny_llama, spec)
    (g,) = generate_batch(tiny_llama, [Row(PROMPT, "s", 0, 0)], [steering], GREEDY, min_new_tokens=3)
    assert steering.sites()
    for site in steering.sites():
        assert sum(e.positions for e in g.ledger if e.site == site) > 0, (site, g.ledger)
    assert g.flagged is None


# --- point 9: steering is never silently absent ------------------------------------------------


def test_an_empty_steering_is_refused_and_prompting_is_not_null():
    with pytest.raises(ValueError, match="no interventions and no preamble"):
        Steering(())
    assert not Steering((), preamble="Be nice.\n").is_null()
    assert Steering((Intervention(1, torch.zeros(8)),)).is_null()  # coefficient 0: unsteered


def test_a_dead_site_among_live_ones_is_an_error(tiny_llama):
    """The old check summed positions over all sites: L2 (generated positions, one new token, so
    never fed back) changed nothing while L1 did, and the row passed."""
    width = tiny_llama.model.config.hidden_size
    steering = Steering((Intervention(1, torch.ones(width), positions="all"),
                         Intervention(2, torch.ones(width), positions="generated")))
    one = GREEDY.model_copy(update={"max_new_tokens": 1})
    with pytest.raises(SteeringNotAppliedError, match=r"at L2\.resid \(of L1\.resid, L2\.resid\)"):
        generate_batch(tiny_llama, [Row(PROMPT, "s", 0, 0)], [steering], one)


def test_prompting_writes_a_ledger_entry_with_its_instruction_tokens(tiny_llama):
    steering = build_steering(tiny_llama, {"method": "prompting", "instruction": "Talk about towers."})
    (g,) = generate(tiny_llama, [PROMPT], {"p": steering}, GREEDY)
    want = len(tiny_llama.tokenizer(steering.preamble, add_special_tokens=False).input_ids)
    assert g.ledger == [LedgerEntry(site=PREAMBLE_SITE, kind="prompt", positions=want, norm=0.0)] and want > 0


def test_actadd_whose_contrast_texts_cancel_is_refused_but_coefficient_0_is_unsteered(tiny_llama):
    with pytest.raises(UserError, match="actadd: the vector at layer 1 is zero although its coefficients"):
        build_steering(tiny_llama, {"method": "actadd", "layer": 1, "coeff": 4, "positive": "Love",
                                    "negative": "Love"})
    zero = build_steering(tiny_llama, {"method": "actadd", "layer": 1, "coeff": 0, "positive": "Love",
                                       "negative": "Hate"})
    assert zero.is_null()


def test_vector_file_refuses_empty_layers_and_a_zero_vector_naming_file_and_layer(tiny_llama, tmp_path):
    with pytest.raises(ValidationError, match="layers"):
        VectorFileSpec.model_validate({"method": "vector_file", "path": "x", "layers": []})
    width = tiny_llama.model.config.hidden_size
    save_file({"layer.1": torch.ones(width), "layer.2": torch.zeros(width)}, str(tmp_path / "z.safetensors"))
    with pytest.raises(UserError, match=r"z\.safetensors: the vector of layer 2 is zero"):
        build_steering(tiny_llama, {"method": "vector_file", "path": str(tmp_path / "z.safetensors")})
    with pytest.raises(UserError, match="mean difference of the 1 pair.* at layer 1 is zero"):
        build_steering(tiny_llama, {"method": "mean_diff", "layer": 1, "coeff": 2,
                                    "pairs": [{"positive": "same", "negative": "same"}]})


@pytest.mark.parametrize(("entry", "reason"), [(1e30, "x the residual norm"), (1e38, "non-finite")])
def test_a_huge_vector_flags_its_rows_and_warns(tiny_llama, entry, reason):
    width = tiny_llama.model.config.hidden_size
    steering = Steering((Intervention(1, torch.full((width,), entry)),))
    with pytest.warns(SteeringScaleWarning, match="flagged"):
        plain, steered = generate(tiny_llama, [PROMPT], {"u": None, "s": steering}, GREEDY)
    assert plain.flagged is None and reason in (steered.flagged or "")
    sane = Steering((Intervention(1, torch.full((width,), 1.0)),))
    (g,) = generate(tiny_llama, [PROMPT], {"s": sane}, GREEDY)
    assert g.flagged is None


# --- point 10 and the vector part of point 3: SAELens folders ------------------------------------


def _sae(folder: Path, width: int, hook: str = "blocks.1.hook_resid_post") -> Path:
    folder.mkdir(exist_ok=True)
    w_dec = torch.randn(6, width, generator=torch.Generator().manual_seed(5))
    save_file({"W_dec": w_dec, "W_enc": w_dec.T.contiguous()}, str(folder / "sae_weights.safetensors"))
    (folder / "cfg.json").write_text(json.dumps({"d_in": width, "d_sae": 6, "hook_name": hook}))
    return folder


def _task_file(folder: Path, steering: str) -> Path:
    path = folder / "t.yaml"
    path.write_text("name: t\nkind: topic\nprompts: [The tower, I love the way]\n"
                    f"steering: {steering}\nscorers: {{keywords: {{words: [tower]}}}}\n"
                    "metrics: {keywords.rate: increase}\nheadline: keywords.rate\n"
                    "generation: {max_new_tokens: 3, greedy: true, repetition_penalty: 1.0}\nsamples: 1\n")
    return path


@pytest.mark.parametrize("path", ["sae", "sae/sae_weights.safetensors"])
def test_the_saelens_folder_form_runs_and_cfg_json_enters_the_sample_key(tiny_llama, tmp_path, path):
    """The folder form failed with IsADirectoryError; the weights-file form hashed only the
    weights, so a cfg.json moving the hook to another layer kept every sample key."""
    width = tiny_llama.model.config.hidden_size
    _sae(tmp_path / "sae", width)
    task = load_task(str(_task_file(tmp_path, f"{{method: vector_file, path: {path}, feature: 2}}")))
    result = run(str(task.path), tmp_path / "out", model=tiny_llama, tasks=[task],
                 options=RunOptions(progress=False))
    assert result.headlines and result.tasks[0].n_prompts == 2
    keys = plan_task(tiny_llama, task, task_conditions(tiny_llama, task)).keys
    _sae(tmp_path / "sae", width, hook="blocks.2.hook_resid_post")  # same weights, another layer
    moved = plan_task(tiny_llama, task, task_conditions(tiny_llama, task)).keys
    steered = [k for k in keys if k not in moved]
    assert len(steered) == 2 and len(set(keys) - set(steered)) == 2  # the unsteered keys stay


def test_errors_on_an_saelens_folder_exit_2_naming_the_file(tmp_path, capsys):
    model = save_tiny_model("llama", tmp_path / "model")
    _sae(tmp_path / "sae", 32)
    task = _task_file(tmp_path, "{method: vector_file, path: sae}")
    assert main(["run", str(task), "--model", str(model), "--out", str(tmp_path / "o")]) == 2
    assert "sae: an SAE holds 6 features: name one (feature=)" in capsys.readouterr().err
    (tmp_path / "sae" / "cfg.json").write_text("{not json")
    task = _task_file(tmp_path, "{method: vector_file, path: sae, feature: 1}")
    assert main(["run", str(task), "--model", str(model), "--out", str(tmp_path / "o")]) == 2
    assert "cfg.json: not readable JSON" in capsys.readouterr().err
