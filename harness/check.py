"""Compare a run against a committed baseline: exit 0 holds, 1 regression, 2 cannot compare,
3 inconclusive.

Per task and steered condition of the baseline, four lines:

- **effect**: the headline effect now vs in the baseline, paired by prompt. A regression is a
  shrink significantly larger than `tolerance.effect` × the baseline effect (one-sided test,
  Holm over all regression tests of the check), an effect below the task's `min_effect`, or no
  finite value at all. "Holds" needs evidence: the change must exclude the loss of the whole
  baseline effect (one-sided test at ALPHA on its own line: all lines must hold, an
  intersection-union test); otherwise the line is *inconclusive* and says how many prompts
  would decide it.
- **fluency cost**: a growth significantly larger than `tolerance.fluency` nats, a cost above
  `max_fluency_cost`, or no finite value is a regression.
- **degenerate samples**: a steered condition whose flagged-or-empty share exceeds the
  unsteered one's by more than `tolerance.degenerate` is a regression.
- **steering ledger**: a condition that no longer acts in a forward kind where the baseline's
  did (prompt pass, decode steps), or adds less than `tolerance.ledger` × the baseline's norm
  per sample, is a regression: the steering did not apply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from harness.baseline import Baseline
from harness.comparable import incomparable_reasons
from harness.comparison import Comparison, adjust, compare_values, margin_p_value
from harness.power import minimum_detectable_effect, prompts_needed
from harness.schema.results import (
    ConditionCounts,
    Headline,
    LedgerRecord,
    PromptSummary,
    RunResult,
)
from harness.schema.spec import ALPHA, FLUENCY_METRIC, UNSTEERED, Record, Spec

HOLDS, REGRESSION, INCOMPARABLE, INCONCLUSIVE = 0, 1, 2, 3
Verdict = Literal["holds", "regression", "inconclusive"]


class Tolerance(Spec):
    """How much worse than the baseline a run may look before it is called a regression.

    `effect`: the headline effect may shrink by this fraction of the baseline effect before a
    significant shrink counts; `fluency`: the fluency cost (nats of mean log-perplexity) may
    grow by this much before a significant growth counts; `degenerate`: the share of flagged or
    empty steered samples may exceed the unsteered share by this much; `ledger`: the steering
    may add down to this fraction of the baseline's norm per sample.
    """

    effect: float = 0.25
    fluency: float = 0.15
    degenerate: float = 0.10
    ledger: float = 0.5
    confidence: float = 0.95


class Line(Record):
    """One verdict line: baseline vs now, the paired change with its CI, and the tests behind it."""

    task: str
    condition: str
    what: str
    baseline: float
    now: float
    diff: float
    ci_low: float
    ci_high: float
    verdict: Verdict
    reason: str = ""
    p_regression: float | None = None  # Holm-adjusted one-sided test of a regression
    p_holds: float | None = None  # one-sided test that the baseline effect is not entirely lost
    detectable: float | None = None  # the smallest change this check detects with 80 % power


class CheckResult(Record):
    """The verdict of a check: its exit status, its lines, or why it could not compare."""

    status: int
    lines: list[Line]
    reasons: list[str]  # why the run cannot be compared (status 2)


def incomparable(run: RunResult, baseline: Baseline) -> list[str]:
    return incomparable_reasons(run.model, run.config["tasks"], baseline.model, baseline.task_configs)


def _summaries(summaries: Sequence[PromptSummary], reference: str
               ) -> dict[tuple[str, str, str], PromptSummary]:
    """Per-prompt summaries by (task, condition, metric): the headline's against `reference`, the
    fluency cost's always against unsteered."""
    return {(p.task, p.condition, p.metric): p for p in summaries
            if p.reference == (reference if p.metric != FLUENCY_METRIC else "unsteered")}


def _effects(summary: PromptSummary | None) -> dict[str, float]:
    """Per-prompt effect (steered − unsteered) of a summary, NaN where either side is NaN."""
    return {k: s - u for k, (u, s) in summary.prompts.items()} if summary else {}


@dataclass(frozen=True)
class _Test:
    """A line in the making: its comparison and the raw p-value of its regression test."""

    line: Line
    p_regression: float


