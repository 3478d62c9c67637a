"""`harness check` output: the verdict table with each line's coverage, or why the run cannot be
compared; on the terminal and in Markdown, from the same rows."""

from __future__ import annotations

import math

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.analyses.check import HOLDS, INCOMPARABLE, INCONCLUSIVE, REGRESSION, CheckResult, Coverage, Line
from harness.report.cells import Cell, Estimate, num, pval, text
from harness.report.markdown import table_md
from harness.report.terminal import print_wide

_STYLE = {"regression": "red", "inconclusive": "yellow", "holds": "green", "no effect to protect": "cyan"}
COLUMNS = ["task", "condition", "what", "coverage", "baseline", "now", "Δ [95% CI]", "detectable",
           "p_reg (Holm)", "verdict", "why"]
DETECTABLE = ("detectable = the smallest change of the effect this check detects with 80 % power (one-sided, "
              "α = 0.05) with its prompts and their paired spread; coverage = compared of planned "
              "(finite values on both sides), and why the others were left out")


def coverage_text(c: Coverage) -> str:
    """`20/24 prompts (3 steered NaN in the run, 1 no value in the baseline)`."""
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(c.excluded.items()) if n)
    return f"{c.compared}/{c.planned} {c.unit}" + (f" ({why})" if why else "")


def _row(line: Line) -> list[Cell]:
    """One line as cells; a change without a CI (too few prompts, counts, ledger) as its number."""
    c = line.change
    change: Cell = (Estimate(c.point, c.ci_low, c.ci_high) if c is not None and math.isfinite(c.ci_low)
                    else num(c.point if c is not None else line.now - line.baseline, signed=True))
    return [line.task, line.condition, line.what, coverage_text(line.coverage),
            num(line.baseline, signed=True), num(line.now, signed=True), change, num(line.detectable),
            pval(line.p_regression), line.verdict, line.reason]


def summary(result: CheckResult) -> str:
    """The verdict of the whole check in words, with its exit status."""
    if result.status == INCOMPARABLE:
        return "cannot compare (exit 2): " + "; ".join(result.reasons)
    if result.status == REGRESSION:
        return "REGRESSION (exit 1)"
    if result.status == INCONCLUSIVE:
        return "INCONCLUSIVE (exit 3; --allow-inconclusive accepts it)"
    if result.allowed_inconclusive:
        return (f"no regression, but {result.allowed_inconclusive} line(s) inconclusive, accepted by "
                "--allow-inconclusive (exit 0)")
    return "holds (exit 0)"


def print_check(result: CheckResult, console: Console | None = None) -> None:
    """The verdict table (or why the run cannot be compared) on the terminal."""
    console = console or Console()
    if result.status == INCOMPARABLE:
        console.print(f"[bold red]{escape(summary(result))}[/]")
        return
    table = Table(title="steering regression check", show_lines=False)
    for col in COLUMNS[:-1]:
        table.add_column(col)
    for line in result.lines:
        cells = [escape(text(c)) for c in _row(line)[:-2]]
        table.add_row(*cells, f"[{_STYLE[line.verdict]}]{line.verdict}[/] {escape(line.reason)}")
    print_wide(console, table)
    console.print(f"[dim]{DETECTABLE}[/]")
    style = {REGRESSION: "bold red", INCONCLUSIVE: "bold yellow"}.get(result.status, "bold green")
    if result.status == HOLDS and result.allowed_inconclusive:
        style = "bold yellow"
    console.print(f"[{style}]{escape(summary(result))}[/]")


def check_markdown(result: CheckResult) -> str:
    """The verdict as a Markdown section: its summary, then one row per line with its coverage."""
    out = ["# Steering regression check", "", f"**{summary(result)}**", ""]
    if result.status != INCOMPARABLE:
        out += table_md(COLUMNS, [_row(line) for line in result.lines])
        out += [DETECTABLE, ""]
    return "\n".join(out)
