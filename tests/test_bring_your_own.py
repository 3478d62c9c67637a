"""Bring your own vector and data: multi-layer files, clamp and ablate, export round trips with the
same greedy tokens, prompts and pairs from datasets, the `harness vector` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.api import build_steering, steer, steering_to_vectors
from harness.cli import main
from harness.engine import generate
from harness.errors import UserError
from harness.methods.mean_diff import build_mean_diff
from harness.models.tokens import encode
from harness.runner import RunOptions, resolve_tasks, run
from harness.schema.generation import GenerationSettings
from harness.steering.base import Steering, placed
from harness.steering.capture import capture_outputs
from harness.vectors import VectorSet, read_vectors, write_gguf, write_lm_eval, write_safetensors

PAIRS = [("I love the way", "I hate the way"), ("the light falls on the water", "the tower")]
GREEDY = GenerationSettings(max_new_tokens=6, greedy=True, repetition_penalty=1.0)
PROMPTS = ["I love the way", "The tower"]


def _vector_file(lm, path: Path, **fields) -> Steering:  # noqa: ANN001
    return build_steering(lm, {"method": "vector_file", "path": str(path), **fields})


def test_a_multi_layer_gguf_applies_at_every_layer_it_holds(tiny_llama, tmp_path):
    width = tiny_llama.model.config.hidden_size
    vs = VectorSet(vectors={1: torch.ones(width), 2: -torch.ones(width), 3: torch.linspace(-1, 1, width)},
                   format="test")
    write_gguf(vs, tmp_path / "v.gguf", model_hint="llama")
    steering = _vector_file(tiny_llama, tmp_path / "v.gguf", coeff=3.0)
    assert [iv.layer for iv in steering.interventions] == [1, 2, 3]
    (g,) = generate(tiny_llama, ["The tower"], {"s": steering}, GREEDY)
    length = len(encode(tiny_llama.tokenizer, "The tower"))
    changed = {(e.site, e.kind): e.positions for e in g.ledger}
    for layer in (1, 2, 3):
        assert changed[(f"L{layer}.resid", "prompt")] == length - 1  # every position after BOS
        assert changed[(f"L{layer}.resid", "decode")] == GREEDY.max_new_tokens - 1
    only = _vector_file(tiny_llama, tmp_path / "v.gguf", layers=[2])
    assert [iv.layer for iv in only.interventions] == [2]


@pytest.mark.parametrize("operator", ["clamp", "ablate"])
def test_clamp_and_ablate_set_the_projection_on_the_direction(tiny_llama, operator):
    width = tiny_llama.model.config.hidden_size
    direction = torch.linspace(-1, 1, width) + 0.3
    unit = direction / direction.norm()
    steering = Steering((placed(2, direction, 5.0 if operator == "clamp" else None, operator=operator),))
    ids = torch.tensor([encode(tiny_llama.tokenizer, "I love the way the light falls")])
    mask = torch.ones_like(ids)
    plain = capture_outputs(tiny_llama.model, [(2, "resid")], input_ids=ids,
                            attention_mask=mask)[(2, "resid")][0]
    with steer(tiny_llama, steering):
        got = capture_outputs(tiny_llama.model, [(2, "resid")], input_ids=ids,
                              attention_mask=mask)[(2, "resid")][0]
    projection = got[1:] @ unit
    target = 5.0 if operator == "clamp" else 0.0
    torch.testing.assert_close(projection, torch.full_like(projection, target), atol=1e-4, rtol=0)
    orthogonal = (got[1:] - projection[:, None] * unit) - (plain[1:] - (plain[1:] @ unit)[:, None] * unit)
    assert orthogonal.abs().max() < 1e-4  # nothing else moves
    torch.testing.assert_close(got[0], plain[0])  # BOS left alone


@pytest.mark.parametrize("suffix", [".gguf", ".pt", ".safetensors"])
def test_exported_vectors_read_back_exactly_and_steer_to_the_same_tokens(tiny_llama, tmp_path, suffix):
    steering = build_mean_diff(tiny_llama, PAIRS, 2, 4.0)
    vs = steering_to_vectors(steering)
    path = tmp_path / f"v{suffix}"
    {".gguf": lambda: write_gguf(vs, path, model_hint="llama"), ".pt": lambda: write_lm_eval(vs, path),
     ".safetensors": lambda: write_safetensors(vs, path)}[suffix]()
    back = read_vectors(path)
    assert torch.equal(back.vectors[2], steering.interventions[0].vector)  # max |Δ| = 0.0
    read = _vector_file(tiny_llama, path)
    conditions = {"mean_diff": steering, "file": read}
    tokens = {g.row.prompt + g.row.condition: g.token_ids
              for g in generate(tiny_llama, PROMPTS, conditions, GREEDY)}
    assert all(tokens[p + "mean_diff"] == tokens[p + "file"] for p in PROMPTS)


def test_vector_cli_exports_converts_and_inspects(tiny_llama, tmp_path, capsys):
    model = tmp_path / "model"
    tiny_llama.model.save_pretrained(model)
    tiny_llama.tokenizer.save_pretrained(model)
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps({"positive": p, "negative": n}) + "\n"
                                                  for p, n in PAIRS))
    task = tmp_path / "t.yaml"
    task.write_text("name: t\nkind: topic\nprompts: [The tower]\n"
                    "steering: {method: mean_diff, layer: 1, coeff: 2, pairs: {file: pairs.jsonl}, "
                    "steer_bos: true}\n"
                    "scorers: {keywords: {words: [tower]}}\nmetrics: {keywords.rate: increase}\n"
                    "headline: keywords.rate\n")
    assert main(["vector", "export", str(task), str(tmp_path / "v.gguf"), "--model", str(model)]) == 0
    assert main(["vector", "convert", str(tmp_path / "v.gguf"), str(tmp_path / "v.pt")]) == 0
    assert main(["vector", "inspect", str(tmp_path / "v.pt"), "--model", str(model)]) == 0
    out = capsys.readouterr().out
    assert "lm-eval-steered" in out and "layer   1: norm" in out and "x the mean residual norm" in out
    expected = build_mean_diff(tiny_llama, PAIRS, 1, 2.0).interventions[0].vector
    assert torch.equal(read_vectors(tmp_path / "v.pt").vectors[1], expected)
    assert main(["vector", "export", "love_hate", str(tmp_path / "x.gguf"), "--model", str(model),
                 "--set", "steering.layer=1"]) == 2
    assert "cannot be exported" in capsys.readouterr().err  # ActAdd's prefix vectors have no file form


def _dataset_task(folder: Path, prompts: str) -> Path:
    path = folder / "ds.yaml"
    path.write_text(f"name: ds\nkind: sentiment\nprompts: {prompts}\n"
                    "steering: {method: actadd, layer: 5, coeff: 4, positive: Love, negative: Hate}\n"
                    "scorers: {vader: {}}\nmetrics: {vader.compound: increase}\nheadline: vader.compound\n")
    return path


def _make_dataset(folder: Path) -> None:
    import datasets

    rows = {"sentence": ["I hate you because", "I hate Mondays, since", "We hate this town. It is"],
            "label": [0, 0, 0]}
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)}).save_to_disk(str(folder / "saved"))
    datasets.Dataset.from_dict(rows).to_parquet(str(folder / "rows.parquet"))


@pytest.mark.parametrize("source", ["{dataset: saved, split: test, field: sentence, limit: 2}",
                                    "{dataset: rows.parquet, field: sentence, limit: 2, seed: 1}"])
def test_prompts_from_a_saved_dataset_or_a_parquet_file_run_end_to_end(smollm, tmp_path, source):
    _make_dataset(tmp_path)
    result = run(str(_dataset_task(tmp_path, source)), tmp_path / "out", model=smollm,
                 options=RunOptions(progress=False, samples=1, max_new_tokens=4))
    assert result.tasks[0].n_prompts == 2 and result.headlines[0].estimate.n == 2
    texts = {p["text"] for p in result.config["tasks"]["ds"]["prompts"]}
    assert texts <= {"I hate you because", "I hate Mondays, since", "We hate this town. It is"}


@pytest.mark.parametrize(("source", "words"), [
    ("{dataset: saved, split: train, field: sentence}", ["no split 'train'", "splits: test"]),
    ("{dataset: saved, split: test, field: text}", ["no field 'text'", "sentence, label"]),
    ("{dataset: nobody/nothing-here, split: test}", ["nobody/nothing-here", "cannot be loaded"]),
])
def test_dataset_errors_name_the_dataset_split_and_field(tmp_path, monkeypatch, source, words):
    import datasets
    import huggingface_hub.constants

    # a hub id offline fails at once, as it must in CI; the libraries read the variables at import,
    # so once they are imported the setting itself is patched (the variables alone cost a 23 s timeout)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    _make_dataset(tmp_path)
    with pytest.raises(UserError) as err:
        resolve_tasks(str(_dataset_task(tmp_path, source)), RunOptions())
    for word in words:
        assert word in str(err.value), (word, str(err.value))
