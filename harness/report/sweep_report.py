"""Sweep reports: dose-response and fluency curves, the effect-vs-fluency frontier, tables."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.analyses.sweep_analysis import ConfigResult, SweepSummary
from harness.report.cells import Cell, estimate, num, pval, text
from harness.report.html import CSS, figure_html, table_html
from harness.report.markdown import table_md
from harness.report.plots import STEERED_COLOURS, png, style_axes
from harness.report.terminal import print_wide
from harness.store import atomic_write_bytes, atomic_write_text

COLUMNS = ["config", "layer", "coeff", "diff [95% CI]", "p_adj", "Δ logppl [95% CI]", "frontier",
           "budget"]
PLOTS = {"dose": "sweep_dose.png", "fluency": "sweep_fluency.png", "pareto": "sweep_pareto.png"}


def _by_layer(s: SweepSummary) -> dict[int, list[ConfigResult]]:
    out: dict[int, list[ConfigResult]] = {}
    for c in sorted(s.configs, key=lambda c: (c.layer, c.coeff)):
        out.setdefault(c.layer, []).append(c)
    return out


def _layer_colour(i: int) -> str:
    """The i-th layer's colour, the same in every plot of a sweep."""
    return STEERED_COLOURS[i] if i < len(STEERED_COLOURS) else f"C{i}"


