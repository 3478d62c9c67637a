"""`harness compare`: effects of several runs side by side, and each run's difference from the first.

Per task and metric (the fluency cost, Δ log-perplexity, included): every run's effect (per-prompt
mean steered − mean unsteered) with a bootstrap CI, and each later run minus the first run (the
reference) with a CI and a Holm-adjusted p-value. Runs with the same prompts of a task are paired
by prompt text; otherwise the comparison is unpaired (two independent samples of prompts).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats as sps

from harness import stats
from harness.errors import UserError
from harness.report.io import read_run
from harness.report.schema import Direction, RunResult, SampleRecord
from harness.report.terminal import NOT_SIG, num, pval, with_ci

# harness.analysis.FLUENCY_METRIC / harness.engine.UNSTEERED, not imported: the engine loads torch.
FLUENCY_METRIC = "perplexity.logppl"
UNSTEERED = "unsteered"
ALPHA = 0.05
SIG = "✓"
LEGEND = (
    f"{SIG} difference significant (Holm-adjusted over all rows, p < {ALPHA}) · {NOT_SIG} not · "
    "CIs: 95% bootstrap over prompts · paired = by prompt text, unpaired = independent prompts · "
    "fluency cost = Δ mean log-perplexity (steered − unsteered; lower is more fluent)"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


class RunRef(_Model):
    label: str
    path: str
    condition: str


class RunEffect(_Model):
    """One run's effect: mean over prompts of (mean steered − mean unsteered)."""

    label: str
    diff: float
    ci_low: float
    ci_high: float
    n: int  # prompts
    p_adjusted: float | None = None  # as recorded in run.json (fluency: its unadjusted p_value)


class Difference(_Model):
    """A later run's effect minus the reference run's effect."""

    label: str
    reference: str
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    significant: bool
    paired: bool
    n: int  # prompts paired, or prompts of this run when unpaired
    n_reference: int


class CompareRow(_Model):
    task: str
    metric: str
    is_fluency: bool
    headline: bool
    expected_direction: Direction | None = None
    effects: list[RunEffect]
    vs_reference: list[Difference]


class CompareResult(_Model):
    seed: int
    runs: list[RunRef]
    rows: list[CompareRow]
    headlines: list[str]


def parse_ref(ref: str) -> tuple[Path, str | None]:
    """`PATH` or `PATH:CONDITION` (an existing path wins over the split)."""
    path, colon, condition = ref.rpartition(":")
    if Path(ref).exists() or not colon or not path or not condition:
        return Path(ref), None
    return Path(path), condition


def _labels(paths: Sequence[Path], conditions: Sequence[str | None]) -> list[str]:
    folders = [p.parent if p.name == "run.json" else p for p in paths]
    labels = [f.resolve().name + (f":{c}" if c else "") for f, c in zip(folders, conditions, strict=True)]
    out: list[str] = []
    for f, label in zip(folders, labels, strict=True):
        if labels.count(label) > 1:
            label = f"{f.resolve().parent.name}/{label}"
        while label in out:
            label += "'"
        out.append(label)
    return out


def _prompt_effects(
    samples: Sequence[SampleRecord], task: str, condition: str, metric: str
) -> dict[str, float]:
    """Per prompt key: mean steered − mean unsteered of the finite values (flagged = NaN)."""
    indices: dict[str, set[int]] = defaultdict(set)
    for s in samples:
        if s.task == task:
            indices[s.prompt].add(s.prompt_index)
    by_cond: dict[str, dict[str, list[float]]] = {UNSTEERED: defaultdict(list), condition: defaultdict(list)}
    for s in samples:
        if s.task == task and s.condition in by_cond and metric in s.scores:
            rank = sorted(indices[s.prompt]).index(s.prompt_index)
            key = s.prompt if rank == 0 else f"{s.prompt} ({rank + 1})"
            by_cond[s.condition][key].append(math.nan if s.flagged else s.scores[metric])
    base, _ = stats.per_prompt_means(by_cond[UNSTEERED])
    steer, _ = stats.per_prompt_means(by_cond[condition])
    return {k: steer[k] - base[k] for k in sorted(base.keys() & steer.keys())}


