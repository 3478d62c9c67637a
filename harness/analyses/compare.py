"""`harness compare`: effects of several runs side by side, and each run's difference from the first.

Per task and metric (the fluency cost, Δ log-perplexity, included): every run's effect (per-prompt
mean steered − mean unsteered) and each later run minus the first run (the reference), all from
`harness.stats.comparison` with its multiplicity policy. Runs that hold the same prompts of a task are
paired by prompt identity; otherwise the comparison is unpaired (two independent samples of
prompts). Runs of different models, dtypes, generation settings or scorers are refused (exit 2),
for the same reasons as `harness check`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from harness.errors import UserError
from harness.pipeline.analyse import condition_values
from harness.schema.results import Estimate, RunResult, SampleRecord
from harness.schema.spec import ALPHA, UNSTEERED, Record
from harness.schema.task import Direction
from harness.stats.comparable import incomparable_reasons
from harness.stats.comparison import Comparison, Family, adjust, compare_values
from harness.store import read_run


class RunRef(Record):
    label: str
    path: str
    condition: str


class RunEffect(Record):
    """One run's effect: mean over prompts of (mean steered − mean unsteered)."""

    label: str
    estimate: Estimate
    p_adjusted: float | None = None  # as recorded in run.json


class Difference(Record):
    """A later run's effect minus the reference run's effect."""

    label: str
    reference: str
    estimate: Estimate  # this run's per-prompt effects − the reference run's
    p_adjusted: float
    significant: bool
    n: int  # prompts paired, or prompts of this run when unpaired
    n_reference: int


class CompareRow(Record):
    task: str
    metric: str
    is_fluency: bool
    headline: bool
    expected_direction: Direction | None = None
    effects: list[RunEffect]
    vs_reference: list[Difference]


class CompareResult(Record):
    seed: int
    runs: list[RunRef]
    rows: list[CompareRow]


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


class _Run:
    """A loaded run, the condition compared, and its prompts per task."""

    def __init__(self, run: RunResult, samples: list[SampleRecord], condition: str):
        self.run, self.samples, self.condition = run, samples, condition
        self.prompts = {t.name: t.prompt_ids for t in run.tasks}

    def values(self, task: str, condition: str, metric: str) -> dict[str, float]:
        return condition_values(self.samples, task, condition, metric, self.prompts[task])[0]

    def prompt_effects(self, task: str, metric: str) -> dict[str, float]:
        """Per prompt: mean steered − mean unsteered (NaN where either has no finite value)."""
        base = self.values(task, UNSTEERED, metric)
        steer = self.values(task, self.condition, metric)
        return {k: steer[k] - base[k] for k in self.prompts[task]}

    def effect(self, task: str, metric: str, seed: int) -> Comparison:
        return compare_values(self.values(task, UNSTEERED, metric), self.values(task, self.condition, metric),
                              seed=seed)

    def is_fluency(self, task: str, metric: str) -> bool:
        """Whether `metric` is the fluency metric of `task` in this run (its fluency records say)."""
        return any((f.task, f.metric) == (task, metric) for f in self.run.fluency_cost)

    def recorded_p(self, task: str, metric: str) -> float | None:
        key = (task, self.condition)
        if self.is_fluency(task, metric):
            found = (f.p_adjusted for f in self.run.fluency_cost if (f.task, f.condition) == key)
        else:
            found = (e.p_adjusted for e in self.run.effects
                     if (e.task, e.condition, e.metric) == (*key, metric))
        return next(found, None)


def _load(refs: Sequence[str]) -> tuple[list[_Run], list[RunRef]]:
    """Read every run and pick its condition: the one named, else its only steered one."""
    loaded: list[_Run] = []
    parsed = [parse_ref(r) for r in refs]
    for (path, condition), ref in zip(parsed, refs, strict=True):
        run, samples = read_run(path)
        conds = list(dict.fromkeys(s.condition for s in samples if s.condition != UNSTEERED))
        listing = f"conditions: {', '.join(conds) or 'none'}"
        if condition is None and len(conds) != 1:
            raise UserError(f"{ref}: name a condition as {ref}:CONDITION; {listing}")
        if condition is not None and condition not in conds:
            raise UserError(f"{ref}: no condition {condition!r}; {listing}")
        loaded.append(_Run(run, samples, condition or conds[0]))
    labels = _labels([p for p, _ in parsed], [c for _, c in parsed])
    refs_out = [RunRef(label=label, path=str(path), condition=r.condition)
                for label, (path, _), r in zip(labels, parsed, loaded, strict=True)]
    return loaded, refs_out


