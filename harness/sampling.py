"""Per-row seeded sampling, so a row's tokens do not depend on which batch it ran in."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


class NonFiniteGuard(LogitsProcessor):
    """Record rows whose logits hold NaN or +inf and end them with EOS instead of crashing.

    Steering can push a model into overflow; those rows are flagged and excluded
    from statistics by the caller, never averaged in.
    """

    def __init__(self, eos_token_id: int):
        self.eos_token_id = eos_token_id
        self.bad_rows: set[int] = set()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = (torch.isnan(scores) | torch.isposinf(scores)).any(dim=-1)
        if not bad.any():
            return scores
        self.bad_rows.update(int(i) for i in bad.nonzero().flatten())
        scores = scores.clone()
        scores[bad] = float("-inf")
        scores[bad, self.eos_token_id] = 0.0
        return scores


class RowSeededSampler(LogitsProcessor):
    """Sample each row's next token from its own `torch.Generator`.

    `model.generate` samples a whole batch from one global RNG, so a row's
    draws would change with the batch it shares and the process it runs in.
    This processor warps the scores with transformers' own temperature / top-k /
    top-p warpers, draws one token per row from that row's generator, and
    returns scores where only the drawn token is finite, so greedy decoding
    in `generate` picks it.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_k: int, top_p: float):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        warpers: list[LogitsProcessor] = []
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warp = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.softmax(self.warp(input_ids, scores).float(), dim=-1).cpu()
        rows = zip(probs, self.generators, strict=True)
        picks = [int(torch.multinomial(p, 1, generator=g)) for p, g in rows]
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picks)), torch.tensor(picks, device=scores.device)] = 0.0
        return out
