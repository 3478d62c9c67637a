"""Model loading and the steering path on tiny random GPT-2, Llama and GPT-NeoX models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.engine import GenerationSettings, generate
from harness.methods.actadd import Addition, build_actadd, contrast_token_ids
from harness.models import ModelLoadError, decoder_blocks, hook_module, load_model

GREEDY = GenerationSettings(max_new_tokens=8, greedy=True, repetition_penalty=1.0)


def test_tiny_model_loads_from_local_directory(tiny_lm):
    assert not tiny_lm.model.training
    assert all(not p.requires_grad for p in tiny_lm.model.parameters())
    assert tiny_lm.tokenizer.padding_side == "left"
    assert len(decoder_blocks(tiny_lm.model)) == 4
    assert tiny_lm.identity()["sha256"]


def test_tiny_model_vector_matches_hidden_states(tiny_lm):
    steering = build_actadd(tiny_lm, [Addition(2, 3.0, "love"), Addition(2, -3.0, "hate you")])
    ids = torch.tensor(contrast_token_ids(tiny_lm, ["love", "hate you"]))
    with torch.no_grad():
        hidden = tiny_lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(steering.interventions[0].vector, 3.0 * (hidden[3][0] - hidden[3][1]),
                               atol=1e-5, rtol=0)


def test_tiny_model_generation_steered_and_null(tiny_lm):
    prompts = ["I love the way", "The tower"]
    big = build_actadd(tiny_lm, [Addition(1, 50.0, "love"), Addition(1, -50.0, "hate")])
    null = build_actadd(tiny_lm, [Addition(1, 0.0, "love"), Addition(1, 0.0, "hate")])
    gens = generate(tiny_lm, prompts, {"u": None, "null": null, "big": big}, GREEDY)
    out = {(g.row.prompt, g.row.condition): g.token_ids for g in gens}
    for p in prompts:
        assert out[(p, "null")] == out[(p, "u")]
    assert any(out[(p, "big")] != out[(p, "u")] for p in prompts)


@pytest.mark.parametrize("point", ["attn", "mlp"])
def test_hook_points_resolve_to_submodules(tiny_lm, point):
    module = hook_module(tiny_lm.model, 1, point)
    assert module is not decoder_blocks(tiny_lm.model)[1]
    assert any(module is m for m in decoder_blocks(tiny_lm.model)[1].modules())


def test_unsupported_family_names_supported_ones():
    model = nn.Linear(2, 2)
    model.config = type("C", (), {"model_type": "bert"})()
    with pytest.raises(ModelLoadError, match="unsupported model family 'bert'.*llama"):
        decoder_blocks(model)


def test_missing_model_fails_fast_without_network(tmp_path):
    with pytest.raises(ModelLoadError, match="network is not used"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "x.gguf"))


def test_addition_parse():
    assert Addition.parse("6:+4:Love ") == Addition(6, 4.0, "Love ")
    assert Addition.parse("3:-2.5:a:b") == Addition(3, -2.5, "a:b")
    with pytest.raises(ValueError, match="LAYER:COEFF:TEXT"):
        Addition.parse("Love")


def test_device_map_load_steers_like_a_plain_load(tmp_path):
    """`--device-map`: the model goes through accelerate's dispatch; steering is unchanged."""
    from tests.conftest import save_tiny_model

    path = str(save_tiny_model("llama", tmp_path))
    plain, mapped = load_model(path), load_model(path, device_map="auto")
    assert mapped.device.type == "cpu"  # no accelerator here: "auto" places every layer on the CPU
    conditions = {"u": None}
    outs = []
    for lm in (plain, mapped):
        conditions["big"] = build_actadd(lm, [Addition(1, 50.0, "love"), Addition(1, -50.0, "hate")])
        outs.append([g.token_ids for g in generate(lm, ["I love the way", "The tower"], conditions, GREEDY)])
    assert outs[0] == outs[1]
