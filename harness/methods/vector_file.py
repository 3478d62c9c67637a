"""Steering vectors made by any tool, read from their files (`harness.vectors`): llama.cpp /
repeng GGUF control vectors, lm-evaluation-harness `steered` files, steering-vectors objects,
SAELens features and plain `.pt` / `.safetensors` / `.npy` tensors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from harness.errors import UserError
from harness.registry import register_method
from harness.schema.generation import GenerationSettings
from harness.schema.steering import HookPoint, VectorSpec, Where

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.steering.base import Steering


class VectorFileSpec(VectorSpec):
    """A vector made elsewhere, read from its file by content, acting like `mean_diff`'s.

    `layer`: use the file's vector of that layer (or the file's only vector, when it names no
    layer); `layers`: several of its layers at once; neither: every layer the file holds, at once
    (as llama.cpp and repeng apply a control vector). `coeff` multiplies any coefficient the file
    stores (none: 1; `operator: ablate` takes none). `point` and `operator` default to the
    file's (attention / MLP outputs for steering-vectors files of those layer types; lm-eval's
    `clamp`). `feature` picks a feature of an SAELens folder (`path` the folder). A zero vector
    is refused, naming the file and the layer.
    """

    method: Literal["vector_file"]
    path: str = Field(min_length=1)
    layer: int | None = Field(None, ge=0)
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(None, min_length=1)
    point: HookPoint | None = None
    operator: Literal["add", "clamp", "ablate"] | None = None  # type: ignore[assignment]
    feature: int | None = Field(None, ge=0)
    file_fields: ClassVar[tuple[str, ...]] = ("path",)

    @model_validator(mode="after")
    def _one_layer_choice(self) -> VectorFileSpec:
        if self.layer is not None and self.layers is not None:
            raise ValueError("give `layer` or `layers`, not both")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers: {self.layers} names a layer twice")
        return self

    def at(self, layer: int, coeff: float) -> VectorFileSpec:
        return super().at(layer, coeff).model_copy(update={"layers": None})

    def resolve(self, base: Path, where: Where) -> VectorFileSpec:
        file = (base / self.path).resolve()
        if not file.exists():
            raise UserError(f"{where(('path',))}: steering vector file not found: {file}")
        return self.model_copy(update={"path": str(file)})

    def files(self, name: str) -> list[Path]:
        from harness.vectors.read import vector_files

        return vector_files(Path(self.path))


def file_interventions(lm: LoadedModel, spec: VectorFileSpec) -> Steering:
    """The steering of `spec`: the file's vectors at the chosen layers, checked against the model."""
    import torch

    from harness.models import hook_module
    from harness.steering.base import Steering, placed
    from harness.vectors import UNKNOWN_LAYER, read_vectors

    path = Path(spec.path)
    vs = read_vectors(path, feature=spec.feature)
    width = lm.model.config.get_text_config().hidden_size
    known = [layer for layer in vs.layers if layer != UNKNOWN_LAYER]
    if known and max(known) >= lm.n_layers:
        raise UserError(f"{path}: holds {len(known)} layer vectors (up to layer {max(known)}) but model "
                        f"'{lm.name}' has {lm.n_layers} layers")
    if spec.layer is not None:
        chosen = {spec.layer: vs.vectors.get(spec.layer, vs.vectors.get(UNKNOWN_LAYER))}
        if chosen[spec.layer] is None:
            raise UserError(f"{path}: no vector for layer {spec.layer} (layers in the file: "
                            f"{', '.join(map(str, vs.layers))})")
    elif spec.layers is not None:
        missing = [layer for layer in spec.layers if layer not in vs.vectors]
        if missing:
            raise UserError(f"{path}: no vector for layer(s) {missing} (layers in the file: "
                            f"{', '.join(map(str, vs.layers))})")
        chosen = {layer: vs.vectors[layer] for layer in spec.layers}
    elif UNKNOWN_LAYER in vs.vectors:
        raise UserError(f"{path}: the file holds one vector and names no layer: give `layer:`")
    else:
        chosen = dict(vs.vectors)
    point = spec.point or vs.point
    operator = spec.operator or vs.operator
    if operator == "ablate" and vs.coefficient != 1.0:
        raise UserError(f"{path}: the file stores coefficient {vs.coefficient:g}, but operator ablate uses "
                        "none: it would be ignored")
    out = []
    for layer, vector in sorted(chosen.items()):
        hook_module(lm.model, layer, point)  # a layer out of range fails with the layer count
        if vector.dim() != 1 or vector.shape[0] != width:
            raise UserError(f"{path}: vector of shape {tuple(vector.shape)} for layer {layer}, but model "
                            f"'{lm.name}' has hidden size {width}")
        if not torch.isfinite(vector).all():
            raise UserError(f"{path}: the vector of layer {layer} has NaN or inf entries")
        if not bool(vector.any()):
            raise UserError(f"{path}: the vector of layer {layer} is zero: it has no direction to steer")
        coeff = None if operator == "ablate" else (1.0 if spec.coeff is None else spec.coeff) * vs.coefficient
        out.append(placed(layer, vector.float(), coeff, point, spec.positions, operator, spec.steer_bos))
    return Steering(tuple(out))


def build_vector_file(lm: LoadedModel, path: Path, layer: int | None = None, coeff: float | None = None,
                      point: HookPoint | None = None) -> Steering:
    """`coeff` × the file's vector of `layer` (or all its layers), added at every position after BOS."""
    spec = VectorFileSpec(method="vector_file", path=str(path), layer=layer, coeff=coeff, point=point)
    return file_interventions(lm, spec)


def build(lm: LoadedModel, spec: VectorFileSpec, settings: GenerationSettings) -> Steering:
    spec.check_generation(settings.use_bos)
    return file_interventions(lm, spec)


register_method(VectorFileSpec, build)
