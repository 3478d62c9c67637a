"""Table cells as typed values (numbers with their CI, verdict marks), formatted by each renderer:
text for the terminal and Markdown, markup for HTML; no renderer parses another's strings."""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness.schema import results

MOVED, WRONG, NOT_SIG = "✓", "✗", "–"


@dataclass(frozen=True)
class Estimate:
    """A signed number with its confidence interval."""

    value: float | None
    low: float | None
    high: float | None
    signed: bool = True  # False for quantities that are never negative (ratios, KL)
    note: str = ""  # why there is no interval (shown in its place)


@dataclass(frozen=True)
class Mark:
    """A verdict symbol: ✓ moved as expected, ✗ wrong direction, – not significant, ↑/↓ significant."""

    symbol: str


Cell = str | Estimate | Mark


def estimate(e: results.Estimate | None) -> Cell:
    """The cell of a comparison's estimate: its point and interval, or why it has no interval."""
    if e is None:
        return "—"
    shown = math.isfinite(e.ci_low) and math.isfinite(e.ci_high)
    return Estimate(e.point, e.ci_low, e.ci_high, note="" if shown else e.ci_method)


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


def pval(p: float | None) -> str:
    if p is None:
        return "—"
    return "nan" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def ci_text(low: float | None, high: float | None, signed: bool = True) -> str:
    return f"[{num(low, signed=signed)}, {num(high, signed=signed)}]"


def text(cell: Cell) -> str:
    """The cell as plain text: an estimate as `+0.120 [+0.040, +0.210]`."""
    if isinstance(cell, Estimate):
        if cell.value is None:
            return "—"
        if cell.note:
            return f"{num(cell.value, signed=cell.signed)} ({cell.note})"
        return f"{num(cell.value, signed=cell.signed)} {ci_text(cell.low, cell.high, cell.signed)}"
    if isinstance(cell, Mark):
        return cell.symbol
    return cell


def arrow(direction: str | None) -> str:
    return {"increase": "↑", "decrease": "↓"}.get(direction or "", "")


def verdict(expected: str | None, diff: float, significant: bool) -> Mark:
    """✓/✗/– for a declared direction; ↑/↓ for a significant metric without one."""
    if not significant or not math.isfinite(diff) or diff == 0:
        return Mark(NOT_SIG)
    if expected is None:
        return Mark("↑" if diff > 0 else "↓")
    return Mark(MOVED if (diff > 0) == (expected == "increase") else WRONG)


JUDGE_RATINGS = ("concept", "instruction", "fluency")


def judge_ratings(s: results.SampleRecord) -> list[tuple[str, float]]:
    """A judge's three ratings of a sample (`SCORER.concept`, `.instruction`, `.fluency`), in that
    order, for every scorer that gave all three; [] when none did."""
    scorers = dict.fromkeys(m.rsplit(".", 1)[0] for m in s.scores if m.endswith(".concept"))
    return [(f"{j}.{c}", s.scores[f"{j}.{c}"]) for j in scorers
            if all(f"{j}.{c}" in s.scores for c in JUDGE_RATINGS) for c in JUDGE_RATINGS]
