"""`harness generate`: `--greedy` is plain greedy decoding, `--json` records every setting, and any
steering (a task's, a registered method's, a vector file's) can be looked at side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from harness.api import build_steering
from harness.cli import main
from harness.engine import generate
from harness.errors import UserError
from harness.methods.mean_diff import build_mean_diff
from harness.models.tokens import encode
from harness.schema.generation import GenerationSettings
from harness.vectors import VectorSet, write_safetensors

PROMPTS = ["I hate you because", "The Eiffel Tower is in", "My favourite food is"]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["generate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _hf_greedy(lm, prompt: str, new: int, penalty: float = 1.0) -> list[int]:  # noqa: ANN001
    """transformers' own greedy decoding of the BOS-prefixed prompt (a blank generation config)."""
    ids = torch.tensor([encode(lm.tokenizer, prompt)])
    eos = lm.tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=new, do_sample=False, repetition_penalty=penalty,
                              pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=eos)
    with torch.no_grad():
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    tokens = out[0, ids.shape[1]:].tolist()
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def test_greedy_is_plain_greedy_decoding_3_of_3_and_json_records_the_settings(smollm, capsys):
    argv = [a for p in PROMPTS for a in ("--prompt", p)] + ["-n", "1", "--max-new-tokens", "12"]
    got = _cli(capsys, *argv, "--greedy")
    theirs = {p: _hf_greedy(smollm, p, 12) for p in PROMPTS}
    ours = {g["prompt"]: g["token_ids"] for g in got["generations"]}
    # before: a hidden repetition penalty of 1.2 -> 0 of 3 prompts matched
    assert ours == theirs, f"{sum(ours[p] == theirs[p] for p in PROMPTS)}/3 prompts match"
    assert got["generation"] == {**GenerationSettings().model_dump(mode="json"), "max_new_tokens": 12,
                                 "greedy": True, "repetition_penalty": 1.0}
    assert got["samples"] == 1 and got["seed"] == 0 and got["steering"] is None
    assert got["model"]["sha256"] == smollm.sha256

    penalised = _cli(capsys, *argv, "--greedy", "--repetition-penalty", "1.3")
    assert penalised["generation"]["repetition_penalty"] == 1.3
    ours = {g["prompt"]: g["token_ids"] for g in penalised["generations"]}
    assert ours == {p: _hf_greedy(smollm, p, 12, penalty=1.3) for p in PROMPTS}
    assert ours != theirs  # the penalty does act


GREEDY = GenerationSettings(max_new_tokens=6, greedy=True, repetition_penalty=1.0)
PAIRS = [("I love the way", "I hate the way")]


@pytest.fixture(scope="module")
def model_dir(tiny_llama, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gen_model")
    tiny_llama.model.save_pretrained(folder)
    tiny_llama.tokenizer.save_pretrained(folder)
    return folder


def _steered(lm, steering, prompts) -> dict[str, list[int]]:  # noqa: ANN001
    gens = generate(lm, prompts, {"steered": steering}, GREEDY)
    return {g.row.prompt: g.token_ids for g in gens}


def _cli_steered(capsys, model_dir, *argv: str) -> tuple[dict[str, list[int]], dict]:  # noqa: ANN001
    got = _cli(capsys, "--prompt", "The tower", "--prompt", "I love the way", "--model", str(model_dir),
               "-n", "1", "--max-new-tokens", "6", "--greedy", *argv)
    steered = {g["prompt"]: g["token_ids"] for g in got["generations"] if g["condition"] == "steered"}
    unsteered = {g["prompt"]: g["token_ids"] for g in got["generations"] if g["condition"] == "unsteered"}
    assert steered != unsteered  # the steering acts
    return steered, got


def test_generate_takes_a_vector_file(tiny_llama, model_dir, tmp_path, capsys):
    width = tiny_llama.model.config.hidden_size
    vector = torch.linspace(-1, 1, width)
    write_safetensors(VectorSet({1: vector, 2: -vector}, "tensor"), tmp_path / "v.safetensors")
    steered, got = _cli_steered(capsys, model_dir, "--vector", str(tmp_path / "v.safetensors"),
                                "--layer", "1", "--coeff", "8")
    expected = build_steering(tiny_llama, {"method": "vector_file", "path": str(tmp_path / "v.safetensors"),
                                           "layer": 1, "coeff": 8.0})
    assert steered == _steered(tiny_llama, expected, list(steered))
    assert got["steering"]["method"] == "vector_file" and got["steering"]["coeff"] == 8.0


def test_generate_takes_any_registered_method_with_set(tiny_llama, model_dir, capsys):
    steered, got = _cli_steered(capsys, model_dir, "--method", "mean_diff", "--set", "steering.layer=1",
                                "--set", "steering.coeff=6",
                                "--set", "steering.pairs=[{positive: I love the way, "
                                "negative: I hate the way}]")
    expected = build_mean_diff(tiny_llama, PAIRS, 1, 6.0)
    assert steered == _steered(tiny_llama, expected, list(steered))
    assert got["steering"]["layer"] == 1


def test_generate_takes_a_tasks_steering_and_its_method_alternatives(tiny_llama, model_dir, tmp_path, capsys):
    task = tmp_path / "t.yaml"
    task.write_text("name: t\nkind: topic\nprompts: [The tower, I love the way]\n"
                    "steering: {method: mean_diff, layer: 2, coeff: 6, "
                    "pairs: [{positive: I love the way, negative: I hate the way}]}\n"
                    "methods: {actadd: {method: actadd, layer: 1, coeff: 8, positive: love, "
                    "negative: hate}}\n"
                    "scorers: {keywords: {words: [tower]}}\nmetrics: {keywords.rate: increase}\n"
                    "headline: keywords.rate\n")
    steered, _ = _cli_steered(capsys, model_dir, "--task", str(task))
    assert steered == _steered(tiny_llama, build_mean_diff(tiny_llama, PAIRS, 2, 6.0), list(steered))
    steered, got = _cli_steered(capsys, model_dir, "--task", str(task), "--method", "actadd",
                                "--set", "steering.coeff=10")
    expected = build_steering(tiny_llama, {"method": "actadd", "layer": 1, "coeff": 10.0, "positive": "love",
                                           "negative": "hate"}, GREEDY)
    assert steered == _steered(tiny_llama, expected, list(steered))
    assert got["steering"]["method"] == "actadd" and got["steering"]["coeff"] == 10.0


def test_generate_refuses_two_steerings_and_stray_flags(capsys):
    assert main(["generate", "--prompt", "x", "--add", "1:+1:a", "--vector", "v.pt"]) == 2
    assert "give one steering" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--layer", "3"]) == 2
    assert "--layer and --coeff go with --vector" in capsys.readouterr().err
    assert main(["generate", "--prompt", "x", "--set", "steering.layer=3"]) == 2
    assert "needs --method" in capsys.readouterr().err
    with pytest.raises(UserError, match="generation.repetition_penalty"):
        main(["--debug", "generate", "--prompt", "x", "--repetition-penalty", "0"])
