"""Compare a run against a committed baseline: exit 0 holds, 1 regression, 2 cannot compare."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.analysis import FLUENCY_METRIC
from harness.errors import UserError
from harness.report.schema import FluencyRecord, Headline, PromptSummary, RunResult
from harness.stats import bootstrap_ci
from harness.store import atomic_write_text

HOLDS, REGRESSION, INCOMPARABLE = 0, 1, 2


class Tolerance(BaseModel):
    """How much worse than the baseline a run may look before it is called a regression.

    `effect`: the headline effect may shrink by this fraction of the baseline effect
    before a significant shrink counts; `fluency`: the fluency cost (nats of mean
    log-perplexity) may grow by this much before a significant growth counts.
    """

    model_config = ConfigDict(extra="forbid")

    effect: float = 0.25
    fluency: float = 0.15
    confidence: float = 0.95


class Baseline(BaseModel):
    """What a comparison needs from a run: identities, headlines and per-prompt summaries."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    model: dict[str, Any]
    task_configs: dict[str, dict[str, Any]]
    headlines: list[Headline]
    fluency_cost: list[FluencyRecord]
    per_prompt: list[PromptSummary]
    floors: dict[str, dict[str, float | None]]


@dataclass(frozen=True)
class Line:
    """One verdict line: a task's headline effect or fluency cost, baseline vs now."""

    task: str
    condition: str
    what: str
    baseline: float
    now: float
    diff: float
    ci_low: float
    ci_high: float
    verdict: str  # "holds" | "regression"
    reason: str = ""


def make_baseline(run: RunResult) -> Baseline:
    keep = {h.metric for h in run.headlines} | {FLUENCY_METRIC}
    return Baseline(
        model={k: run.model.get(k) for k in ("name", "sha256", "dtype")},
        task_configs={name: _comparable(cfg) for name, cfg in run.config["tasks"].items()},
        headlines=run.headlines, fluency_cost=run.fluency_cost,
        per_prompt=[p for p in run.per_prompt if p.metric in keep],
        floors={name: {"min_effect": cfg.get("min_effect"), "max_fluency_cost": cfg.get("max_fluency_cost")}
                for name, cfg in run.config["tasks"].items()},
    )


def write_baseline(run: RunResult, path: Path) -> Baseline:
    baseline = make_baseline(run)
    atomic_write_text(path, baseline.model_dump_json(indent=2))
    return baseline


def read_baseline(path: Path) -> Baseline:
    try:
        return Baseline.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable baseline ({err})") from None


def _comparable(task_config: dict[str, Any]) -> dict[str, Any]:
    """The parts of a task's config that define the measurement and must match for a
    comparison to mean anything. The steering is what is under test, so it may differ;
    so may seeds and sample counts (their noise is what the statistical verdict absorbs)."""
    return {k: task_config.get(k) for k in ("generation", "scorers", "headline", "prompts")}


def incomparable_reasons(run: RunResult, baseline: Baseline) -> list[str]:
    reasons = []
    tasks_now, tasks_base = set(run.config["tasks"]), set(baseline.task_configs)
    if tasks_now != tasks_base:
        reasons.append(f"different tasks: run has {sorted(tasks_now)}, baseline {sorted(tasks_base)}")
    for key in ("name", "sha256"):
        if run.model.get(key) != baseline.model.get(key):
            reasons.append(f"different model {key}: run {run.model.get(key)}, "
                           f"baseline {baseline.model.get(key)}")
    for name in sorted(tasks_now & tasks_base):
        now, base = _comparable(run.config["tasks"][name]), baseline.task_configs[name]
        changed = [k for k in base if now.get(k) != base[k]]
        if changed:
            reasons.append(f"task {name}: config differs in {', '.join(changed)}")
    return reasons


def _paired_delta(now: PromptSummary, base: PromptSummary, confidence: float) -> tuple[float, float, float]:
    """Mean over shared prompts of (effect now − effect in baseline), with a bootstrap CI."""
    deltas = [
        (now.prompts[k][1] - now.prompts[k][0]) - (base.prompts[k][1] - base.prompts[k][0])
        for k in sorted(now.prompts.keys() & base.prompts.keys())
    ]
    deltas = [d for d in deltas if math.isfinite(d)]
    if not deltas:
        return float("nan"), float("nan"), float("nan")
    low, high = bootstrap_ci(deltas, confidence=confidence, seed=0)
    return sum(deltas) / len(deltas), low, high


