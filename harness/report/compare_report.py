"""`harness compare` output: a table per task in the terminal, Markdown, HTML and JSON."""

from __future__ import annotations

import io
from html import escape
from pathlib import Path

from rich.console import Console
from rich.text import Text

from harness.compare import LEGEND, SIG, CompareResult
from harness.report.html import CSS, table_html
from harness.report.markdown import md, table_md
from harness.report.terminal import NOT_SIG, arrow, print_wide, pval, table_rich, with_ci
from harness.store import atomic_write_text


def _columns(result: CompareResult) -> list[str]:
    ref = result.runs[0].label
    cols = ["metric", "expected", *(f"{r.label} [95% CI]" for r in result.runs)]
    for r in result.runs[1:]:
        cols += [f"{r.label} − {ref} [95% CI]", "p_adj", "sig", "pairing"]
    return cols


def _rows(result: CompareResult, task: str) -> list[list[str]]:
    out = []
    for row in (r for r in result.rows if r.task == task):
        cells = ["fluency cost (Δ logppl)" if row.is_fluency else ("★ " if row.headline else "") + row.metric,
                 arrow(row.expected_direction), *(with_ci(e.diff, e.ci_low, e.ci_high) for e in row.effects)]
        for d in row.vs_reference:
            sig = SIG if d.significant else NOT_SIG
            pairing = f"paired, n={d.n}" if d.paired else f"unpaired, n={d.n_reference}+{d.n}"
            cells += [with_ci(d.diff, d.ci_low, d.ci_high), pval(d.p_adjusted), sig, pairing]
        out.append(cells)
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
    for line in result.headlines:
        console.print(Text(line), soft_wrap=True)
    console.print(Text(LEGEND + " · ★ = headline metric", style="dim"), soft_wrap=True)


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
    lines += [*(f"- {md(h)}" for h in result.headlines), ""] if result.headlines else []
    for task in _tasks(result):
        lines += [f"## {md(task)}", "", *table_md(cols, _rows(result, task))]
    lines += [md(LEGEND) + " · ★ = headline metric", ""]
    return "\n".join(lines)


def render_compare_html(result: CompareResult) -> str:
    """The comparison as one self-contained HTML page (the run report's CSS, no scripts)."""
    runs = "".join(f"<li><b>{escape(r.label)}</b>: {escape(r.path)} ({escape(r.condition)})</li>"
                   for r in result.runs)
    heads = "".join(f"<li>{escape(h)}</li>" for h in result.headlines)
    cols = _columns(result)
    tasks = "".join(f"<section><h2>{escape(t)}</h2>{table_html(cols, _rows(result, t))}</section>"
                    for t in _tasks(result))
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Steering comparison</title><style>{CSS}</style></head>\n<body><main>\n"
            f"<header><h1>Steering comparison</h1><ul>{runs}</ul></header>\n"
            + (f"<section><h2>Headlines</h2><ul>{heads}</ul></section>\n" if heads else "")
            + f'{tasks}\n<p class="legend">{escape(LEGEND)} · ★ = headline metric</p>\n'
            + "</main></body></html>\n")


def write_compare(result: CompareResult, out_dir: Path) -> list[Path]:
    """Write compare.md, compare.html and compare.json into `out_dir`, each atomically."""
    files = {"compare.md": render_compare_markdown(result), "compare.html": render_compare_html(result),
             "compare.json": result.model_dump_json(indent=2) + "\n"}
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
    return [out_dir / name for name in files]