def check(run: RunResult, baseline: Baseline, tolerance: Tolerance | None = None,
          floors: dict[str, float | None] | None = None, *, allow_inconclusive: bool = False,
          gate: Literal["effect", "specific"] = "effect") -> CheckResult:
    """The verdict lines and exit status of `run` against `baseline`.

    `gate="specific"` judges the headline's specific effect (steered − its matched random
    controls) instead of its effect against unsteered; both runs need controls then.
    """
    tol = tolerance or Tolerance()
    reasons = incomparable(run, baseline)
    reference = "random controls" if gate == "specific" else "unsteered"
    for name, result in (("run", run.per_prompt), ("baseline", baseline.per_prompt)):
        if gate == "specific" and not any(p.reference == reference for p in result):
            reasons.append(f"the {name} has no random controls to gate on (run it with --controls random=R)")
    if reasons:
        return CheckResult(status=INCOMPARABLE, lines=[], reasons=reasons)
    summary, base_summary = (_summaries(r.per_prompt, reference) for r in (run, baseline))
    tests: list[_Test] = []
    lines: list[Line] = []
    for base in baseline.headlines:
        now = next((h for h in run.headlines if (h.task, h.condition) == (base.task, base.condition)), None)
        if now is None:
            return CheckResult(status=INCOMPARABLE, lines=[],
                               reasons=[f"run has no condition {base.condition} of task {base.task}"])
        given = {k: v for k, v in (floors or {}).items() if v is not None}
        task_floors = {**baseline.floors.get(base.task, {}), **given}
        key = (base.task, base.condition)
        tests.append(_effect_line(base, now, summary.get((*key, base.metric)),
                                  base_summary.get((*key, base.metric)), tol, task_floors, gate))
        fkey = (*key, FLUENCY_METRIC)
        if fkey in base_summary:
            tests.append(_fluency_line(base, run, baseline, summary.get(fkey), base_summary[fkey], tol,
                                       task_floors))
        lines.append(_degenerate_line(base.task, base.condition, run.counts, baseline.counts, tol))
        lines.append(_ledger_line(base.task, base.condition, run.ledger, baseline.ledger, tol))
    adjusted = adjust([t.p_regression for t in tests], ["check"] * len(tests))
    for t, p in zip(tests, adjusted, strict=True):
        line = t.line
        if line.verdict != "regression" and p < ALPHA:
            line = _replace(line, "regression", _regression_reason(line), p)
        lines.append(_replace(line, line.verdict, line.reason, p))
    order = ("effect", "fluency", "flagged", "steering")
    lines.sort(key=lambda line: (line.task, line.condition, next(i for i, w in enumerate(order)
                                                                 if line.what.startswith(w))))
    if any(line.verdict == "regression" for line in lines):
        status = REGRESSION
    elif any(line.verdict == "inconclusive" for line in lines) and not allow_inconclusive:
        status = INCONCLUSIVE
    else:
        status = HOLDS
    return CheckResult(status=status, lines=lines, reasons=[])


def _line(task: str, condition: str, what: str, baseline: float, now: float, diff: float, low: float,
          high: float, verdict: Verdict, reason: str = "") -> Line:
    return Line(task=task, condition=condition, what=what, baseline=baseline, now=now, diff=diff,
                ci_low=low, ci_high=high, verdict=verdict, reason=reason)


def _replace(line: Line, verdict: Verdict, reason: str, p_regression: float) -> Line:
    return line.model_copy(update={"verdict": verdict, "reason": reason, "p_regression": p_regression})


def _regression_reason(line: Line) -> str:
    if line.what.startswith("effect"):
        return "effect significantly smaller than baseline"
    return "fluency cost significantly larger than baseline"


def _nan_line(task: str, condition: str, what: str, base: float, now: float, reason: str) -> _Test:
    nan = math.nan
    return _Test(_line(task, condition, what, base, now, nan, nan, nan, "regression", reason), nan)


def _effect_line(base: Headline, now: Headline, now_pp: PromptSummary | None, base_pp: PromptSummary | None,
                 tol: Tolerance, floors: dict[str, float | None], gate: str = "effect") -> _Test:
    what = f"{'specific ' if gate == 'specific' else ''}effect {base.metric}"
    sign = 1.0 if base.expected_direction == "increase" else -1.0
    now_eff, base_eff = _effects(now_pp), _effects(base_pp)
    base_diff = _mean(base_eff.values()) if gate == "specific" else base.diff
    now_diff = _mean(now_eff.values()) if gate == "specific" else now.diff
    if not any(math.isfinite(v) for v in now_eff.values()) or not math.isfinite(now_diff):
        return _nan_line(base.task, base.condition, what, base_diff, now_diff,
                         "no finite value of the headline metric in the run (all NaN, flagged or empty)")
    c = compare_values(base_eff, now_eff, confidence=tol.confidence)
    toward = compare_values({k: sign * v for k, v in base_eff.items()},
                            {k: sign * v for k, v in now_eff.items()})
    expected = sign * base_diff  # the baseline effect in the expected direction
    p_reg = margin_p_value(toward, -tol.effect * abs(expected), "less")
    line = _line(base.task, base.condition, what, base_diff, now_diff, c.diff, c.ci_low, c.ci_high, "holds")
    line = line.model_copy(update={"detectable": minimum_detectable_effect(_sd(c.deltas), c.n, sides=1)})
    minimum = floors.get("min_effect")
    if minimum is not None and sign * now_diff < minimum:
        return _Test(_replace(line, "regression", f"effect below min_effect {minimum}", math.nan), p_reg)
    if expected > 0:
        p_holds = margin_p_value(toward, -expected, "greater")
        if not p_holds < ALPHA:
            return _Test(line.model_copy(update={"verdict": "inconclusive", "p_holds": p_holds,
                                                 "reason": _undecided(toward, expected)}), p_reg)
        line = line.model_copy(update={"p_holds": p_holds})
    return _Test(line, p_reg)


