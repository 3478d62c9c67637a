"""`harness bench` output: the figures as a table, with their intervals, raw measurements, targets
and verdicts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.bench.figures import CONFIDENCE, BenchResult, Figure
from harness.report.terminal import print_wide

VERDICTS = {"meets": "[green]meets[/]", "misses": "[red]misses[/]", "undecided": "[yellow]undecided[/]",
            None: ""}


def _number(fig: Figure, x: float) -> str:
    return f"{x:.3f}" if fig.unit in ("x", "nats", "share") else f"{x:.1f}"


def print_bench(result: BenchResult) -> None:
    """The figures as a table: median, its interval, its two raw measurements, target and verdict."""
    table = Table(title=f"harness bench: {result.model.get('name')} "
                        f"({result.settings['dtype']}, {result.settings['threads']} threads)")
    for col in ("figure", "value", f"{CONFIDENCE:.0%} interval", "measured", "target", "verdict"):
        table.add_column(col, justify="left" if col in ("figure", "measured") else "right")
    for name, fig in result.figures().items():
        unit = "" if fig.unit == "x" else f" {fig.unit}"
        interval = "" if fig.low is None or fig.high is None else \
            f"[{_number(fig, fig.low)}, {_number(fig, fig.high)}]"
        if fig.n > 1 and fig.low is None:
            interval = f"too few ({fig.n})"
        raw = f"{fig.numerator:.4g} / {fig.denominator:.4g} {fig.raw_unit}" if fig.raw_unit else ""
        target = "" if fig.target is None else f"{'≤' if fig.at_most else '≥'} {fig.target:g}"
        table.add_row(name, f"{_number(fig, fig.value)}{unit}", interval, raw, target, VERDICTS[fig.verdict])
    console = Console()
    print_wide(console, table)
    s = result.settings
    console.print(f"batch {s['batch_size']} rows x {s['max_new_tokens']} new tokens, greedy, KV cache "
                  f"{'on' if s['kv_cache'] else 'off'}; sweep {s['sweep_k']} configs x {s['sweep_prompts']} "
                  f"prompts; each figure the median of {s['repeats']} interleaved rounds (of per-round "
                  "ratios for a ratio), its interval from order statistics; a target is met or missed only "
                  "when the whole interval is on one side; unsteered engine rows = plain generate: "
                  f"{result.unsteered_matches_plain}")
    for note in result.notes:
        console.print(f"note: {note}")
