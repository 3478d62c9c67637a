"""The ActAdd paper's perplexity-ratio picture: steered/unsteered perplexity by topic-word share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from harness.report.plots import STEERED_COLOURS, png, style_axes

if TYPE_CHECKING:
    from harness.offtarget import Bin


def perplexity_ratio_plot(bins: Sequence[Bin], title: str = "Perplexity ratio by topic-word share") -> bytes:
    """PNG: per keyword-frequency bin, the perplexity ratio steered/unsteered with its 95 % CI
    bar and the number of texts; the dashed line at 1 is "no change" (below = likelier)."""
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.axhline(1.0, color="#444444", linewidth=0.8, linestyle="--", zorder=0)
    colour = STEERED_COLOURS[0]
    for x, b in enumerate(bins):
        low, high = b.ratio_ci
        if math.isfinite(low) and math.isfinite(high):
            ax.plot([x, x], [low, high], color=colour, linewidth=2)
            for end in (low, high):
                ax.plot([x - 0.08, x + 0.08], [end, end], color=colour, linewidth=1.2)
        if math.isfinite(b.ratio):
            ax.scatter([x], [b.ratio], color=colour, s=40, zorder=3)
        ax.annotate(f"n={b.n}", (x, 0.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7, color="#666666")
    ax.set_xticks(range(len(bins)), [b.label for b in bins], fontsize=8)
    ax.set_xlim(-0.6, len(bins) - 0.4)
    ax.set_xlabel("share of the text's words that are topic words", fontsize=8)
    ax.set_ylabel("perplexity steered / unsteered (95% CI)", fontsize=8)
    ax.set_title(title, fontsize=10, fontweight="bold")
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    style_axes(ax)
    return png(fig)
