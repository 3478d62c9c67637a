"""What every steering method produces: vectors, where they act, how, and text put before the
prompt (the prompting baseline)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import torch

from harness.schema.steering import HookPoint

Positions = Literal["prefix", "all", "prompt", "generated"]
Operator = Literal["add", "clamp", "ablate"]
PREAMBLE_SITE = "prompt.instruction"
"""The ledger site of a preamble: the instruction tokens put before the prompt (prompting)."""


@dataclass(frozen=True)
class Intervention:
    """One vector acting on the output of one module (layer L = the output of decoder block L).

    `positions`:
    - "prefix": `vector` is `[n, d]`, added to the first `n` positions of each prompt (ActAdd);
      with the KV cache it acts once, on the prompt's forward pass.
    - "all": `vector` is `[d]`, acting on every position of the prompt and of the generated
      tokens; "prompt" / "generated": only on those of the prompt / of the generated tokens.
    Every-position vectors skip the BOS position (the attention sink) unless `steer_bos`.

    `operator`: "add" adds `vector`; "clamp" sets the projection of the hidden state on the
    unit direction of `vector` to `value` (lm-evaluation-harness's clamp); "ablate" removes
    that projection (the refusal-direction method). Clamp and ablate need a nonzero direction.
    """

    layer: int
    vector: torch.Tensor
    point: HookPoint = "resid"
    positions: Positions = "all"
    operator: Operator = "add"
    value: float = 0.0
    steer_bos: bool = False

    def __post_init__(self) -> None:
        want = 2 if self.positions == "prefix" else 1
        if self.vector.dim() != want:
            raise ValueError(f"{self.positions} intervention needs a {want}-d vector, "
                             f"got {tuple(self.vector.shape)}")
        if self.positions == "prefix" and self.operator != "add":
            raise ValueError("a prefix intervention can only add")
        if not torch.isfinite(self.vector).all():
            raise ValueError(f"steering vector at layer {self.layer} has NaN or inf entries")
        if self.operator != "add" and not bool(self.vector.any()):
            raise ValueError(f"the {self.operator} vector at layer {self.layer} is zero: it has no direction")

    @property
    def site(self) -> str:
        """`L5.resid`: the layer and module this intervention acts on."""
        return f"L{self.layer}.{self.point}"

    def is_null(self) -> bool:
        """Whether it changes nothing at all (a zero vector added)."""
        return self.operator == "add" and not bool(self.vector.any())

    def negated(self) -> Intervention:
        """The opposite intervention: the vector negated (clamp: the value negated). An ablation,
        or a clamp to 0, is its own opposite (±v span one direction): ValueError."""
        if self.operator == "ablate" or (self.operator == "clamp" and self.value == 0):
            what = "an ablation" if self.operator == "ablate" else "a clamp to 0"
            raise ValueError(f"{self.site}: {what} removes the projection on the direction of v and of "
                             "-v alike, so its negation is the same steering")
        if self.operator == "clamp":
            return replace(self, value=-self.value)
        return replace(self, vector=-self.vector)

    def randomized(self, generator: torch.Generator) -> Intervention:
        """The same intervention along a random direction, each row of the vector keeping its norm."""
        rows = self.vector.float().reshape(-1, self.vector.shape[-1])
        noise = torch.randn(rows.shape, generator=generator)
        noise = noise / noise.norm(dim=-1, keepdim=True) * rows.norm(dim=-1, keepdim=True).cpu()
        return replace(self, vector=noise.reshape(self.vector.shape).to(self.vector.device))

    def scaled(self, factor: float) -> Intervention:
        """The same intervention `factor` times as strong (clamp: the clamped value). An ablation
        has no strength to scale: ValueError."""
        if self.operator == "ablate":
            raise ValueError(f"{self.site}: an ablation has no strength, so it cannot be scaled")
        if self.operator == "clamp":
            return replace(self, value=self.value * factor)
        return replace(self, vector=self.vector * factor)


def placed(layer: int, vector: torch.Tensor, coeff: float | None, point: HookPoint = "resid",
           positions: Positions = "all", operator: Operator = "add", steer_bos: bool = False) -> Intervention:
    """The intervention of a `[d]` vector at `layer` as a `VectorSpec` describes it: `coeff` ×
    vector added, or the projection on its direction clamped to `coeff`, or ablated (no `coeff`).

    ValueError for a zero vector (no direction, whatever the coefficient), a coefficient the
    operator does not use (ablate), or a missing one (add, clamp)."""
    if not bool(vector.any()):
        raise ValueError(f"the vector at layer {layer} is zero: it has no direction to steer along")
    if operator == "ablate":
        if coeff is not None:
            raise ValueError(f"operator ablate uses no coefficient (coeff={coeff:g} would be ignored)")
        return Intervention(layer, vector, point, positions, operator, steer_bos=steer_bos)
    if coeff is None:
        raise ValueError(f"operator {operator} needs a coefficient")
    if operator == "add":
        return Intervention(layer, coeff * vector, point, positions, "add", steer_bos=steer_bos)
    return Intervention(layer, vector, point, positions, operator, value=coeff, steer_bos=steer_bos)


@dataclass(frozen=True)
class Steering:
    """The full intervention of one condition; `None` in its place means unsteered.

    `preamble`: text put between BOS and the prompt (prompting); scorers never see it. A steering
    with neither interventions nor a preamble is refused: it would be unsteered under another name.
    """

    interventions: tuple[Intervention, ...]
    preamble: str = ""

    def __post_init__(self) -> None:
        if not self.interventions and not self.preamble:
            raise ValueError("a steering with no interventions and no preamble changes nothing "
                             "(None is unsteered)")

    def scaled(self, factor: float) -> Steering:
        """The same steering with every intervention `factor` times as strong."""
        return replace(self, interventions=tuple(i.scaled(factor) for i in self.interventions))

    def negated(self) -> Steering:
        """The opposite steering: every vector negated. ValueError when it has a preamble or an
        intervention with no opposite (an ablation): the "negation" would be the same steering."""
        if self.preamble:
            raise ValueError("a prompting instruction has no opposite steering")
        return replace(self, interventions=tuple(i.negated() for i in self.interventions))

    def randomized(self, seed: int) -> Steering:
        """A matched random control: every vector along a seeded random direction with the same
        norm per layer and per row. ValueError when it has a preamble (no vector to randomize)."""
        if self.preamble:
            raise ValueError("a prompting instruction has no vector to randomize")
        generator = torch.Generator().manual_seed(seed)
        return replace(self, interventions=tuple(i.randomized(generator) for i in self.interventions))

    def is_null(self) -> bool:
        """Whether it changes nothing: no preamble, and every vector added is zero."""
        return not self.preamble and all(i.is_null() for i in self.interventions)

    def sites(self) -> list[str]:
        """Every site this steering must change (its non-null interventions' and, with a preamble,
        `PREAMBLE_SITE`), in order: the applied-check demands positions at each one."""
        sites = [i.site for i in self.interventions if not i.is_null()]
        return list(dict.fromkeys(sites + ([PREAMBLE_SITE] if self.preamble else [])))

    def position_norm(self) -> float:
        """Mean norm of what is added at one position: a `[d]` vector's norm, or the mean
        over an ActAdd vector's nonzero positions (its BOS position is zero by construction); a
        clamp's |value| (the projection it sets, whatever the norm of its direction vector). An
        ablation has no strength: ValueError."""
        norms = []
        for iv in self.interventions:
            if iv.operator == "ablate":
                raise ValueError(f"{iv.site}: an ablation has no strength to measure")
            if iv.operator == "clamp":
                norms.append(abs(iv.value))
                continue
            rows = iv.vector.float().reshape(-1, iv.vector.shape[-1]).norm(dim=-1)
            norms += rows[rows > 0].tolist()
        return sum(norms) / len(norms) if norms else 0.0
