"""Steering-vector files of every peer tool: exact round trips, each tool's layer convention mapped
onto ours (layer L = output of decoder block L), and bad files refused with the file named."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from harness.errors import UserError
from harness.vectors import (
    UNKNOWN_LAYER,
    VectorSet,
    convert,
    describe,
    read_vectors,
    write_gguf,
    write_lm_eval,
    write_safetensors,
)

D = 16


def vecs(*layers: int, d: int = D, seed: int = 0) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {layer: torch.randn(d, generator=g) for layer in layers}


def assert_same(got: dict[int, torch.Tensor], want: dict[int, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for layer, v in want.items():
        assert got[layer].dtype == torch.float32 and got[layer].shape == (v.shape[0],)
        assert float((got[layer] - v).abs().max()) == 0.0, layer


# --- round trips -----------------------------------------------------------------------------


def test_gguf_round_trip(tmp_path: Path) -> None:
    want = vecs(1, 3, 7)
    path = tmp_path / "cv.gguf"
    write_gguf(VectorSet(want, "tensor"), path, model_hint="llama")
    vs = read_vectors(path)
    assert_same(vs.vectors, want)
    assert (vs.format, vs.model_hint, vs.point, vs.operator, vs.coefficient) == (
        "gguf-control-vector", "llama", "resid", "add", 1.0)
    assert any("block N" in n and "layer N" in n for n in vs.notes)


def test_gguf_bakes_the_coefficient_in(tmp_path: Path) -> None:
    want = vecs(2, 4)
    write_gguf(VectorSet(want, "tensor", coefficient=2.0), tmp_path / "cv.gguf", model_hint="qwen2")
    assert_same(read_vectors(tmp_path / "cv.gguf").vectors, {k: v * 2.0 for k, v in want.items()})


def test_lm_eval_round_trip(tmp_path: Path) -> None:
    want = vecs(0, 5, 11, d=32)
    path = tmp_path / "steer.pt"
    write_lm_eval(VectorSet(want, "tensor", coefficient=2.5, operator="clamp", point="mlp"), path)
    raw = torch.load(path, weights_only=True)  # what lm-eval itself does
    assert sorted(raw) == ["layers.0.mlp", "layers.11.mlp", "layers.5.mlp"]
    assert raw["layers.5.mlp"]["action"] == "clamp" and raw["layers.5.mlp"]["bias"] is None
    vs = read_vectors(path)
    assert_same(vs.vectors, want)
    assert (vs.format, vs.point, vs.operator, vs.coefficient) == ("lm-eval-steered", "mlp", "clamp", 2.5)


def test_safetensors_round_trip_keeps_everything(tmp_path: Path) -> None:
    want = vecs(3, 4)
    path = tmp_path / "v.safetensors"
    write_safetensors(VectorSet(want, "x", point="attn", coefficient=-1.5, model_hint="gemma2"), path)
    vs = read_vectors(path)
    assert_same(vs.vectors, want)
    assert (vs.point, vs.coefficient, vs.model_hint, vs.format) == ("attn", -1.5, "gemma2", "tensor")


def test_safetensors_round_trip_of_an_unknown_layer(tmp_path: Path) -> None:
    want = vecs(UNKNOWN_LAYER)
    write_safetensors(VectorSet(want, "tensor"), tmp_path / "v.safetensors")
    assert_same(read_vectors(tmp_path / "v.safetensors").vectors, want)


def test_convert_chain_is_exact(tmp_path: Path) -> None:
    want = vecs(1, 2, 9, d=32)
    torch.save({"layer_activations": want, "layer_type": "decoder_block"}, tmp_path / "sv.pt")
    convert(tmp_path / "sv.pt", tmp_path / "a.gguf", model_hint="mistral")
    convert(tmp_path / "a.gguf", tmp_path / "b.pt")
    convert(tmp_path / "b.pt", tmp_path / "c.safetensors")
    for name in ("a.gguf", "b.pt", "c.safetensors"):
        assert_same(read_vectors(tmp_path / name).vectors, want)
    assert read_vectors(tmp_path / "c.safetensors").model_hint is None  # lm-eval has no hint
    assert read_vectors(tmp_path / "a.gguf").model_hint == "mistral"


def test_convert_refusals(tmp_path: Path) -> None:
    torch.save({"layer.3": torch.ones(D)}, tmp_path / "v.pt")
    with pytest.raises(UserError, match=r"out\.npz.*suffix"):
        convert(tmp_path / "v.pt", tmp_path / "out.npz")
    with pytest.raises(UserError, match=r"out\.gguf.*model hint"):
        convert(tmp_path / "v.pt", tmp_path / "out.gguf")


# --- GGUF as repeng writes it --------------------------------------------------------------


def repeng_export_gguf(directions: dict[int, np.ndarray], model_type: str, path: Path) -> None:
    """repeng 0.4's `ControlVector.export_gguf`, line for line (directions keyed by repeng layer
    ids, which index model.model.layers)."""
    arch = "controlvector"
    writer = gguf.GGUFWriter(path, arch)
    writer.add_string(f"{arch}.model_hint", model_type)
    writer.add_uint32(f"{arch}.layer_count", len(directions))
    for layer in directions.keys():  # noqa: SIM118 (repeng's code as written)
        writer.add_tensor(f"direction.{layer}", directions[layer])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_repeng_gguf_reads_with_the_right_layers(tmp_path: Path) -> None:
    # repeng's default hidden_layers: range(-1, -num_hidden_layers, -1), normalized to n-1 .. 1
    n_layers = 6
    ids = [n_layers + i for i in range(-1, -n_layers, -1)]
    rng = np.random.default_rng(1)
    directions = {layer: rng.standard_normal(D).astype(np.float32) for layer in ids}
    path = tmp_path / "repeng.gguf"
    repeng_export_gguf(directions, "llama", path)
    vs = read_vectors(path)
    assert vs.layers == [1, 2, 3, 4, 5]  # repeng layer id N = block N's output = our layer N
    assert_same(vs.vectors, {k: torch.from_numpy(v) for k, v in directions.items()})
    assert vs.model_hint == "llama" and not any("layer_count" in n for n in vs.notes)


def test_gguf_direction_0_is_read_but_flagged(tmp_path: Path) -> None:
    repeng_export_gguf({0: np.ones(D, np.float32), 1: np.ones(D, np.float32)}, "llama", tmp_path / "z.gguf")
    vs = read_vectors(tmp_path / "z.gguf")
    assert vs.layers == [0, 1] and any("direction.0" in n for n in vs.notes)


# --- SAELens --------------------------------------------------------------------------------


def sae_folder(tmp_path: Path, hook: str, *, d_sae: int = 8, d_in: int = D,
               v6: bool = False) -> tuple[Path, torch.Tensor]:
    folder = tmp_path / hook.replace(".", "_")
    folder.mkdir()
    w_dec = torch.randn(d_sae, d_in, generator=torch.Generator().manual_seed(3))
    save_file({"W_dec": w_dec, "W_enc": w_dec.T.contiguous(), "b_dec": torch.zeros(d_in)},
              str(folder / "sae_weights.safetensors"))
    cfg = {"d_in": d_in, "d_sae": d_sae, "normalize_activations": "none"}
    cfg.update({"metadata": {"hook_name": hook}} if v6 else {"hook_name": hook})
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder, w_dec


def test_saelens_resid_post_is_the_block_output(tmp_path: Path) -> None:
    folder, w_dec = sae_folder(tmp_path, "blocks.12.hook_resid_post")
    vs = read_vectors(folder, feature=5)
    assert vs.format == "saelens" and vs.layers == [12]
    assert_same(vs.vectors, {12: w_dec[5]})


def test_saelens_resid_pre_is_one_layer_below(tmp_path: Path) -> None:
    folder, w_dec = sae_folder(tmp_path, "blocks.12.hook_resid_pre", v6=True)
    vs = read_vectors(folder, feature=2)
    assert vs.layers == [11]  # the input of block 12 is the output of block 11
    assert_same(vs.vectors, {11: w_dec[2]})
    assert any("our layer 11" in n for n in vs.notes)
    # the weights file or cfg.json named directly finds the same folder
    assert read_vectors(folder / "sae_weights.safetensors", feature=2).layers == [11]
    assert read_vectors(folder / "cfg.json", feature=2).layers == [11]


def test_saelens_feature_selection(tmp_path: Path) -> None:
    folder, w_dec = sae_folder(tmp_path, "blocks.3.hook_resid_post")
    for i in (0, 7):
        assert_same(read_vectors(folder, feature=i).vectors, {3: w_dec[i]})
    with pytest.raises(UserError, match=r"blocks_3_hook_resid_post.*8 features.*feature="):
        read_vectors(folder)
    with pytest.raises(UserError, match=r"feature 8 is out of range"):
        read_vectors(folder, feature=8)


def test_saelens_refusals(tmp_path: Path) -> None:
    folder, _ = sae_folder(tmp_path, "blocks.0.hook_resid_pre")
    with pytest.raises(UserError, match=r"cfg\.json.*embedding output"):
        read_vectors(folder, feature=0)
    folder, _ = sae_folder(tmp_path, "blocks.4.hook_mlp_out")
    with pytest.raises(UserError, match=r"cfg\.json.*hook_mlp_out.*hook_resid_post"):
        read_vectors(folder, feature=0)
    folder, _ = sae_folder(tmp_path, "blocks.4.hook_resid_post", d_in=D + 1)
    cfg = {"d_in": D, "d_sae": 8, "hook_name": "blocks.4.hook_resid_post"}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"sae_weights\.safetensors.*W_dec has shape \[8, 17\]"):
        read_vectors(folder, feature=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"empty.*cfg\.json"):
        read_vectors(tmp_path / "empty", feature=0)


# --- steering-vectors pickles ---------------------------------------------------------------


@pytest.fixture
def fake_steering_vectors(monkeypatch: pytest.MonkeyPatch) -> type:
    """A SteeringVector dataclass living at steering_vectors.steering_vector, only while pickling."""
    package = types.ModuleType("steering_vectors")
    module = types.ModuleType("steering_vectors.steering_vector")

    @dataclasses.dataclass
    class SteeringVector:
        layer_activations: dict[int, torch.Tensor]
        layer_type: str = "decoder_block"

    SteeringVector.__module__ = module.__name__
    SteeringVector.__qualname__ = "SteeringVector"
    module.SteeringVector = SteeringVector  # type: ignore[attr-defined]
    package.steering_vector = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "steering_vectors", package)
    monkeypatch.setitem(sys.modules, "steering_vectors.steering_vector", module)
    return SteeringVector


def uninstall_steering_vectors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import steering_vectors` fail, installed or not (a None entry blocks the import)."""
    monkeypatch.setitem(sys.modules, "steering_vectors", None)
    monkeypatch.setitem(sys.modules, "steering_vectors.steering_vector", None)


