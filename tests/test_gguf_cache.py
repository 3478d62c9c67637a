"""The GGUF -> safetensors model cache: on a stand-in GGUF whose 'dequantization' loads a tiny
model, and on the real embedded model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from harness.engine import GenerationSettings, generate
from harness.models import file_sha256, gguf_cache, load_model
from harness.models.gguf_cache import CACHE_MARKER, cache_name
from tests.conftest import save_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny_cache"))


# --- the model cache, on a stand-in GGUF: `_read_gguf` returns a tiny model -------------------


@pytest.fixture
def fake_gguf(tiny_dir, tmp_path, monkeypatch):
    """A `.gguf` file whose 'dequantization' loads the tiny model; `calls` records each read's dtype."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path / "fake-model.gguf"
    path.write_bytes(b"not really a gguf " * 100)
    calls: list[torch.dtype] = []

    def read(p: Path, dtype: torch.dtype, device_map=None):  # noqa: ANN202
        assert p == path
        calls.append(dtype)
        model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=dtype)
        return model, AutoTokenizer.from_pretrained(tiny_dir)

    monkeypatch.setattr(gguf_cache, "read_gguf", read)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return path, calls


def logits(lm, texts=("I love the way", "The tower is")) -> torch.Tensor:  # noqa: ANN001
    batch = lm.tokenizer(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return lm.model(**batch).logits


def test_gguf_is_converted_once_then_loaded_from_the_cache(fake_gguf, tmp_path):
    path, calls = fake_gguf
    first = load_model(str(path))
    folder = tmp_path / "cache" / "models" / cache_name(file_sha256(path))
    assert calls == [torch.float32]  # converted at full precision whatever the dtype asked for
    files = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", CACHE_MARKER} <= files
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temporary folder left
    second = load_model(str(path))
    assert calls == [torch.float32]
    assert first.identity() == second.identity()
    assert second.source == str(path) and second.sha256 == file_sha256(path)
    reference, _ = gguf_cache.read_gguf(path, torch.float32)
    assert torch.equal(logits(second), logits(load_model(str(path), dtype=torch.float32)))
    for key, tensor in reference.state_dict().items():
        assert torch.equal(second.model.state_dict()[key], tensor), key
    half = load_model(str(path), dtype="bfloat16")
    for key, tensor in reference.state_dict().items():
        assert torch.equal(half.model.state_dict()[key], tensor.to(torch.bfloat16)), key


def test_interrupted_conversion_is_never_used(fake_gguf, tmp_path, monkeypatch):
    path, calls = fake_gguf
    real_read = gguf_cache.read_gguf

    def read_then_die(p: Path, dtype: torch.dtype, device_map=None):  # noqa: ANN202
        model, tokenizer = real_read(p, dtype)

        def die(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise KeyboardInterrupt  # after model.safetensors is written

        tokenizer.save_pretrained = die
        return model, tokenizer

    monkeypatch.setattr(gguf_cache, "read_gguf", read_then_die)
    with pytest.raises(KeyboardInterrupt):
        load_model(str(path))
    assert list((tmp_path / "cache" / "models").iterdir()) == []
    root = tmp_path / "cache" / "models"
    stale = root / f".{file_sha256(path)[:16]}-killed"  # what a SIGKILLed conversion leaves
    stale.mkdir()
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setattr(gguf_cache, "read_gguf", real_read)
    load_model(str(path))
    folder = root / cache_name(file_sha256(path))
    assert (folder / CACHE_MARKER).is_file() and len(calls) == 2  # killed, then whole
    assert [p.name for p in root.iterdir()] == [cache_name(file_sha256(path))]


def test_cache_off_or_unwritable_loads_the_gguf_directly(fake_gguf, tmp_path, monkeypatch):
    path, calls = fake_gguf
    monkeypatch.setenv("HARNESS_CACHE", "off")
    lm = load_model(str(path), dtype="bfloat16")
    assert calls == [torch.bfloat16] and lm.sha256 == file_sha256(path)  # read from the GGUF itself
    assert not (tmp_path / "cache").exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HARNESS_CACHE", str(blocker))
    with pytest.warns(UserWarning, match="not writable"):
        lm = load_model(str(path))
    assert calls[-1] == torch.float32  # read from the GGUF itself


# --- the real embedded model ---------------------------------------------------------------


@pytest.mark.slow
def test_cached_smollm_is_bitwise_the_gguf_model(tmp_path, monkeypatch):
    """Conversion into an empty cache, a cached load and a direct GGUF load give the same model."""
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    start = time.perf_counter()
    first = load_model("smollm2-135m")
    converted = time.perf_counter() - start
    start = time.perf_counter()
    cached = load_model("smollm2-135m")
    print(f"first load {converted:.1f} s, cached load {time.perf_counter() - start:.1f} s")
    monkeypatch.setenv("HARNESS_CACHE", "off")
    direct = load_model("smollm2-135m")
    assert first.identity() == cached.identity() == direct.identity()
    texts = ("<|endoftext|>The Eiffel Tower is in", "<|endoftext|>I hate you because", "Hi")
    reference = logits(direct, texts)
    assert torch.equal(logits(first, texts), reference) and torch.equal(logits(cached, texts), reference)
    state = direct.model.state_dict()
    assert all(torch.equal(t, state[k]) for k, t in cached.model.state_dict().items())
    assert cached.model.generation_config.to_dict() == direct.model.generation_config.to_dict()
    for lm in (first, cached):
        assert lm.tokenizer.bos_token == "<|endoftext|>" == direct.tokenizer.bos_token
        assert lm.tokenizer.bos_token_id == 0 and lm.tokenizer.pad_token_id == direct.tokenizer.pad_token_id
        for text in ("<|endoftext|>", "Hello world", " I hate you because",
                     "<|im_start|>user\nhi<|im_end|>", "naïve café 🙂  spaces"):
            assert lm.tokenizer(text).input_ids == direct.tokenizer(text).input_ids, text
    settings = GenerationSettings(max_new_tokens=8, greedy=True)
    gens = [[g.token_ids for g in generate(lm, ["I hate you because"], {"u": None}, settings)]
            for lm in (direct, cached)]
    assert gens[0] == gens[1]
