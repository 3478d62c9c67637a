"""`harness check` output: the verdict table, or why the run cannot be compared."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.check import INCOMPARABLE, INCONCLUSIVE, REGRESSION, CheckResult
from harness.report.cells import Estimate, num, pval, text
from harness.report.terminal import print_wide

_STYLE = {"regression": "red", "inconclusive": "yellow", "holds": "green"}
_STATUS = {REGRESSION: "[bold red]REGRESSION[/]", INCONCLUSIVE: "[bold yellow]INCONCLUSIVE[/] (exit 3; "
           "--allow-inconclusive accepts it)", 0: "[bold green]holds[/]"}


def print_check(result: CheckResult, console: Console | None = None) -> None:
    """The verdict table (or why the run cannot be compared) on the terminal."""
    console = console or Console()
    if result.status == INCOMPARABLE:
        console.print("[bold red]cannot compare[/]: " + "; ".join(result.reasons))
        return
    table = Table(title="steering regression check", show_lines=False)
    for col in ("task", "condition", "what", "baseline", "now", "Δ [95% CI]", "detectable", "p_reg (Holm)",
                "verdict"):
        table.add_column(col)
    for line in result.lines:
        change = text(Estimate(line.diff, line.ci_low, line.ci_high)) if line.ci_low == line.ci_low \
            else num(line.diff, signed=True)
        table.add_row(line.task, line.condition, line.what, num(line.baseline, signed=True),
                      num(line.now, signed=True), change, num(line.detectable), pval(line.p_regression),
                      f"[{_STYLE[line.verdict]}]{line.verdict}[/] {line.reason}")
    print_wide(console, table)
    console.print("[dim]detectable = the smallest change of the effect this check detects with 80 % power "
                  "(one-sided, α = 0.05) with its prompts and their paired spread[/]")
    console.print(_STATUS[result.status])
