"""The ActAdd paper's perplexity-ratio picture (its Fig. 4): steered / unsteered perplexity of
texts binned by their share of topic words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.diagnostics.neutral_text import topic_pattern, topic_share
from harness.diagnostics.offtarget import TokenScorer, check_steering, token_rows
from harness.errors import UserError
from harness.stats import NAN, bootstrap_ci

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.steering.base import Steering


TOO_SHORT = "too short"  # the bin of texts with no token left to score


@dataclass(frozen=True)
class Bin:
    """Texts whose topic-word share lies in (`low`, `high`] (the "0" bin: exactly 0).

    `ratio`: steered / unsteered perplexity, exp(mean over texts of Δ log-perplexity), with a
    95 % CI over texts (the exp of the Δ's CI); below 1 the steering makes the texts likelier.
    """

    label: str
    low: float
    high: float
    n: int
    n_tokens: int
    delta_logppl: float
    ratio: float
    ratio_ci: tuple[float, float]


def default_bins() -> tuple[float, ...]:
    """Bin edges: 0, (0, 2 %], (2 %, 5 %], > 5 % topic words."""
    return (0.0, 0.02, 0.05)


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


def _bin_labels(edges: Sequence[float]) -> list[tuple[str, float, float, bool]]:
    """(label, low, high, low included) per bin: "0" when the edges start at 0, then
    (e_i, e_i+1], and > the last edge (a first edge above 0 makes a first bin [0, e_0])."""
    if list(edges) != sorted(set(edges)) or not edges or edges[0] < 0 or edges[-1] >= 1:
        raise UserError(f"bin edges must be increasing shares in [0, 1), got {list(edges)}")
    out = [("0", 0.0, 0.0, True)] if edges[0] == 0 else [(f"[0, {_pct(edges[0])}]", 0.0, edges[0], True)]
    for low, high in zip(edges, edges[1:], strict=False):
        out.append((f"({_pct(low)}, {_pct(high)}]", low, high, False))
    out.append((f"> {_pct(edges[-1])}", edges[-1], 1.0, False))
    return out


def prefix_length(steering: Steering) -> int:
    """How many positions (BOS included) the steering's prefix (ActAdd) vectors cover; 0 if none."""
    return max((iv.vector.shape[0] for iv in steering.interventions if iv.positions == "prefix"), default=0)


def topic_perplexity_ratio(lm: LoadedModel, steering: Steering, words: Sequence[str], texts: Sequence[str],
                           bins: Sequence[float] | None = None, *, mask_prefix: bool = True,
                           seed: int = 0, batch_size: int = 16) -> list[Bin]:
    """Steered/unsteered perplexity ratio of `texts`, binned by their share of topic `words`.

    As the ActAdd paper (Fig. 4), with `mask_prefix` the tokens at the positions an ActAdd
    vector is added to are not scored (labels masked, as in a causal-LM loss): the first scored
    token is the one right after the prefix, or the 2nd token of the text for every-position
    steerings. Texts left with no scored token are counted in a last bin, "too short", with no
    ratio. The steering runs on each text with the vector at its first positions, as in generation.
    """
    check_steering(steering)
    edges = default_bins() if bins is None else tuple(bins)
    labels = _bin_labels(edges)
    first = max(2, prefix_length(steering)) if mask_prefix else 2
    rows = token_rows(lm, texts)
    keep = [i for i, r in enumerate(rows) if len(r) > first]
    pattern = topic_pattern(words)
    shares = [topic_share(texts[i], pattern) for i in keep]
    _, dlp = TokenScorer(lm, [rows[i] for i in keep], [first] * len(keep), batch_size).per_text(steering)
    out = []
    for label, low, high, closed in labels:
        inside = [j for j, s in enumerate(shares) if (low <= s if closed else low < s) and s <= high]
        deltas = [float(dlp[j].mean()) for j in inside]
        mean = float(np.mean(deltas)) if deltas else NAN
        lo, hi = bootstrap_ci(deltas, seed=seed)
        out.append(Bin(label, low, high, len(inside), int(sum(len(dlp[j]) for j in inside)), mean,
                       math.exp(mean) if deltas else NAN, (math.exp(lo), math.exp(hi))))
    if too_short := len(texts) - len(keep):
        out.append(Bin(TOO_SHORT, 0.0, 1.0, too_short, 0, NAN, NAN, (NAN, NAN)))
    return out
