"""The ActAdd paper's perplexity-ratio picture: steered/unsteered perplexity by topic-word share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from harness.report.plots import STEERED_COLOURS, png, style_axes

if TYPE_CHECKING:
    from harness.diagnostics.topic_ratio import Bin
    from harness.schema.results import TopicRatioRecord


def _bin(b: Bin | TopicRatioRecord) -> tuple[str, int, float, float, float]:
    """(label, n, ratio, CI low, CI high) of an `offtarget.Bin` or a run's `TopicRatioRecord`."""
    if hasattr(b, "ratio_ci"):
        return b.label, b.n, b.ratio, b.ratio_ci[0], b.ratio_ci[1]
    return b.bin, b.n, b.ratio, b.ratio_ci_low, b.ratio_ci_high


def perplexity_ratio_plot(bins: Sequence[Bin | TopicRatioRecord],
                          title: str = "Perplexity ratio by topic-word share") -> bytes:
    """PNG: per keyword-frequency bin, the perplexity ratio steered/unsteered with its 95 % CI
    bar and the number of texts; the dashed line at 1 is "no change" (below = likelier).
    Takes `offtarget.Bin`s or the `TopicRatioRecord`s of a run."""
    fig = Figure(figsize=(6, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.axhline(1.0, color="#444444", linewidth=0.8, linestyle="--", zorder=0)
    colour = STEERED_COLOURS[0]
    rows = [_bin(b) for b in bins]
    for x, (_, n, ratio, low, high) in enumerate(rows):
        if math.isfinite(low) and math.isfinite(high):
            ax.plot([x, x], [low, high], color=colour, linewidth=2)
            for end in (low, high):
                ax.plot([x - 0.08, x + 0.08], [end, end], color=colour, linewidth=1.2)
        if math.isfinite(ratio):
            ax.scatter([x], [ratio], color=colour, s=40, zorder=3)
        ax.annotate(f"n={n}", (x, 0.0), xycoords=("data", "axes fraction"), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=7, color="#666666")
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("share of the text's words that are topic words", fontsize=8)
    ax.set_ylabel("perplexity steered / unsteered (95% CI)", fontsize=8)
    ax.set_title(title, fontsize=10, fontweight="bold")
    ax.grid(axis="y", color="#e5e5e5", linewidth=0.6)
    style_axes(ax)
    return png(fig)
