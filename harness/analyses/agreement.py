"""Agreement of two metrics over the same samples of a run (`harness agreement RUN --a M --b M`):
how well one score tells the other's verdict. When a metric is binary (every used value 0 or 1,
e.g. `keywords.any`), the AUC of the other metric for it; always Spearman's rho. Each with a 95 %
interval, the samples used and those left out with why.

The unit is the sample, and its intervals take samples as independent; the samples of one prompt
are not (they share the prompt, and across conditions its unsteered text), so with several samples
per prompt the intervals are too narrow by up to the design effect: `n_prompts` says how many
distinct prompts the samples come from. Pooled over conditions, two metrics that the steering
moves together agree by that alone (steered texts have more topic words and a higher perplexity),
so a pooled agreement also carries the agreement within each condition.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from harness.errors import UserError
from harness.schema.results import SampleRecord
from harness.schema.spec import Record
from harness.stats import auc, spearman
from harness.store import read_samples

AUC_METHOD = "stratified bootstrap (BCa), samples as independent"
SPEARMAN_METHOD = "Fisher z, Bonett-Wright standard error"


class Agreement(Record):
    """Agreement of metric `b` with metric `a` over the samples of a run that have both."""

    run: str
    a: str
    b: str
    tasks: list[str] = Field(default_factory=list)  # the tasks read (by default every task scoring both)
    conditions: list[str] = Field(default_factory=list)  # empty: every condition
    n_samples: int  # samples of those tasks and conditions
    n: int  # samples with a finite value of both metrics
    n_prompts: int  # distinct prompts (task, prompt) of the samples used
    excluded: dict[str, int] = Field(default_factory=dict)  # why -> samples left out
    confidence: float = 0.95
    label: str | None = None  # the binary metric the AUC is of (None: neither is binary)
    n_positive: int = 0
    n_negative: int = 0
    auc: float = math.nan  # P(score of a positive > score of a negative) + ties / 2
    auc_ci_low: float = math.nan
    auc_ci_high: float = math.nan
    auc_method: str = AUC_METHOD
    auc_note: str = ""  # why there is no AUC
    spearman: float = math.nan
    spearman_ci_low: float = math.nan
    spearman_ci_high: float = math.nan
    spearman_p: float = math.nan
    spearman_method: str = SPEARMAN_METHOD
    spearman_note: str = ""  # why there is no rho
    warnings: list[str] = Field(default_factory=list)  # why a number here may agree by construction
    # pooled over several conditions: the agreement within each (the steering cannot drive it there)
    within: dict[str, Agreement] = Field(default_factory=dict)


def _why_not(s: SampleRecord, metric: str) -> str | None:
    """Why `s` has no usable value of `metric`, or None when it has one."""
    if s.flagged:
        return f"flagged: {s.flagged}"
    if metric not in s.scores:
        return f"{metric}: not scored"
    if not math.isfinite(s.scores[metric]):
        return f"{metric}: {s.reasons.get(metric) or 'non-finite value'}"
    return None


def _rho_note(x: Sequence[float], y: Sequence[float], a: str, b: str) -> str:
    """Why Spearman's rho is undefined (fewer than 2 samples, or a constant metric), else ""."""
    if len(x) < 2:
        return f"{len(x)} sample(s) with both metrics"
    constant = [m for m, v in ((a, x), (b, y)) if len(set(v)) == 1]
    return f"{' and '.join(constant)} constant over the samples" if constant else ""


def _by_construction(a: str, b: str) -> list[str]:
    """A warning when both metrics come from one scorer (`keywords.any` is `keywords.rate` > 0)."""
    scorer = a.split(".", 1)[0]
    if "." in a and scorer == b.split(".", 1)[0]:
        return [f"{a} and {b} come from one scorer ({scorer}): they may agree by construction"]
    return []


AUTO = "<auto>"  # agreement_of's label: chosen from the samples (the binary metric, if any)


def _binary(values: Sequence[float]) -> bool:
    return bool(values) and all(v in (0.0, 1.0) for v in values)


