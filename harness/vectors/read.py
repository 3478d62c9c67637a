"""Read steering vectors from any peer tool's file into one `VectorSet`, mapping each tool's
layer numbering onto ours (layer L = the output of decoder block L).

The format is told by the content (magic bytes, keys, metadata), not by the suffix:
llama.cpp / repeng / EasySteer GGUF control vectors, lm-evaluation-harness `steered` .pt files,
steering-vectors `SteeringVector` pickles, SAELens SAE folders (one feature), and plain tensors
in .pt / .safetensors / .npy.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from harness.errors import UserError
from harness.schema.steering import HookPoint
from harness.vectors.base import OPERATORS, POINTS, UNKNOWN_LAYER, VectorSet, as_vector, same_dim
from harness.vectors.pickles import load_torch

# llama.cpp: common_control_vector_load_one reads tensors "direction.N" (N >= 1; N = 0 is
# rejected), llama_adapter_cvec puts direction.N in tensors[N], and every model graph calls
# `cur = build_cvec(cur, il)` right after block il's last residual add, in the 0-based loop over
# blocks (cb(cur, "l_out", il)). repeng's export_gguf writes direction.{layer} for its layer ids,
# which index model.model.layers (0-based) and whose ControlModule adds to that block's output.
# So direction.N is added to the output of block N: our layer N, no shift.
GGUF_NOTE = ("GGUF direction.N is added to the output of decoder block N (llama.cpp build_cvec after "
             "block N, 0-based; repeng layer ids index model.layers) -> our layer N, no shift")
SAE_FILES = ("cfg.json", "sae_weights.safetensors")
_DIRECTION = re.compile(r"direction\.(\d+)")
_PLAIN_KEY = re.compile(r"(?:layers?[._])?(\d+)|(direction)\.(\d+)")
_HOOKPOINT = re.compile(r"layers\.(\d+)(?:\.(self_attn|mlp))?")  # names in model.base_model, as lm-eval
_SAE_HOOK = re.compile(r"blocks\.(\d+)\.(hook_resid_post|hook_resid_pre)")
_SV_POINTS: dict[str, HookPoint] = {"decoder_block": "resid", "self_attn": "attn", "mlp": "mlp"}


def read_vectors(path: Path, *, feature: int | None = None) -> VectorSet:
    """The steering vectors in `path` (a file, or an SAELens folder with `feature`), by our layers.

    Raises UserError naming the file when the content is none of the known layouts, a vector
    has NaN/inf or a wrong shape, or the file's layer convention cannot be mapped onto ours.
    Torch files load with `weights_only=True`; only a steering-vectors pickle that needs more is
    unpickled in full, and pickle executes code: do that only for files the user names (see
    `harness.vectors.pickles.load_torch`).
    """
    path = Path(path)
    folder = saelens_folder(path)
    if folder is not None:
        return _read_saelens(folder, feature)
    with path.open("rb") as f:
        head = f.read(16)
    if head[:4] == b"GGUF":
        vs = _read_gguf(path)
    elif head[:6] == b"\x93NUMPY":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:  # object arrays need pickle: refused
            raise UserError(f"{path}: not a readable NumPy array ({err})") from None
        vs = _from_plain(path, array)
    elif _is_safetensors(head, path.stat().st_size):
        vs = _read_safetensors(path)
    elif head[:2] == b"PK" or head[:1] == b"\x80":
        vs = _from_torch(path, load_torch(path))
    else:
        raise UserError(f"{path}: unknown layout: not a GGUF, safetensors, NumPy or torch file, nor an "
                        f"SAELens folder (first bytes {head[:8]!r})")
    if feature is not None:
        raise UserError(f"{path}: feature={feature} applies to SAE folders only; this is a {vs.format} file")
    return vs


def saelens_folder(path: Path) -> Path | None:
    """The SAELens folder `path` names (the folder, its cfg.json, or its W_dec weights file with a
    cfg.json beside it), or None for any other file; UserError when `path` does not exist."""
    if path.is_dir() or path.name == "cfg.json":
        return path if path.is_dir() else path.parent
    if not path.is_file():
        raise UserError(f"{path}: no such file or folder")
    with path.open("rb") as f:
        head = f.read(16)
    if (_is_safetensors(head, path.stat().st_size) and (path.parent / "cfg.json").is_file()
            and _safetensors_keys(path) >= {"W_dec"}):
        return path.parent
    return None


def vector_files(path: Path) -> list[Path]:
    """Every file the vectors read from `path` depend on: an SAELens SAE's cfg.json (it sets the
    layer) and weights, or the one file."""
    folder = saelens_folder(Path(path))
    return [folder / name for name in SAE_FILES] if folder is not None else [Path(path)]


# --- GGUF control vectors -----------------------------------------------------------------


def _read_gguf(path: Path) -> VectorSet:
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # a truncated or malformed file raises several types
        raise UserError(f"{path}: not a readable GGUF file ({type(err).__name__}: {err})") from None
    arch = _gguf_value(reader, "general.architecture")
    if arch != "controlvector":
        found = "no general.architecture" if arch is None else f"general.architecture is {arch!r}"
        raise UserError(f"{path}: {found}, not 'controlvector' (a model, not a control vector?)")
    vectors: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        match = _DIRECTION.fullmatch(tensor.name)
        if match is None:
            raise UserError(f"{path}: tensor {tensor.name!r} is not named direction.N")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise UserError(f"{path}: {tensor.name} is {tensor.tensor_type.name} of shape "
                            f"{[int(n) for n in tensor.shape]}, expected 1-D F32 (as llama.cpp loads)")
        layer = int(match.group(1))
        if layer in vectors:
            raise UserError(f"{path}: {tensor.name} appears twice")
        vectors[layer] = as_vector(path, layer, np.array(tensor.data, dtype=np.float32),
                                   f"{tensor.name} (our layer {layer})")
    if not vectors:
        raise UserError(f"{path}: a control vector with no direction.N tensors")
    notes = [GGUF_NOTE]
    if 0 in vectors:
        notes.append("the file has direction.0, which llama.cpp refuses to load (block 0's output is "
                     "never steered there)")
    count = _gguf_value(reader, "controlvector.layer_count")
    if count is not None and count != len(vectors):
        notes.append(f"controlvector.layer_count is {count} but the file has {len(vectors)} directions "
                     "(llama.cpp ignores layer_count)")
    hint = _gguf_value(reader, "controlvector.model_hint")
    return VectorSet(same_dim(path, vectors), "gguf-control-vector", notes=tuple(notes),
                     model_hint=hint if isinstance(hint, str) else None)


def _gguf_value(reader: object, key: str) -> object:
    """A scalar or string metadata value of a GGUF file, or None when absent."""
    field = reader.get_field(key)  # type: ignore[attr-defined]
    if field is None or not field.data:
        return None
    if hasattr(field, "contents"):
        return field.contents()
    part = field.parts[field.data[0]]
    return bytes(part).decode("utf-8", "replace") if part.dtype == np.uint8 else part.tolist()[0]


# --- safetensors, NumPy and plain torch tensors --------------------------------------------


def _is_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file starts with a little-endian u64 header length, then a JSON object."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _safetensors_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return set(f.keys())
    except Exception as err:  # a malformed header raises the bindings' own error type
        raise UserError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None


def _read_safetensors(path: Path) -> VectorSet:
    """Plain tensors, honouring the point / coefficient / operator / model_hint our writer stores
    in the metadata."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (not a dict)
            meta = f.metadata() or {}
    except Exception as err:
        raise UserError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None
    vs = _from_plain(path, tensors)
    extra: dict[str, object] = {}
    if meta.get("point") in POINTS:
        extra["point"] = meta["point"]
    if meta.get("operator") in OPERATORS:
        extra["operator"] = meta["operator"]
    if "coefficient" in meta:
        try:
            extra["coefficient"] = float(meta["coefficient"])
        except ValueError:
            raise UserError(f"{path}: metadata coefficient {meta['coefficient']!r} is not a number") from None
    if meta.get("model_hint"):
        extra["model_hint"] = meta["model_hint"]
    return VectorSet(vs.vectors, vs.format, notes=vs.notes, **extra)  # type: ignore[arg-type]


