"""Forward hooks that add each row's own steering to a left-padded batch."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from harness.models import HookPoint, hook_module
from harness.steering.base import Steering


class PrefixTruncatedWarning(UserWarning):
    """An ActAdd vector is longer than the prompt it steers; only the overlap is added."""


@dataclass
class _Deltas:
    prefix: torch.Tensor | None  # [B, S, d], added once, on the prompt's forward pass
    every: torch.Tensor | None  # [B, 1, d], added on every forward pass
    every_mask: torch.Tensor | None = None  # [B, S, 1]: prompt positions `every` goes to
    prompt_pass_done: bool = False

    def __call__(self, module: nn.Module, args: object, output: object) -> object:
        hidden = output[0] if isinstance(output, tuple) else output
        assert isinstance(hidden, torch.Tensor)
        prompt_pass = not self.prompt_pass_done
        self.prompt_pass_done = True
        if prompt_pass:
            expected = (self.prefix if self.prefix is not None else self.every_mask)
            if expected is not None and hidden.shape[:2] != expected.shape[:2]:
                raise RuntimeError(
                    f"steering expected the prompt pass {tuple(expected.shape[:2])}, "
                    f"got hidden states {tuple(hidden.shape[:2])}"
                )
        device = hidden.device  # a device_map model's layers sit on different devices
        if self.prefix is not None and prompt_pass:
            hidden = hidden + self.prefix.to(device)
        if self.every is not None:
            every = self.every.to(device)
            hidden = hidden + (every * self.every_mask.to(device) if prompt_pass else every)
        if isinstance(output, tuple):
            return (hidden, *output[1:])
        return hidden


def build_deltas(
    rows: Sequence[Steering | None],
    attention_mask: torch.Tensor,
    hidden_size: int,
    dtype: torch.dtype,
) -> dict[tuple[int, HookPoint], _Deltas]:
    """Per (layer, hook point): the tensors that add every row's steering to the batch.

    Prefix vectors land on each row's own first real positions (after its left
    padding); every-position vectors skip padding and each row's first real position.
    A prefix vector longer than its row's prompt is cut to the prompt and a
    `PrefixTruncatedWarning` says so; nothing is skipped silently.
    """
    batch, seq = attention_mask.shape
    device = attention_mask.device
    starts = (attention_mask == 0).sum(dim=1).tolist()
    out: dict[tuple[int, HookPoint], _Deltas] = {}
    truncated: list[tuple[int, int]] = []
    for row, steering in enumerate(rows):
        if steering is None:
            continue
        for iv in steering.interventions:
            key = (iv.layer, iv.point)
            deltas = out.setdefault(key, _Deltas(None, None))
            vector = iv.vector.to(device=device, dtype=dtype)
            if iv.positions == "prefix":
                if deltas.prefix is None:
                    deltas.prefix = torch.zeros(batch, seq, hidden_size, device=device, dtype=dtype)
                length = min(vector.shape[0], seq - starts[row])
                if length < vector.shape[0]:
                    truncated.append((vector.shape[0], seq - starts[row]))
                deltas.prefix[row, starts[row] : starts[row] + length] += vector[:length]
            else:
                if deltas.every is None:
                    deltas.every = torch.zeros(batch, 1, hidden_size, device=device, dtype=dtype)
                    deltas.every_mask = _every_mask(attention_mask, starts, dtype)
                deltas.every[row, 0] += vector
    if truncated:
        n, have = truncated[0]
        warnings.warn(
            f"{len(truncated)} row(s): the ActAdd vector covers {n} positions but the prompt has "
            f"only {have} tokens; the first {have} positions of the vector were added",
            PrefixTruncatedWarning,
            stacklevel=3,
        )
    return out


def _every_mask(attention_mask: torch.Tensor, starts: list[int], dtype: torch.dtype) -> torch.Tensor:
    """1 at a prompt's real positions except its first (BOS), 0 elsewhere; `[B, S, 1]`."""
    mask = attention_mask.to(dtype).clone()
    rows = torch.arange(mask.shape[0], device=mask.device)
    mask[rows, torch.tensor(starts, device=mask.device).clamp(max=mask.shape[1] - 1)] = 0
    return mask.unsqueeze(-1)


@contextmanager
def steering_hooks(
    model: nn.Module, deltas: dict[tuple[int, HookPoint], _Deltas]
) -> Iterator[None]:
    """Register the hooks for one forward/generate call; always removed, also on error."""
    handles = []
    try:
        for (layer, point), delta in deltas.items():
            handles.append(hook_module(model, layer, point).register_forward_hook(delta))
        yield
    finally:
        for handle in handles:
            handle.remove()


def capture_outputs(
    model: nn.Module, sites: Sequence[tuple[int, HookPoint]], **inputs: torch.Tensor
) -> dict[tuple[int, HookPoint], torch.Tensor]:
    """Run one forward pass and return the output of each requested module."""
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
