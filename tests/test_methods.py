"""Steering methods beyond ActAdd on tiny random models: mean_diff, hook points, prompting,
vector files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.api import steer
from harness.errors import UserError
from harness.methods.mean_diff import build_mean_diff
from harness.methods.prompting import build_prompting
from harness.methods.vector_file import build_vector_file
from harness.models.tokens import encode
from harness.runner import RunOptions, run
from harness.scorers import make_scorer
from harness.scorers.base import Sample
from harness.scorers.logprobs import continuation_logprobs
from harness.steering.base import Intervention, Steering
from harness.steering.capture import capture_outputs
from harness.store import read_run

PAIRS = [("I love the way", "I hate the way"), ("the light falls on the water", "the tower"),
         ("We talked about weddings", "We talked")]


def hand_activation(lm, text: str, layer: int, token: str) -> torch.Tensor:
    """Block `layer`'s output from output_hidden_states, reduced as mean_diff documents."""
    ids = torch.tensor([encode(lm.tokenizer, text)])
    with torch.no_grad():
        hidden = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
    return hidden[1:].mean(0) if token == "mean" else hidden[-1]


@pytest.mark.parametrize("token", ["mean", "last"])
def test_mean_diff_vector_is_the_mean_of_activation_differences(tiny_lm, token):
    steering = build_mean_diff(tiny_lm, PAIRS, layer=1, coeff=3.0, token=token)
    (iv,) = steering.interventions
    diffs = [hand_activation(tiny_lm, p, 1, token) - hand_activation(tiny_lm, n, 1, token) for p, n in PAIRS]
    expected = 3.0 * torch.stack(diffs).mean(0)
    assert iv.positions == "all" and iv.layer == 1
    torch.testing.assert_close(iv.vector, expected, rtol=1e-5, atol=1e-5)
    assert expected.norm() > 0


@pytest.mark.parametrize("point", ["resid", "attn", "mlp"])
def test_addition_lands_on_the_output_of_the_hooked_module(tiny_lm, point):
    ids = torch.tensor([encode(tiny_lm.tokenizer, "I love the way the light falls")])
    mask = torch.ones_like(ids)
    vector = torch.linspace(-1, 1, tiny_lm.model.config.get_text_config().hidden_size)
    steering = Steering((Intervention(2, vector, point, "all"),))
    sites = [(2, "resid"), (2, "attn"), (2, "mlp"), (1, "resid")]
    plain = capture_outputs(tiny_lm.model, sites, input_ids=ids, attention_mask=mask)
    with steer(tiny_lm.model, steering):
        steered = capture_outputs(tiny_lm.model, sites, input_ids=ids, attention_mask=mask)
    added = steered[(2, point)][0] - plain[(2, point)][0]
    torch.testing.assert_close(added[1:], vector.expand_as(added[1:]), rtol=1e-4, atol=1e-5)
    assert added[0].abs().max() == 0  # the BOS position is left alone
    torch.testing.assert_close(steered[(1, "resid")], plain[(1, "resid")])  # earlier layers untouched
    if point == "mlp":  # the attention output of the same block comes before the MLP
        torch.testing.assert_close(steered[(2, "attn")], plain[(2, "attn")])
    if point != "resid":  # and the block's output carries the change
        assert (steered[(2, "resid")] - plain[(2, "resid")]).abs().max() > 1e-3


TASK = """\
name: tiny_prompting
kind: topic
prompts: ["I love the way", "The tower", "We talked about", "In the morning"]
steering: {method: actadd, layer: 1, coeff: 4, positive: love, negative: hate}
methods:
  prompting: {method: prompting, instruction: "tower tower tower water"}
  mean_diff: {method: mean_diff, layer: 1, coeff: 4, pairs: {file: pairs.jsonl}}
generation: {max_new_tokens: 6, greedy: true}
samples: 1
scorers:
  keywords: {words: [tower, water]}
  perplexity: {}
metrics: {keywords.rate: increase}
headline: keywords.rate
"""


def write_task(folder: Path) -> Path:
    (folder / "pairs.jsonl").write_text("".join(json.dumps({"positive": p, "negative": n}) + "\n"
                                                for p, n in PAIRS))
    (folder / "task.yaml").write_text(TASK)
    return folder / "task.yaml"


def test_prompting_generates_after_the_instruction_but_scores_only_the_completion(tiny_llama, tmp_path):
    options = RunOptions(progress=False, method="prompting")
    run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama, options=options)
    _, samples = read_run(tmp_path / "out")
    tok = tiny_llama.tokenizer
    instruction = tok("tower tower tower water\n", add_special_tokens=False).input_ids
    by = {(s.prompt, s.condition): s for s in samples}
    keywords = make_scorer("keywords", {"words": ["tower", "water"]})
    for s in (s for s in samples if s.condition == "steered"):
        plain = by[(s.prompt, "unsteered")]
        assert s.prompt_ids == plain.prompt_ids == encode(tok, s.prompt)  # no instruction tokens
        # the model did see the instruction: greedy generation from BOS + instruction + prompt
        ids = torch.tensor([s.prompt_ids[:1] + instruction + s.prompt_ids[1:]])
        out = tiny_llama.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                        do_sample=False, repetition_penalty=1.2, pad_token_id=0,
                                        eos_token_id=0)
        assert s.token_ids == [t for t in out[0, ids.shape[1]:].tolist() if t != 0][: len(s.token_ids)]
        # scorers see the completion alone: keywords on it, perplexity given the bare prompt
        alone = keywords.score([Sample(s.prompt, s.completion, "steered")], None)[0]
        assert s.scores["keywords.rate"] == alone.values["rate"]
        (lps,) = continuation_logprobs(tiny_llama, [s.prompt_ids], [s.token_ids])
        if lps:
            assert s.scores["perplexity.logppl"] == pytest.approx(-sum(lps) / len(lps), abs=1e-5)
    assert any(s.token_ids != by[(s.prompt, "unsteered")].token_ids
               for s in samples if s.condition == "steered")


