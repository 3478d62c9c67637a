"""Sample identity is everything that determines tokens: every file of a model folder but its
documentation, or the content of a model built by hand; loading a model leaves the process alone."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import runner
from harness.models import LoadedModel, gguf_cache, load_model
from harness.pipeline.generate import generate_missing
from harness.pipeline.plan import model_identity
from harness.runner import RunOptions, run
from harness.store import read_run
from tests.conftest import save_tiny_model, tiny_config

TASK = ("name: ident\nkind: sentiment\nprompts: [I love the way, The tower]\n"
        "steering: {method: actadd, layer: 1, coeff: 4, positive: love, negative: hate}\n"
        "scorers: {keywords: {words: [tower]}}\nmetrics: {keywords.rate: increase}\n"
        "headline: keywords.rate\n")
OPTIONS = RunOptions(samples=1, max_new_tokens=4, progress=False)


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data, indent=2))


def test_a_changed_config_or_tokenizer_file_changes_the_keys_and_a_rerun_regenerates(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = save_tiny_model("llama", tmp_path / "model")
    (tmp_path / "t.yaml").write_text(TASK)
    out = tmp_path / "out"
    made: list[int] = []

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        made.append(generate_missing(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(runner, "generate_missing", counting)

    def rerun() -> set[str]:
        run(str(tmp_path / "t.yaml"), out, model=load_model(str(folder)), options=OPTIONS)
        return {s.key for s in read_run(out)[1]}

    first = rerun()
    (folder / "README.md").write_text("# a model card: documentation changes no token\n")
    assert rerun() == first and made == [4, 0]  # 2 prompts x (unsteered, steered); all reused
    # before, only *.safetensors were hashed: the rerun regenerated 0 rows and reported the old samples
    _edit_json(folder / "config.json", rope_theta=10.0)
    second = rerun()
    assert second.isdisjoint(first) and made[-1] == 4
    _edit_json(folder / "tokenizer_config.json", model_max_length=64)
    assert rerun().isdisjoint(second) and made[-1] == 4


def test_the_run_records_the_folder_identity_that_check_and_compare_compare(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = save_tiny_model("gpt2", tmp_path / "model")
    before = load_model(str(folder)).identity()["sha256"]
    (folder / "LICENSE").write_text("MIT\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "checkpoint-10").mkdir()  # a subfolder is never loaded: a training run may write there
    (folder / "checkpoint-10" / "config.json").write_text("{}")
    assert load_model(str(folder)).identity()["sha256"] == before
    _edit_json(folder / "generation_config.json", do_sample=True)
    assert load_model(str(folder)).identity()["sha256"] != before


def test_file_hashes_are_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "config.json"
    small.write_bytes(b"{}")
    assert gguf_cache.file_sha256(small) == hashlib.sha256(b"{}").hexdigest()
    assert not (tmp_path / "cache" / "hashes").exists()  # a small file is always read: nothing cached
    monkeypatch.setattr(gguf_cache, "HASH_CACHE_MIN_BYTES", 1000)
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    assert gguf_cache.file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(list((tmp_path / "cache" / "hashes").iterdir())) == 1
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size, mtime restored: the cached hash is read, not the file
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert gguf_cache.file_sha256(path) == hashlib.sha256(b"a" * 1000).hexdigest()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: read again
    assert gguf_cache.file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    monkeypatch.setenv("HARNESS_CACHE", "off")
    assert gguf_cache.file_sha256(path) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_load_model_leaves_the_environment_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    folder = save_tiny_model("gpt2", tmp_path / "model")
    before = dict(os.environ)
    load_model(str(folder))
    assert dict(os.environ) == before  # before: HF_HUB_OFFLINE=1 for the rest of the process


def _hand_built(seed: int, **config: object) -> LoadedModel:
    from transformers import AutoModelForCausalLM

    from tests.conftest import _tiny_tokenizer

    torch.manual_seed(seed)
    cfg = tiny_config("llama")
    for key, value in config.items():
        setattr(cfg, key, value)
    return LoadedModel(AutoModelForCausalLM.from_config(cfg).eval(), _tiny_tokenizer(), "mine", "memory")


def test_a_hand_built_model_is_identified_by_its_content_not_its_name():
    a, same, other_weights, other_rope = (_hand_built(0), _hand_built(0), _hand_built(1),
                                          _hand_built(0, rope_theta=10.0))
    # before: all four planned their samples under {"weights": "mine"} and shared them
    assert model_identity(a) == model_identity(same)
    assert model_identity(a) != model_identity(other_weights)
    assert model_identity(a) != model_identity(other_rope)
    tok = _hand_built(0).tokenizer
    tok.add_tokens(["zzz"])
    assert LoadedModel(a.model, tok, "mine", "memory").sha256 != a.sha256
    assert LoadedModel(a.model, a.tokenizer, "mine", "memory", "given").sha256 == "given"


MODEL_FILES = ["config.json", "generation_config.json", "model.safetensors",
               "model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
               "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
               "merges.txt", "tokenizer.model", "chat_template.jinja", "added_tokens.json"]
DOC_FILES = ["README.md", "readme.txt", "LICENSE", "LICENSE.txt", "NOTICE", "USE_POLICY.md", "card.png",
             ".gitattributes"]


@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(MODEL_FILES), doc=st.sampled_from(DOC_FILES),
       extra=st.binary(min_size=1, max_size=8))
def test_any_file_that_determines_tokens_changes_the_identity_and_documentation_does_not(name, doc, extra):
    from harness.models import folder_sha256

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for f in MODEL_FILES:
            (folder / f).write_bytes(f.encode())
        before = folder_sha256(folder)
        (folder / doc).write_bytes(extra)
        assert folder_sha256(folder) == before
        (folder / name).write_bytes(name.encode() + extra)
        assert folder_sha256(folder) != before


def test_a_hub_id_is_identified_by_its_cached_snapshot_files(tmp_path):
    """A hub id from the local cache gets the identity of the snapshot folder it loads from (before:
    no hash at all, its samples keyed by the id, so a new revision reused the old samples)."""
    import subprocess
    import sys

    snapshot = tmp_path / "hub" / "models--org--tiny" / "snapshots" / "abc123"
    save_tiny_model("gpt2", snapshot)
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("abc123")
    code = "from harness.models import load_model; print(load_model('org/tiny').sha256)"
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "HARNESS_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    from harness.models import folder_sha256

    assert out.stdout.split()[-1] == folder_sha256(snapshot)
