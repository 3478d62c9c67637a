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
