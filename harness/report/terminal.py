"""A run's results as rich tables in the terminal."""

from __future__ import annotations

import io
from collections import defaultdict

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from harness.report.cells import MOVED, NOT_SIG, WRONG, Cell, text
from harness.report.tables import (
    CONTROL_COLUMNS,
    CONTROL_LEGEND,
    DIAGNOSE_COLUMNS,
    EFFECT_COLUMNS,
    HEADLINE_COLUMNS,
    LEGEND,
    SAMPLE_COLUMNS,
    SAMPLE_LEGEND,
    STEER_COLUMNS,
    STEER_LEGEND,
    TOPIC_COLUMNS,
    control_rows,
    diagnose_legend,
    diagnose_rows,
    effect_rows,
    headline_rows,
    sample_rows,
    steer_rows,
    topic_rows,
)
from harness.schema.results import RunResult

_WRAP = {"task", "condition", "metric", "judge", "steering ledger"}  # the other columns are short
_STYLES = {MOVED: "bold green", WRONG: "bold red", NOT_SIG: "dim", "↑": "yellow", "↓": "yellow"}


def table_rich(title: str, columns: list[str], rows: list[list[Cell]]) -> Table:
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
        table.add_row(*(Text(text(cell), style=_STYLES.get(text(cell), "")) for cell in row))
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
    if steered := steer_rows(run):
        print_wide(console, table_rich("Steerability: prompts moved the wrong way", STEER_COLUMNS, steered))
        console.print(Text(STEER_LEGEND, style="dim"))
    if run.controls:
        print_wide(console, table_rich("Is it the direction? Matched controls", CONTROL_COLUMNS,
                                       control_rows(run)))
        console.print(Text(CONTROL_LEGEND, style="dim"))
    if run.off_target:
        print_wide(console, table_rich("Off-target cost and capability retention", DIAGNOSE_COLUMNS,
                                       diagnose_rows(run)))
        console.print(Text(diagnose_legend(run), style="dim"))
    if run.topic_ratio:
        print_wide(console, table_rich("Perplexity ratio by topic-word share (ActAdd paper, Fig. 4)",
                                       TOPIC_COLUMNS, topic_rows(run)))
    if run.counts:
        print_wide(console, table_rich("Samples and steering ledger", SAMPLE_COLUMNS, sample_rows(run)))
        console.print(Text(SAMPLE_LEGEND, style="dim"))
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
