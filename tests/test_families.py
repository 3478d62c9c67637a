"""The differential battery: on a tiny random model of every supported family, the numbers do not
depend on the batch, on the KV cache or on the checkpoint's defaults, coefficient 0 is unsteered,
and the ledger counts exactly the positions each method must change."""

from __future__ import annotations

import pytest
import torch

from harness.api import steer
from harness.engine import Row, generate, generate_batch
from harness.methods.actadd import Addition, build_actadd
from harness.methods.mean_diff import build_mean_diff
from harness.models import decoder_blocks, load_model
from harness.models.tokens import encode, left_pad
from harness.schema.generation import GenerationSettings
from harness.scorers.logprobs import continuation_logprobs
from tests.conftest import FAMILIES, save_tiny_model

PROMPTS = ["I love the way", "The tower", "We talked about weddings, brides and flowers"]
GREEDY = GenerationSettings(max_new_tokens=6, greedy=True, repetition_penalty=1.0)
PAIRS = [("I love the way", "I hate the way"), ("the light falls on the water", "the tower")]


@pytest.fixture(scope="module", params=FAMILIES)
def lm(request, tmp_path_factory):
    return load_model(str(save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))))


def _steerings(lm):  # noqa: ANN001, ANN202
    return {"actadd": build_actadd(lm, [Addition(1, 40.0, "love"), Addition(1, -40.0, "hate")]),
            "mean_diff": build_mean_diff(lm, PAIRS, 2, 30.0)}


def test_the_generic_layer_search_finds_every_family(lm):
    assert len(decoder_blocks(lm.model)) == 4


def test_scoring_a_row_alone_equals_scoring_it_in_a_padded_batch(lm):
    tok = lm.tokenizer
    prefixes = [encode(tok, p) for p in PROMPTS]
    conts = [tok(" and then the water", add_special_tokens=False).input_ids] * len(PROMPTS)
    steering = _steerings(lm)["mean_diff"]
    for steer_rows in (None, [steering, None, steering]):
        batched = continuation_logprobs(lm, prefixes, conts, steer_rows, batch_size=8)
        for i in range(len(PROMPTS)):
            alone = continuation_logprobs(lm, [prefixes[i]], [conts[i]],
                                          [steer_rows[i]] if steer_rows else None)
            torch.testing.assert_close(torch.tensor(alone[0]), torch.tensor(batched[i]), atol=1e-5, rtol=0)


def test_a_row_generated_alone_equals_it_in_a_mixed_batch(lm):
    conditions = {"u": None, **_steerings(lm)}
    batched = {(g.row.prompt, g.row.condition): g.token_ids
               for g in generate(lm, PROMPTS, conditions, GREEDY)}
    for prompt in PROMPTS:
        for name, steering in conditions.items():
            (alone,) = generate(lm, [prompt], {name: steering}, GREEDY, batch_size=1)
            assert alone.token_ids == batched[(prompt, name)], (prompt, name)


@pytest.mark.parametrize("method", ["actadd", "mean_diff"])
def test_steered_tokens_are_the_same_with_and_without_the_kv_cache(lm, method):
    steering = _steerings(lm)[method]
    tok = lm.tokenizer
    ids, mask = left_pad([encode(tok, p) for p in PROMPTS], tok.pad_token_id)
    out = {}
    for cache in (True, False):
        with steer(lm, steering), torch.no_grad():
            out[cache] = lm.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6,
                                           do_sample=False, use_cache=cache, pad_token_id=tok.pad_token_id)
    assert out[True].tolist() == out[False].tolist()


def test_the_checkpoints_own_generation_defaults_change_nothing(lm):
    steering = _steerings(lm)["actadd"]
    plain = [g.token_ids for g in generate(lm, PROMPTS, {"s": steering}, GREEDY)]
    saved = lm.model.generation_config
    lm.model.generation_config = type(saved)(repetition_penalty=9.0, no_repeat_ngram_size=1, use_cache=False,
                                             do_sample=True, top_k=2)
    try:
        assert [g.token_ids for g in generate(lm, PROMPTS, {"s": steering}, GREEDY)] == plain
    finally:
        lm.model.generation_config = saved


def test_coefficient_zero_equals_unsteered(lm):
    zero = {"actadd0": build_actadd(lm, [Addition(1, 0.0, "love"), Addition(1, -0.0, "hate")]),
            "mean_diff0": build_mean_diff(lm, PAIRS, 2, 0.0)}
    gens = generate(lm, PROMPTS, {"u": None, **zero}, GREEDY)
    tokens = {(g.row.prompt, g.row.condition): g.token_ids for g in gens}
    for prompt in PROMPTS:
        assert tokens[(prompt, "actadd0")] == tokens[(prompt, "u")] == tokens[(prompt, "mean_diff0")]


def test_the_ledger_counts_the_positions_each_method_changes(lm):
    steerings = _steerings(lm)
    rows = [Row(p, name, 0, 0) for p in PROMPTS for name in steerings]
    new = GREEDY.max_new_tokens
    gens = generate_batch(lm, rows, [steerings[r.condition] for r in rows], GREEDY, min_new_tokens=new)
    prefix = steerings["actadd"].interventions[0].vector
    nonzero = [bool(v) for v in (prefix.norm(dim=-1) > 0).tolist()]
    for g in gens:
        length = len(encode(lm.tokenizer, g.row.prompt))
        changed = {(e.site, e.kind): e.positions for e in g.ledger}
        if g.row.condition == "actadd":  # the first n prompt positions, in the prompt pass only
            expected = sum(nonzero[:length])
            assert changed[("L1.resid", "prompt")] == expected and changed[("L1.resid", "decode")] == 0
        else:  # every position after BOS, in the prompt pass and every decode step
            assert changed[("L2.resid", "prompt")] == length - 1
            assert changed[("L2.resid", "decode")] == new - 1
