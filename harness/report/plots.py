"""Report figures as PNG bytes: score distributions, effect forest plot, fluency cost."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from harness.report.cells import MOVED, NOT_SIG, WRONG, verdict
from harness.schema.results import RunResult, SampleRecord

UNSTEERED_COLOUR = "#7a8699"
STEERED_COLOURS = ["#e4572e", "#2e86ab", "#8e6c8a", "#3bb273"]
VERDICT_COLOURS = {
    MOVED: "#2a9d3f",
    WRONG: "#d62828",
    NOT_SIG: "#9aa3ad",
    "↑": "#c98a00",
    "↓": "#c98a00",
}
DPI = 110


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def _empty(message: str) -> bytes:
    fig = Figure(figsize=(6, 1.2))
    fig.text(0.5, 0.5, message, ha="center", va="center", color="#666666")
    return png(fig)


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def style_axes(ax: Axes) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def _panel(ax: Axes, metric: str, by_condition: dict[str, list[float]], headline: bool) -> None:
    rng = np.random.default_rng(0)
    dropped = 0
    for i, raw in enumerate(by_condition.values()):
        values = _finite(raw)
        dropped += len(raw) - len(values)
        colour = UNSTEERED_COLOUR if i == 0 else STEERED_COLOURS[(i - 1) % len(STEERED_COLOURS)]
        if not values:
            continue
        ax.boxplot(
            [values],
            positions=[i],
            widths=0.5,
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": colour, "alpha": 0.25, "edgecolor": colour},
            medianprops={"color": colour},
            whiskerprops={"color": colour},
            capprops={"color": colour},
        )
        ax.scatter(
            i + rng.uniform(-0.18, 0.18, len(values)),
            values,
            s=9,
            color=colour,
            alpha=0.6,
            linewidths=0,
        )
        ax.scatter(
            [i],
            [float(np.mean(values))],
            marker="D",
            s=30,
            color="white",
            edgecolors="black",
            zorder=3,
        )
    ax.set_xticks(range(len(by_condition)), list(by_condition), fontsize=8)
    ax.set_xlim(-0.6, len(by_condition) - 0.4)
    title = (
        ("★ " if headline else "")
        + metric
        + (f"\n({dropped} non-finite dropped)" if dropped else "")
    )
    ax.set_title(title, fontsize=9, fontweight="bold" if headline else "normal")
    if not any(_finite(v) for v in by_condition.values()):
        ax.text(0.5, 0.5, "no finite scores", transform=ax.transAxes, ha="center", color="#888888")
    style_axes(ax)


def distribution_plot(
    samples: Sequence[SampleRecord], task: str, headline: str | None = None, fluency: str | None = None
) -> bytes:
    """Per-sample scores of every metric of `task`, one panel per metric, box + points by condition
    (the headline first, the fluency metric last).

    Flagged samples are left out, like in the statistics; the diamond is the mean.
    """
    rows = [s for s in samples if s.task == task and not s.flagged]
    conditions = list(dict.fromkeys(["unsteered", *(s.condition for s in rows)]))
    metrics = sorted(
        {m for s in rows for m in s.scores}, key=lambda m: (m != headline, m == fluency, m)
    )
    if not metrics:
        return _empty(f"{task}: no scored samples")
    cols = min(4, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(3.1 * cols, 2.7 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        by_condition = {
            c: [s.scores[metric] for s in rows if s.condition == c and metric in s.scores]
            for c in conditions
        }
        _panel(ax, metric, by_condition, metric == headline)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"{task}: per-sample scores by condition", fontsize=11, fontweight="bold")
    return png(fig)


def _forest(
    ax: Axes,
    labels: list[str],
    points: list[tuple[float, float, float]],
    colours: list[str],
    bold: list[bool],
) -> None:
    """One row per label: the point and its CI whisker, zero line, top row first."""
    y = np.arange(len(labels))[::-1]
    ax.axvline(0, color="#444444", linewidth=0.8, zorder=0)
    for yi, (diff, low, high), colour, strong in zip(y, points, colours, bold, strict=True):
        if math.isfinite(low) and math.isfinite(high):
            ax.plot([low, high], [yi, yi], color=colour, linewidth=2.2 if strong else 1.4)
        if math.isfinite(diff):
            ax.scatter(
                [diff],
                [yi],
                color=colour,
                s=60 if strong else 30,
                zorder=3,
                marker="D" if strong else "o",
            )
        else:
            ax.text(0, yi, " n/a", va="center", fontsize=8, color="#888888")
    ax.set_yticks(y, labels, fontsize=8)
    for tick, strong in zip(ax.get_yticklabels(), bold, strict=True):
        tick.set_fontweight("bold" if strong else "normal")
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.grid(axis="x", color="#e5e5e5", linewidth=0.6)
    style_axes(ax)


def effects_plot(run: RunResult) -> bytes:
    """Forest plot of every effect (diff with its 95% CI), one panel per metric in raw units.

    Metrics have different scales, so each gets its own axis; rows are task · condition,
    headline rows are bold diamonds, colours are the verdicts (green ✓, red ✗, grey –).
    """
    metrics = sorted(
        {e.metric for e in run.effects},
        key=lambda m: (not any(e.headline for e in run.effects if e.metric == m), m),
    )
    if not metrics:
        return _empty("no effects in this run")
    groups = [[e for e in run.effects if e.metric == m] for m in metrics]
    fig = Figure(figsize=(9, sum(0.32 * len(g) + 0.9 for g in groups) + 0.4), layout="constrained")
    axes = fig.subplots(
        len(metrics), 1, squeeze=False, height_ratios=[len(g) + 2 for g in groups]
    ).ravel()
    for ax, metric, group in zip(axes, metrics, groups, strict=True):
        _forest(
            ax,
            [f"{e.task} · {e.condition}" for e in group],
            [(e.estimate.point, e.estimate.ci_low, e.estimate.ci_high) for e in group],
            [VERDICT_COLOURS[verdict(e.expected_direction, e.estimate.point, e.significant).symbol]
             for e in group],
            [e.headline for e in group],
        )
        ax.set_title(metric, fontsize=9, loc="left", fontweight="bold")
    axes[-1].set_xlabel("diff = steered − unsteered (raw units of each metric), 95% CI", fontsize=8)
    fig.suptitle("Effects of steering (★ headline rows in bold)", fontsize=11, fontweight="bold")
    return png(fig)


def fluency_plot(run: RunResult) -> bytes:
    """Δ mean log-perplexity under the judge with its 95% CI, per task and condition."""
    records = run.fluency_cost
    if not records:
        return _empty("no fluency cost in this run (no perplexity scorer)")
    fig = Figure(figsize=(9, 0.35 * len(records) + 1.3), layout="constrained")
    ax = fig.subplots()
    colours = [
        "#d62828" if f.estimate.ci_low > 0 else "#2a9d3f" if f.estimate.ci_high < 0 else "#9aa3ad"
        for f in records
    ]
    _forest(
        ax,
        [f"{f.task} · {f.condition}" for f in records],
        [(f.estimate.point, f.estimate.ci_low, f.estimate.ci_high) for f in records],
        colours,
        [False] * len(records),
    )
    for yi, f in zip(np.arange(len(records))[::-1], records, strict=True):
        if math.isfinite(f.ppl_ratio):
            ax.annotate(
                f"ppl ×{f.ppl_ratio:.2f}",
                (1.0, yi),
                xycoords=("axes fraction", "data"),
                fontsize=8,
                va="center",
                ha="left",
                color="#444444",
            )
    ax.set_xlabel(
        "Δ mean log-perplexity (nats), steered − unsteered; > 0 = less fluent", fontsize=8
    )
    fig.suptitle("Fluency cost", fontsize=11, fontweight="bold")
    return png(fig)
