"""Logits processors of the engine: a guard against non-finite logits, a repetition penalty that
sees only the user's prompt and the completion, and per-row seeded sampling on the device.

Each row's random number at each step comes from a counter-based hash of (row seed, step), so a
row's tokens do not depend on the batch or process it ran in, and nothing is copied to the host.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor

NUCLEUS_CANDIDATES = (64, 1024)  # top-p ranks this many top logits, more only if the nucleus is wider
_M32 = 0xFFFFFFFF


class NonFiniteGuard(LogitsProcessor):
    """Record rows whose logits hold NaN or +inf and end them with EOS instead of crashing.

    Steering can push a model into overflow; those rows are flagged and excluded from
    statistics by the caller, never averaged in. No host synchronisation: `bad_rows` is read
    once, after generation.
    """

    def __init__(self, eos_token_id: int, batch: int, device: torch.device | str):
        self.eos_token_id = eos_token_id
        self.bad = torch.zeros(batch, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = (torch.isnan(scores) | torch.isposinf(scores)).any(dim=-1)
        self.bad |= bad
        eos_only = torch.full_like(scores[:1], float("-inf"))
        eos_only[0, self.eos_token_id] = 0.0
        return torch.where(bad[:, None], eos_only, scores)

    @property
    def bad_rows(self) -> set[int]:
        return set(self.bad.nonzero().flatten().tolist())


class PromptRepetitionPenalty(LogitsProcessor):
    """The CTRL repetition penalty (as transformers' `repetition_penalty`) over the tokens of each
    row's own prompt and completion only: never padding, and never a method's preamble (the
    prompting baseline's instruction), so every method is penalised on the same tokens."""

    def __init__(self, penalty: float, prompt_ids: Sequence[Sequence[int]], width: int, vocab: int,
                 device: torch.device | str):
        self.penalty = penalty
        self.width = width
        self.seen = torch.zeros(len(prompt_ids), vocab, dtype=torch.bool, device=device)
        rows = torch.tensor([b for b, ids in enumerate(prompt_ids) for _ in ids], dtype=torch.long)
        cols = torch.tensor([t for ids in prompt_ids for t in ids], dtype=torch.long)
        self.seen[rows.to(device), cols.to(device)] = True

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] > self.width:  # the token generated at the previous step
            self.seen.scatter_(1, input_ids[:, -1:], True)
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(self.seen[:, : scores.shape[1]], penalised, scores)


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for x in [0, 2**32), without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash with good avalanche (Wellons' lowbias32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def row_uniforms(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform number in (0, 1) per row, a function of (row seed, step) only (float64)."""
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    h = _mix32(lo ^ _mix32(hi ^ _mix32(torch.full_like(seeds, step & _M32) ^ 0x9E3779B9)))
    return (h.double() + 0.5) / 2.0**32


class RowSeededSampler(LogitsProcessor):
    """Sample each row's next token by inverting the CDF of its warped distribution at its own
    uniform number (`row_uniforms`), on the device.

    Temperature, top-k and top-p mean what they mean in transformers' warpers; top-p ranks only
    the top 64 logits when the nucleus lies inside them (checked), else the top 1024, else the
    whole vocabulary. Returns scores where only the drawn token is finite, so
    greedy decoding in `generate` picks it.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_k: int, top_p: float, width: int,
                 device: torch.device | str):
        self.seeds = torch.tensor([int(s) & ((1 << 62) - 1) for s in seeds], dtype=torch.long, device=device)
        self.temperature, self.top_k, self.top_p, self.width = temperature, top_k, top_p, width

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        u = row_uniforms(self.seeds, input_ids.shape[1] - self.width)
        picks = sample_tokens(scores, u, self.temperature, self.top_k, self.top_p)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, picks[:, None], 0.0)


def sample_tokens(scores: torch.Tensor, u: torch.Tensor, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> torch.Tensor:
    """The token of each row at uniform `u` under softmax(warped scores): exact inverse-CDF sampling."""
    logits = scores.float() if temperature == 1.0 else scores.float() / temperature
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:  # as transformers: every token tied with the k-th logit stays
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p >= 1.0:
        return _invert(torch.softmax(logits, dim=-1, dtype=torch.float64), u)
    log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
    for k in (*NUCLEUS_CANDIDATES, vocab):  # one scalar check per size; generate syncs every step anyway
        values, order = torch.topk(logits, k, dim=-1) if k < vocab else torch.sort(logits, dim=-1,
                                                                                   descending=True)
        if k >= vocab or bool((torch.exp(values - log_z).sum(-1) >= top_p).all()):
            break
    probs = torch.exp((values - log_z).double())
    before = torch.cumsum(probs, dim=-1) - probs  # descending order: keep while the mass before < top_p
    probs = torch.where(before < top_p, probs, 0.0)
    return order.gather(1, _invert(probs, u)[:, None]).squeeze(1)


def _invert(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the index where the cumulative probability first exceeds `u` times the total."""
    cum = torch.cumsum(probs, dim=-1)
    target = u.to(cum.dtype)[:, None] * cum[:, -1:]
    return (cum <= target).sum(-1).clamp(max=probs.shape[-1] - 1)
