"""Read activations: the output of chosen modules on one forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from harness.models import hook_module
from harness.schema.steering import HookPoint


def capture_outputs(
    model: nn.Module, sites: Sequence[tuple[int, HookPoint]], **inputs: torch.Tensor
) -> dict[tuple[int, HookPoint], torch.Tensor]:
    """Run one forward pass (no KV cache) and return the output of each requested module."""
    captured: dict[tuple[int, HookPoint], torch.Tensor] = {}

    def recorder(site: tuple[int, HookPoint]):  # noqa: ANN202
        def hook(module: nn.Module, args: object, output: object) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            captured[site] = hidden.detach()

        return hook

    handles = [hook_module(model, layer, point).register_forward_hook(recorder((layer, point)))
               for layer, point in set(sites)]
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def residual_norms(model: nn.Module, rows: Sequence[Sequence[int]], skip_first: bool = True) -> list[float]:
    """Mean norm of the residual stream after every decoder block over the token rows (each run
    alone), every position but the first (BOS, the attention sink, whose norm is far larger)."""
    totals: list[float] = []
    count = 0
    for ids in rows:
        tensor = torch.tensor([list(ids)], device=next(model.parameters()).device)
        with torch.no_grad():
            hidden = model(input_ids=tensor, output_hidden_states=True, use_cache=False).hidden_states[1:]
        body = [h[0, 1:] if skip_first and h.shape[1] > 1 else h[0] for h in hidden]
        norms = [float(b.float().norm(dim=-1).sum()) for b in body]
        totals = [a + b for a, b in zip(totals, norms, strict=True)] if totals else norms
        count += body[0].shape[0]
    return [t / count for t in totals]
