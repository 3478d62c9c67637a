"""ActAdd (Turner et al.): Σ coeff · resid_layer(text), added once at the prompt's first positions."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import Field, model_validator

from harness.errors import UserError
from harness.registry import register_method
from harness.schema.generation import GenerationSettings
from harness.schema.spec import Spec
from harness.schema.steering import HookPoint, MethodSpec

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.steering.base import Steering

MAX_LENGTH_RATIO = 2.0


class ContrastLengthWarning(UserWarning):
    """Contrast prompts of very different token lengths (ActAdd pads them with spaces)."""


class AdditionSpec(Spec):
    """One ActAdd term: `coeff` × activations of `text` at `layer`."""

    layer: int = Field(ge=0)
    coeff: float = Field(allow_inf_nan=False)
    text: str = Field(min_length=1)


class ActAddSpec(MethodSpec):
    """ActAdd: coeff·(positive − negative) at a layer, added once at the prompt's first positions.

    `layer`/`coeff`/`positive`/`negative`, or an explicit list of `additions`; the vector covers
    as many positions as the padded contrast prompts have tokens."""

    method: Literal["actadd"]
    layer: int | None = Field(None, ge=0)
    coeff: float | None = Field(None, allow_inf_nan=False)
    positive: str | None = Field(None, min_length=1)
    negative: str | None = Field(None, min_length=1)
    additions: list[AdditionSpec] = Field(default_factory=list)
    point: HookPoint = "resid"

    @model_validator(mode="after")
    def _pair_or_additions(self) -> ActAddSpec:
        pair = [self.layer, self.coeff, self.positive, self.negative]
        if self.additions and any(v is not None for v in pair):
            raise ValueError("give either layer/coeff/positive/negative or additions, not both")
        if not self.additions and any(v is None for v in pair):
            raise ValueError("needs layer, coeff, positive and negative (or a list of additions)")
        return self

    def at(self, layer: int, coeff: float) -> ActAddSpec:
        if self.additions:
            raise ValueError("an actadd steering given as a list of additions has no single layer and "
                             "coefficient to sweep; give layer/coeff/positive/negative")
        return self.model_copy(update={"layer": layer, "coeff": coeff})

    def resolved_additions(self) -> list[Addition]:
        if self.additions:
            return [Addition(a.layer, a.coeff, a.text) for a in self.additions]
        assert self.layer is not None and self.coeff is not None
        assert self.positive is not None and self.negative is not None
        return [Addition(self.layer, self.coeff, self.positive),
                Addition(self.layer, -self.coeff, self.negative)]


@dataclass(frozen=True)
class Addition:
    """One term of an ActAdd vector: `coeff` times the activations of `text` at `layer`."""

    layer: int
    coeff: float
    text: str

    @classmethod
    def parse(cls, spec: str) -> Addition:
        """Parse the CLI form `LAYER:COEFF:TEXT`, e.g. `6:+4:Love`."""
        try:
            layer, coeff, text = spec.split(":", 2)
            return cls(int(layer), float(coeff), text)
        except ValueError:
            raise ValueError(f"bad addition {spec!r}: expected LAYER:COEFF:TEXT, e.g. 6:+4:Love") from None


def contrast_token_ids(lm: LoadedModel, texts: Sequence[str], use_bos: bool = True) -> list[list[int]]:
    """Tokenize contrast prompts and pad them on the right with spaces to one length (as the paper)."""
    from harness.models.tokens import encode, space_token_id

    ids = [encode(lm.tokenizer, text, use_bos) for text in texts]
    width = max(len(t) for t in ids)
    if width > MAX_LENGTH_RATIO * min(len(t) for t in ids):
        lengths = ", ".join(f"{text!r}: {len(t)}" for text, t in zip(texts, ids, strict=True))
        warnings.warn(f"contrast prompts differ in token length ({lengths}); the shorter ones are "
                      "padded with spaces, which then carry part of the vector",
                      ContrastLengthWarning, stacklevel=2)
    space = space_token_id(lm.tokenizer)
    return [t + [space] * (width - len(t)) for t in ids]


def build_actadd(
    lm: LoadedModel,
    additions: Sequence[Addition],
    *,
    use_bos: bool = True,
    point: HookPoint = "resid",
) -> Steering:
    """Build the ActAdd steering of `additions`: one `[n, d]` prefix vector per layer.

    All contrast prompts are padded to one token length `n`, so the terms of a
    layer sum position by position; several layers at once give one
    intervention each. A layer whose terms cancel to zero with nonzero coefficients (the same
    text twice) is a UserError; coefficients of 0 give a null steering (unsteered).
    """
    import torch

    from harness.models import hook_module
    from harness.steering.base import Intervention, Steering
    from harness.steering.capture import capture_outputs

    if not additions:
        raise ValueError("ActAdd needs at least one addition")
    for add in additions:
        if not add.text.strip():
            raise UserError(f"empty contrast text in the addition at layer {add.layer}")
        hook_module(lm.model, add.layer, point)  # a layer out of range fails with the layer count
    ids = torch.tensor(contrast_token_ids(lm, [a.text for a in additions], use_bos), device=lm.device)
    sites = [(a.layer, point) for a in additions]
    acts = capture_outputs(lm.model, sites, input_ids=ids, attention_mask=torch.ones_like(ids))
    per_layer: dict[int, torch.Tensor] = {}
    for row, add in enumerate(additions):
        term = add.coeff * acts[(add.layer, point)][row].float()
        per_layer[add.layer] = per_layer[add.layer] + term if add.layer in per_layer else term
    for layer, vector in per_layer.items():
        if not bool(vector.any()) and any(a.coeff for a in additions if a.layer == layer):
            raise UserError(f"actadd: the vector at layer {layer} is zero although its coefficients are not "
                            "(the contrast texts give the same activations): it would steer nothing")
    return Steering(
        tuple(Intervention(layer, vec, point, "prefix") for layer, vec in sorted(per_layer.items()))
    )


def build(lm: LoadedModel, spec: ActAddSpec, settings: GenerationSettings) -> Steering:
    return build_actadd(lm, spec.resolved_additions(), use_bos=settings.use_bos, point=spec.point)


register_method(ActAddSpec, build)