def agreement_of(samples: Sequence[SampleRecord], a: str, b: str, *, run: str = "",
                 tasks: Sequence[str] = (), conditions: Sequence[str] = (), confidence: float = 0.95,
                 seed: int = 0, label: str | None = AUTO) -> Agreement:
    """Agreement of `b` with `a` over the `samples` of `tasks` (default: every task that scores
    both) and `conditions` (default: all). The AUC is of the other metric for the binary one (of `b`
    for `a` when both are binary), or for `label` (None: no AUC); each condition's row keeps the
    pooled row's choice, so a 0-2 rating that takes only 0 and 1 in one condition stays no label."""
    if a == b:
        raise UserError(f"the agreement of {a} with itself is 1 by construction: name two metrics")
    scored = {m: sorted({s.task for s in samples if m in s.scores}) for m in (a, b)}
    if missing := [m for m in (a, b) if not scored[m]]:
        known = sorted({m for s in samples for m in s.scores})
        raise UserError(f"no sample scores {' or '.join(missing)}; the run's metrics: {', '.join(known)}")
    chosen = list(tasks) or sorted(set(scored[a]) & set(scored[b]))
    if not chosen:
        raise UserError(f"no task scores both {a} ({', '.join(scored[a])}) and {b} ({', '.join(scored[b])})")
    if unknown := sorted(set(chosen) - {s.task for s in samples}):
        raise UserError(f"no samples of task(s) {', '.join(unknown)} in this run")
    if unknown := [c for c in conditions if c not in {s.condition for s in samples if s.task in chosen}]:
        have = sorted({s.condition for s in samples if s.task in chosen})
        raise UserError(f"no condition {', '.join(map(repr, unknown))} in {', '.join(chosen)} "
                        f"(conditions: {', '.join(have)})")
    mine = [s for s in samples if s.task in chosen and (not conditions or s.condition in conditions)]
    used, excluded = [], Counter()
    for s in mine:
        why = _why_not(s, a) or _why_not(s, b)
        if why:
            excluded[why] += 1
        else:
            used.append(s)
    x = [s.scores[a] for s in used]
    y = [s.scores[b] for s in used]
    rho, rho_low, rho_high, rho_p = spearman(x, y, confidence)
    if label == AUTO:
        label = a if _binary(x) else b if _binary(y) else None
    pooled = list(dict.fromkeys(s.condition for s in mine))
    by_condition = not conditions and len(pooled) > 1
    within = {c: agreement_of(mine, a, b, run=run, tasks=chosen, conditions=[c], confidence=confidence,
                              seed=seed, label=label) for c in pooled} if by_condition else {}
    out = Agreement(run=run, a=a, b=b, tasks=chosen, conditions=list(conditions), n_samples=len(mine),
                    n=len(used), n_prompts=len({(s.task, s.prompt_id) for s in used}),
                    excluded=dict(excluded.most_common()), confidence=confidence, spearman=rho,
                    spearman_ci_low=rho_low, spearman_ci_high=rho_high, spearman_p=rho_p,
                    spearman_note=_rho_note(x, y, a, b), within=within)
    score = y if label == a else x if label == b else None
    warnings = _by_construction(a, b)
    if math.isclose(abs(rho), 1.0, abs_tol=1e-12):
        warnings.append(f"the ranks of {a} and {b} agree perfectly (rho {rho:+.0f}): check that neither "
                        "metric is computed from the other; Fisher's z interval is a point there, whatever n")
    if label is None:
        why = "neither metric is binary (0/1)" if used else "no sample with both metrics"
        return out.model_copy(update={"auc_note": why, "warnings": warnings})
    truth = x if label == a else y
    positive = [v for v, t in zip(score, truth, strict=True) if t == 1.0]
    negative = [v for v, t in zip(score, truth, strict=True) if t == 0.0]
    point, low, high = auc(positive, negative, confidence, seed=seed)
    note = "" if positive and negative else f"no {'negative' if positive else 'positive'} sample of {label}"
    other = b if label == a else a
    if positive and negative and len(set(score)) == 1:
        warnings.append(f"{other} is constant over the samples: its AUC is 0.5 by construction, "
                        "whatever the metrics measure")
    elif point in (0.0, 1.0):
        warnings.append(f"{other} separates {label}'s classes perfectly: check that neither metric is "
                        "computed from the other; the bootstrap interval cannot vary then (every resample "
                        "separates too), so its width is no evidence of precision")
    return out.model_copy(update={"label": label, "n_positive": len(positive), "n_negative": len(negative),
                                  "auc": point, "auc_ci_low": low, "auc_ci_high": high, "auc_note": note,
                                  "warnings": warnings})


def agreement(run: str | Path, a: str, b: str, *, tasks: Sequence[str] = (), conditions: Sequence[str] = (),
              confidence: float = 0.95, seed: int = 0) -> Agreement:
    """`agreement_of` the samples of the run folder (or run.json) `run`, or of a samples JSONL file
    (e.g. a run's samples.jsonl rescored by `harness score`)."""
    samples = read_samples(Path(run))
    return agreement_of(samples, a, b, run=str(run), tasks=tasks, conditions=conditions,
                        confidence=confidence, seed=seed)
