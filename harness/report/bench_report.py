"""`harness bench` output: the figures as a table, with their raw measurements and targets."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.bench_figures import BenchResult
from harness.report.terminal import print_wide


def print_bench(result: BenchResult) -> None:
    """The figures as a table: value, its two raw measurements, target and whether it is met."""
    table = Table(title=f"harness bench: {result.model.get('name')} "
                        f"({result.settings['dtype']}, {result.settings['threads']} threads)")
    for col in ("figure", "value", "measured", "target", "met"):
        table.add_column(col, justify="left" if col in ("figure", "measured") else "right")
    for name, fig in result.figures().items():
        unit = "" if fig.unit == "x" else f" {fig.unit}"
        value = f"{fig.value:.3f}{unit}" if fig.unit in ("x", "nats", "share") else f"{fig.value:.1f}{unit}"
        raw = f"{fig.numerator:.4g} / {fig.denominator:.4g} {fig.raw_unit}" if fig.raw_unit else ""
        target = "" if fig.target is None else f"{'≤' if fig.at_most else '≥'} {fig.target:g}"
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: ""}[fig.met]
        table.add_row(name, value, raw, target, met)
    console = Console()
    print_wide(console, table)
    s = result.settings
    console.print(f"batch {s['batch_size']} rows x {s['max_new_tokens']} new tokens, greedy, KV cache "
                  f"{'on' if s['kv_cache'] else 'off'}; sweep {s['sweep_k']} configs x {s['sweep_prompts']} "
                  f"prompts; median of {s['repeats']}; unsteered engine rows = plain generate: "
                  f"{result.unsteered_matches_plain}")
    for note in result.notes:
        console.print(f"note: {note}")
