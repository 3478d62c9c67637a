"""The held-out method table of concept tasks (AxBench): Markdown for the terminal and the run folder."""

from __future__ import annotations

from harness.analyses.heldout import HeldOut, method_table
from harness.report.cells import num


def _ci(low: float, high: float) -> str:
    return f"[{num(low)}, {num(high)}]"


def heldout_markdown(held: HeldOut) -> str:
    """The method table (pooled over concepts) and, per concept, each method's chosen strength."""
    lines = ["## Held-out method table", "",
             "Strength chosen per method and concept on one half of the instructions (seeded split in "
             "run.json), the headline reported on the other half; 95% t intervals over (concept, "
             "instruction); the difference is paired by (concept, instruction). n: instructions with a "
             "finite score / reported; on the selection half an instruction without one counts as the "
             "worst score seen there.", "",
             "| method | metric | concepts | n | held-out score [95% CI] | − reference [95% CI] |",
             "| --- | --- | --- | --- | --- | --- |"]
    for m in method_table(held.scores):
        diff = (f"{num(m.difference.point)} {_ci(m.difference.ci_low, m.difference.ci_high)} vs {m.versus}"
                if m.difference else "")
        lines.append(f"| {m.method} | {m.metric} | {m.tasks} | {m.n}/{m.n_planned} | {num(m.score)} "
                     f"{_ci(m.ci_low, m.ci_high)} | {diff} |")
    lines += ["", "| concept task | method | chosen | selection half | reported half [95% CI] | n |",
              "| --- | --- | --- | --- | --- | --- |"]
    for s in held.scores:
        lines.append(f"| {s.task} | {s.method} | {s.condition or 'none'} | {num(s.selection_score)} | "
                     f"{num(s.score)} {_ci(s.ci_low, s.ci_high)} | {s.n}/{s.n_planned} |")
    return "\n".join(lines) + "\n"
