"""Steering vectors trained elsewhere, read from `.pt`, `.safetensors` or `.npy` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from harness.errors import UserError
from harness.models import HookPoint, LoadedModel
from harness.steering.base import Intervention, Steering

SUFFIXES = (".pt", ".safetensors", ".npy")


def read_vectors(path: Path) -> torch.Tensor | dict[int, torch.Tensor]:
    """A `[n_layers, d]` or `[d]` tensor, or a layer -> `[d]` mapping, as stored in `path`."""
    if path.suffix not in SUFFIXES:
        raise UserError(f"{path}: vector file must be one of {', '.join(SUFFIXES)}")
    try:
        if path.suffix == ".npy":
            data: object = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".pt":
            data = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            data = load_file(path)
    except Exception as err:  # each format raises its own error types on a damaged file
        raise UserError(f"{path}: cannot read vectors ({type(err).__name__}: {err})") from None
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, dict) and all(isinstance(v, torch.Tensor) for v in data.values()):
        try:
            return {int(str(k).removeprefix("layer.").removeprefix("layer_")): v for k, v in data.items()}
        except ValueError:
            pass
    raise UserError(f"{path}: expected a tensor [n_layers, d] or [d], or a mapping from layer "
                    f"index to [d] tensor, found {type(data).__name__}")


def vector_for_layer(path: Path, lm: LoadedModel, layer: int) -> torch.Tensor:
    """The `[d]` vector of `layer` in `path`, checked against the model's layers and width."""
    data = read_vectors(path)
    width = lm.model.config.get_text_config().hidden_size
    if isinstance(data, dict):
        if layer not in data:
            raise UserError(f"{path}: no vector for layer {layer} (layers in the file: "
                            f"{', '.join(map(str, sorted(data)))})")
        vector = data[layer]
    elif data.dim() == 2:
        if data.shape[0] != lm.n_layers:
            raise UserError(f"{path}: holds {data.shape[0]} layer vectors but model '{lm.name}' "
                            f"has {lm.n_layers} layers")
        vector = data[layer]
    else:
        vector = data
    if vector.dim() != 1 or vector.shape[0] != width:
        raise UserError(f"{path}: vector of shape {tuple(vector.shape)} for layer {layer}, but model "
                        f"'{lm.name}' has hidden size {width}")
    if not torch.isfinite(vector).all():
        raise UserError(f"{path}: the vector of layer {layer} has NaN or inf entries")
    return vector.float()


def build_vector_file(lm: LoadedModel, path: Path, layer: int, coeff: float,
                      point: HookPoint = "resid") -> Steering:
    """`coeff` × the file's vector of `layer`, added at every position after BOS."""
    vector = vector_for_layer(path, lm, layer)
    return Steering((Intervention(layer, coeff * vector, point, "all"),))
