"""The base of every steering method's spec (pydantic only; methods live in `harness.methods`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, model_validator

from harness.errors import UserError
from harness.schema.spec import Spec

HookPoint = Literal["resid", "attn", "mlp"]
"""The module whose output is steered: the decoder block, its attention or its MLP."""

Where = Callable[[tuple[str, ...]], str]
"""`where(field path)` -> "file:line" of that field in the task file, for error messages."""


class MethodSpec(Spec):
    """The parameters of one steering method; `method` is its name in the registry.

    Subclasses declare `method: Literal["name"]` and their own fields; the task schema's
    union of methods is built from the registry (`harness.registry`).
    """

    method: str
    file_fields: ClassVar[tuple[str, ...]] = ()
    """Fields that name files: sample identity hashes their content, never their path."""
    sweep_axes: ClassVar[tuple[str, str] | None] = ("layer", "coeff")
    """The fields a sweep sets: (the layer, the strength); None for a method without both."""

    def resolve(self, base: Path, where: Where) -> Self:
        """This spec with the files it names read or made absolute (relative to `base`, the
        task file's folder), so the resolved spec in run.json is self-contained."""
        return self

    def at(self, layer: int, coeff: float) -> Self:
        """The same steering at another layer and strength (a sweep's config), set in the fields
        `sweep_axes` names; a method without both raises ValueError."""
        axes = type(self).sweep_axes
        if axes is None or not set(axes) <= set(type(self).model_fields):
            raise ValueError(f"a {self.method} steering has no single layer and coefficient to sweep")
        depth, strength = axes
        return self.model_copy(update={depth: layer, strength: coeff})

    def files(self, name: str) -> list[Path]:
        """Every file that the file field `name` stands for (by default, the one it names)."""
        return [Path(getattr(self, name))]

    def identity(self) -> dict[str, Any]:
        """What defines the steering for sample identity: the spec, each file field by the content
        hash of every file it stands for (`files`), never by path."""
        import hashlib

        data = self.model_dump(mode="json")
        for name in self.file_fields:
            if not data.get(name):
                continue
            hashes = []
            for file in self.files(name):
                try:
                    hashes.append("sha256:" + hashlib.sha256(file.read_bytes()).hexdigest())
                except OSError as err:
                    raise UserError(f"{file}: cannot read it for the steering's identity ({err})") from None
            data[name] = hashes[0] if len(hashes) == 1 else hashes
        return data


Positions = Literal["all", "prompt", "generated"]
Operator = Literal["add", "clamp", "ablate"]


class VectorSpec(MethodSpec):
    """Where and how a `[d]` vector acts, for every vector method.

    `coeff`: with `add`, the multiple of the vector added; with `clamp`, the value the projection
    is set to; `ablate` takes none. `positions`: every position (`all`), only the prompt's, or
    only the generated tokens' (SteeringControl's ALL_TOKENS / POST_INSTRUCTION / OUTPUT_ONLY).
    `steer_bos`: also act on the BOS position (steering-vectors and repeng do by default; we do
    not: position 0 is the shared attention sink). `operator`: `add` coeff × vector; `clamp` sets
    the projection on the vector's unit direction to coeff (lm-evaluation-harness); `ablate`
    removes that projection (the refusal-direction method) and takes no `coeff`.

    A setting that would change nothing is refused, never ignored: a `coeff` with `ablate`,
    `steer_bos` with `positions: generated` (BOS is never a generated token) or without a BOS
    (`check_generation`).
    """

    coeff: float | None = Field(None, allow_inf_nan=False)
    positions: Positions = "all"
    steer_bos: bool = False
    operator: Operator = "add"

    @model_validator(mode="after")
    def _no_unused_settings(self) -> Self:
        if self.operator == "ablate" and self.coeff is not None:
            raise ValueError(f"coeff: operator 'ablate' removes the projection on the vector's direction "
                             f"and uses no coefficient, so coeff={self.coeff:g} would be ignored: remove "
                             "`coeff` (--set steering.coeff=null)")
        if self.steer_bos and self.positions == "generated":
            raise ValueError("steer_bos: positions 'generated' never include the BOS position, so "
                             "steer_bos would be ignored: remove it or steer `all` positions")
        return self

    def check_generation(self, use_bos: bool) -> None:
        """UserError for a setting the generation settings make void: `steer_bos` without BOS."""
        if self.steer_bos and not use_bos:
            raise UserError("steer_bos: generation.use_bos is false, so there is no BOS position to steer")

    def at(self, layer: int, coeff: float) -> Self:
        if self.operator == "ablate":
            raise ValueError(f"a {self.method} steering with operator 'ablate' uses no coefficient, so each "
                             "coefficient of a sweep would repeat the same steering")
        return super().at(layer, coeff)


class ContrastPair(Spec):
    """One (positive, negative) pair of texts whose activation difference a method uses."""

    positive: str = Field(min_length=1)
    negative: str = Field(min_length=1)


class PairDatasetSpec(Spec):
    """Contrast pairs from the rows of a dataset (see `DatasetSpec` for where it may come from)."""

    dataset: str = Field(min_length=1)
    split: str = "train"
    config: str | None = None
    positive_field: str = "positive"
    negative_field: str = "negative"
    limit: int | None = Field(None, ge=1)
    seed: int | None = None


class PairFileSpec(Spec):
    """Contrast pairs from a JSONL or CSV file next to the task file, one pair per row."""

    file: str
    positive_field: str = "positive"
    negative_field: str = "negative"
    limit: int | None = Field(None, ge=1)