def _row(runs: Sequence[_Run], refs: Sequence[RunRef], task: str, metric: str, headline: str | None,
         seed: int) -> CompareRow:
    effects = []
    for ref, r in zip(refs, runs, strict=True):
        effects.append(RunEffect(label=ref.label, estimate=r.effect(task, metric, seed).estimate,
                                 p_adjusted=r.recorded_p(task, metric)))
    first = runs[0].prompt_effects(task, metric)
    diffs = []
    for ref, r in zip(refs[1:], runs[1:], strict=True):
        e = compare_values(first, r.prompt_effects(task, metric), seed=seed).estimate
        n_ref = e.n if e.paired else sum(math.isfinite(v) for v in first.values())
        diffs.append(Difference(label=ref.label, reference=refs[0].label, estimate=e, p_adjusted=e.p_value,
                                significant=False, n=e.n if e.paired else e.n - n_ref,
                                n_reference=n_ref))
    directions = (e.expected_direction for e in runs[0].run.effects if (e.task, e.metric) == (task, metric))
    return CompareRow(task=task, metric=metric, is_fluency=runs[0].is_fluency(task, metric),
                      headline=metric == headline, expected_direction=next(directions, None),
                      effects=effects, vs_reference=diffs)


def compare_runs(refs: Sequence[str], seed: int = 0) -> CompareResult:
    """Compare the runs of `refs` (`PATH` or `PATH:CONDITION`; the first is the reference).

    Tasks with the chosen condition in every run, metrics scored in every run; p-values
    Holm-adjusted in the confirmatory (declared metrics, fluency) and exploratory families.
    """
    if isinstance(refs, str | Path):  # its characters are no runs
        raise UserError(f"compare takes a list of runs, e.g. compare([{str(refs)!r}, 'runs/other'])")
    if len(refs) < 2:
        raise UserError("compare needs at least two runs")
    runs, labels = _load(refs)
    reference = runs[0]
    tasks = [t for t in dict.fromkeys(s.task for s in reference.samples)
             if all(any(s.task == t and s.condition == r.condition for s in r.samples) for r in runs)]
    for ref, r in zip(labels[1:], runs[1:], strict=True):
        reasons = incomparable_reasons(
            r.run.model, {t: r.run.config["tasks"][t] for t in tasks},
            reference.run.model, {t: reference.run.config["tasks"][t] for t in tasks},
            labels=(ref.label, labels[0].label), same_prompts=False)
        if reasons:
            raise UserError(f"cannot compare {ref.label} with {labels[0].label}: " + "; ".join(reasons))
    rows: list[CompareRow] = []
    for task in tasks:
        common = set.intersection(*({m for s in r.samples
                                      if s.task == task and s.condition in (UNSTEERED, r.condition)
                                      for m in s.scores} for r in runs))
        headline = next((e.metric for e in reference.run.effects if e.task == task and e.headline), None)
        fluent = {m for m in common if reference.is_fluency(task, m)}
        metrics = sorted(common - fluent, key=lambda m: (m != headline, m)) + sorted(fluent)
        rows += [_row(runs, labels, task, metric, headline, seed) for metric in metrics]
    diffs = [(row, d) for row in rows for d in row.vs_reference]
    families = [Family.CONFIRMATORY if row.is_fluency or row.expected_direction else Family.EXPLORATORY
                for row, _ in diffs]
    for (_, d), p in zip(diffs, adjust([d.estimate.p_value for _, d in diffs], families), strict=True):
        d.p_adjusted, d.significant = p, bool(p < ALPHA)
    return CompareResult(seed=seed, runs=labels, rows=rows)