def _unpaired(b: list[float], a: list[float], seed: int) -> tuple[float, float, float]:
    """CI (BCa, else percentile) and permutation p of mean(b) − mean(a), independent samples."""
    x, y = np.asarray(b), np.asarray(a)
    if x.size < 2 or y.size < 2:
        return math.nan, math.nan, math.nan
    if np.all(np.concatenate([x, y]) == x[0]):
        return float(x[0] - y[0]), float(x[0] - y[0]), 1.0

    def diff(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    def ci(method: str) -> tuple[float, float]:
        res = sps.bootstrap((x, y), diff, vectorized=True, n_resamples=2000, method=method,
                            rng=np.random.default_rng(seed))
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = ci("BCa")
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = ci("percentile")
    p = sps.permutation_test((x, y), diff, permutation_type="independent", vectorized=True,
                             n_resamples=9999, rng=np.random.default_rng(seed)).pvalue
    return low, high, float(p)


def _difference(a: dict[str, float], b: dict[str, float], paired: bool, labels: tuple[str, str],
                seed: int) -> Difference:
    """Effect of run b minus run a: paired by prompt key, or as two independent samples."""
    if paired:
        keys = sorted(a.keys() & b.keys())
        d = [b[k] - a[k] for k in keys]
        low, high = stats.bootstrap_ci(d, seed=seed)
        p, n, n_ref = stats.paired_p_value(d, seed=seed), len(d), len(d)
        diff = float(np.mean(d)) if d else math.nan
    else:
        low, high, p = _unpaired(list(b.values()), list(a.values()), seed)
        diff = float(np.mean(list(b.values())) - np.mean(list(a.values()))) if a and b else math.nan
        n, n_ref = len(b), len(a)
    return Difference(label=labels[1], reference=labels[0], diff=diff, ci_low=low, ci_high=high,
                      p_value=p, p_adjusted=p, significant=False, paired=paired, n=n, n_reference=n_ref)


def _recorded_p(run: RunResult, task: str, condition: str, metric: str) -> float | None:
    if metric == FLUENCY_METRIC:
        found = (f.p_value for f in run.fluency_cost if (f.task, f.condition) == (task, condition))
    else:
        key = (task, condition, metric)
        found = (e.p_adjusted for e in run.effects if (e.task, e.condition, e.metric) == key)
    return next(found, None)


Loaded = tuple[RunResult, list[SampleRecord], str]


def _load(refs: Sequence[str]) -> tuple[list[Loaded], list[RunRef]]:
    """Read every run and pick its condition: the one named, else its only steered one."""
    loaded: list[Loaded] = []
    parsed = [parse_ref(r) for r in refs]
    for (path, condition), ref in zip(parsed, refs, strict=True):
        run, samples = read_run(path)
        conds = list(dict.fromkeys(s.condition for s in samples if s.condition != UNSTEERED))
        listing = f"conditions: {', '.join(conds) or 'none'}"
        if condition is None and len(conds) != 1:
            raise UserError(f"{ref}: name a condition as {ref}:CONDITION; {listing}")
        if condition is not None and condition not in conds:
            raise UserError(f"{ref}: no condition {condition!r}; {listing}")
        loaded.append((run, samples, condition or conds[0]))
    labels = _labels([p for p, _ in parsed], [c for _, c in parsed])
    refs_out = [RunRef(label=label, path=str(path), condition=cond)
                for label, (path, _), (_, _, cond) in zip(labels, parsed, loaded, strict=True)]
    return loaded, refs_out


def _row(loaded: Sequence[Loaded], runs: Sequence[RunRef], task: str, metric: str, headline: str | None,
         seed: int) -> CompareRow:
    per_run = [_prompt_effects(samples, task, cond, metric) for _, samples, cond in loaded]
    effects = []
    for ref, (run, _, cond), pe in zip(runs, loaded, per_run, strict=True):
        low, high = stats.bootstrap_ci(list(pe.values()), seed=seed)
        effects.append(RunEffect(label=ref.label, diff=float(np.mean(list(pe.values()))) if pe else math.nan,
                                 ci_low=low, ci_high=high, n=len(pe),
                                 p_adjusted=_recorded_p(run, task, cond, metric)))
    prompts = [{s.prompt for s in samples if s.task == task} for _, samples, _ in loaded]
    diffs = [_difference(per_run[0], per_run[i], prompts[i] == prompts[0], (runs[0].label, runs[i].label),
                         seed) for i in range(1, len(loaded))]
    directions = (e.expected_direction for e in loaded[0][0].effects if (e.task, e.metric) == (task, metric))
    return CompareRow(task=task, metric=metric, is_fluency=metric == FLUENCY_METRIC,
                      headline=metric == headline, expected_direction=next(directions, None),
                      effects=effects, vs_reference=diffs)


def compare_runs(refs: Sequence[str], seed: int = 0) -> CompareResult:
    """Compare the runs of `refs` (`PATH` or `PATH:CONDITION`; the first is the reference).

    Tasks with the chosen condition in every run, metrics scored in every run; Holm over all rows.
    """
    if len(refs) < 2:
        raise UserError("compare needs at least two runs")
    loaded, runs = _load(refs)
    reference = loaded[0][0]
    tasks = [t for t in dict.fromkeys(s.task for s in loaded[0][1])
             if all(any(s.task == t and s.condition == c for s in ss) for _, ss, c in loaded)]
    rows: list[CompareRow] = []
    for task in tasks:
        common = set.intersection(*({m for s in ss if s.task == task and s.condition in (UNSTEERED, c)
                                     for m in s.scores} for _, ss, c in loaded))
        headline = next((e.metric for e in reference.effects if e.task == task and e.headline), None)
        metrics = sorted(common - {FLUENCY_METRIC}, key=lambda m: (m != headline, m))
        metrics += [FLUENCY_METRIC] if FLUENCY_METRIC in common else []
        rows += [_row(loaded, runs, task, metric, headline, seed) for metric in metrics]
    diffs = [d for row in rows for d in row.vs_reference]
    for d, p in zip(diffs, stats.holm([d.p_value for d in diffs]), strict=True):
        d.p_adjusted, d.significant = p, bool(p < ALPHA)
    return CompareResult(seed=seed, runs=runs, rows=rows, headlines=_headlines(rows))


def _headlines(rows: Sequence[CompareRow]) -> list[str]:
    """Per task and later run: how much more it moves the headline metric than the reference, and
    the fluency cost of both."""
    out = []
    for row in rows:
        if not row.headline:
            continue
        fluency = next((r for r in rows if r.task == row.task and r.is_fluency), None)
        for i, d in enumerate(row.vs_reference, start=1):
            verdict = "significant" if d.significant else "not significant"
            cost = (f"; fluency cost {d.reference} {num(fluency.effects[0].diff, signed=True)}, "
                    f"{d.label} {num(fluency.effects[i].diff, signed=True)}" if fluency else "")
            out.append(f"{row.task}: {d.label} moves {row.metric} by {with_ci(d.diff, d.ci_low, d.ci_high)} "
                       f"more than {d.reference} ({'paired' if d.paired else 'unpaired'}, "
                       f"p_adj {pval(d.p_adjusted)}, {verdict}){cost}")
    return out
