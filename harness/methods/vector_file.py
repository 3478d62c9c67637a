"""Steering vectors trained elsewhere, read from `.pt`, `.safetensors` or `.npy` files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from harness.errors import UserError
from harness.registry import register_method
from harness.schema.generation import GenerationSettings
from harness.schema.steering import HookPoint, MethodSpec, Where

if TYPE_CHECKING:
    import torch

    from harness.models import LoadedModel
    from harness.steering.base import Steering

SUFFIXES = (".pt", ".safetensors", ".npy")


class VectorFileSpec(MethodSpec):
    """A vector trained elsewhere (`.pt`, `.safetensors`, `.npy`), added at every position.

    The file holds a `[n_layers, d]` tensor, a `[d]` tensor (the vector of `layer`), or a
    mapping from layer index to `[d]` tensor. `coeff` × the vector of `layer` is added at
    every position (BOS excluded), like `mean_diff`.
    """

    method: Literal["vector_file"]
    path: str = Field(min_length=1)
    layer: int = Field(ge=0)
    coeff: float = Field(1.0, allow_inf_nan=False)
    point: HookPoint = "resid"
    file_fields: ClassVar[tuple[str, ...]] = ("path",)

    def resolve(self, base: Path, where: Where) -> VectorFileSpec:
        file = (base / self.path).resolve()
        if not file.is_file():
            raise UserError(f"{where(('path',))}: steering vector file not found: {file}")
        return self.model_copy(update={"path": str(file)})


def read_vectors(path: Path) -> torch.Tensor | dict[int, torch.Tensor]:
    """A `[n_layers, d]` or `[d]` tensor, or a layer -> `[d]` mapping, as stored in `path`."""
    import numpy as np
    import torch

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
    import torch

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
    from harness.models import hook_module
    from harness.steering.base import Intervention, Steering

    hook_module(lm.model, layer, point)  # a layer out of range fails with the layer count
    vector = vector_for_layer(path, lm, layer)
    return Steering((Intervention(layer, coeff * vector, point, "all"),))


def build(lm: LoadedModel, spec: VectorFileSpec, settings: GenerationSettings) -> Steering:
    return build_vector_file(lm, Path(spec.path), spec.layer, spec.coeff, spec.point)


register_method(VectorFileSpec, build)