def _from_plain(path: Path, data: object) -> VectorSet:
    """A `[n_layers, d]` tensor (row L = layer L), a `[d]` tensor (layer unknown), or a mapping
    with keys `N`, `layer.N`, `layer_N`, `layers.N` or `direction.N`."""
    if isinstance(data, Mapping):
        return _from_mapping(path, data)
    try:
        tensor = torch.as_tensor(data)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{path}: unknown layout: a {type(data).__name__}, expected a tensor or a mapping "
                        "of layer -> vector") from None
    if tensor.dim() == 2:
        rows = {layer: as_vector(path, layer, row) for layer, row in enumerate(tensor)}
        return VectorSet(same_dim(path, rows), "tensor",
                         notes=(f"row L of a [{tensor.shape[0]}, {tensor.shape[1]}] tensor -> our layer L",))
    if tensor.dim() == 1:
        return VectorSet({UNKNOWN_LAYER: as_vector(path, UNKNOWN_LAYER, tensor)}, "tensor",
                         notes=("a lone [d] vector: the file does not say its layer (stored under -1); "
                                "the task must name the layer",))
    raise UserError(f"{path}: a tensor of shape {list(tensor.shape)}, expected [d] or [n_layers, d]")


def _from_mapping(path: Path, data: Mapping[object, object]) -> VectorSet:
    vectors: dict[int, torch.Tensor] = {}
    directions = False
    unparsed = []
    for key, value in data.items():
        match = _PLAIN_KEY.fullmatch(str(key)) if isinstance(key, int | str) else None
        if match is None:
            unparsed.append(key)
            continue
        layer = int(match.group(1) or match.group(3))
        directions = directions or bool(match.group(2))
        if layer in vectors:
            raise UserError(f"{path}: two keys name layer {layer}")
        vectors[layer] = as_vector(path, layer, value, f"{key!s} (layer {layer})")
    if unparsed:
        if not vectors and len(unparsed) == 1:  # one tensor under any name: the tensor itself
            return _from_plain(path, data[unparsed[0]])
        shown = ", ".join(repr(k) for k in unparsed[:5])
        raise UserError(f"{path}: unknown layout: keys {shown} are not layer keys (expected N, layer.N, "
                        "layer_N or direction.N; or lm-eval's {hookpoint: {steering_vector, ...}})")
    notes = ["keys N / layer.N / layer_N name our layer N"]
    if directions:
        notes.append(GGUF_NOTE)
    return VectorSet(same_dim(path, vectors), "tensor", notes=tuple(notes))


