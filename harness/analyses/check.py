"""Compare a run against a committed baseline: exit 0 holds, 1 regression, 2 cannot compare,
3 inconclusive, 4 the check itself failed (a bug: never read as a regression).

Per task and steered condition of the baseline, four lines. Every line shows its coverage (what
was planned, what has finite values on both sides, what was left out and why) and needs
evidence to hold: below `tolerance.min_coverage` of the prompts the baseline measured, below
the fewest prompts at which its one-sided test can reach ALPHA, or where its test cannot
decide, a line is *inconclusive*, never "holds".

- **effect**: the headline effect now vs in the baseline, paired by prompt. A regression is a
  shrink significantly larger than `tolerance.effect` × the baseline effect (one-sided test,
  Holm over all regression tests of the check), an effect below the task's `min_effect`, or no
  finite value at all. "Holds" needs evidence: the change must exclude the loss of the whole
  baseline effect (one-sided test at ALPHA on its own line: all lines must hold, an
  intersection-union test); otherwise the line is *inconclusive* and says how many prompts
  would decide it. A baseline effect that was not significant in its own run is no established
  effect: its line is inconclusive (the same samples would otherwise "hold" by construction);
  with `--gate specific` that is the specific effect's own p-value (before adjustment). A
  baseline written with `--no-effect` has no effect to protect for the headlines it lists (those
  against the expected direction or not significant): their effect line says so and gates
  nothing (floors still apply).
- **fluency cost**: a growth significantly larger than `tolerance.fluency` nats, a cost above
  `max_fluency_cost`, or no finite value is a regression; it holds when a one-sided test shows
  the growth below `tolerance.fluency`.
- **degenerate samples**: a steered condition whose degenerate share (flagged, empty or
  unscorable samples) exceeds the unsteered one's by more than `tolerance.degenerate` is a
  regression; it holds when the exact (Clopper-Pearson) upper confidence bound of the steered
  share does not exceed the unsteered share plus `tolerance.degenerate` (too few samples:
  inconclusive).
- **steering ledger**: a condition that no longer acts in a forward kind where the baseline's
  did (prompt pass, decode steps), or adds less than `tolerance.ledger` × the baseline's norm
  per sample, is a regression: the steering did not apply. A baseline without a ledger for the
  condition gives no evidence: inconclusive.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from harness.analyses.baseline import Baseline
from harness.schema.results import (
    ConditionCounts,
    Estimate,
    Headline,
    LedgerRecord,
    PromptSummary,
    RunResult,
)
from harness.schema.spec import ALPHA, UNSTEERED, Record, Spec
from harness.stats import proportion_upper_bound
from harness.stats.comparable import incomparable_reasons
from harness.stats.comparison import Comparison, Family, adjust, compare_values, margin_p_value
from harness.stats.power import minimum_detectable_effect, prompts_needed

# The fewest prompts at which a one-sided exact sign-flip test can reach p < ALPHA (its smallest
# p-value is 2**-n): below it a line's test cannot decide, so the line cannot hold.
MIN_PROMPTS = math.floor(math.log2(1 / ALPHA)) + 1

HOLDS, REGRESSION, INCOMPARABLE, INCONCLUSIVE, ERROR = 0, 1, 2, 3, 4
NO_EFFECT = "no effect to protect"
Verdict = Literal["holds", "regression", "inconclusive", "no effect to protect"]
Kind = Literal["effect", "fluency", "degenerate", "ledger"]


class Tolerance(Spec):
    """How much worse than the baseline a run may look before it is called a regression.

    `effect`: the headline effect may shrink by this fraction of the baseline effect before a
    significant shrink counts; `fluency`: the fluency cost (nats of mean log-perplexity) may
    grow by this much before a significant growth counts; `degenerate`: the share of flagged or
    empty steered samples may exceed the unsteered share by this much; `ledger`: the steering
    may add down to this fraction of the baseline's norm per sample; `min_coverage`: the share
    of the prompts the baseline measured that need finite values on both sides before a line
    may hold.
    """

    effect: float = Field(0.25, ge=0.0, le=1.0)
    fluency: float = Field(0.15, ge=0.0, allow_inf_nan=False)
    degenerate: float = Field(0.10, ge=0.0, le=1.0)
    ledger: float = Field(0.5, ge=0.0, le=1.0)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    min_coverage: float = Field(0.8, ge=0.0, le=1.0)


class Coverage(Record):
    """What a line rests on: the units (prompts or samples) planned, those compared (finite values
    on both sides), and why the others were left out."""

    unit: Literal["prompts", "samples"] = "prompts"
    planned: int
    compared: int
    excluded: dict[str, int] = Field(default_factory=dict)  # reason -> how many


class Line(Record):
    """One verdict line: baseline vs now, the paired change with its CI, and the tests behind it."""

    task: str
    condition: str
    kind: Kind
    what: str
    coverage: Coverage
    baseline: float
    now: float
    change: Estimate | None = None  # effect and fluency lines: now − baseline, paired by prompt
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
    allowed_inconclusive: int = 0  # inconclusive lines accepted by --allow-inconclusive (status 0)


def incomparable(run: RunResult, baseline: Baseline) -> list[str]:
    return incomparable_reasons(run.model, run.config["tasks"], baseline.model, baseline.task_configs)


def _summaries(result: RunResult | Baseline, reference: str) -> dict[tuple[str, str, str], PromptSummary]:
    """Per-prompt summaries by (task, condition, metric): the headline's against `reference`, the
    fluency cost's (its metric as the fluency records name it) always against unsteered."""
    fluent = {(f.task, f.metric) for f in result.fluency_cost}
    return {(p.task, p.condition, p.metric): p for p in result.per_prompt
            if p.reference == ("unsteered" if (p.task, p.metric) in fluent else reference)}


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
    summary, base_summary = (_summaries(r, reference) for r in (run, baseline))
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
        protect = base.condition not in baseline.no_effect.get(base.task, [])
        tests.append(_effect_line(base, now, summary.get((*key, base.metric)),
                                  base_summary.get((*key, base.metric)), tol, task_floors, gate, protect))
        fluent = (f.metric for f in baseline.fluency_cost if (f.task, f.condition) == key)
        fkey = (*key, next(fluent, ""))
        if fkey in base_summary:
            tests.append(_fluency_line(base, run, baseline, summary.get(fkey), base_summary[fkey], tol,
                                       task_floors))
        lines.append(_degenerate_line(base.task, base.condition, run.counts, baseline.counts, tol))
        lines.append(_ledger_line(base.task, base.condition, run.ledger, baseline.ledger, run.counts, tol))
    adjusted = adjust([t.p_regression for t in tests], [Family.CHECK] * len(tests))
    for t, p in zip(tests, adjusted, strict=True):
        line = t.line
        if line.verdict != "regression" and p < ALPHA:
            line = _replace(line, "regression", _regression_reason(line), p)
        lines.append(_replace(line, line.verdict, line.reason, p))
    order = list(Kind.__args__)
    lines.sort(key=lambda line: (line.task, line.condition, order.index(line.kind)))
    undecided = sum(line.verdict == "inconclusive" for line in lines)
    if any(line.verdict == "regression" for line in lines):
        status = REGRESSION
    elif undecided and not allow_inconclusive:
        status = INCONCLUSIVE
    else:
        status = HOLDS
    return CheckResult(status=status, lines=lines, reasons=[],
                       allowed_inconclusive=undecided if status == HOLDS else 0)


