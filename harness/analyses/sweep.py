"""Sweeps: every (layer, coefficient) config of a task as a condition of one run, sharing
one set of unsteered samples and generated as rows of the same batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness import registry
from harness.errors import UserError
from harness.models import LoadedModel
from harness.models.tokens import encode_prompt
from harness.pipeline.plan import Condition, ConditionBuilder
from harness.runner import RunOptions, run
from harness.schema.results import RunResult
from harness.schema.spec import UNSTEERED
from harness.schema.steering import MethodSpec
from harness.steering.capture import capture_outputs
from harness.tasks import Task

CoeffUnit = Literal["raw", "norm", "kl"]
KL_TEXTS = 64  # neutral texts an iso-KL coefficient is calibrated on


@dataclass(frozen=True)
class SweepGrid:
    """Layers × coefficients; `unit="norm"` reads a coefficient as a multiple of the mean
    residual-stream norm at the layer (so one grid means the same on any model); `unit="kl"` as
    the strength at which the 95th-percentile per-token KL(unsteered ‖ steered) on neutral text
    equals |c| nats, the sign choosing the direction (iso-KL: methods compared at equal
    disruption)."""

    layers: tuple[int, ...]
    coeffs: tuple[float, ...]
    unit: CoeffUnit = "raw"

    def __post_init__(self) -> None:
        if not self.layers or not self.coeffs:
            raise UserError("a sweep needs at least one layer and one coefficient")
        for axis, values in (("layers", self.layers), ("coefficients", self.coeffs)):
            if len(set(values)) != len(values):
                raise UserError(f"the sweep's {axis} {list(values)} repeat a value: one config each")

    def describe(self) -> dict[str, object]:
        return {"layers": list(self.layers), "coeffs": list(self.coeffs), "coeff_unit": self.unit}


def condition_name(layer: int, coeff: float) -> str:
    """`L4 c+2`: the condition name of one config (coefficient in the grid's unit)."""
    return f"L{layer} c{coeff:+g}"


def residual_norm(lm: LoadedModel, task: Task, layer: int) -> float:
    """Mean norm of the residual stream after block `layer` over the task's prompts,
    every position but BOS (the attention sink, whose norm is far larger)."""
    use_bos = task.spec.generation.use_bos
    norms = []
    for prompt in task.prompts:
        ids = torch.tensor([encode_prompt(lm.tokenizer, prompt.text, use_bos, task.spec.generation.chat)],
                           device=lm.device)
        acts = capture_outputs(lm.model, [(layer, "resid")], input_ids=ids,
                               attention_mask=torch.ones_like(ids))[(layer, "resid")][0].float()
        body = acts[1:] if use_bos and acts.shape[0] > 1 else acts
        norms += body.norm(dim=-1).tolist()
    return sum(norms) / len(norms)


def sweep_conditions(grid: SweepGrid) -> ConditionBuilder:
    """The run's condition builder of a sweep: unsteered plus one condition per config, each
    built by its method exactly as a run with that layer and coefficient would build it."""

    def build(lm: LoadedModel, task: Task) -> dict[str, Condition]:
        spec = task.spec.steering
        method = registry.method(spec.method)
        settings = task.spec.generation
        out = {UNSTEERED: Condition(None, {}, None)}
        for layer in grid.layers:
            try:
                unit_spec = spec.at(layer, 1.0)
            except ValueError as err:
                raise UserError(f"task '{task.name}': {err}; such a steering cannot be swept") from None
            scale = 1.0
            if grid.unit == "kl":
                for coeff in grid.coeffs:
                    out[condition_name(layer, coeff)] = _iso_kl_condition(lm, task, unit_spec, layer, coeff)
                continue
            if grid.unit == "norm":
                size = method.build(lm, unit_spec, settings).position_norm()
                if size == 0:
                    raise UserError(f"task '{task.name}': the layer {layer} vector is zero; "
                                    "it cannot be scaled to a residual norm")
                scale = residual_norm(lm, task, layer) / size
            for coeff in grid.coeffs:
                config = spec.at(layer, coeff * scale)
                out[condition_name(layer, coeff)] = Condition(
                    method.build(lm, config, settings),
                    {**config.model_dump(mode="json"),
                     "sweep": {"layer": layer, "coeff": coeff, "coeff_unit": grid.unit,
                               "raw_coeff": coeff * scale}},
                    config.identity(),
                )
        return out

    return build


def _iso_kl_condition(lm: LoadedModel, task: Task, unit_spec: MethodSpec, layer: int,
                      target: float) -> Condition:
    """The config whose 95th-percentile per-token KL on neutral text is |target| nats."""
    from harness.diagnostics.neutral_text import neutral_texts
    from harness.diagnostics.offtarget import iso_kl_scale

    method = registry.method(unit_spec.method)
    sign = 1.0 if target >= 0 else -1.0
    raw = 0.0
    if target != 0:
        unit = method.build(lm, unit_spec, task.spec.generation).scaled(sign)
        raw = sign * iso_kl_scale(lm, unit, neutral_texts(KL_TEXTS), abs(target))
    config = unit_spec.at(layer, raw)
    sweep = {"layer": layer, "coeff": target, "coeff_unit": "kl", "kl_texts": KL_TEXTS, "raw_coeff": raw}
    return Condition(method.build(lm, config, task.spec.generation),
                     {**config.model_dump(mode="json"), "sweep": sweep}, config.identity())


def run_sweep(task: Task, out: Path, lm: LoadedModel, grid: SweepGrid,
              options: RunOptions | None = None) -> RunResult:
    """Run every config of `grid` on `task` as one run (one condition per config)."""
    return run(task.name, out, model=lm, options=options, tasks=[task],
               conditions=sweep_conditions(grid), extra={"sweep": grid.describe()})
