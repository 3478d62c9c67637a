"""The one in-memory form of steering vectors read from any tool's file, and checks shared by
the readers and writers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.errors import UserError
from harness.schema.steering import HookPoint

VectorOperator = Literal["add", "clamp"]
POINTS: tuple[HookPoint, ...] = ("resid", "attn", "mlp")
OPERATORS: tuple[VectorOperator, ...] = ("add", "clamp")
UNKNOWN_LAYER = -1
"""The key of a lone `[d]` vector whose file does not say its layer: the task must name it."""


@dataclass(frozen=True, eq=False)  # eq=False: tensors do not compare to one bool
class VectorSet:
    """Steering vectors by layer (layer L = output of decoder block L), as read from a file."""

    vectors: dict[int, torch.Tensor]  # layer -> float32 [d] tensor
    format: str  # "gguf-control-vector", "lm-eval-steered", "steering-vectors", "saelens", "tensor"
    point: HookPoint = "resid"  # steering-vectors' layer_type self_attn / mlp map to attn / mlp
    coefficient: float = 1.0  # a scale stored in the file (lm-eval's steering_coefficient), else 1.0
    operator: VectorOperator = "add"  # lm-eval's action
    notes: tuple[str, ...] = ()  # how the file's layer convention was mapped onto ours, in words
    model_hint: str | None = None  # GGUF controlvector.model_hint

    def __post_init__(self) -> None:
        if self.point not in POINTS:
            raise ValueError(f"point {self.point!r} is not one of {POINTS}")
        if self.operator not in OPERATORS:
            raise ValueError(f"operator {self.operator!r} is not one of {OPERATORS}")
        dims = {v.shape for v in self.vectors.values()}
        if not self.vectors or len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f"a VectorSet holds one or more [d] vectors of one d, not shapes {dims}")

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    @property
    def dim(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])


def describe(vs: VectorSet) -> list[dict[str, object]]:
    """One row per layer, `{"layer": L, "norm": ‖v‖}`, in layer order (for `inspect`; no model)."""
    return [{"layer": layer, "norm": float(torch.linalg.vector_norm(vs.vectors[layer]))}
            for layer in vs.layers]


def layer_name(layer: int) -> str:
    return "the vector (layer unknown)" if layer == UNKNOWN_LAYER else f"layer {layer}"


def as_vector(path: Path, layer: int, value: object, what: str = "") -> torch.Tensor:
    """`value` as a float32 `[d]` tensor (from `[d]` or `[1, d]`, a tensor or an array), or a
    UserError naming the file and the layer when it is not one or holds NaN or inf."""
    where = what or layer_name(layer)
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{path}: {where} is a {type(value).__name__}, expected a [d] tensor") from None
    if not (tensor.is_floating_point()):
        raise UserError(f"{path}: {where} has dtype {tensor.dtype}, expected floating point")
    if tensor.dim() == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 1 or tensor.shape[0] == 0:
        raise UserError(f"{path}: {where} has shape {list(tensor.shape)}, expected [d] or [1, d]")
    tensor = tensor.detach().to("cpu", torch.float32).contiguous().clone()
    if not bool(torch.isfinite(tensor).all()):
        raise UserError(f"{path}: {where} has NaN or inf entries")
    return tensor


def same_dim(path: Path, vectors: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """`vectors`, or a UserError when they differ in length (one model has one width)."""
    dims = {layer: int(v.shape[0]) for layer, v in vectors.items()}
    if not dims:
        raise UserError(f"{path}: holds no steering vectors")
    if len(set(dims.values())) > 1:
        listing = ", ".join(f"{layer_name(layer)}: {d}" for layer, d in sorted(dims.items()))
        raise UserError(f"{path}: vectors differ in length ({listing}); one model needs one d")
    return vectors
