"""Exporting to lm-evaluation-harness's `steered` format keeps what lm-eval will do: it adds the vector
at every position, the BOS included, so a steering that skips the BOS is refused, and one that
steers it gives, under lm-eval's own hook semantics, the tokens our engine gives.

lm-eval's `hf_steered.SteeredModel` (re-implemented in `_lm_eval_steer`, from its source): the .pt
file is `{hookpoint: {steering_vector, steering_coefficient, action, bias, head_index}}`; for each
hookpoint it registers a forward hook on the module of that name in `model.base_model.named_modules()`
(raising when a hookpoint does not resolve), and `add` returns `output + coefficient * vector` (the
first element of a tuple output), at every position of every forward pass.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from harness.api import steering_to_vectors
from harness.cli import main
from harness.engine import generate
from harness.errors import UserError
from harness.methods.mean_diff import build_mean_diff
from harness.models.tokens import encode
from harness.schema.generation import GenerationSettings
from harness.vectors import read_vectors, write_lm_eval

PAIRS = [("I love the way", "I hate the way"), ("the light falls on the water", "the tower")]
PROMPTS = ["I love the way", "The tower", "We talked about"]
GREEDY = GenerationSettings(max_new_tokens=6, greedy=True, repetition_penalty=1.0)
LAYER, COEFF = 1, 8.0


@contextmanager
def _lm_eval_steer(model: torch.nn.Module, path: Path):
    """lm-eval's `steer()` on the `add` entries of a steered .pt file."""
    config = torch.load(path, weights_only=True)
    modules = dict(model.base_model.named_modules())
    missing = [h for h in config if h not in modules]
    if missing:
        raise ValueError(f"Not all hookpoints could be resolved: {missing}")

    def hook(entry):  # noqa: ANN001, ANN202
        add = entry["steering_vector"] * float(entry["steering_coefficient"])

        def fn(module, args, output):  # noqa: ANN001, ANN202
            if isinstance(output, tuple):
                return (output[0] + add.to(output[0].dtype), *output[1:])
            return output + add.to(output.dtype)
        return fn

    handles = [modules[h].register_forward_hook(hook(e)) for h, e in config.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _lm_eval_greedy(lm, path: Path, prompt: str) -> list[int]:  # noqa: ANN001
    ids = torch.tensor([encode(lm.tokenizer, prompt)])  # BOS first, as lm-eval's add_bos_token=True
    eos = lm.tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=GREEDY.max_new_tokens, do_sample=False,
                              pad_token_id=lm.tokenizer.pad_token_id, eos_token_id=eos)
    with _lm_eval_steer(lm.model, path), torch.no_grad():
        out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
    tokens = out[0, ids.shape[1]:].tolist()
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def _engine(lm, steering) -> dict[str, list[int]]:  # noqa: ANN001
    return {g.row.prompt: g.token_ids for g in generate(lm, PROMPTS, {"s": steering}, GREEDY)}


def test_a_steering_that_steers_bos_exports_to_lm_eval_tokens_3_of_3(tiny_llama, tmp_path):
    steering = build_mean_diff(tiny_llama, PAIRS, LAYER, COEFF, steer_bos=True)
    write_lm_eval(steering_to_vectors(steering, "lm-eval-steered"), tmp_path / "v.pt")
    theirs = {p: _lm_eval_greedy(tiny_llama, tmp_path / "v.pt", p) for p in PROMPTS}
    assert theirs == _engine(tiny_llama, steering)
    plain = {g.row.prompt: g.token_ids for g in generate(tiny_llama, PROMPTS, {"u": None}, GREEDY)}
    assert theirs != plain  # the vector acts: not the parity of two no-ops
    # read back, `steer_bos: true` reproduces the same tokens in our engine
    back = build_mean_diff(tiny_llama, PAIRS, LAYER, COEFF, steer_bos=True)
    assert torch.equal(read_vectors(tmp_path / "v.pt").vectors[LAYER], back.interventions[0].vector)


def test_a_steering_that_skips_bos_is_refused_because_lm_eval_would_differ(tiny_llama, tmp_path):
    steering = build_mean_diff(tiny_llama, PAIRS, LAYER, COEFF)  # steer_bos: false, our default
    with pytest.raises(UserError, match="BOS.*steer_bos=true"):
        steering_to_vectors(steering, "lm-eval-steered")
    with pytest.raises(UserError, match="llama.cpp.*BOS"):
        steering_to_vectors(steering, "gguf-control-vector")
    # why: written anyway, lm-eval's tokens differ from ours (the BOS position is steered there)
    write_lm_eval(steering_to_vectors(steering), tmp_path / "v.pt")
    ours = _engine(tiny_llama, steering)
    differ = sum(_lm_eval_greedy(tiny_llama, tmp_path / "v.pt", p) != ours[p] for p in PROMPTS)
    assert differ >= 1, "lm-eval's tokens equal ours: the refusal would not be needed"
    # without a BOS in the prompts there is nothing to skip; prompt-only steering is refused
    assert steering_to_vectors(steering, "lm-eval-steered", use_bos=False).layers == [LAYER]
    prompt_only = build_mean_diff(tiny_llama, PAIRS, LAYER, COEFF, positions="prompt", steer_bos=True)
    with pytest.raises(UserError, match="prompt tokens only"):
        steering_to_vectors(prompt_only, "lm-eval-steered")


def test_the_hookpoints_we_write_resolve_in_lm_eval_and_model_layers_does_not(tiny_llama, tmp_path):
    steering = build_mean_diff(tiny_llama, PAIRS, LAYER, COEFF, steer_bos=True)
    write_lm_eval(steering_to_vectors(steering, "lm-eval-steered"), tmp_path / "v.pt")
    with _lm_eval_steer(tiny_llama.model, tmp_path / "v.pt"):
        pass
    entry = torch.load(tmp_path / "v.pt", weights_only=True)[f"layers.{LAYER}"]
    torch.save({f"model.layers.{LAYER}": entry}, tmp_path / "m.pt")
    with pytest.raises(ValueError, match="Not all hookpoints could be resolved"):
        _lm_eval_steer(tiny_llama.model, tmp_path / "m.pt").__enter__()
    with pytest.raises(UserError, match="does not resolve"):  # before: read as our layer 1
        read_vectors(tmp_path / "m.pt")


def test_vector_export_cli_refuses_a_default_steering_to_lm_eval(tiny_llama, tmp_path, capsys):
    model = tmp_path / "model"
    tiny_llama.model.save_pretrained(model)
    tiny_llama.tokenizer.save_pretrained(model)
    task = tmp_path / "t.yaml"
    task.write_text("name: t\nkind: topic\nprompts: [The tower]\n"
                    "steering: {method: mean_diff, layer: 1, coeff: 2, "
                    "pairs: [{positive: I love the way, negative: I hate the way}]}\n"
                    "scorers: {keywords: {words: [tower]}}\nmetrics: {keywords.rate: increase}\n"
                    "headline: keywords.rate\n")
    argv = ["vector", "export", str(task), str(tmp_path / "v.pt"), "--model", str(model)]
    assert main(argv) == 2 and "steer_bos" in capsys.readouterr().err
    assert not (tmp_path / "v.pt").exists()
    assert main([*argv, "--set", "steering.steer_bos=true"]) == 0
    assert main([*argv[:3], str(tmp_path / "v.safetensors"), *argv[4:]]) == 0  # our own format: no tool
