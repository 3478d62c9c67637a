"""The README's notebook example runs as written, and the Python API takes objects: a task built in
Python, a `Steering`, a tensor with its layer and coefficient, typed options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import harness
from harness import RunOptions
from harness.errors import UserError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Steer any model from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_notebook_example_runs_as_written(capsys):
    scope: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), scope)  # noqa: S102
    result, mine = scope["result"], scope["mine"]
    assert isinstance(result, harness.Evaluation) and len(result.samples) == 8  # 4 prompts x 2 conditions
    assert {s.condition for s in result.samples} == {"unsteered", "steered"}
    assert result.headlines[0].estimate.n == 4
    assert mine.config["steering"]["python steering"].startswith("sha256:")
    # the task file's own steering, which steered nothing here, is not recorded as if it had
    (task,) = mine.config["tasks"].values()
    assert task["steering"] == "replaced: see config.steering" and "methods" not in task
    assert isinstance(result.config["tasks"][result.tasks[0].name]["steering"], dict)
    steered = [{s.key for s in r.samples if s.condition == "steered"} for r in (result, mine)]
    assert len(steered[1]) == 4 and steered[0].isdisjoint(steered[1])


TASK = {"name": "api_task", "kind": "topic", "prompts": ["I love the way", "The tower", "We talked"],
        "steering": {"method": "actadd", "layer": 1, "coeff": 8, "positive": "tower", "negative": "way"},
        "generation": {"max_new_tokens": 4, "greedy": True},
        "scorers": {"keywords": {"words": ["tower"]}}, "metrics": {"keywords.rate": "increase"},
        "headline": "keywords.rate"}


def test_a_steering_object_and_its_spec_give_the_same_tokens(tiny_llama):
    options = RunOptions(samples=1, progress=False)
    by_spec = harness.evaluate(TASK, tiny_llama, options=options)
    built = harness.build_steering(tiny_llama, TASK["steering"])
    by_object = harness.evaluate(TASK, tiny_llama, steering=built, options=options)
    tokens = {(s.prompt, s.condition): s.token_ids for s in by_spec.samples}
    assert {(s.prompt, s.condition): s.token_ids for s in by_object.samples} == tokens
    twice = harness.evaluate(TASK, tiny_llama, steering=built.scaled(2.0), options=options)
    assert ({s.key for s in twice.samples if s.condition == "steered"}
            .isdisjoint(s.key for s in by_object.samples))  # the vectors' content keys the samples


def test_typed_options_are_validated_and_applied_after_the_task(tiny_llama):
    result = harness.evaluate(TASK, tiny_llama, options=RunOptions(samples=2, max_new_tokens=2,
                                                                   max_prompts=2, progress=False))
    assert len(result.samples) == 2 * 2 * 2 and all(len(s.token_ids) <= 2 for s in result.samples)
    assert result.config["tasks"]["api_task"]["samples"] == 2
    with pytest.raises(UserError, match="samples"):
        harness.evaluate(TASK, tiny_llama, options=RunOptions(samples=-1, progress=False))


def test_a_vector_needs_its_layer_and_a_spec_refuses_one(tiny_llama):
    vector = torch.ones(tiny_llama.model.config.hidden_size)
    with pytest.raises(UserError, match="needs its layer"):
        harness.evaluate(TASK, tiny_llama, steering=vector)
    with pytest.raises(UserError, match="layer and coeff go with a vector"):
        harness.evaluate(TASK, tiny_llama, steering=TASK["steering"], layer=1)
    with pytest.raises(UserError, match="needs its layer"), harness.steer(tiny_llama, vector):
        pass
