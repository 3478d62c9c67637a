"""Results as text tables: the cells every report shares, and the rich tables of the terminal."""

from __future__ import annotations

import io
import math
from collections import defaultdict

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from harness.report.schema import EffectRecord, FluencyRecord, RunResult

MOVED, WRONG, NOT_SIG = "✓", "✗", "–"
LEGEND = (
    f"↑/↓ expected direction · {MOVED} moved as expected, significant · {WRONG} significant, "
    f"wrong direction · {NOT_SIG} not significant (Holm-adjusted p < 0.05) · "
    "CIs: 95% bootstrap, paired by prompt"
)
HEADLINE_COLUMNS = [
    "task",
    "condition",
    "metric",
    "expected",
    "unsteered → steered",
    "diff [95% CI]",
    "Hedges g",
    "p_adj",
    "verdict",
    "Δ logppl [95% CI]",
    "ppl ratio",
]
EFFECT_COLUMNS = [
    "task",
    "condition",
    "metric",
    "expected",
    "n",
    "unsteered → steered",
    "diff [95% CI]",
    "Hedges g",
    "p_adj",
    "verdict",
]
FLUENCY_COLUMNS = [
    "task",
    "condition",
    "judge",
    "n",
    "logppl unsteered → steered",
    "Δ logppl [95% CI]",
    "p",
    "ppl ratio",
]
_WRAP = {"task", "condition", "metric", "judge"}  # the other columns are short numbers
_STYLES = {MOVED: "bold green", WRONG: "bold red", NOT_SIG: "dim", "↑": "yellow", "↓": "yellow"}


def num(x: float | None, signed: bool = False) -> str:
    """A number in 3 decimals (scientific when small or huge, 0 below float32 rounding noise of
    1e-6); "—" for None, "nan" for NaN."""
    if x is None:
        return "—"
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("+inf" if x > 0 else "-inf")
    sign = "+" if signed else ""
    if abs(x) < 1e-6:
        return f"{0.0:{sign}.3f}"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:{sign}.2e}"
    return f"{x:{sign}.3f}"


def pval(p: float) -> str:
    return "nan" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def with_ci(x: float | None, low: float | None, high: float | None) -> str:
    if x is None:
        return "—"
    return f"{num(x, signed=True)} [{num(low, signed=True)}, {num(high, signed=True)}]"


def arrow(direction: str | None) -> str:
    return {"increase": "↑", "decrease": "↓"}.get(direction or "", "")


def verdict(expected: str | None, diff: float, significant: bool) -> str:
    """✓/✗/– for a declared direction; ↑/↓ for a significant metric without one."""
    if not significant or not math.isfinite(diff) or diff == 0:
        return NOT_SIG
    if expected is None:
        return "↑" if diff > 0 else "↓"
    return MOVED if (diff > 0) == (expected == "increase") else WRONG


def _effects(run: RunResult) -> dict[tuple[str, str, str], EffectRecord]:
    return {(e.task, e.condition, e.metric): e for e in run.effects}


def _fluency(run: RunResult) -> dict[tuple[str, str], FluencyRecord]:
    return {(f.task, f.condition): f for f in run.fluency_cost}


def headline_rows(run: RunResult) -> list[list[str]]:
    """One row of HEADLINE_COLUMNS per task and steered condition."""
    effects, fluency, rows = _effects(run), _fluency(run), []
    for h in run.headlines:
        e = effects.get((h.task, h.condition, h.metric))
        f = fluency.get((h.task, h.condition))
        rows.append(
            [
                h.task,
                h.condition,
                h.metric,
                arrow(h.expected_direction),
                f"{num(e.mean_unsteered)} → {num(e.mean_steered)}" if e else "—",
                with_ci(h.diff, h.ci_low, h.ci_high),
                num(h.effect_size, signed=True),
                pval(e.p_adjusted) if e else "—",
                verdict(h.expected_direction, h.diff, h.significant),
                with_ci(f.diff, f.ci_low, f.ci_high) if f else "—",
                num(f.ppl_ratio) + "×" if f else "—",
            ]
        )
    return rows