def test_chat_prompting_uses_the_template_and_needs_one(tiny_llama):
    tok = tiny_llama.tokenizer
    with pytest.raises(UserError, match="no chat template"):
        build_prompting(tiny_llama, "Be kind.", chat=True)
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    try:
        assert build_prompting(tiny_llama, "Be kind.", chat=True).preamble == "<system>Be kind.<assistant>"
    finally:
        tok.chat_template = None
    assert build_prompting(tiny_llama, "Be kind.  ").preamble == "Be kind.\n"


def test_method_option_selects_the_task_alternative(tiny_llama, tmp_path):
    result = run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama,
                 options=RunOptions(progress=False, method="mean_diff"))
    steering = result.tasks[0].conditions["steered"]
    assert steering["method"] == "mean_diff" and len(steering["pairs"]) == len(PAIRS)
    with pytest.raises(UserError, match="no steering for method 'vector_file'.*actadd, mean_diff, prompting"):
        run(str(write_task(tmp_path)), tmp_path / "out2", model=tiny_llama,
            options=RunOptions(progress=False, method="vector_file"))


def save_vectors(path: Path, table: torch.Tensor) -> None:
    if path.suffix == ".npy":
        np.save(path, table.numpy())
    elif path.suffix == ".pt":
        torch.save(table, path)
    else:
        from safetensors.torch import save_file

        save_file({str(i): v.contiguous() for i, v in enumerate(table)}, path)


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".safetensors"])
def test_vector_file_reproduces_the_vector_it_was_saved_from(tiny_llama, tmp_path, suffix):
    unit = build_mean_diff(tiny_llama, PAIRS, layer=2, coeff=1.0).interventions[0].vector
    table = torch.zeros(tiny_llama.n_layers, unit.shape[0])
    table[2] = unit
    save_vectors(tmp_path / f"v{suffix}", table)
    (iv,) = build_vector_file(tiny_llama, tmp_path / f"v{suffix}", layer=2, coeff=4.0).interventions
    torch.testing.assert_close(iv.vector, 4.0 * unit)
    assert iv.positions == "all" and iv.layer == 2


def test_chat_generation_renders_the_prompt_as_a_user_turn(tiny_llama, tmp_path):
    tok = tiny_llama.tokenizer
    tok.chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}<assistant>"
    try:
        options = RunOptions(progress=False, overrides=["generation.chat=true"])
        run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama, options=options)
        _, samples = read_run(tmp_path / "out")
        for s in samples:
            rendered = tok("<user>" + s.prompt + "<assistant>", add_special_tokens=False).input_ids
            assert s.prompt_ids == [tok.bos_token_id, *rendered]  # BOS, then the chat turn
            keywords = make_scorer("keywords", {"words": ["tower", "water"]})
            alone = keywords.score([Sample(s.prompt, s.completion, s.condition)], None)[0]
            assert s.scores["keywords.rate"] == alone.values["rate"] or s.completion.strip() == ""
        with pytest.raises(UserError, match="set one of them to false"):
            run(str(write_task(tmp_path)), tmp_path / "out2", model=tiny_llama,
                options=RunOptions(progress=False, method="prompting",
                                   overrides=["generation.chat=true", "steering.chat=true"]))
    finally:
        tok.chat_template = None


def test_with_a_chat_prompt_the_prompting_instruction_opens_the_users_turn(smollm):
    """Not before the template (where SmolLM2's default system prompt then followed it): in the
    user's turn, before the instruction, as a user would type it and as AxBench prompts."""
    from harness.models.tokens import encode_prompt, encode_with_preamble

    tok = smollm.tokenizer
    ids = encode_with_preamble(tok, "Write a haiku.", "Talk about dogs in your answer.\n", chat=True)
    text = tok.decode(ids)
    system = text.index("<|im_start|>system")
    assert text.index("<|im_start|>user\nTalk about dogs in your answer.\nWrite a haiku.<|im_end|>") > system
    assert text.count("Talk about dogs") == 1 and ids[0] == tok.bos_token_id
    alone = encode_prompt(tok, "Write a haiku.", chat=True)
    # the ledger's preamble positions (len(with) - len(without)) are the instruction's tokens
    assert len(ids) - len(alone) == len(tok("Talk about dogs in your answer.\n").input_ids)
    plain = encode_with_preamble(tok, "Write a haiku.", "Talk about dogs in your answer.\n")
    assert tok.decode(plain) == tok.bos_token + "Talk about dogs in your answer.\nWrite a haiku."