def compare(run: RunResult, baseline: Baseline, tolerance: Tolerance | None = None,
            floors: dict[str, float | None] | None = None) -> tuple[int, list[Line], list[str]]:
    """The verdict lines and exit status of `run` against `baseline`."""
    tol = tolerance or Tolerance()
    reasons = incomparable_reasons(run, baseline)
    if reasons:
        return INCOMPARABLE, [], reasons
    summary = {(p.task, p.condition, p.metric): p for p in run.per_prompt}
    base_summary = {(p.task, p.condition, p.metric): p for p in baseline.per_prompt}
    fluency_now = {(f.task, f.condition): f for f in run.fluency_cost}
    fluency_base = {(f.task, f.condition): f for f in baseline.fluency_cost}
    lines = []
    for base in baseline.headlines:
        now = next((h for h in run.headlines if (h.task, h.condition) == (base.task, base.condition)), None)
        if now is None:
            return INCOMPARABLE, [], [f"run has no condition {base.condition} of task {base.task}"]
        given = {k: v for k, v in (floors or {}).items() if v is not None}
        task_floors = {**baseline.floors.get(base.task, {}), **given}
        sign = 1.0 if base.expected_direction == "increase" else -1.0
        key = (base.task, base.condition, base.metric)
        delta, low, high = _paired_delta(summary[key], base_summary[key], tol.confidence)
        bound = sign * (high if sign > 0 else low)  # most favourable end of the CI
        verdict, reason = "holds", ""
        if bound < -tol.effect * abs(base.diff):
            verdict, reason = "regression", "effect significantly smaller than baseline"
        elif task_floors.get("min_effect") is not None and sign * now.diff < task_floors["min_effect"]:
            verdict, reason = "regression", f"effect below min_effect {task_floors['min_effect']}"
        lines.append(Line(base.task, base.condition, f"effect {base.metric}", base.diff, now.diff,
                          delta, low, high, verdict, reason))
        fkey = (base.task, base.condition, FLUENCY_METRIC)
        if fkey in summary and fkey in base_summary:
            f_now, f_base = fluency_now[key[:2]], fluency_base[key[:2]]
            delta, low, high = _paired_delta(summary[fkey], base_summary[fkey], tol.confidence)
            verdict, reason = "holds", ""
            if low > tol.fluency:
                verdict, reason = "regression", "fluency cost significantly larger than baseline"
            elif (ceiling := task_floors.get("max_fluency_cost")) is not None and f_now.diff > ceiling:
                verdict, reason = "regression", f"fluency cost above max_fluency_cost {ceiling}"
            lines.append(Line(base.task, base.condition, "fluency cost (Δ log-ppl)", f_base.diff,
                              f_now.diff, delta, low, high, verdict, reason))
    status = REGRESSION if any(line.verdict == "regression" for line in lines) else HOLDS
    return status, lines, []


def lines_as_json(status: int, lines: list[Line], reasons: list[str]) -> str:
    return json.dumps({"status": status, "lines": [asdict(line) for line in lines], "reasons": reasons},
                      indent=2)


def print_check(status: int, lines: list[Line], reasons: list[str], console: Any = None) -> None:
    """The verdict table (or why the run cannot be compared) on the terminal."""
    from rich.console import Console
    from rich.table import Table

    from harness.report.terminal import print_wide

    console = console or Console()
    if status == INCOMPARABLE:
        console.print("[bold red]cannot compare[/]: " + "; ".join(reasons))
        return
    table = Table(title="steering regression check", show_lines=False)
    for col in ("task", "condition", "what", "baseline", "now", "Δ [95% CI]", "verdict"):
        table.add_column(col)
    for line in lines:
        style = "red" if line.verdict == "regression" else "green"
        table.add_row(line.task, line.condition, line.what, f"{line.baseline:+.3f}", f"{line.now:+.3f}",
                      f"{line.diff:+.3f} [{line.ci_low:+.3f}, {line.ci_high:+.3f}]",
                      f"[{style}]{line.verdict}[/] {line.reason}")
    print_wide(console, table)
    console.print("[bold red]REGRESSION[/]" if status == REGRESSION else "[bold green]holds[/]")