def _line(task: str, condition: str, kind: Kind, what: str, coverage: Coverage, baseline: float, now: float,
          change: Estimate | None, verdict: Verdict, reason: str = "") -> Line:
    return Line(task=task, condition=condition, kind=kind, what=what, coverage=coverage, baseline=baseline,
                now=now, change=change, verdict=verdict, reason=reason)


NO_BASELINE_VALUE = "no value in the baseline"


def _coverage(base_pp: PromptSummary | None, now_pp: PromptSummary | None, reference: str) -> Coverage:
    """The baseline's prompts, those with a finite effect in both the baseline and the run, and
    why the others were left out."""
    planned = base_pp.prompts if base_pp else {}
    now = now_pp.prompts if now_pp else {}
    excluded: Counter[str] = Counter()
    for key, (u, s) in planned.items():
        now_u, now_s = now.get(key, (math.nan, math.nan))
        if not (math.isfinite(u) and math.isfinite(s)):
            excluded[NO_BASELINE_VALUE] += 1
        elif not math.isfinite(now_u):
            excluded[f"{reference} NaN in the run"] += 1
        elif not math.isfinite(now_s):
            excluded["steered NaN in the run"] += 1
    return Coverage(planned=len(planned), compared=len(planned) - sum(excluded.values()),
                    excluded=dict(excluded))