def _curves(s: SweepSummary, fluency: bool) -> bytes:
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for i, (layer, rows) in enumerate(_by_layer(s).items()):
        shown = [(c.coeff, c.fluency if fluency else c.effect) for c in rows]
        pts = [(x, e.point, e.ci_low, e.ci_high) for x, e in shown
               if e is not None and math.isfinite(e.point)]
        if not pts:
            continue
        x, y, lo, hi = zip(*pts, strict=True)
        colour = _layer_colour(i)
        ax.plot(x, y, marker="o", ms=4, color=colour, label=f"layer {layer}")
        ax.fill_between(x, [v if math.isfinite(v) else y[j] for j, v in enumerate(lo)],
                        [v if math.isfinite(v) else y[j] for j, v in enumerate(hi)], color=colour, alpha=0.15)
    ax.axhline(0, color="#999999", lw=0.8)
    if fluency and s.max_fluency_cost is not None:
        ax.axhline(s.max_fluency_cost, color="#d62828", lw=0.8, ls="--", label="fluency budget")
    ax.set_xlabel(f"coefficient ({s.coeff_unit})", fontsize=9)
    ax.set_ylabel("Δ log-perplexity" if fluency else f"Δ {s.metric}", fontsize=9)
    ax.set_title(("Fluency cost" if fluency else "Dose-response") + f": {s.task} (95% CI bands)",
                 fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    style_axes(ax)
    return png(fig)


def _pareto(s: SweepSummary) -> bytes:
    fig = Figure(figsize=(6.4, 3.8))
    ax = fig.subplots()
    sign = 1 if s.direction == "increase" else -1
    for i, (layer, rows) in enumerate(_by_layer(s).items()):
        pts = [(c.fluency.point, sign * c.effect.point) for c in rows if c.fluency is not None]
        if pts:
            ax.scatter(*zip(*pts, strict=True), s=18, color=_layer_colour(i), label=f"layer {layer}")
    front = sorted((c.fluency.point, sign * c.effect.point) for c in s.configs if c.on_frontier
                   and c.fluency is not None)
    if front:
        ax.plot(*zip(*front, strict=True), color="#333333", lw=1, label="frontier")
    best = next((c for c in s.configs if c.condition == s.best), None)
    if best is not None and best.fluency is not None:
        ax.scatter([best.fluency.point], [sign * best.effect.point], s=140, facecolors="none",
                   edgecolors="#d62828", linewidths=1.6, label=f"best: {best.condition}")
    if s.max_fluency_cost is not None:
        ax.axvline(s.max_fluency_cost, color="#d62828", lw=0.8, ls="--", label="fluency budget")
    ax.set_xlabel("fluency cost (Δ log-perplexity, lower is better)", fontsize=9)
    ax.set_ylabel(f"effect in the expected direction ({s.metric})", fontsize=9)
    ax.set_title(f"Effect vs fluency cost: {s.task}", fontsize=10)
    ax.legend(fontsize=7, frameon=False)
    style_axes(ax)
    return png(fig)


def sweep_plots(s: SweepSummary) -> dict[str, bytes]:
    return {"dose": _curves(s, False), "fluency": _curves(s, True), "pareto": _pareto(s)}


def sweep_rows(s: SweepSummary) -> list[list[Cell]]:
    return [[c.condition, str(c.layer), f"{c.coeff:+g}", estimate(c.effect),
             pval(c.p_adjusted) + (" ✓" if c.significant else ""), estimate(c.fluency),
             "◆" if c.on_frontier else "",
             "★ best" if c.condition == s.best else ("" if c.within_budget else "over")]
            for c in sorted(s.configs, key=lambda c: (c.layer, c.coeff))]


def summary_lines(s: SweepSummary) -> list[str]:
    """The sweep's conclusions in sentences: best config, honest selection, steerability."""
    budget = f"Δ logppl ≤ {s.max_fluency_cost:g}" if s.max_fluency_cost is not None else "no fluency budget"
    best = next((c for c in s.configs if c.condition == s.best), None)
    lines = [f"{s.task}: {s.metric} ({s.direction}); coefficients in {s.coeff_unit} units; {budget}."]
    if best:
        lines.append(f"Best config within the budget: {best.condition}, diff "
                     f"{text(estimate(best.effect))}, fluency Δ "
                     f"{num(best.fluency.point if best.fluency else None, True)} "
                     "(chosen and measured on the same prompts: optimistic).")
    sel = s.selection
    if sel and sel.estimate:
        lines.append(f"Held-out selection: {sel.condition} chosen on {sel.selected_on} prompts "
                     f"(diff {num(sel.selection_diff, True)}); on the other {sel.reported_on}: "
                     f"{text(estimate(sel.estimate))}, p {pval(sel.estimate.p_value)}.")
    for st in s.steerability:
        lines.append(f"Layer {st.layer}: slope {num(st.slope, True)} ± {num(st.slope_stderr)} per unit "
                     f"coefficient; {st.anti_steerable:.0%} of {st.n_prompts} prompts anti-steerable.")
    return lines


def print_sweep(s: SweepSummary, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"Sweep: {s.task} · {s.metric}", title_justify="left", title_style="bold")
    for col in COLUMNS:
        table.add_column(col, no_wrap=True)
    for row in sweep_rows(s):
        table.add_row(*(text(c) for c in row), style="bold" if row[0] == s.best else "")
    print_wide(console, table)
    for line in summary_lines(s):
        console.print(Text(line), soft_wrap=True)


def render_sweep_markdown(s: SweepSummary) -> str:
    lines = [f"# Sweep: {s.task}", "", *[f"- {line}" for line in summary_lines(s)], ""]
    for key, title in (("dose", "Dose-response"), ("fluency", "Fluency cost"), ("pareto", "Frontier")):
        lines += [f"![{title}]({PLOTS[key]})", ""]
    lines += table_md(COLUMNS, sweep_rows(s))
    lines.append("◆ = on the effect-vs-fluency Pareto frontier; CIs: 95% bootstrap paired by prompt; "
                 "p Holm-adjusted over all configs and metrics.")
    return "\n".join(lines) + "\n"


def render_sweep_html(s: SweepSummary, plots: dict[str, bytes]) -> str:
    items = "".join(f"<li>{escape(line)}</li>" for line in summary_lines(s))
    figures = "".join(figure_html(plots[key], key, caption) for key, caption in (
        ("dose", "Headline effect vs coefficient, one line per layer."),
        ("fluency", "Fluency cost vs coefficient."),
        ("pareto", "Effect vs fluency cost; the line is the frontier, the circle the best config.")))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Sweep: '
            f"{escape(s.task)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>Sweep: {escape(s.task)}</h1><ul>{items}</ul>{figures}"
            f"{table_html(COLUMNS, sweep_rows(s))}</main></body></html>\n")


def write_sweep_reports(s: SweepSummary, out: Path) -> None:
    """sweep.json, sweep.md (with PNGs beside it) and a self-contained sweep.html."""
    plots = sweep_plots(s)
    for key, name in PLOTS.items():
        atomic_write_bytes(out / name, plots[key])
    atomic_write_text(out / "sweep.json", s.model_dump_json(indent=2))
    atomic_write_text(out / "sweep.md", render_sweep_markdown(s))
    atomic_write_text(out / "sweep.html", render_sweep_html(s, plots))
