"""Inputs that used to give a wrong answer, or an unnamed traceback, without an error: each is now
refused with a message that names what is wrong (and where)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import harness
from harness import RunOptions, registry
from harness.analyses.agreement import agreement_of
from harness.analyses.heldout import run_concepts
from harness.errors import UserError
from harness.pipeline.diagnose import topic_words
from harness.schema.results import SampleRecord
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Score
from harness.stats import calibration
from harness.steering.base import Steering, placed
from harness.tasks import load_task

TASK = {"name": "api_task", "kind": "topic", "prompts": ["I love the way", "The tower", "We talked"],
        "steering": {"method": "actadd", "layer": 1, "coeff": 8, "positive": "tower", "negative": "way"},
        "methods": {"other": {"method": "actadd", "layer": 1, "coeff": -8, "positive": "tower",
                              "negative": "way"}},
        "generation": {"max_new_tokens": 2}, "scorers": {"keywords": {"words": ["tower"]}},
        "metrics": {"keywords.rate": "increase"}, "headline": "keywords.rate"}


# ------------------------------------------------------------------ notebook API

@pytest.mark.parametrize("options", [RunOptions(overrides=["steering.coeff=2"]), RunOptions(method="other")])
def test_evaluate_refuses_overrides_and_method_it_would_drop_for_a_task_object(options):
    # before: the task mapping ran with coeff 8 and its own steering, silently
    with pytest.raises(UserError, match="overrides and method apply to a task file or name"):
        harness.evaluate(TASK, "no-model-is-loaded-first", options=options)


def test_steer_refuses_a_coeff_or_point_that_a_steering_object_would_ignore(tiny_llama):
    steering = Steering((placed(1, torch.ones(tiny_llama.model.config.hidden_size), 4.0),))
    for extra in ({"coeff": 100.0}, {"point": "mlp"}):  # before: the block ran at coeff 4, at resid
        with pytest.raises(UserError, match="a Steering carries its own"), harness.steer(tiny_llama, steering,
                                                                                          **extra):
            pass


def test_a_vector_of_another_width_is_refused_naming_both_sizes(tiny_llama):
    width = tiny_llama.model.config.hidden_size
    ids = torch.tensor([[1, 5, 6]])
    # before: a RuntimeError from inside the forward pass ("size of tensor a (32) must match ... (7)")
    with pytest.raises(UserError, match=f"the vector at layer 1 has 7 dimensions; the model's hidden size is "
                                        f"{width}"), harness.steer(tiny_llama, torch.ones(7), layer=1):
        tiny_llama.model(input_ids=ids)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in tiny_llama.model.modules())


# ------------------------------------------------------------------ scorer declarations

class _Params(Spec):
    pass


class _Base(BaseScorer):
    metrics = ("x",)
    Params = _Params

    def score(self, samples, ctx):
        return [Score({"x": 1.0}) for _ in samples]


class WrongFluency(_Base):
    name = "wrong_fluency"
    fluency_metric = "nll"  # not one of its metrics


class RaisingCheck(_Base):
    name = "raising_check"

    @classmethod
    def prompt_problem(cls, params, prompt):
        return prompt.fields["needed"]  # a plugin's own bug: AttributeError


class StringTopic(_Base):
    name = "string_topic"

    def topic_words(self):
        return "tower"  # a string, not a list: read as the words t, o, w, e, r


@pytest.fixture()
def bad_scorers(monkeypatch):
    registry.scorers()
    for cls in (WrongFluency, RaisingCheck, StringTopic):
        monkeypatch.setitem(registry._SCORERS, cls.name, cls)


def _task_file(tmp_path, scorer: str):
    path = tmp_path / f"{scorer}.yaml"
    path.write_text("name: t\nkind: topic\nprompts: [The tower, We talked]\n"
                    "steering: {method: actadd, layer: 1, coeff: 4, positive: a, negative: b}\n"
                    f"scorers:\n  keywords: {{words: [tower]}}\n  {scorer}: {{}}\n"
                    "metrics: {keywords.rate: increase}\nheadline: keywords.rate\n")
    return path


def test_a_fluency_metric_that_is_not_one_of_the_scorers_metrics_is_refused_at_load(bad_scorers, tmp_path):
    # before: the run had no fluency cost at all, and said nothing
    with pytest.raises(UserError, match=r"wrong_fluency\.yaml:\d+: scorers\.wrong_fluency: scorer "
                                        r"'wrong_fluency' declares fluency_metric 'nll', which is not one "
                                        r"of its metrics \(x\)"):
        load_task(str(_task_file(tmp_path, "wrong_fluency")))


def test_a_prompt_check_that_raises_is_named_with_its_file_line_and_scorer(bad_scorers, tmp_path):
    # before: a bare AttributeError traceback from inside the plugin
    with pytest.raises(UserError, match=r"raising_check\.yaml:\d+: prompts\.0: scorer 'raising_check' "
                                        r".* failed checking the prompt: AttributeError"):
        load_task(str(_task_file(tmp_path, "raising_check")))


def test_topic_words_returned_as_a_string_are_refused_not_read_as_letters(bad_scorers, tmp_path):
    keywords_only = tmp_path / "k.yaml"
    text = _task_file(tmp_path, "string_topic").read_text()
    keywords_only.write_text(text.replace("  string_topic: {}\n", ""))
    assert topic_words(load_task(str(keywords_only))) == ["tower"]
    with pytest.raises(UserError, match=r"scorer 'string_topic' topic_words\(\) returned 'tower', not a "):
        topic_words(load_task(str(_task_file(tmp_path, "string_topic"))))


# ------------------------------------------------------------------ agreement

def _records() -> list[SampleRecord]:
    return [SampleRecord(key=f"{i}{c}", task="t", condition=c, prompt_index=i, prompt_id=f"p{i}", prompt="x",
                         sample=0, seed=0, completion="c", token_ids=[], prompt_ids=[],
                         scores={"a.any": float(i % 2), "b.x": i / 7, "c.nan": math.nan})
            for i in range(8) for c in ("steered", "unsteered")]


def test_agreement_of_a_metric_with_itself_is_refused():
    # before: rho 1.0 and AUC 1.0 [1.0, 1.0], reported as perfect agreement
    with pytest.raises(UserError, match="a.any with itself is 1 by construction"):
        agreement_of(_records(), "a.any", "a.any")


def test_agreement_refuses_a_condition_the_run_does_not_have():
    # before: the misspelt condition was dropped and the agreement of 'steered' alone reported
    with pytest.raises(UserError, match=r"no condition 'stered' in t \(conditions: steered, unsteered\)"):
        agreement_of(_records(), "a.any", "b.x", conditions=["steered", "stered"])


def test_agreement_without_any_usable_sample_says_so_not_that_no_metric_is_binary():
    result = agreement_of(_records(), "a.any", "c.nan")
    assert result.n == 0 and result.auc_note == "no sample with both metrics"  # was: neither is binary


# ------------------------------------------------------------------ held-out split, calibration CLI

def test_a_concept_task_with_one_instruction_is_refused_before_running(tmp_path):
    task = load_task("concept_autumn").limited(1)
    # before: a held-out table of nan for every method (nothing to select on), exit 0
    with pytest.raises(UserError, match=r"needs at least 2; too few: concept_autumn \(1\)"):
        run_concepts("concept_autumn", tmp_path, None, RunOptions(progress=False), [task])


def test_calibration_help_prints_usage_instead_of_running_the_simulation(capsys):
    with pytest.raises(SystemExit) as exit_:
        calibration.main(["--help"])
    assert exit_.value.code == 0 and "--reps" in capsys.readouterr().out


def test_a_method_whose_sweep_axes_name_fields_it_lacks_is_refused_when_registered():
    from typing import ClassVar, Literal

    from harness.schema.steering import MethodSpec

    class Spec_(MethodSpec):
        method: Literal["axes_typo"] = "axes_typo"
        block: int
        strength: float = 1.0
        sweep_axes: ClassVar = ("depth", "alpha")

    # before: `harness methods` listed "depth (layer) × alpha (strength)" and a sweep said the method
    # "has no single layer and coefficient to sweep"
    with pytest.raises(UserError, match=r"method 'axes_typo' .*sweep_axes names depth, alpha, not "
                                        r"field\(s\) of Spec_ \(its fields: method, block, strength\)"):
        registry.register_method(Spec_, lambda lm, spec, settings: None)
    assert "axes_typo" not in registry.methods()


def test_the_exported_readers_take_a_path_as_a_string(tmp_path):
    # before: AttributeError: 'str' object has no attribute 'read_text' / 'is_dir'
    quick = Path(__file__).resolve().parent.parent / "results/baselines/smollm2-135m/quick.json"
    baseline = harness.read_baseline(str(quick))
    assert baseline.per_prompt
    assert harness.read_baseline(quick).model_dump_json() == baseline.model_dump_json()
    with pytest.raises(UserError, match="no such file"):
        harness.read_run(str(tmp_path / "missing"))


def test_a_chat_task_on_a_model_without_a_chat_template_is_refused_before_anything_runs(tiny_llama):
    assert not tiny_llama.tokenizer.chat_template  # a base model, as gemma3-270m
    chat = {**TASK, "generation": {"max_new_tokens": 2, "chat": True}}
    # before: a ValueError traceback from inside generation, after every steering was built
    with pytest.raises(UserError, match=r"has no chat template, and task\(s\) api_task set generation.chat"):
        harness.evaluate(chat, tiny_llama, options=RunOptions(samples=1, progress=False))


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "love_hate", "--judge", "smollm2-135m"], "--judge rates concept tasks, and love_hate has none"),
    (["run", "concept_autumn", "--judge-key-env", "KEY"], "--judge-key-env and --judge-mode go with --judge"),
])
def test_judge_flags_that_would_be_ignored_are_refused_before_the_model_loads(argv, message, capsys):
    from harness.cli import main

    # before: the run went ahead without a judge (love_hate is no concept task), exit 0
    assert main([*argv, "--model", "no-such-model-is-loaded"]) == 2
    assert message in capsys.readouterr().err


def test_a_python_steering_is_described_in_run_json_by_where_it_acts_not_only_by_its_hash(tiny_llama):
    vector = torch.ones(tiny_llama.model.config.hidden_size)
    result = harness.evaluate(TASK, tiny_llama, steering=vector, layer=2, coeff=3.0,
                              options=RunOptions(samples=1, progress=False))
    (info,) = result.tasks
    (where,) = info.conditions["steered"]["interventions"]  # before: a sha256 and nothing else
    assert (where["layer"], where["point"], where["operator"]) == (2, "resid", "add")
    assert where["norm"] == pytest.approx(3.0 * float(vector.norm()))


def test_evaluate_runs_a_concept_task_as_harness_run_does_with_held_out_strengths(tiny_llama):
    options = RunOptions(samples=1, max_new_tokens=2, max_prompts=4, progress=False,
                         overrides=["steering.layer=1", "methods.mean_diff.layer=1", "generation.chat=false"])
    result = harness.evaluate("concept_autumn", tiny_llama, options=options)
    # before: a plain steered-vs-unsteered run of the task's own steering (actadd at coeff 4), no selection
    (info,) = result.tasks
    assert {"actadd L1 c+4", "actadd L1 c+16", "mean_diff L1 c+2", "prompting"} <= set(info.conditions)
    assert result.heldout is not None
    assert {s.method for s in result.heldout.scores} == {"unsteered", "actadd", "mean_diff", "prompting"}
    assert len(result.heldout.splits["concept_autumn"].select) == 2


def test_compare_given_one_path_as_a_string_says_it_takes_a_list():
    # before: each character was read as a run ("r: no such file")
    with pytest.raises(UserError, match=r"compare takes a list of runs, e\.g\. compare\(\['runs/demo', "):
        harness.compare("runs/demo")