def _undecided(c: Comparison, expected: float) -> str:
    """Why an effect line is inconclusive, and how many prompts would decide it."""
    room = c.diff + expected  # how far the observed change is from losing the whole effect
    if room <= 0:
        return "the run may have lost the whole baseline effect (observed change ≥ the effect)"
    sd = _sd(c.deltas)
    need = prompts_needed(sd, room, sides=1)
    more = f"about {need} prompts would decide it" if need else "more prompts would not decide it"
    return (f"the change's CI still includes losing the whole baseline effect ({-expected:+.3g}); "
            f"{c.n} prompts, {more}")


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _sd(values: Sequence[float]) -> float:
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fluency_line(base: Headline, run: RunResult, baseline: Baseline, now_pp: PromptSummary | None,
                  base_pp: PromptSummary, tol: Tolerance, floors: dict[str, float | None]) -> _Test:
    what = "fluency cost (Δ log-ppl)"
    key = (base.task, base.condition)
    f_base = next(f for f in baseline.fluency_cost if (f.task, f.condition) == key)
    f_now = next((f for f in run.fluency_cost if (f.task, f.condition) == key), None)
    now_eff = _effects(now_pp)
    now_diff = f_now.diff if f_now else math.nan
    if not any(math.isfinite(v) for v in now_eff.values()) or not math.isfinite(now_diff):
        return _nan_line(base.task, base.condition, what, f_base.diff, now_diff,
                         "no finite fluency cost in the run (all NaN, flagged or empty)")
    c = compare_values(_effects(base_pp), now_eff, confidence=tol.confidence)
    p_reg = margin_p_value(c, tol.fluency, "greater")
    line = _line(base.task, base.condition, what, f_base.diff, now_diff, c.diff, c.ci_low, c.ci_high, "holds")
    ceiling = floors.get("max_fluency_cost")
    if ceiling is not None and now_diff > ceiling:
        line = _replace(line, "regression", f"fluency cost above max_fluency_cost {ceiling}", math.nan)
    return _Test(line, p_reg)


def _share(counts: Sequence[ConditionCounts], task: str, condition: str) -> float:
    found = next((c for c in counts if (c.task, c.condition) == (task, condition)), None)
    return found.degenerate_share if found else math.nan


def _degenerate_line(task: str, condition: str, now: Sequence[ConditionCounts],
                     base: Sequence[ConditionCounts], tol: Tolerance) -> Line:
    """Flagged-or-empty share of the steered samples above the unsteered share."""
    excess_now = _share(now, task, condition) - _share(now, task, UNSTEERED)
    excess_base = _share(base, task, condition) - _share(base, task, UNSTEERED)
    nan = math.nan
    if math.isfinite(excess_now) and excess_now > tol.degenerate:
        return _line(task, condition, "flagged or empty share (steered − unsteered)", excess_base, excess_now,
                     excess_now - excess_base, nan, nan, "regression",
                    f"{excess_now:.0%} more of the steered samples are flagged or empty than unsteered "
                     f"(tolerance {tol.degenerate:.0%})")
    return _line(task, condition, "flagged or empty share (steered − unsteered)", excess_base, excess_now,
                 excess_now - excess_base, nan, nan, "holds")


def _ledger_totals(ledger: Sequence[LedgerRecord], task: str, condition: str) -> tuple[dict[str, int], float]:
    """Positions changed per forward kind, and the norm added per sample."""
    mine = [r for r in ledger if (r.task, r.condition) == (task, condition)]
    kinds: dict[str, int] = {}
    for r in mine:
        kinds[r.kind] = kinds.get(r.kind, 0) + r.positions
    samples = max((r.samples for r in mine), default=0)
    return kinds, (sum(r.norm for r in mine) / samples if samples else 0.0)


def _ledger_line(task: str, condition: str, now: Sequence[LedgerRecord], base: Sequence[LedgerRecord],
                 tol: Tolerance) -> Line:
    """Did the steering apply as it did in the baseline: the same forward kinds, enough norm?"""
    kinds_now, norm_now = _ledger_totals(now, task, condition)
    kinds_base, norm_base = _ledger_totals(base, task, condition)
    what = "steering ledger (norm added per sample)"
    nan = math.nan
    line = _line(task, condition, what, norm_base, norm_now, norm_now - norm_base, nan, nan, "holds")
    lost = [k for k, n in kinds_base.items() if n > 0 and not kinds_now.get(k)]
    if lost:
        where = " and ".join(f"{k} passes" for k in lost)
        return _replace(line, "regression", f"the steering changed no position in {where}, where the "
                        "baseline's did (steering not applied)", nan)
    if norm_base > 0 and norm_now < tol.ledger * norm_base:
        return _replace(line, "regression", f"the steering added {norm_now:.3g} per sample, under "
                        f"{tol.ledger:g} x the baseline's {norm_base:.3g}", nan)
    return line
