"""`harness compare` output: a table per task in the terminal, Markdown, HTML and JSON."""

from __future__ import annotations

import io
from html import escape
from pathlib import Path

from rich.console import Console
from rich.text import Text

from harness.analyses.compare import CompareResult, CompareRow
from harness.report.cells import NOT_SIG, Cell, arrow, estimate, num, pval, text
from harness.report.html import CSS, table_html
from harness.report.markdown import md, table_md
from harness.report.terminal import print_wide, table_rich
from harness.schema.spec import ALPHA
from harness.store import atomic_write_text

SIG = "✓"
LEGEND = (
    f"{SIG} difference significant (Holm-adjusted p < {ALPHA}: declared metrics and fluency in one family, "
    f"other metrics in another) · {NOT_SIG} not · CIs: 95% Student t (paired) or Welch t (unpaired) over "
    "prompts · paired = by prompt "
    "identity, unpaired = independent prompts · fluency cost = Δ mean log-perplexity (steered − unsteered; "
    "lower is more fluent) · ★ = headline metric"
)


def _columns(result: CompareResult) -> list[str]:
    ref = result.runs[0].label
    cols = ["metric", "expected", *(f"{r.label} [95% CI]" for r in result.runs)]
    for r in result.runs[1:]:
        cols += [f"{r.label} − {ref} [95% CI]", "p_adj", "sig", "pairing"]
    return cols


def _rows(result: CompareResult, task: str) -> list[list[Cell]]:
    out: list[list[Cell]] = []
    for row in (r for r in result.rows if r.task == task):
        cells: list[Cell] = [
            "fluency cost (Δ logppl)" if row.is_fluency else ("★ " if row.headline else "") + row.metric,
            arrow(row.expected_direction), *(estimate(e.estimate) for e in row.effects)]
        for d in row.vs_reference:
            pairing = f"paired, n={d.n}" if d.estimate.paired else f"unpaired, n={d.n_reference}+{d.n}"
            cells += [estimate(d.estimate), pval(d.p_adjusted),
                      SIG if d.significant else NOT_SIG, pairing]
        out.append(cells)
    return out


def headline_lines(result: CompareResult) -> list[str]:
    """Per task and later run: how much more it moves the headline metric than the reference, and
    the fluency cost of both."""
    out = []
    for row in (r for r in result.rows if r.headline):
        fluency: CompareRow | None = next(
            (r for r in result.rows if r.task == row.task and r.is_fluency), None)
        for i, d in enumerate(row.vs_reference, start=1):
            verdict = "significant" if d.significant else "not significant"
            cost = (f"; fluency cost {d.reference} {num(fluency.effects[0].estimate.point, signed=True)}, "
                    f"{d.label} {num(fluency.effects[i].estimate.point, signed=True)}" if fluency else "")
            change = text(estimate(d.estimate))
            out.append(f"{row.task}: {d.label} moves {row.metric} by {change} "
                       f"more than {d.reference} ({'paired' if d.estimate.paired else 'unpaired'}, "
                       f"p_adj {pval(d.p_adjusted)}, {verdict}){cost}")
    return out


def _tasks(result: CompareResult) -> list[str]:
    return list(dict.fromkeys(r.task for r in result.rows))


def _runs_line(result: CompareResult) -> str:
    return " · ".join(f"{r.label} = {r.path} ({r.condition})" for r in result.runs)


def print_compare(result: CompareResult, console: Console | None = None) -> None:
    """The comparison as rich tables, one per task, with the headline lines."""
    console = console or Console()
    console.print(Text(f"compare: {_runs_line(result)}", style="bold"), soft_wrap=True)
    for task in _tasks(result):
        print_wide(console, table_rich(task, _columns(result), _rows(result, task)))
    for line in headline_lines(result):
        console.print(Text(line), soft_wrap=True)
    console.print(Text(LEGEND, style="dim"), soft_wrap=True)


def compare_text(result: CompareResult) -> str:
    """`print_compare` as plain text, 160 columns wide, without colour."""
    buffer = io.StringIO()
    print_compare(result, Console(file=buffer, width=160, color_system=None, force_terminal=False))
    return buffer.getvalue()


def render_compare_markdown(result: CompareResult) -> str:
    """The comparison as a Markdown document: headline lines, then a table per task."""
    cols = _columns(result)
    lines = ["# Steering comparison", "", *(f"- **{md(r.label)}:** {md(r.path)} ({md(r.condition)})"
                                            for r in result.runs), ""]
    heads = headline_lines(result)
    lines += [*(f"- {md(h)}" for h in heads), ""] if heads else []
    for task in _tasks(result):
        lines += [f"## {md(task)}", "", *table_md(cols, _rows(result, task))]
    lines += [md(LEGEND), ""]
    return "\n".join(lines)


def render_compare_html(result: CompareResult) -> str:
    """The comparison as one self-contained HTML page (the run report's CSS, no scripts)."""
    runs = "".join(f"<li><b>{escape(r.label)}</b>: {escape(r.path)} ({escape(r.condition)})</li>"
                   for r in result.runs)
    heads = "".join(f"<li>{escape(h)}</li>" for h in headline_lines(result))
    cols = _columns(result)
    tasks = "".join(f"<section><h2>{escape(t)}</h2>{table_html(cols, _rows(result, t))}</section>"
                    for t in _tasks(result))
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Steering comparison</title><style>{CSS}</style></head>\n<body><main>\n"
            f"<header><h1>Steering comparison</h1><ul>{runs}</ul></header>\n"
            + (f"<section><h2>Headlines</h2><ul>{heads}</ul></section>\n" if heads else "")
            + f'{tasks}\n<p class="legend">{escape(LEGEND)}</p>\n'
            + "</main></body></html>\n")


def write_compare(result: CompareResult, out_dir: Path) -> list[Path]:
    """Write compare.md, compare.html and compare.json into `out_dir`, each atomically."""
    files = {"compare.md": render_compare_markdown(result), "compare.html": render_compare_html(result),
             "compare.json": result.model_dump_json(indent=2) + "\n"}
    for name, content in files.items():
        atomic_write_text(out_dir / name, content)
    return [out_dir / name for name in files]
