"""Parity with the field's peer tools, on the embedded SmolLM2-135M (layer L = output of block L).

- steering-vectors (CAA / mean difference): `train_steering_vector` with the mean aggregator,
  read index -1 and batch_size=1 (each text alone, no padding), on texts prefixed with the BOS
  string (its tokenizer call adds no special tokens for this model, so `bos + text` tokenizes
  exactly as `harness.models.tokens.encode(text, use_bos=True)`), is our `mean_diff` vector with
  token="last": measured max |Δ| = 0.0 (the same float32 operations).
  `SteeringVector.apply(min_token_index=1)` steers every position after BOS of each forward
  pass; with the KV cache a decode step's input is one token, so position 1 onward of that
  step is nothing and generated tokens would go unsteered. Recomputing the whole sequence at
  every step (no cache) makes it our convention (every position after BOS, prompt and
  generated tokens): 3/3 prompts give our engine's greedy tokens, 12 of 12 each.
- nnsight (ActAdd, the seed's recipe): one `generate` with two invokes, the contrast prompts
  (BOS first, right-padded with space tokens) and the prompt (BOS first); the layer's output
  for Love minus that for Hate, times the coefficient, is added in place to the prompt's first
  n positions on the first (prompt) forward pass only, the KV cache carrying it: 2/2 prompts
  give our engine's greedy tokens. Its vector differs from ours by ≤ 5e-4 absolute on entries
  up to ~3300 (~1.5e-7 relative; its BOS row is exactly 0, as ours): nnsight batches the
  contrast rows with the prompt and left-pads them (traced alone they give ours exactly).
- repeng is not tested here: 0.4.0 does not import on numpy 2 (`np.float_`).
"""

from __future__ import annotations

import copy

import pytest
import torch

from harness.engine import generate
from harness.methods.actadd import Addition, build_actadd, contrast_token_ids
from harness.methods.mean_diff import build_mean_diff
from harness.models import hook_module
from harness.models.tokens import encode
from harness.schema.generation import GenerationSettings

GREEDY = GenerationSettings(max_new_tokens=12, greedy=True, repetition_penalty=1.0)

PAIRS = [
    ("I love this, it is wonderful", "I hate this, it is awful"),
    ("What a happy day", "What a miserable day"),
    ("She smiled with joy", "She frowned with anger"),
    ("This is great news", "This is terrible news"),
]
MD_LAYER, MD_COEFF = 6, 1.0
MD_PROMPTS = ["I think that you are", "The movie last night was", "My neighbour is"]

AA_LAYER, AA_COEFF = 6, 4.0
AA_PROMPTS = ["I hate you because", "The weather today is"]