# --- torch pickles: lm-eval steered, steering-vectors --------------------------------------


def _from_torch(path: Path, data: object) -> VectorSet:
    if isinstance(data, list) and data and all(isinstance(d, Mapping) and "hookpoint" in d for d in data):
        data = {d["hookpoint"]: d for d in data}  # the list form in lm-eval's docstring
    if hasattr(data, "layer_activations"):
        data = {"layer_activations": data.layer_activations,  # type: ignore[union-attr]
                "layer_type": getattr(data, "layer_type", "decoder_block")}
    if isinstance(data, Mapping) and "layer_activations" in data:
        return _from_steering_vectors(path, data)
    if isinstance(data, Mapping) and data and all(isinstance(v, Mapping) and "steering_vector" in v
                                                  for v in data.values()):
        return _from_lm_eval(path, data)
    return _from_plain(path, data)


def _from_steering_vectors(path: Path, data: Mapping[str, object]) -> VectorSet:
    layer_type = str(data.get("layer_type", "decoder_block"))
    if layer_type not in _SV_POINTS:
        raise UserError(f"{path}: steering-vectors layer_type {layer_type!r} is not one of "
                        f"{', '.join(_SV_POINTS)} (only those map onto our hook points)")
    activations = data["layer_activations"]
    if not isinstance(activations, Mapping):
        raise UserError(f"{path}: layer_activations is a {type(activations).__name__}, expected a dict")
    vectors: dict[int, torch.Tensor] = {}
    for key, value in activations.items():
        if not isinstance(key, int) or key < 0:
            raise UserError(f"{path}: layer_activations key {key!r} is not a layer number >= 0")
        vectors[key] = as_vector(path, key, value)
    point = _SV_POINTS[layer_type]
    module = {"resid": "model.layers[N]", "attn": "model.layers[N].self_attn",
              "mlp": "model.layers[N].mlp"}[point]
    note = f"steering-vectors {layer_type} layer N hooks the output of {module} -> our layer N ({point})"
    return VectorSet(same_dim(path, vectors), "steering-vectors", point=point, notes=(note,))