def _too_little(coverage: Coverage, tol: Tolerance) -> str:
    """Why a line compares too few prompts to hold ("" when it compares enough)."""
    measured = coverage.planned - coverage.excluded.get(NO_BASELINE_VALUE, 0)
    needed = max(math.ceil(tol.min_coverage * measured - 1e-9), MIN_PROMPTS)
    if coverage.compared >= needed:
        return ""
    return (f"too little evidence: {coverage.compared} of the {measured} prompts the baseline measured have "
            f"finite values on both sides, holding needs {needed} (min_coverage {tol.min_coverage:g}; "
            f"a one-sided test needs {MIN_PROMPTS} to reach α = {ALPHA:g})")


def _replace(line: Line, verdict: Verdict, reason: str, p_regression: float) -> Line:
    return line.model_copy(update={"verdict": verdict, "reason": reason, "p_regression": p_regression})


def _regression_reason(line: Line) -> str:
    if line.kind == "effect":
        return "effect significantly smaller than baseline"
    return "fluency cost significantly larger than baseline"


def _nan_line(task: str, condition: str, kind: Kind, what: str, coverage: Coverage, base: float, now: float,
              reason: str) -> _Test:
    nan = math.nan
    return _Test(_line(task, condition, kind, what, coverage, base, now, None, "regression", reason), nan)


def _effect_line(base: Headline, now: Headline, now_pp: PromptSummary | None, base_pp: PromptSummary | None,
                 tol: Tolerance, floors: dict[str, float | None], gate: str = "effect",
                 protect: bool = True) -> _Test:
    """The effect line; `protect=False` for a headline the baseline has no effect to protect of."""
    what = f"{'specific ' if gate == 'specific' else ''}effect {base.metric}"
    sign = 1.0 if base.expected_direction == "increase" else -1.0
    coverage = _coverage(base_pp, now_pp, "controls" if gate == "specific" else "unsteered")
    now_eff, base_eff = _effects(now_pp), _effects(base_pp)
    # the specific gate protects the specific effect: its own significance, not the headline's vs unsteered
    base_est = _estimate(base_pp) if gate == "specific" else base.estimate
    established = base_est.p_value < ALPHA if gate == "specific" else base.significant
    base_diff = base_est.point
    now_diff = _estimate(now_pp).point if gate == "specific" else now.estimate.point
    if not any(math.isfinite(v) for v in now_eff.values()) or not math.isfinite(now_diff):
        return _nan_line(base.task, base.condition, "effect", what, coverage, base_diff, now_diff,
                         "no finite value of the headline metric in the run (all NaN, flagged or empty)")
    c = compare_values(base_eff, now_eff, confidence=tol.confidence)
    toward = compare_values({k: sign * v for k, v in base_eff.items()},
                            {k: sign * v for k, v in now_eff.items()})
    expected = sign * base_diff  # the baseline effect in the expected direction
    p_reg = margin_p_value(toward, -tol.effect * abs(expected), "less") if protect else math.nan
    e = c.estimate
    line = _line(base.task, base.condition, "effect", what, coverage, base_diff, now_diff, e, "holds")
    line = line.model_copy(update={"detectable": minimum_detectable_effect(e.sd, e.n, sides=1)})
    minimum = floors.get("min_effect")
    if minimum is not None and sign * now_diff < minimum:
        return _Test(_replace(line, "regression", f"effect below min_effect {minimum}", math.nan), p_reg)
    if not protect:  # listed for its effect vs unsteered, whatever the gate
        against = not sign * base.estimate.point > 0
        how = (f"not in the expected direction ({base.expected_direction})" if against
               else f"not significantly (p = {base.estimate.p_value:.3g} before adjustment)")
        return _Test(line.model_copy(update={
            "verdict": NO_EFFECT, "reason": f"the baseline (written with --no-effect) moved "
            f"{base.estimate.point:+.3g}, {how}: nothing to protect"}), p_reg)
    if not expected > 0:
        return _Test(line.model_copy(update={
            "verdict": "inconclusive", "reason": f"the baseline's {what} ({base_diff:+.3g}) is not in the "
            f"expected direction ({base.expected_direction}): there is no effect to protect"}), p_reg)
    if not established:
        remedy = ("write the baseline from a run with more prompts" if gate == "specific" else "write the "
                  "baseline with --no-effect (then fluency, degenerate samples and the ledger still gate) or "
                  "from a run with more prompts")
        return _Test(line.model_copy(update={
            "verdict": "inconclusive", "reason": f"the baseline's {what} ({base_diff:+.3g}, p = "
            f"{base_est.p_value:.3g} before adjustment) was not significant in its own run: no "
            f"established effect to protect; {remedy}"}), p_reg)
    p_holds = margin_p_value(toward, -expected, "greater")
    line = line.model_copy(update={"p_holds": p_holds})
    short = _too_little(coverage, tol)
    if short or not p_holds < ALPHA:
        return _Test(line.model_copy(update={"verdict": "inconclusive",
                                             "reason": short or _undecided(toward, expected)}), p_reg)
    return _Test(line, p_reg)


