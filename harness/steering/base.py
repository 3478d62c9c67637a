"""What every steering method produces: vectors, where they go, at which positions, and
text put before the prompt (the prompting baseline)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from harness.models import HookPoint

Positions = Literal["prefix", "all"]


@dataclass(frozen=True)
class Intervention:
    """One vector added to the output of one module.

    `positions="prefix"`: `vector` is `[n, d]` and is added once, to the first `n`
    positions of each prompt during the prompt's forward pass (ActAdd); the KV
    cache carries it to later tokens. `positions="all"`: `vector` is `[d]` and is
    added at every position of every forward pass, generated tokens included.
    """

    layer: int
    vector: torch.Tensor
    point: HookPoint = "resid"
    positions: Positions = "prefix"

    def __post_init__(self) -> None:
        want = 2 if self.positions == "prefix" else 1
        if self.vector.dim() != want:
            raise ValueError(f"{self.positions} intervention needs a {want}-d vector, "
                             f"got {tuple(self.vector.shape)}")
        if not torch.isfinite(self.vector).all():
            raise ValueError(f"steering vector at layer {self.layer} has NaN or inf entries")


@dataclass(frozen=True)
class Steering:
    """The full intervention of one condition; `None` in its place means unsteered.

    `preamble`: text put between BOS and the prompt (prompting); scorers never see it.
    """

    interventions: tuple[Intervention, ...]
    preamble: str = ""

    def scaled(self, factor: float) -> Steering:
        """The same steering with every vector multiplied by `factor`."""
        return replace(
            self,
            interventions=tuple(replace(i, vector=i.vector * factor) for i in self.interventions),
        )

    def norm(self) -> float:
        return float(sum(i.vector.norm() ** 2 for i in self.interventions) ** 0.5)

    def position_norm(self) -> float:
        """Mean norm of what is added at one position: a `[d]` vector's norm, or the mean
        over an ActAdd vector's nonzero positions (its BOS position is zero by construction)."""
        norms = []
        for iv in self.interventions:
            rows = iv.vector.float().reshape(-1, iv.vector.shape[-1]).norm(dim=-1)
            norms += rows[rows > 0].tolist()
        return sum(norms) / len(norms) if norms else 0.0
