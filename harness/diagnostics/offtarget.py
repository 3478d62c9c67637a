"""Off-target cost of a steering on fixed neutral text, and strength in comparable units.

Everything here is forward-only on fixed text, so it is free of sampling noise: each text is
run once without and once with the steering, in the same left-padded batches (so a zero
steering gives exactly zero), and the two next-token distributions are compared position by
position. `iso_kl_scale` turns that into a common unit of strength: the coefficient at which a
steering disrupts neutral text by a given amount, so two methods can be compared at equal cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import UserError
from harness.stats import NAN, bootstrap_ci

if TYPE_CHECKING:
    import torch

    from harness.models import LoadedModel
    from harness.steering.base import Steering

QUANTILE = 95.0


# -- forward passes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Batch:
    index: tuple[int, ...]  # which texts
    rows: tuple[tuple[int, ...], ...]  # their token ids, BOS first
    first: tuple[int, ...]  # per row, the position of the first scored target token


class TokenScorer:
    """Per-token KL(unsteered ‖ steered) and log-prob change for fixed token rows.

    The batches are fixed at construction (texts sorted by length), so the steered and the
    unsteered logits of a row come from forward passes of identical shape. With `cache` the
    unsteered float32 logits of the scored positions are kept (rows × positions × vocab × 4
    bytes) for repeated calls (bisection).
    """

    def __init__(self, lm: LoadedModel, rows: Sequence[Sequence[int]], first: Sequence[int],
                 batch_size: int = 16, cache: bool = False):
        self.lm = lm
        order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
        self.batches = [
            _Batch(tuple(chunk), tuple(tuple(rows[i]) for i in chunk), tuple(first[i] for i in chunk))
            for chunk in (order[s : s + batch_size] for s in range(0, len(order), batch_size))
        ]
        self.n = len(rows)
        self.cache: list[torch.Tensor] | None = [] if cache else None

    def _logits(self, batch: _Batch, steering: Steering | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 logits of the scored positions ([T, V], rows in order) and their targets [T]."""
        import torch

        from harness.models.tokens import left_pad
        from harness.steering.session import RowLayout, steering_hooks

        lm = self.lm
        ids, mask = left_pad(batch.rows, lm.tokenizer.pad_token_id, lm.device)
        width = ids.shape[1]
        counts = [len(r) - f for r, f in zip(batch.rows, batch.first, strict=True)]
        keep = max(counts) + 1
        layout = RowLayout(tuple(width - len(r) for r in batch.rows), tuple(len(r) for r in batch.rows), True)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with steering_hooks(lm.model, [steering] * len(batch.rows), layout), torch.no_grad():
            logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                              logits_to_keep=keep, use_cache=False).logits[:, :-1].float()
        # column j of `logits` is position width-keep+j and predicts the token at width-keep+j+1
        cols = torch.arange(keep - 1, device=ids.device)
        scored = cols[None, :] >= (keep - 1 - torch.tensor(counts, device=ids.device))[:, None]
        return logits[scored], ids[:, width - keep + 1 :][scored]

    def _reference(self, b: int, batch: _Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cache is None:
            return self._logits(batch, None)
        if b == len(self.cache):
            self.cache.append(self._logits(batch, None))
        return self.cache[b]

    def per_text(self, steering: Steering) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per text (input order): per-token KL(unsteered ‖ steered) and log p_unsteered −
        log p_steered of the actual next token (float64)."""
        import torch

        kls: list[np.ndarray] = [np.zeros(0)] * self.n
        dlp: list[np.ndarray] = [np.zeros(0)] * self.n
        for b, batch in enumerate(self.batches):
            ref, targets = self._reference(b, batch)
            new, _ = self._logits(batch, steering)
            kl_parts, d_parts = [], []
            for s in range(0, ref.shape[0], 128):  # float64 log-softmax in chunks of positions
                p = torch.log_softmax(ref[s : s + 128].double(), dim=-1)
                q = torch.log_softmax(new[s : s + 128].double(), dim=-1)
                kl_parts.append((p.exp() * (p - q)).sum(-1).clamp_min(0.0))
                t = targets[s : s + 128, None]
                d_parts.append((p.gather(-1, t) - q.gather(-1, t)).squeeze(-1))
            kl, d = torch.cat(kl_parts).cpu().numpy(), torch.cat(d_parts).cpu().numpy()
            at = 0
            for i, row, first in zip(batch.index, batch.rows, batch.first, strict=True):
                n = len(row) - first
                kls[i], dlp[i] = kl[at : at + n], d[at : at + n]
                at += n
        return kls, dlp


def token_rows(lm: LoadedModel, texts: Sequence[str]) -> list[list[int]]:
    from harness.models.tokens import encode

    return [encode(lm.tokenizer, t, use_bos=True) for t in texts]


def check_steering(steering: Steering) -> None:
    if steering.preamble:
        raise UserError("off-target cost is measured on fixed text: a steering with a preamble "
                        "(prompting) has no defined cost here")


# -- statistics -------------------------------------------------------------------------------
def pooled_quantile(groups: Sequence[np.ndarray], q: float = QUANTILE) -> float:
    """The `q`-th percentile of all values of all groups pooled (inverted-CDF definition)."""
    values = np.concatenate([np.asarray(g, dtype=float) for g in groups])
    return float(np.percentile(values, q, method="inverted_cdf")) if values.size else NAN


def pooled_quantile_ci(groups: Sequence[np.ndarray], q: float = QUANTILE, confidence: float = 0.95,
                       seed: int = 0, n_resamples: int = 2000) -> tuple[float, float]:
    """Percentile-bootstrap CI of `pooled_quantile`, resampling whole groups (texts), seeded.

    A resample weights each group's values by how often the group was drawn, so the weighted
    inverted-CDF quantile equals the quantile of the pooled resampled values.
    """
    sizes = np.array([len(g) for g in groups])
    if len(groups) < 2 or sizes.sum() == 0:
        return NAN, NAN
    values = np.concatenate([np.asarray(g, dtype=float) for g in groups])
    owner = np.repeat(np.arange(len(groups)), sizes)
    order = np.argsort(values, kind="stable")
    values, owner = values[order], owner[order]
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=n_resamples)
    stats = np.empty(n_resamples)
    for s in range(0, n_resamples, 100):  # [100, values] weights at a time
        cum = np.cumsum(draws[s : s + 100][:, owner], axis=1)
        idx = (cum < cum[:, -1:] * (q / 100.0) - 1e-9).sum(axis=1)
        stats[s : s + 100] = values[np.minimum(idx, values.size - 1)]
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


# -- off-target cost --------------------------------------------------------------------------
@dataclass(frozen=True)
class OffTargetCost:
    """How much a steering disrupts fixed text it is not about (nats; CIs are 95 % over texts).

    `mean_kl`: mean over texts of each text's mean per-token KL(unsteered ‖ steered);
    `p95_kl`: the 95th percentile of per-token KL over all tokens of all texts;
    `delta_logppl`: mean over texts of (steered − unsteered) log-perplexity of the text itself.
    """

    n_texts: int
    n_tokens: int
    mean_kl: float
    mean_kl_ci: tuple[float, float]
    p95_kl: float
    p95_kl_ci: tuple[float, float]
    delta_logppl: float
    delta_logppl_ci: tuple[float, float]
    text_kl: tuple[float, ...]  # per text, its mean per-token KL
    text_delta_logppl: tuple[float, ...]


def offtarget_cost(lm: LoadedModel, steering: Steering, texts: Sequence[str], *, seed: int = 0,
                   batch_size: int = 16) -> OffTargetCost:
    """Per-token KL and Δ log-perplexity of `steering` on `texts` (each BOS first).

    Scored positions: every position after BOS that has a next token in the text, i.e. the
    predictions of the text's 2nd to last tokens; the prediction from BOS alone is excluded
    (no steering touches the BOS position). ActAdd prefix steerings are *not* masked here: the
    positions the vector is added to are scored too, since the point is disruption. (The ActAdd
    paper masks them for its perplexity ratio; `topic_perplexity_ratio` does.) Prefix vectors
    longer than a text are cut to it (`PrefixTruncatedWarning`).
    """
    return offtarget_costs(lm, [steering], texts, seed=seed, batch_size=batch_size)[0]


def offtarget_costs(lm: LoadedModel, steerings: Sequence[Steering], texts: Sequence[str], *, seed: int = 0,
                    batch_size: int = 16) -> list[OffTargetCost]:
    """`offtarget_cost` of several steerings (e.g. one vector at several coefficients) on the same
    texts; the unsteered pass runs once and its logits are kept meanwhile."""
    for steering in steerings:
        check_steering(steering)
    if not texts:
        raise UserError("off-target cost needs at least one text")
    rows = token_rows(lm, texts)
    short = [t for t, r in zip(texts, rows, strict=True) if len(r) < 3]
    if short:
        raise UserError(f"{len(short)} text(s) have fewer than 2 tokens to score, e.g. {short[0]!r}")
    scorer = TokenScorer(lm, rows, [2] * len(rows), batch_size, cache=len(steerings) > 1)
    return [summarise(*scorer.per_text(s), seed) for s in steerings]


def summarise(kls: Sequence[np.ndarray], dlp: Sequence[np.ndarray], seed: int = 0) -> OffTargetCost:
    """The `OffTargetCost` of per-text per-token KLs and log-prob drops (unsteered − steered)."""
    text_kl = [float(k.mean()) for k in kls]
    text_d = [float(d.mean()) for d in dlp]
    return OffTargetCost(
        n_texts=len(kls), n_tokens=int(sum(len(k) for k in kls)),
        mean_kl=float(np.mean(text_kl)), mean_kl_ci=bootstrap_ci(text_kl, seed=seed),
        p95_kl=pooled_quantile(kls), p95_kl_ci=pooled_quantile_ci(kls, seed=seed),
        delta_logppl=float(np.mean(text_d)), delta_logppl_ci=bootstrap_ci(text_d, seed=seed),
        text_kl=tuple(text_kl), text_delta_logppl=tuple(text_d),
    )


# -- strength in comparable units -------------------------------------------------------------
def iso_kl_scale(lm: LoadedModel, unit: Steering, texts: Sequence[str], target: float, *,
                 rel_tol: float = 0.05, start: float = 1.0, max_coeff: float = 4096.0,
                 max_steps: int = 40, batch_size: int = 16) -> float:
    """The coefficient c > 0 at which `unit.scaled(c)` has a 95th-percentile per-token KL of
    `target` nats on `texts` (within `rel_tol` of it), so methods can be compared at equal
    off-target cost.

    Bracketing from `start` (×4 up or ÷4 down until the target lies between two coefficients),
    then bisection in log c; each split point is the log–log interpolation of the bracket's
    ends, kept inside its middle 80 % (so it is at worst a shrunk bisection step; KL grows
    roughly as a power of c). Deterministic: same batches, same float arithmetic. The
    unsteered logits are computed once and kept. The p95 need not be monotone in c (an ActAdd
    prefix concentrates its cost on the first positions; on short texts the p95 of Love − Hate
    fell from c = 1 to 2): the result is then one crossing of the target, the bracket's. Raises
    `UserError` when `max_coeff` does not reach the target.
    """
    check_steering(unit)
    if not target > 0 or not math.isfinite(target):
        raise UserError(f"iso-KL target must be a positive number of nats, got {target}")
    rows = token_rows(lm, texts)
    scorer = TokenScorer(lm, rows, [2] * len(rows), batch_size, cache=True)

    def p95(c: float) -> float:
        return pooled_quantile(scorer.per_text(unit.scaled(c))[0])

    return _solve(p95, target, rel_tol, start, max_coeff, max_steps)


def _solve(f: Callable[[float], float], target: float, rel_tol: float, start: float,
           max_coeff: float, max_steps: int) -> float:
    """c with |f(c) − target| ≤ rel_tol·target, for f increasing from f(0) = 0 (see iso_kl_scale)."""
    seen: dict[float, float] = {}

    def value(c: float) -> float:
        if c not in seen:
            seen[c] = f(c)
        return seen[c]

    def close(c: float) -> bool:
        return abs(value(c) - target) <= rel_tol * target

    lo, hi = 0.0, start
    for hi in _bracket(start, max_coeff):
        if close(hi):
            return hi
        if value(hi) > target:
            break
        lo = hi
    else:
        raise UserError(f"the iso-KL target {target} nats is not reached: the 95th-percentile KL at "
                        f"coefficient {lo:g} is only {value(lo):.4g} nats")
    if lo == 0.0:  # came down from `start`: find a lower end below the target
        lo = hi / 4
        while value(lo) > target and not close(lo):
            hi, lo = lo, lo / 4
            if lo < 1e-9:
                raise UserError(f"the iso-KL target {target} nats is below what any coefficient > 1e-9 gives")
        if close(lo):
            return lo
    for _ in range(max_steps):
        f_lo, f_hi = value(lo), value(hi)
        mid = math.sqrt(lo * hi)
        if f_lo > 0 and f_hi > f_lo:  # log-log interpolation, kept inside the middle 80 %
            t = (math.log(target) - math.log(f_lo)) / (math.log(f_hi) - math.log(f_lo))
            mid = math.exp(math.log(lo) + min(0.9, max(0.1, t)) * (math.log(hi) - math.log(lo)))
        if close(mid):
            return mid
        lo, hi = (mid, hi) if value(mid) < target else (lo, mid)
    raise UserError(f"iso-KL bisection did not reach {target} ± {rel_tol:.0%} in {max_steps} steps "
                    f"(bracket {lo:g}–{hi:g}: the KL may jump there)")


def _bracket(start: float, max_coeff: float) -> Iterator[float]:
    c = start
    while c <= max_coeff:
        yield c
        c *= 4
    if c / 4 < max_coeff:
        yield max_coeff
