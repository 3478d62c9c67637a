"""Shared fixtures: the real embedded model (loaded once) and tiny random models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.models import LoadedModel, load_model

CORPUS = [
    "I hate you because you never listen to me.",
    "I love the way the light falls on the water in the morning.",
    "The Eiffel Tower is in Paris, the capital of France.",
    "We talked about weddings, brides and flowers all evening!",
    "To see the tower, people flock to the city every summer.",
] * 4


def _tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


FAMILIES = ["gpt2", "llama", "gpt_neox", "gemma", "gemma2", "gemma3_text", "qwen2", "mistral", "phi3",
            "olmo2", "mixtral", "qwen2_moe", "granite"]
"""Every supported family: the named ones, and those found by the generic layer search."""


def tiny_config(arch: str):
    """A 4-layer random model config of the given family, small enough for CPU tests."""
    import transformers

    common = dict(vocab_size=400, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    if arch == "gpt2":
        return transformers.GPT2Config(n_layer=4, n_embd=32, n_head=4, n_positions=128, **common)
    if arch == "gpt_neox":
        return transformers.GPTNeoXConfig(num_hidden_layers=4, hidden_size=32, intermediate_size=64,
                                          num_attention_heads=4, max_position_embeddings=128, **common)
    decoder = dict(num_hidden_layers=4, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=128, **common)
    extra = {
        "gemma": {"head_dim": 8}, "gemma2": {"head_dim": 8, "sliding_window": 16},
        "gemma3_text": {"head_dim": 8, "sliding_window": 16},
        "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2},
        "qwen2_moe": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                      "shared_expert_intermediate_size": 32},
    }
    classes = {"llama": "LlamaConfig", "gemma": "GemmaConfig", "gemma2": "Gemma2Config",
               "gemma3_text": "Gemma3TextConfig", "qwen2": "Qwen2Config", "mistral": "MistralConfig",
               "phi3": "Phi3Config", "olmo2": "Olmo2Config", "mixtral": "MixtralConfig",
               "qwen2_moe": "Qwen2MoeConfig", "granite": "GraniteConfig"}
    if arch not in classes:
        raise ValueError(arch)
    return getattr(transformers, classes[arch])(**decoder, **extra.get(arch, {}))


def save_tiny_model(arch: str, directory: Path) -> Path:
    """Build a random tiny model + tokenizer and save them as a local HF directory."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch))
    model.save_pretrained(directory)
    _tiny_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="session", params=["gpt2", "llama", "gpt_neox"])
def tiny_lm(request, tmp_path_factory) -> LoadedModel:
    path = save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))
    return load_model(str(path))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> LoadedModel:
    return load_model(str(save_tiny_model("llama", tmp_path_factory.mktemp("llama1"))))


@pytest.fixture(scope="session")
def smollm() -> LoadedModel:
    """The embedded SmolLM2-135M, loaded once per test session."""
    return load_model("smollm2-135m")