def test_steering_vectors_pickle_without_the_package(tmp_path: Path, fake_steering_vectors: type,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    want = vecs(4, 6)
    torch.save(fake_steering_vectors(want, "self_attn"), tmp_path / "sv.pt")
    uninstall_steering_vectors(monkeypatch)
    vs = read_vectors(tmp_path / "sv.pt")
    assert (vs.format, vs.point) == ("steering-vectors", "attn")
    assert_same(vs.vectors, want)
    assert any("model.layers[N].self_attn" in n for n in vs.notes)


def test_steering_vectors_pickle_with_other_objects_is_unpickled_in_full(
        tmp_path: Path, fake_steering_vectors: type, monkeypatch: pytest.MonkeyPatch) -> None:
    want = vecs(2)
    sv = fake_steering_vectors(want)
    sv.trained_on = Path("data.json")  # not allowed by weights_only: forces the full unpickler
    torch.save(sv, tmp_path / "sv.pt")
    uninstall_steering_vectors(monkeypatch)
    vs = read_vectors(tmp_path / "sv.pt")
    assert (vs.format, vs.point) == ("steering-vectors", "resid")
    assert_same(vs.vectors, want)


def test_a_real_steering_vectors_file(tmp_path: Path) -> None:
    steering_vectors = pytest.importorskip("steering_vectors")
    want = vecs(3, 8)
    torch.save(steering_vectors.SteeringVector(want, "decoder_block"), tmp_path / "sv.pt")
    vs = read_vectors(tmp_path / "sv.pt")
    assert (vs.format, vs.point) == ("steering-vectors", "resid")
    assert_same(vs.vectors, want)


def test_steering_vectors_plain_dict_and_bad_layer_type(tmp_path: Path) -> None:
    want = vecs(0, 1)
    torch.save({"layer_activations": want, "layer_type": "mlp"}, tmp_path / "sv.pt")
    vs = read_vectors(tmp_path / "sv.pt")
    assert (vs.format, vs.point) == ("steering-vectors", "mlp")
    assert_same(vs.vectors, want)
    torch.save({"layer_activations": want, "layer_type": "input_layernorm"}, tmp_path / "ln.pt")
    with pytest.raises(UserError, match=r"ln\.pt.*input_layernorm"):
        read_vectors(tmp_path / "ln.pt")


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickle code ran",))


def test_other_pickles_are_refused_without_running_them(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"layer.1": torch.ones(D), "x": _Boom()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"evil\.pt.*not unpickled"):
        read_vectors(tmp_path / "evil.pt")
    assert "pickle code ran" not in capsys.readouterr().out


# --- lm-eval details ------------------------------------------------------------------------


def test_lm_eval_variants(tmp_path: Path) -> None:
    want = vecs(2, 3)
    entry = {"steering_coefficient": 4.0, "action": "add", "bias": None}
    torch.save({"layers.2": {**entry, "steering_vector": want[2][None]},  # [1, d]
                "layers.3": {**entry, "steering_vector": want[3]}}, tmp_path / "a.pt")
    vs = read_vectors(tmp_path / "a.pt")
    assert_same(vs.vectors, want)
    assert (vs.coefficient, vs.operator, vs.point) == (4.0, "add", "resid")
    # the list form of lm-eval's docstring; coefficients that differ are folded into the vectors
    torch.save([{"hookpoint": "layers.2", **entry, "steering_vector": want[2]},
                {"hookpoint": "layers.3", **entry, "steering_coefficient": 2.0, "steering_vector": want[3]}],
               tmp_path / "b.pt")
    vs = read_vectors(tmp_path / "b.pt")
    assert vs.coefficient == 1.0 and any("folded" in n for n in vs.notes)
    assert_same(vs.vectors, {2: want[2] * 4.0, 3: want[3] * 2.0})


def test_lm_eval_refusals(tmp_path: Path) -> None:
    entry = {"steering_vector": torch.ones(D), "steering_coefficient": 1.0, "action": "add", "bias": None}
    torch.save({"layers.1": {**entry, "head_index": 3}}, tmp_path / "head.pt")
    with pytest.raises(UserError, match=r"head\.pt.*head_index"):
        read_vectors(tmp_path / "head.pt")
    torch.save({"transformer.h.1": entry}, tmp_path / "hook.pt")
    with pytest.raises(UserError, match=r"hook\.pt.*transformer\.h\.1"):
        read_vectors(tmp_path / "hook.pt")
    # lm-eval resolves hookpoints among model.base_model's modules: model.layers.N is not one there
    torch.save({"model.layers.1": entry}, tmp_path / "model_layers.pt")
    with pytest.raises(UserError, match=r"model_layers\.pt.*'model\.layers\.1'.*does not resolve"):
        read_vectors(tmp_path / "model_layers.pt")
    torch.save({"layers.1": {**entry, "steering_vector": torch.ones(2, D)}}, tmp_path / "shape.pt")
    with pytest.raises(UserError, match=r"shape\.pt.*shape \[2, 16\]"):
        read_vectors(tmp_path / "shape.pt")


# --- plain files ----------------------------------------------------------------------------


def test_plain_layouts(tmp_path: Path) -> None:
    stack = torch.randn(4, D)
    torch.save(stack, tmp_path / "stack.pt")
    assert_same(read_vectors(tmp_path / "stack.pt").vectors, dict(enumerate(stack)))
    one = torch.randn(D)
    np.save(tmp_path / "one.npy", one.numpy())
    vs = read_vectors(tmp_path / "one.npy")
    assert_same(vs.vectors, {UNKNOWN_LAYER: one})
    assert any("must name the layer" in n for n in vs.notes)
    want = vecs(1, 2, 3, 4)
    torch.save({1: want[1], "2": want[2], "layer.3": want[3], "layer_4": want[4]}, tmp_path / "keys.pt")
    assert_same(read_vectors(tmp_path / "keys.pt").vectors, want)
    save_file({"direction.5": want[1]}, str(tmp_path / "dir.safetensors"))
    vs = read_vectors(tmp_path / "dir.safetensors")
    assert vs.layers == [5] and any("block N" in n for n in vs.notes)
    save_file({"anything": stack}, str(tmp_path / "single.safetensors"))
    assert_same(read_vectors(tmp_path / "single.safetensors").vectors, dict(enumerate(stack)))
    # a suffix that lies does not matter: the content decides
    write_gguf(VectorSet(want, "tensor"), tmp_path / "actually_gguf.pt", model_hint="llama")
    assert read_vectors(tmp_path / "actually_gguf.pt").format == "gguf-control-vector"


# --- bad inputs -----------------------------------------------------------------------------


def test_gguf_of_a_model_is_refused(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "model.gguf", "llama")
    writer.add_tensor("direction.1", np.ones(D, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match=r"model\.gguf: general\.architecture is 'llama', not "
                                        r"'controlvector'"):
        read_vectors(tmp_path / "model.gguf")


def test_gguf_bad_tensors(tmp_path: Path) -> None:
    repeng_export_gguf({2: np.array([1.0, np.nan] * (D // 2), np.float32)}, "llama", tmp_path / "nan.gguf")
    with pytest.raises(UserError, match=r"nan\.gguf: direction\.2 \(our layer 2\) has NaN or inf"):
        read_vectors(tmp_path / "nan.gguf")
    repeng_export_gguf({2: np.ones(D, np.float16)}, "llama", tmp_path / "f16.gguf")
    with pytest.raises(UserError, match=r"f16\.gguf: direction\.2 is F16.*F32"):
        read_vectors(tmp_path / "f16.gguf")
    uneven = {1: np.ones(D, np.float32), 2: np.ones(D + 1, np.float32)}
    repeng_export_gguf(uneven, "llama", tmp_path / "d.gguf")
    with pytest.raises(UserError, match=r"d\.gguf: vectors differ in length"):
        read_vectors(tmp_path / "d.gguf")
    (tmp_path / "trunc.gguf").write_bytes((tmp_path / "d.gguf").read_bytes()[:40])
    with pytest.raises(UserError, match=r"trunc\.gguf"):
        read_vectors(tmp_path / "trunc.gguf")


def test_bad_plain_files(tmp_path: Path) -> None:
    bad = torch.ones(3, D)
    bad[1, 4] = float("inf")
    torch.save(bad, tmp_path / "inf.pt")
    with pytest.raises(UserError, match=r"inf\.pt: layer 1 has NaN or inf"):
        read_vectors(tmp_path / "inf.pt")
    torch.save(torch.ones(2, 3, D), tmp_path / "cube.pt")
    with pytest.raises(UserError, match=r"cube\.pt: .*shape \[2, 3, 16\], expected \[d\] or \[n_layers, d\]"):
        read_vectors(tmp_path / "cube.pt")
    torch.save({"foo": torch.ones(D), "bar": torch.ones(D)}, tmp_path / "keys.pt")
    with pytest.raises(UserError, match=r"keys\.pt: unknown layout: keys 'foo', 'bar'"):
        read_vectors(tmp_path / "keys.pt")
    (tmp_path / "notes.txt").write_text("a steering vector, honest")
    with pytest.raises(UserError, match=r"notes\.txt: unknown layout"):
        read_vectors(tmp_path / "notes.txt")
    torch.save({"layer.1": torch.ones(D, dtype=torch.int64)}, tmp_path / "int.pt")
    with pytest.raises(UserError, match=r"int\.pt: layer\.1 \(layer 1\) has dtype torch\.int64"):
        read_vectors(tmp_path / "int.pt")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(UserError, match=r"obj\.npy: not a readable NumPy array"):
        read_vectors(tmp_path / "obj.npy")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10" + b"\0" * 7 + b"{not json at all}")
    with pytest.raises(UserError, match=r"bad\.safetensors: not a readable safetensors file"):
        read_vectors(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match=r"missing\.pt: no such file"):
        read_vectors(tmp_path / "missing.pt")
    torch.save({"layer.1": torch.ones(D)}, tmp_path / "ok.pt")
    with pytest.raises(UserError, match=r"ok\.pt: feature=3 applies to SAE folders only"):
        read_vectors(tmp_path / "ok.pt", feature=3)


def test_writers_refuse_what_the_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"x\.gguf: the vector's layer is unknown"):
        write_gguf(VectorSet(vecs(UNKNOWN_LAYER), "tensor"), tmp_path / "x.gguf", model_hint="llama")
    with pytest.raises(UserError, match=r"x\.pt: the vector's layer is unknown"):
        write_lm_eval(VectorSet(vecs(UNKNOWN_LAYER), "tensor"), tmp_path / "x.pt")
    with pytest.raises(UserError, match=r"x\.gguf: llama\.cpp refuses direction\.0"):
        write_gguf(VectorSet(vecs(0, 1), "tensor"), tmp_path / "x.gguf", model_hint="llama")
    with pytest.raises(UserError, match=r"x\.gguf: .*clamp at resid"):
        write_gguf(VectorSet(vecs(1), "tensor", operator="clamp"), tmp_path / "x.gguf", model_hint="llama")


def test_describe_rows() -> None:
    vs = VectorSet({5: torch.full((D,), 0.5), 2: torch.ones(D)}, "tensor")
    assert describe(vs) == [{"layer": 2, "norm": pytest.approx(4.0)},
                            {"layer": 5, "norm": pytest.approx(2.0)}]
    assert vs.dim == D
