"""ActAdd on the real embedded model: the vector, coefficient 0, hooks and batching."""

from __future__ import annotations

import pytest
import torch

from harness.engine import GenerationSettings, generate
from harness.errors import UserError
from harness.methods.actadd import Addition, build_actadd, contrast_token_ids
from harness.models.tokens import encode
from harness.steering.session import PrefixTruncatedWarning

GREEDY = GenerationSettings(max_new_tokens=12, greedy=True)
LOVE_HATE = [Addition(6, 4.0, "Love"), Addition(6, -4.0, "Hate")]


def _completions(lm, prompts, conditions, settings=GREEDY, **kw):
    gens = generate(lm, prompts, conditions, settings, **kw)
    return {(g.row.prompt, g.row.condition, g.row.sample): g.token_ids for g in gens}


def test_embedded_bos_is_endoftext(smollm):
    assert encode(smollm.tokenizer, "I hate you")[0] == 0


def test_vector_equals_difference_of_hidden_states(smollm):
    steering = build_actadd(smollm, LOVE_HATE)
    ids = torch.tensor(contrast_token_ids(smollm, ["Love", "Hate"]))
    with torch.no_grad():
        hidden = smollm.model(input_ids=ids, output_hidden_states=True).hidden_states
    # hidden_states[0] is the embedding; the output of block L is hidden_states[L + 1]
    expected = 4.0 * hidden[7][0] - 4.0 * hidden[7][1]
    (iv,) = steering.interventions
    assert iv.layer == 6 and iv.positions == "prefix"
    torch.testing.assert_close(iv.vector, expected, atol=1e-5, rtol=0)


def test_contrast_prompts_padded_with_spaces_to_equal_length(smollm):
    ids = contrast_token_ids(smollm, ["Love", "I talk about weddings constantly"])
    assert len(ids[0]) == len(ids[1])
    space = smollm.tokenizer(" ", add_special_tokens=False).input_ids[-1]
    assert ids[0][0] == 0 and ids[0][-1] == space and ids[0][2] == space


def test_null_steering_reproduces_unsteered_tokens(smollm):
    steering = build_actadd(smollm, [Addition(6, 0.0, "Love"), Addition(6, -0.0, "Hate")])
    out = _completions(smollm, ["I hate you because"], {"u": None, "s": steering})
    assert out[("I hate you because", "s", 0)] == out[("I hate you because", "u", 0)]


def test_texts_that_cancel_to_a_zero_vector_are_refused_not_run_as_steering(smollm):
    with pytest.raises(UserError, match="vector at layer 6 is zero although its coefficients are not"):
        build_actadd(smollm, [Addition(6, 4.0, "Love"), Addition(6, -4.0, "Love")])


def test_love_hate_changes_greedy_completion(smollm):
    steering = build_actadd(smollm, LOVE_HATE)
    out = _completions(smollm, ["I hate you because"], {"u": None, "s": steering})
    assert out[("I hate you because", "s", 0)] != out[("I hate you because", "u", 0)]


def test_mixed_batch_matches_rows_run_alone(smollm):
    prompts = ["I hate you because", "Yesterday my neighbour told me that the", "Honestly,"]
    conditions = {"u": None, "love": build_actadd(smollm, LOVE_HATE),
                  "two_layers": build_actadd(smollm, [*LOVE_HATE, Addition(3, 2.0, "Happy")])}
    batched = _completions(smollm, prompts, conditions, batch_size=9)
    for prompt in prompts:
        for name, steering in conditions.items():
            alone = _completions(smollm, [prompt], {name: steering}, batch_size=1)
            assert alone[(prompt, name, 0)] == batched[(prompt, name, 0)], (prompt, name)


def _logits(lm):
    ids = torch.tensor([encode(lm.tokenizer, "The weather today is")])
    with torch.no_grad():
        return lm.model(input_ids=ids).logits


def test_hooks_removed_after_generation_and_after_error(smollm, monkeypatch):
    before = _logits(smollm)
    steering = build_actadd(smollm, LOVE_HATE)
    generate(smollm, ["I hate you because"], {"s": steering}, GREEDY)
    torch.testing.assert_close(_logits(smollm), before, atol=0, rtol=0)

    real_generate = smollm.model.generate

    def failing_generate(*args, **kwargs):
        smollm.model(input_ids=kwargs["input_ids"], attention_mask=kwargs["attention_mask"])
        raise RuntimeError("boom")

    monkeypatch.setattr(smollm.model, "generate", failing_generate)
    with pytest.raises(RuntimeError, match="boom"):
        generate(smollm, ["I hate you because"], {"s": steering}, GREEDY)
    monkeypatch.setattr(smollm.model, "generate", real_generate)
    torch.testing.assert_close(_logits(smollm), before, atol=0, rtol=0)


def test_vector_longer_than_prompt_adds_overlap_and_warns(smollm):
    steering = build_actadd(smollm, [Addition(6, 4.0, "Love is all around us"),
                                     Addition(6, -4.0, "Hate")])
    with pytest.warns(PrefixTruncatedWarning, match="first 2 positions"):
        out = _completions(smollm, ["Hi"], {"u": None, "s": steering})
    assert out[("Hi", "s", 0)] != out[("Hi", "u", 0)]


def test_sampling_is_reproducible_and_batch_independent(smollm):
    settings = GenerationSettings(max_new_tokens=10)
    steering = build_actadd(smollm, LOVE_HATE)
    a = _completions(smollm, ["I hate you because", "So"], {"u": None, "s": steering}, settings,
                     samples=2, seed=3)
    b = _completions(smollm, ["So", "I hate you because"], {"s": steering, "u": None}, settings,
                     samples=2, seed=3, batch_size=1)
    assert a == b
    c = _completions(smollm, ["I hate you because"], {"u": None}, settings, samples=2, seed=4)
    assert c[("I hate you because", "u", 0)] != a[("I hate you because", "u", 0)]


def test_layer_out_of_range_names_layer_count(smollm):
    with pytest.raises(ValueError, match="30 layers"):
        build_actadd(smollm, [Addition(30, 1.0, "Love")])