def effect_rows(run: RunResult, headlines: bool = True) -> list[list[str]]:
    """One row of EFFECT_COLUMNS per effect; headline metrics are starred (or left out)."""
    return [
        [
            e.task,
            e.condition,
            ("★ " if e.headline else "") + e.metric,
            arrow(e.expected_direction),
            str(e.n),
            f"{num(e.mean_unsteered)} → {num(e.mean_steered)}",
            with_ci(e.diff, e.ci_low, e.ci_high),
            num(e.effect_size, signed=True),
            pval(e.p_adjusted),
            verdict(e.expected_direction, e.diff, e.significant),
        ]
        for e in run.effects
        if headlines or not e.headline
    ]


def fluency_rows(run: RunResult) -> list[list[str]]:
    """One row of FLUENCY_COLUMNS per task and steered condition."""
    return [
        [
            f.task,
            f.condition,
            f.judge,
            str(f.n),
            f"{num(f.mean_unsteered)} → {num(f.mean_steered)}",
            with_ci(f.diff, f.ci_low, f.ci_high),
            pval(f.p_value),
            num(f.ppl_ratio) + "×",
        ]
        for f in run.fluency_cost
    ]


def table_rich(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    for col in columns:
        table.add_column(col, overflow="fold", no_wrap=col not in _WRAP)
    for row in rows:
        table.add_row(*(Text(cell, style=_STYLES.get(cell, "")) for cell in row))
    return table


def print_wide(console: Console, table: Table) -> None:
    """Print `table` at least at its natural width: a narrow console (or a pipe, 80 columns)
    would otherwise squeeze the name columns away."""
    natural = Measurement.get(console, console.options.update_width(1000), table).maximum
    width = console.width
    console.width = max(width, natural)
    try:
        console.print(table)
    finally:
        console.width = width


def print_results(run: RunResult, console: Console | None = None) -> None:
    """Headline table, the other metrics, flagged samples and notes of a run."""
    console = console or Console()
    model = run.model.get("name", run.config.get("model", "?"))
    console.print(
        Text(
            f"steering run: {run.config.get('target', '?')} · model {model} · "
            f"config {run.config_hash}",
            style="bold",
        ),
        soft_wrap=True,
    )
    print_wide(console, table_rich("Headline effects", HEADLINE_COLUMNS, headline_rows(run)))
    others = effect_rows(run, headlines=False)
    if others:
        print_wide(console, table_rich("Other metrics", EFFECT_COLUMNS, others))
    console.print(Text(LEGEND, style="dim"))
    if run.flagged_samples:
        console.print(
            Text(
                f"{run.flagged_samples} flagged sample(s) excluded from the statistics",
                style="bold yellow",
            )
        )
    for note in run.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    if run.timings:
        console.print(Text(timings_line(run.timings), style="dim"))


def timings_line(timings: dict[str, float]) -> str:
    """`time: generate 41 s, score 12 s (scorers: perplexity 9.1 s, sentiment 2.0 s, ...)` from
    run.json's `timings` ("generate.TASK", "score.TASK.SCORER")."""
    phases: dict[str, float] = defaultdict(float)
    scorers: dict[str, float] = defaultdict(float)
    for key, seconds in timings.items():
        phase = key.split(".", 1)[0]
        phases[phase] += seconds
        if phase == "score":
            scorers[key.rsplit(".", 1)[1]] += seconds
    parts = ", ".join(f"{p} {s:.0f} s" for p, s in phases.items())
    detail = ", ".join(f"{n} {s:.1f} s" for n, s in sorted(scorers.items(), key=lambda x: -x[1]))
    return f"time: {parts}" + (f" (scorers: {detail})" if detail else "")


def results_text(run: RunResult) -> str:
    """`print_results` as plain text, 160 columns wide, without colour."""
    buffer = io.StringIO()
    print_results(run, Console(file=buffer, width=160, color_system=None, force_terminal=False))
    return buffer.getvalue()
