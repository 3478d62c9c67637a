"""Mean difference of activations over contrast pairs (CAA, Rimsky et al.; AxBench's DiffMean)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from harness.models import HookPoint, LoadedModel
from harness.steering.base import Intervention, Steering
from harness.steering.hooks import capture_outputs
from harness.tokens import encode


def text_activations(
    lm: LoadedModel,
    texts: Sequence[str],
    layer: int,
    point: HookPoint = "resid",
    token: Literal["mean", "last"] = "mean",
    use_bos: bool = True,
) -> torch.Tensor:
    """One `[d]` activation per text at (`layer`, `point`): the mean over its tokens (BOS
    excluded) or its last token; `[len(texts), d]` in float32. Texts run one at a time, so
    no padding touches the numbers."""
    rows = []
    for text in texts:
        ids = torch.tensor([encode(lm.tokenizer, text, use_bos)], device=lm.device)
        acts = capture_outputs(lm.model, [(layer, point)], input_ids=ids,
                               attention_mask=torch.ones_like(ids))[(layer, point)][0].float()
        body = acts[1:] if use_bos and acts.shape[0] > 1 else acts
        rows.append(body.mean(dim=0) if token == "mean" else acts[-1])
    return torch.stack(rows)


def build_mean_diff(
    lm: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    layer: int,
    coeff: float,
    *,
    token: Literal["mean", "last"] = "mean",
    point: HookPoint = "resid",
    use_bos: bool = True,
) -> Steering:
    """`coeff` × mean over pairs of (activation(positive) − activation(negative)), added at
    every position after BOS, generated tokens included."""
    if not pairs:
        raise ValueError("mean_diff needs at least one contrast pair")
    pos = text_activations(lm, [p for p, _ in pairs], layer, point, token, use_bos)
    neg = text_activations(lm, [n for _, n in pairs], layer, point, token, use_bos)
    vector = coeff * (pos - neg).mean(dim=0)
    return Steering((Intervention(layer, vector, point, "all"),))
