"""Write a `VectorSet` in a peer tool's format: a llama.cpp control vector (GGUF), an
lm-evaluation-harness `steered` .pt file, or safetensors; and convert between files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.errors import UserError
from harness.vectors.base import UNKNOWN_LAYER, VectorSet
from harness.vectors.read import read_vectors

_LM_EVAL_SUFFIX = {"resid": "", "attn": ".self_attn", "mlp": ".mlp"}


def write_gguf(vs: VectorSet, path: Path, *, model_hint: str) -> None:
    """A control vector llama.cpp loads (`--control-vector`), written the way repeng's
    `ControlVector.export_gguf` writes it: `direction.N` (F32) is added to the output of block N,
    which is our layer N, at every position, the BOS included (see `steering_to_vectors`). A
    stored coefficient is multiplied into the vectors (llama.cpp has none); clamp, attention/MLP
    points, layer 0 (llama.cpp refuses direction.0) and an unknown layer cannot be written."""
    import gguf

    _known_layers(vs, path)
    if vs.operator != "add" or vs.point != "resid":
        raise UserError(f"{path}: a GGUF control vector is added to the residual stream; these vectors "
                        f"{vs.operator} at {vs.point}")
    if 0 in vs.vectors:
        raise UserError(f"{path}: llama.cpp refuses direction.0 (it never steers block 0's output); "
                        "drop layer 0 or write another format")
    arch = "controlvector"
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", model_hint)
    writer.add_uint32(f"{arch}.layer_count", len(vs.vectors))
    for layer in vs.layers:
        vector = vs.vectors[layer] * vs.coefficient if vs.coefficient != 1.0 else vs.vectors[layer]
        writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(vector.numpy(), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_lm_eval(vs: VectorSet, path: Path) -> None:
    """lm-evaluation-harness's `steered` model file (`steer_path=x.pt`): hookpoint `layers.N`
    (`layers.N.self_attn`, `layers.N.mlp` for those points) -> steering_vector, coefficient, action.

    lm-eval hooks the modules of `model.base_model` by these names (`layers.N` is a Llama-style
    model's block N) and adds coefficient × vector to their output at every position of every
    forward pass, the BOS included: export a steering with `harness.api.steering_to_vectors(...,
    "lm-eval-steered")`, which refuses one whose tokens lm-eval would not reproduce."""
    _known_layers(vs, path)
    config = {f"layers.{layer}{_LM_EVAL_SUFFIX[vs.point]}": {
        "steering_vector": vs.vectors[layer].clone(),
        "steering_coefficient": float(vs.coefficient),
        "action": vs.operator,
        "bias": None,
        "head_index": None,
    } for layer in vs.layers}
    torch.save(config, path)


def write_safetensors(vs: VectorSet, path: Path) -> None:
    """Keys `layer.N` (`vector` for a vector of unknown layer); point, coefficient, operator and
    model hint go in the metadata, which our reader honours."""
    from safetensors.torch import save_file

    tensors = {("vector" if layer == UNKNOWN_LAYER else f"layer.{layer}"): vs.vectors[layer].contiguous()
               for layer in vs.layers}
    meta = {"format": "harness-vectors", "point": vs.point, "coefficient": repr(float(vs.coefficient)),
            "operator": vs.operator}
    if vs.model_hint:
        meta["model_hint"] = vs.model_hint
    save_file(tensors, str(path), metadata=meta)


def convert(src: Path, dst: Path, *, model_hint: str | None = None, feature: int | None = None) -> VectorSet:
    """Read `src` (any format) and write `dst` in the format of its suffix: `.gguf` (llama.cpp),
    `.pt` / `.pth` (lm-eval steered) or `.safetensors`. Returns what was read."""
    src, dst = Path(src), Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in (".gguf", ".pt", ".pth", ".safetensors"):
        raise UserError(f"{dst}: unknown output suffix {dst.suffix!r}: use .gguf, .pt or .safetensors")
    vs = read_vectors(src, feature=feature)
    if suffix == ".gguf":
        hint = model_hint or vs.model_hint
        if not hint:
            raise UserError(f"{dst}: a GGUF control vector needs a model hint (the model's architecture, "
                            f"e.g. 'llama'); {src} has none: give model_hint")
        write_gguf(vs, dst, model_hint=hint)
    elif suffix == ".safetensors":
        write_safetensors(vs, dst)
    else:
        write_lm_eval(vs, dst)
    return vs


def _known_layers(vs: VectorSet, path: Path) -> None:
    if UNKNOWN_LAYER in vs.vectors:
        raise UserError(f"{path}: the vector's layer is unknown (its file did not say): this format needs "
                        "one; write .safetensors or name the layer")
