"""ActAdd (Turner et al.): Σ coeff · resid_layer(text), added once at the prompt's first positions."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.errors import UserError
from harness.models import HookPoint, LoadedModel
from harness.steering.base import Intervention, Steering
from harness.steering.hooks import capture_outputs
from harness.tokens import encode, space_token_id

MAX_LENGTH_RATIO = 2.0


class ContrastLengthWarning(UserWarning):
    """Contrast prompts of very different token lengths (ActAdd pads them with spaces)."""


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
    intervention each.
    """
    if not additions:
        raise ValueError("ActAdd needs at least one addition")
    for add in additions:
        if not add.text.strip():
            raise UserError(f"empty contrast text in the addition at layer {add.layer}")
    ids = torch.tensor(contrast_token_ids(lm, [a.text for a in additions], use_bos), device=lm.device)
    sites = [(a.layer, point) for a in additions]
    acts = capture_outputs(lm.model, sites, input_ids=ids, attention_mask=torch.ones_like(ids))
    per_layer: dict[int, torch.Tensor] = defaultdict(lambda: torch.zeros(()))
    for row, add in enumerate(additions):
        per_layer[add.layer] = per_layer[add.layer] + add.coeff * acts[(add.layer, point)][row].float()
    return Steering(
        tuple(Intervention(layer, vec, point, "prefix") for layer, vec in sorted(per_layer.items()))
    )