def _engine_tokens(lm, prompts, steering) -> dict[tuple[str, str], list[int]]:
    gens = generate(lm, prompts, {"unsteered": None, "steered": steering}, GREEDY)
    return {(g.row.prompt, g.row.condition): g.token_ids for g in gens}


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def _greedy_without_cache(lm, ids: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding that recomputes the whole sequence at every step (no KV cache)."""
    seq = torch.tensor([ids], device=lm.device)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = lm.model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False,
                              logits_to_keep=1).logits
            nxt = int(logits[0, -1].argmax())
            if nxt == lm.tokenizer.eos_token_id:
                break
            out.append(nxt)
            seq = torch.cat([seq, seq.new_tensor([[nxt]])], dim=1)
    return out


@pytest.fixture(scope="module")
def our_mean_diff(smollm):
    """Our mean_diff steering (token="last") at MD_LAYER, coefficient MD_COEFF."""
    return build_mean_diff(smollm, PAIRS, MD_LAYER, MD_COEFF, token="last")


@pytest.fixture(scope="module")
def peer_vector(smollm):
    """steering-vectors' vector at MD_LAYER, trained on the BOS-prefixed pairs (multiplier 1)."""
    sv = pytest.importorskip("steering_vectors", reason="peer tool steering-vectors is not installed "
                             "(make setup installs it)")
    from steering_vectors.layer_matching import collect_matching_layers, guess_and_enhance_layer_config
    from steering_vectors.torch_utils import get_module

    tok = smollm.tokenizer
    bos = tok.bos_token
    # Same tokens as ours: its `tokenizer(prompts)` adds no BOS for this model, so we prefix it.
    for text in [t for pair in PAIRS for t in pair]:
        assert tok(bos + text).input_ids == encode(tok, text, use_bos=True)
    # Same layer: its "decoder_block" L is the module whose output is our layer L.
    config = guess_and_enhance_layer_config(smollm.model, None, "decoder_block")
    block = collect_matching_layers(smollm.model, config["decoder_block"])[MD_LAYER]
    assert get_module(smollm.model, block) is hook_module(smollm.model, MD_LAYER)
    return sv.train_steering_vector(
        smollm.model, tok, [(bos + p, bos + n) for p, n in PAIRS], layers=[MD_LAYER],
        layer_type="decoder_block", read_token_index=-1, aggregator=sv.mean_aggregator(), batch_size=1,
    )


def test_mean_diff_last_token_equals_steering_vectors_mean_max_abs_delta_0(our_mean_diff, peer_vector):
    (ours,) = our_mean_diff.interventions
    theirs = MD_COEFF * peer_vector.layer_activations[MD_LAYER].float()
    assert theirs.shape == ours.vector.shape
    delta = (ours.vector - theirs).abs().max().item()
    # measured: 0.0 (vector norm ~35)
    assert delta <= 1e-5, f"max |Δ| = {delta:.3g} between our mean_diff and steering-vectors' vector"


def test_steering_vectors_apply_after_bos_gives_engine_greedy_tokens_3_of_3(smollm, our_mean_diff,
                                                                            peer_vector):
    engine = _engine_tokens(smollm, MD_PROMPTS, our_mean_diff)
    peer = {}
    for prompt in MD_PROMPTS:
        ids = encode(smollm.tokenizer, prompt)
        # min_token_index counts within each forward's input: without a cache that is the sequence
        with peer_vector.apply(smollm.model, multiplier=MD_COEFF, min_token_index=1):
            peer[prompt] = _greedy_without_cache(smollm, ids, GREEDY.max_new_tokens)
    agree = sum(peer[p] == engine[(p, "steered")] for p in MD_PROMPTS)
    assert peer == {p: engine[(p, "steered")] for p in MD_PROMPTS}, f"{agree}/{len(MD_PROMPTS)} agree"
    assert all(len(t) == GREEDY.max_new_tokens for t in peer.values())
    # the vector acts: parity is not that of two no-ops
    assert any(engine[(p, "steered")] != engine[(p, "unsteered")] for p in MD_PROMPTS)


@pytest.fixture(scope="module")
def nnsight_model(smollm):
    """nnsight around a copy of the embedded model (its wrapping must not touch the shared one)."""
    pytest.importorskip("nnsight", reason="peer tool nnsight is not installed (make setup installs it)")
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel(copy.deepcopy(smollm.model), tokenizer=copy.deepcopy(smollm.tokenizer),
                             task="text-generation")


def test_nnsight_actadd_love_hate_gives_engine_greedy_tokens_2_of_2(smollm, nnsight_model):
    model, tok = nnsight_model, smollm.tokenizer
    texts = ["Love", "Hate"]
    ours = build_actadd(smollm, [Addition(AA_LAYER, AA_COEFF, texts[0]),
                                 Addition(AA_LAYER, -AA_COEFF, texts[1])])
    (iv,) = ours.interventions
    # the seed's contrast prompts: BOS string first, right-padded with space tokens to one length
    space = tok(" ", add_special_tokens=False).input_ids[-1]
    rows = [tok(tok.bos_token + t).input_ids for t in texts]
    n = max(len(r) for r in rows)
    contrast = [r + [space] * (n - len(r)) for r in rows]
    assert contrast == contrast_token_ids(smollm, texts)
    engine = _engine_tokens(smollm, AA_PROMPTS, ours)

    peer, deltas = {}, []
    for prompt in AA_PROMPTS:
        ids = tok(tok.bos_token + prompt).input_ids
        assert len(ids) >= n
        with model.generate(max_new_tokens=GREEDY.max_new_tokens, do_sample=False,
                            repetition_penalty=1.0) as tracer:
            with tracer.invoke(contrast):
                resid = model.model.layers[AA_LAYER].output  # [2, T, d]: left-padded to the prompt
                vector = (AA_COEFF * resid[0, -n:] - AA_COEFF * resid[1, -n:]).save()
            with tracer.invoke([ids]):
                # first call of the layer = the prompt's forward pass; the KV cache carries it
                model.model.layers[AA_LAYER].output[:, :n] += vector
                out = tracer.result.save()
        peer[prompt] = _until_eos(out[0, len(ids):].tolist(), tok.eos_token_id)
        deltas.append((vector.float() - iv.vector).abs().max().item() / iv.vector.abs().max().item())

    agree = sum(peer[p] == engine[(p, "steered")] for p in AA_PROMPTS)
    # measured: ~1.5e-7 of the largest entry (nnsight left-pads the contrast rows in its batch)
    assert max(deltas) <= 1e-5, f"nnsight's ActAdd vector is {max(deltas):.3g} (relative) from ours"
    assert peer == {p: engine[(p, "steered")] for p in AA_PROMPTS}, f"{agree}/{len(AA_PROMPTS)} agree"
    assert all(engine[(p, "steered")] != engine[(p, "unsteered")] for p in AA_PROMPTS)