def _undecided(c: Comparison, expected: float) -> str:
    """Why an effect line is inconclusive, and how many prompts would decide it."""
    room = c.estimate.point + expected  # how far the observed change is from losing the whole effect
    if room <= 0:
        return "the run may have lost the whole baseline effect (observed change ≥ the effect)"
    return (f"the change's CI still includes losing the whole baseline effect ({-expected:+.3g}); "
            f"{_more(c, room)}")


def _more(c: Comparison, room: float) -> str:
    """How many prompts would let a one-sided test decide a change `room` away from its margin."""
    if c.estimate.sd == 0:
        return f"{c.estimate.n} prompts, all moved alike: no spread to plan more prompts from"
    need = prompts_needed(c.estimate.sd, room, sides=1)
    if need is None:
        return f"{c.estimate.n} prompts, more prompts would not decide it"
    return f"{c.estimate.n} prompts, about {max(need, MIN_PROMPTS)} prompts would decide it"


def _estimate(summary: PromptSummary | None) -> Estimate:
    """The paired effect of a per-prompt summary (its condition − its reference)."""
    prompts = summary.prompts if summary else {}
    reference, condition = ({k: v[i] for k, v in prompts.items()} for i in (0, 1))
    return compare_values(reference, condition).estimate


def _fluency_line(base: Headline, run: RunResult, baseline: Baseline, now_pp: PromptSummary | None,
                  base_pp: PromptSummary, tol: Tolerance, floors: dict[str, float | None]) -> _Test:
    what = "fluency cost (Δ log-ppl)"
    key = (base.task, base.condition)
    coverage = _coverage(base_pp, now_pp, "unsteered")
    f_base = next((f.estimate.point for f in baseline.fluency_cost if (f.task, f.condition) == key), math.nan)
    f_now = next((f.estimate.point for f in run.fluency_cost if (f.task, f.condition) == key), math.nan)
    now_eff = _effects(now_pp)
    if not any(math.isfinite(v) for v in now_eff.values()) or not math.isfinite(f_now):
        return _nan_line(base.task, base.condition, "fluency", what, coverage, f_base, f_now,
                         "no finite fluency cost in the run (all NaN, flagged or empty)")
    c = compare_values(_effects(base_pp), now_eff, confidence=tol.confidence)
    p_reg = margin_p_value(c, tol.fluency, "greater")
    p_holds = margin_p_value(c, tol.fluency, "less")
    e = c.estimate
    line = _line(base.task, base.condition, "fluency", what, coverage, f_base, f_now, e, "holds")
    line = line.model_copy(update={"p_holds": p_holds,
                                   "detectable": minimum_detectable_effect(e.sd, e.n, sides=1)})
    ceiling = floors.get("max_fluency_cost")
    if ceiling is not None and f_now > ceiling:
        return _Test(_replace(line, "regression", f"fluency cost above max_fluency_cost {ceiling}", math.nan),
                     p_reg)
    short = _too_little(coverage, tol)
    if short or not p_holds < ALPHA:
        room = tol.fluency - c.estimate.point  # how far the observed growth is below the tolerance
        reason = short or (f"the growth's CI still includes {tol.fluency:+.3g} nats (the tolerance); "
                           f"{_more(c, room)}" if room > 0 else "the fluency cost may have grown by more "
                           f"than the tolerance ({tol.fluency:+.3g} nats)")
        return _Test(line.model_copy(update={"verdict": "inconclusive", "reason": reason}), p_reg)
    return _Test(line, p_reg)


def _counts(counts: Sequence[ConditionCounts], task: str, condition: str) -> ConditionCounts | None:
    return next((c for c in counts if (c.task, c.condition) == (task, condition) and c.samples), None)


def _share(counts: Sequence[ConditionCounts], task: str, condition: str) -> float:
    found = _counts(counts, task, condition)
    return found.degenerate_share if found else math.nan


