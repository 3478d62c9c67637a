"""Log-probabilities of continuation tokens given their prefixes, in batched forward passes."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from harness.models.tokens import left_pad
from harness.steering.session import RowLayout, steering_hooks

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.steering.base import Steering


def continuation_logprobs(
    lm: LoadedModel,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    steerings: Sequence[Steering | None] | None = None,
    batch_size: int = 32,
    *,
    has_bos: bool = True,
) -> list[list[float]]:
    """log P(token | everything before it) for every continuation token, row by row.

    Rows are left-padded so all continuations end at the last position, with position ids
    counted from each row's first real token (so a row scores the same alone or in any batch,
    absolute-position models included), and only the last `max continuation length + 1`
    positions' logits are computed. `steerings` applies each row's steering during its forward
    pass (fact probes); the prefix is the row's prompt, the continuation its generated part.
    """
    out: list[list[float]] = [[] for _ in prefixes]
    order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]) + len(continuations[i]))
    for start in range(0, len(order), batch_size):
        idx = [i for i in order[start : start + batch_size] if continuations[i]]
        if not idx:
            continue
        rows = [list(prefixes[i]) + list(continuations[i]) for i in idx]
        ids, mask = left_pad(rows, lm.tokenizer.pad_token_id, lm.device)
        width = ids.shape[1]
        keep = max(len(continuations[i]) for i in idx) + 1
        steer = [steerings[i] for i in idx] if steerings else [None] * len(idx)
        layout = RowLayout(tuple(width - len(r) for r in rows), tuple(len(prefixes[i]) for i in idx), has_bos)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        hooks = steering_hooks(lm.model, steer, layout) if any(steer) else contextlib.nullcontext()
        with hooks, torch.no_grad():
            logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                              logits_to_keep=keep, use_cache=False).logits
        scores = logits[:, :-1].float()
        targets = ids[:, width - keep + 1 :]
        # log-softmax of the picked tokens only: no second (rows x positions x vocab) tensor
        picked = scores.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(scores, dim=-1)
        for row, i in enumerate(idx):
            n = len(continuations[i])
            out[i] = picked[row, keep - 1 - n :].tolist()
    return out