def _from_lm_eval(path: Path, data: Mapping[object, Mapping[str, object]]) -> VectorSet:
    vectors: dict[int, torch.Tensor] = {}
    points, actions, coefficients = set(), set(), {}
    notes = ["lm-eval hookpoint layers.N is a forward hook on decoder layer N's output -> our layer N",
             "lm-eval adds at every position, the BOS included: steer_bos: true acts the same"]
    for hookpoint, info in data.items():
        match = _HOOKPOINT.fullmatch(str(hookpoint))
        if match is None:
            raise UserError(f"{path}: hookpoint {hookpoint!r} is not layers.N, layers.N.self_attn or "
                            "layers.N.mlp (lm-eval looks hookpoints up among model.base_model's modules, "
                            "where model.layers.N does not resolve)")
        layer = int(match.group(1))
        if layer in vectors:
            raise UserError(f"{path}: two hookpoints name layer {layer}")
        points.add({None: "resid", "self_attn": "attn", "mlp": "mlp"}[match.group(2)])
        action = info.get("action", "add")
        if action not in OPERATORS:
            raise UserError(f"{path}: {hookpoint}: action {action!r} is not add or clamp")
        actions.add(action)
        if info.get("head_index") is not None:
            raise UserError(f"{path}: {hookpoint}: head_index {info['head_index']} steers one attention "
                            "head; only whole-module vectors are supported")
        if _nonzero(info.get("bias")):
            if action == "clamp":
                raise UserError(f"{path}: {hookpoint}: clamp with a bias is not supported (our clamp "
                                "has none)")
            notes.append(f"{hookpoint}: bias ignored (lm-eval uses it only for clamp)")
        coefficients[layer] = _number(path, hookpoint, info.get("steering_coefficient", 1.0))
        vectors[layer] = as_vector(path, layer, info["steering_vector"], f"{hookpoint} (our layer {layer})")
    if len(points) > 1 or len(actions) > 1:
        raise UserError(f"{path}: hookpoints mix points {sorted(points)} or actions {sorted(actions)}; "
                        "one file must use one")
    operator = actions.pop()
    coefficient = coefficients[min(coefficients)]
    if len(set(coefficients.values())) > 1:
        if operator == "clamp":
            raise UserError(f"{path}: clamp values differ by hookpoint ({coefficients}); one file must "
                            "use one")
        vectors = {layer: v * coefficients[layer] for layer, v in vectors.items()}
        coefficient = 1.0
        notes.append("steering_coefficient differs by hookpoint: folded into the vectors (coefficient 1.0)")
    return VectorSet(same_dim(path, vectors), "lm-eval-steered", point=points.pop(), coefficient=coefficient,
                     operator=operator, notes=tuple(notes))


def _nonzero(bias: object) -> bool:
    return bias is not None and bool(torch.as_tensor(bias).ne(0).any())


def _number(path: Path, hookpoint: object, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{path}: {hookpoint}: steering_coefficient {value!r} is not a number") from None
    if not np.isfinite(number):
        raise UserError(f"{path}: {hookpoint}: steering_coefficient is {number}")
    return number


# --- SAELens folders ------------------------------------------------------------------------


def _read_saelens(folder: Path, feature: int | None) -> VectorSet:
    """Feature `feature` of an SAELens SAE: row `feature` of `W_dec` [d_sae, d_in]."""
    missing = [name for name in SAE_FILES if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{folder}: a folder without {' or '.join(missing)}, expected an SAELens SAE "
                        f"({', '.join(SAE_FILES)})")
    cfg_path = folder / "cfg.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{cfg_path}: not readable JSON ({err})") from None
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    hook = cfg.get("hook_name") or meta.get("hook_name")
    match = _SAE_HOOK.fullmatch(str(hook))
    if match is None:
        raise UserError(f"{cfg_path}: hook_name {hook!r} is not blocks.L.hook_resid_post or "
                        "blocks.L.hook_resid_pre (the only residual-stream hooks supported)")
    block, kind = int(match.group(1)), match.group(2)
    if kind == "hook_resid_pre" and block == 0:
        raise UserError(f"{cfg_path}: hook_name {hook} is the embedding output, not the output of a "
                        "decoder block")
    weights = folder / "sae_weights.safetensors"
    if "W_dec" not in _safetensors_keys(weights):
        raise UserError(f"{weights}: no W_dec tensor")
    from safetensors import safe_open

    with safe_open(weights, framework="pt") as f:
        w_dec = f.get_tensor("W_dec")
    d_sae, d_in = cfg.get("d_sae"), cfg.get("d_in")
    if w_dec.dim() != 2 or (d_sae is not None and d_in is not None and list(w_dec.shape) != [d_sae, d_in]):
        raise UserError(f"{weights}: W_dec has shape {list(w_dec.shape)}, expected [d_sae, d_in] = "
                        f"[{d_sae}, {d_in}] from cfg.json")
    if feature is None:
        raise UserError(f"{folder}: an SAE holds {w_dec.shape[0]} features: name one (feature=)")
    if not 0 <= feature < w_dec.shape[0]:
        raise UserError(f"{folder}: feature {feature} is out of range: the SAE has features "
                        f"0..{w_dec.shape[0] - 1}")
    layer = block if kind == "hook_resid_post" else block - 1
    if kind == "hook_resid_post":
        note = f"SAELens {hook} is the output of block {block} -> our layer {layer}"
    else:
        note = (f"SAELens {hook} is the input of block {block} = the output of block {layer} -> "
                f"our layer {layer} (one below the hook's number)")
    notes = [note, f"feature {feature} = W_dec[{feature}]"]
    norm = cfg.get("normalize_activations") or meta.get("normalize_activations")
    if norm not in (None, "none"):
        notes.append(f"the SAE normalizes activations ({norm}): W_dec rows are in its normalized units")
    vector = as_vector(folder, layer, w_dec[feature], f"W_dec[{feature}] (our layer {layer})")
    return VectorSet({layer: vector}, "saelens", notes=tuple(notes))