def _degenerate_line(task: str, condition: str, now: Sequence[ConditionCounts],
                     base: Sequence[ConditionCounts], tol: Tolerance) -> Line:
    """Flagged-or-empty share of the steered samples above the unsteered share: a regression when
    it exceeds the tolerance, holds when its exact upper confidence bound does not."""
    steered, unsteered = _counts(now, task, condition), _counts(now, task, UNSTEERED)
    excess_base = _share(base, task, condition) - _share(base, task, UNSTEERED)
    sizes = {"steered": steered.samples if steered else 0, "unsteered": unsteered.samples if unsteered else 0}
    coverage = Coverage(unit="samples", planned=sum(sizes.values()), compared=sum(sizes.values()))
    what = "flagged, empty or unscorable share (steered − unsteered)"
    nan = math.nan
    if steered is None or unsteered is None:
        return _line(task, condition, "degenerate", what, coverage, excess_base, nan, None, "inconclusive",
                     "the run counts no samples of this condition or of unsteered")
    share_u = unsteered.degenerate_share
    excess_now = steered.degenerate_share - share_u
    line = _line(task, condition, "degenerate", what, coverage, excess_base, excess_now, None, "holds")
    if excess_now > tol.degenerate:
        return _replace(line, "regression", f"{excess_now:.0%} more of the steered samples are flagged, "
                        f"empty or unscorable than unsteered (tolerance {tol.degenerate:.0%})", nan)
    bad = round(steered.degenerate_share * steered.samples)
    upper = proportion_upper_bound(bad, steered.samples, ALPHA)
    if upper - share_u > tol.degenerate:
        enough = math.ceil(math.log(ALPHA) / math.log1p(-min(share_u + tol.degenerate, 1 - 1e-12)))
        return _replace(line, "inconclusive", f"too few samples: {bad} of {steered.samples} steered samples "
                        f"are degenerate, their share may be up to {upper:.0%} ({1 - ALPHA:.0%} upper "
                        f"bound), over the unsteered {share_u:.0%} + {tol.degenerate:.0%}; with none "
                        f"degenerate, {enough} samples would decide it", nan)
    return line


def _ledger_totals(ledger: Sequence[LedgerRecord], task: str, condition: str
                   ) -> tuple[dict[str, int], float, int]:
    """Positions changed per forward kind, the norm added per sample, and the samples counted."""
    mine = [r for r in ledger if (r.task, r.condition) == (task, condition)]
    kinds: dict[str, int] = {}
    for r in mine:
        kinds[r.kind] = kinds.get(r.kind, 0) + r.positions
    samples = max((r.samples for r in mine), default=0)
    return kinds, (sum(r.norm for r in mine) / samples if samples else 0.0), samples


def _ledger_line(task: str, condition: str, now: Sequence[LedgerRecord], base: Sequence[LedgerRecord],
                 counts: Sequence[ConditionCounts], tol: Tolerance) -> Line:
    """Did the steering apply as it did in the baseline: the same forward kinds, enough norm?"""
    kinds_now, norm_now, samples_now = _ledger_totals(now, task, condition)
    kinds_base, norm_base, _ = _ledger_totals(base, task, condition)
    found = _counts(counts, task, condition)
    planned = found.samples if found else 0
    coverage = Coverage(unit="samples", planned=planned, compared=min(samples_now, planned),
                        excluded={"no ledger record": planned - samples_now} if samples_now < planned else {})
    what = "steering ledger (norm added per sample)"
    nan = math.nan
    line = _line(task, condition, "ledger", what, coverage, norm_base, norm_now, None, "holds")
    lost = [k for k, n in kinds_base.items() if n > 0 and not kinds_now.get(k)]
    if lost:
        where = " and ".join(f"{k} passes" for k in lost)
        return _replace(line, "regression", f"the steering changed no position in {where}, where the "
                        "baseline's did (steering not applied)", nan)
    if not math.isfinite(norm_now):
        return _replace(line, "regression", f"the steering added a non-finite norm ({norm_now}) per "
                        "sample", nan)
    if norm_base > 0 and norm_now < tol.ledger * norm_base:
        return _replace(line, "regression", f"the steering added {norm_now:.3g} per sample, under "
                        f"{tol.ledger:g} x the baseline's {norm_base:.3g}", nan)
    if not any(kinds_base.values()):
        return _replace(line, "inconclusive", "the baseline's ledger shows no position changed by this "
                        "condition: nothing to compare whether the steering applied", nan)
    return line
