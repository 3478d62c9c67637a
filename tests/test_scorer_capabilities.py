"""A scorer declares what it needs and which roles it can play; the harness asks the declaration,
never the scorer's name. Adding a scorer that needs the model and serves as the fluency metric is
one module (written here to a temporary folder and loaded as a plugin)."""

from __future__ import annotations

import json
import math
import sys
import textwrap

import pytest

from harness import registry
from harness.analyses.baseline import make_baseline
from harness.analyses.check import check
from harness.cli import main
from harness.errors import UserError
from harness.runner import RunOptions, run
from harness.tasks import load_task
from tests.conftest import save_tiny_model

PLUGIN = '''
"""Mean negative log-probability of the completion's tokens under the generation model."""
import math

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Score, unscorable


class Params(Spec):
    pass


@register_scorer
class ToyNll(BaseScorer):
    name = "toy_nll"
    metrics = ("nll",)
    Params = Params
    needs_model = True
    fluency_metric = "nll"

    def score(self, samples, ctx):
        import torch

        if ctx.lm is None:
            raise ValueError("toy_nll needs the generation model")
        out = []
        for s in samples:
            if not s.completion_ids:
                out.append(unscorable(self.metrics, "no completion tokens"))
                continue
            ids = torch.tensor([[*s.prompt_ids, *s.completion_ids]])
            with torch.no_grad():
                logp = ctx.lm.model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            n = len(s.completion_ids)
            picked = logp[-n:].gather(1, ids[0, -n:, None])[:, 0]
            out.append(Score({"nll": float(-picked.mean())}))
        return out
'''

TASK = """\
name: toy_fluency
kind: topic
prompts: ["I love the way", "The tower", "We talked about", "To see the", "In the morning", "People flock to"]
steering: {method: actadd, layer: 1, coeff: 8.0, positive: love, negative: hate}
generation: {max_new_tokens: 5}
samples: 2
scorers:
  keywords: {words: [love, tower]}
  %s
metrics: {keywords.rate: increase}
headline: keywords.rate
"""


@pytest.fixture(scope="module")
def toy_plugin(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("toy_plugin")
    (folder / "toy_nll_plugin.py").write_text(textwrap.dedent(PLUGIN))
    sys.path.insert(0, str(folder))
    registry.add_plugins(["toy_nll_plugin"])
    registry.scorers()  # imports it now
    return "toy_nll_plugin"


def test_a_plugin_scorer_that_needs_the_model_is_the_fluency_metric_end_to_end(toy_plugin, tiny_llama,
                                                                               tmp_path):
    task = tmp_path / "toy.yaml"
    task.write_text(TASK % "toy_nll: {}")
    result = run(str(task), tmp_path / "out", model=tiny_llama, options=RunOptions(progress=False))
    (fluency,) = result.fluency_cost
    assert fluency.metric == "toy_nll.nll" and fluency.judge == "generation model"
    assert fluency.estimate.n == 6 and math.isfinite(fluency.estimate.point)
    assert "toy_nll.nll" not in {e.metric for e in result.effects}  # the fluency cost, not an effect
    assert result.headlines[0].fluency == fluency.estimate
    baseline = make_baseline(result, no_effect=True)  # a random model moves no keywords
    assert {p.metric for p in baseline.per_prompt} == {"keywords.rate", "toy_nll.nll"}
    lines = check(result, baseline).lines
    assert [line.kind for line in lines if line.kind == "fluency"] == ["fluency"]
    # the same run without the plugin's declaration would have no fluency line: the perplexity
    # scorer's name is not what makes it one
    assert not any("perplexity" in s for s in json.loads((tmp_path / "out" / "run.json").read_text())
                   ["config"]["tasks"]["toy_fluency"]["scorers"])


def test_harness_score_loads_a_model_for_a_scorer_that_declares_it_needs_one(toy_plugin, tmp_path,
                                                                              capsys):
    model = save_tiny_model("llama", tmp_path / "tiny")
    rows = tmp_path / "samples.jsonl"
    rows.write_text(json.dumps({"prompt": "The tower", "completion": "is tall", "prompt_ids": [1, 5, 6],
                                "token_ids": [7, 8]}) + "\n")
    assert main(["score", str(rows), "--scorer", "toy_nll", "--model", str(model)]) == 0
    (scored,) = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert math.isfinite(scored["scores"]["toy_nll.nll"]) and scored["scores"]["toy_nll.nll"] > 0


def test_two_scorers_declaring_a_fluency_metric_are_refused_naming_the_second(toy_plugin, tmp_path):
    task = tmp_path / "two.yaml"
    task.write_text(TASK % "toy_nll: {}\n  perplexity: {}")
    with pytest.raises(UserError, match=r"two\.yaml:\d+: scorers toy_nll and perplexity both declare a "
                                        "fluency metric"):
        load_task(str(task))


def test_a_prompt_missing_what_a_scorer_declares_it_needs_fails_at_load_naming_the_line(tmp_path):
    task = tmp_path / "fact.yaml"
    task.write_text("name: f\nkind: fact\nprompts:\n  - {text: The Eiffel Tower is in, target: Rome, "
                    "original: Paris}\n  - {text: The Colosseum is in}\nsteering: {method: actadd, layer: 1, "
                    "coeff: 4, positive: Rome, negative: Paris}\nscorers: {fact: {}}\n"
                    "metrics: {fact.margin: increase}\nheadline: fact.margin\n")
    with pytest.raises(UserError, match=r"fact\.yaml:5: prompts\.1: the fact scorer needs `target` and "
                                        "`original`"):
        load_task(str(task))


def test_every_registered_scorer_declares_its_needs_and_roles():
    for name, cls in registry.scorers().items():
        assert isinstance(cls.needs_model, bool) and isinstance(cls.token_logprobs, bool), name
        assert cls.fluency_metric is None or cls.fluency_metric in cls.metrics, name
    builtin = {n: c for n, c in registry.scorers().items() if c.__module__.startswith("harness.")}
    assert {n for n, c in builtin.items() if c.fluency_metric} == {"perplexity"}
    assert {n for n, c in builtin.items() if c.needs_model} >= {"perplexity", "fact"}
