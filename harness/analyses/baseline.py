"""Baselines: what `harness check` keeps of a run to compare later runs with (identities, headlines,
per-prompt summaries, sample counts and the steering ledger; no samples).

A baseline is evidence, so it is validated whenever one is made or read: its schema version
(exactly this harness's), at least one headline, every headline finite with a per-prompt
summary, and an effect in the expected direction, unless the headline is listed in `no_effect`
(`harness baseline RUN --to X --no-effect`): then `check` reports it has no effect to protect.
`--no-effect` lists every headline whose effect is not established: against the expected
direction, or not significant in its own run (`check` finds no established effect to protect in
an unlisted one: its effect line is inconclusive, never "holds").
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from harness.errors import UserError
from harness.schema.results import (
    SCHEMA_VERSION,
    ConditionCounts,
    Estimate,
    FluencyRecord,
    Headline,
    LedgerRecord,
    PromptSummary,
    RunResult,
)
from harness.schema.spec import ALPHA, Record
from harness.stats import PERMUTATIONS, sign_flip_is_exact
from harness.stats.comparable import measurement
from harness.stats.comparison import compare_values
from harness.store import atomic_write_text


class Baseline(Record):
    """What a comparison needs from a run: identities, headlines, per-prompt summaries, sample
    counts and the steering ledger."""

    schema_version: int = SCHEMA_VERSION
    model: dict[str, Any]
    task_configs: dict[str, dict[str, Any]]
    headlines: list[Headline]
    fluency_cost: list[FluencyRecord]
    per_prompt: list[PromptSummary]
    floors: dict[str, dict[str, float | None]]
    counts: list[ConditionCounts] = Field(default_factory=list)
    ledger: list[LedgerRecord] = Field(default_factory=list)
    # task -> steered conditions whose headline has no effect to protect (written with --no-effect)
    no_effect: dict[str, list[str]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _evidence(self) -> Baseline:
        problems = baseline_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _against(h: Headline) -> bool:
    """Whether a finite headline effect is not in its expected direction (0 included)."""
    return (h.estimate.point if h.expected_direction == "increase" else -h.estimate.point) <= 0


def unestablished(h: Headline) -> bool:
    """Whether a finite headline establishes no effect to protect: against the expected direction,
    or not significant in its own run (what `--no-effect` lists)."""
    return math.isfinite(h.estimate.point) and (_against(h) or not h.significant)


def baseline_problems(b: Baseline) -> list[str]:
    """Why `b` is no evidence to check runs against (empty when it is)."""
    if b.schema_version != SCHEMA_VERSION:
        return [f"schema_version {b.schema_version}, this harness reads {SCHEMA_VERSION}"]
    if not b.headlines:
        return ["no headlines: nothing to check a run against"]
    problems = []
    summarised = {(p.task, p.condition, p.metric): p for p in b.per_prompt if p.reference == "unsteered"}
    unprotected = {(t, c) for t, conditions in b.no_effect.items() for c in conditions}
    for h in b.headlines:
        name = f"{h.task} {h.condition} {h.metric}"
        if not math.isfinite(h.estimate.point):
            problems.append(f"{name}: the headline effect is {h.estimate.point} (no finite value)")
        elif _against(h) and (h.task, h.condition) not in unprotected:
            problems.append(f"{name}: the effect {h.estimate.point:+.3g} is not in the expected direction "
                            f"({h.expected_direction}), so it protects nothing; write the baseline with "
                            "--no-effect to check only fluency, degenerate samples and the ledger")
        if h.significant and not h.estimate.p_value < ALPHA:  # Holm never lowers a p-value
            problems.append(f"{name}: marked significant with p = {h.estimate.p_value:.3g} before adjustment "
                            f"(not below α = {ALPHA:g}; edited by hand?)")
        if (h.task, h.condition, h.metric) not in summarised:
            problems.append(f"{name}: no per-prompt summary to compare by prompt")
        elif math.isfinite(h.estimate.point) and (off := _not_recomputed(
                h.estimate, summarised[(h.task, h.condition, h.metric)], b.task_configs.get(h.task, {}))):
            problems.append(f"{name}: its per-prompt values do not give the headline's {', '.join(off)} "
                            "(edited by hand?)")
    keys = [(h.task, h.condition) for h in b.headlines]
    problems += [f"{t} {c}: more than one headline" for t, c in sorted(set(keys)) if keys.count((t, c)) > 1]
    unknown = unprotected - set(keys)
    problems += [f"no_effect lists {t} {c}, which has no headline" for t, c in sorted(unknown)]
    problems += [f"{p.task} {p.condition} {p.metric}: an infinite per-prompt value" for p in b.per_prompt
                 if any(math.isinf(v) for pair in p.prompts.values() for v in pair)]
    problems += [f"{c.task} {c.condition}: counts must be ≥ 0 and flagged + empty + unscorable ≤ samples"
                 for c in b.counts if min(c.samples, c.flagged, c.empty, c.unscorable) < 0
                 or c.flagged + c.empty + c.unscorable > c.samples]
    # positions changed at norm 0 is real (a prompting instruction's ledger entry, an ablation of a
    # direction the state does not have); norm added at no position is not
    problems += [f"{r.task} {r.condition} {r.site} {r.kind}: the ledger needs samples, positions ≥ 0 and a "
                 "finite norm ≥ 0, zero where no position changed" for r in b.ledger
                 if min(r.samples, r.positions) < 0 or not 0 <= r.norm < math.inf
                 or (r.positions == 0 and r.norm > 0)]
    problems += [f"floors of {task}: {key} is {v} (must be finite)" for task, fl in b.floors.items()
                 for key, v in fl.items() if v is not None and not math.isfinite(v)]
    return problems


def _not_recomputed(e: Estimate, summary: PromptSummary, task_config: dict[str, Any]) -> list[str]:
    """The numbers of a headline estimate that its per-prompt values do not give again (point,
    interval, SD, n and p; a Monte Carlo p within 5 of its standard errors, whatever the seed)."""
    again = compare_values({k: u for k, (u, _) in summary.prompts.items()},
                           {k: s for k, (_, s) in summary.prompts.items()},
                           seed=int(task_config.get("seed", 0)), confidence=e.confidence).estimate
    off = [f"{field} {getattr(e, field):.6g}" for field in ("point", "ci_low", "ci_high", "sd")
           if not _same(getattr(e, field), getattr(again, field))]
    off += [f"n {e.n}"] * (e.n != again.n)
    exact = again.n < 2 or sign_flip_is_exact(again.n)
    p = again.p_value
    slack = 1e-9 if exact else 5 * math.sqrt(p * (1 - p) / PERMUTATIONS) + 2 / PERMUTATIONS
    if not (math.isnan(e.p_value) and math.isnan(p)) and not abs(e.p_value - p) <= slack:
        off.append(f"p {e.p_value:.4g} (they give {again.p_value:.4g})")
    return off


def _same(x: float, y: float) -> bool:
    return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)


def _refused(source: str, err: ValidationError) -> UserError:
    why = "; ".join(".".join(map(str, e["loc"])) + ": " * bool(e["loc"])
                    + e["msg"].removeprefix("Value error, ") for e in err.errors())
    return UserError(f"{source}: not a usable baseline ({why})")


def make_baseline(run: RunResult, no_effect: bool = False) -> Baseline:
    """What `check` keeps of `run`. `no_effect`: headlines whose effect is not established (not in
    the expected direction, which is refused otherwise, or not significant) are kept as having no
    effect to protect."""
    keep = {h.metric for h in run.headlines} | {f.metric for f in run.fluency_cost}
    unprotected: dict[str, list[str]] = {}
    tasks = run.config["tasks"]
    for h in run.headlines:
        if no_effect and unestablished(h):
            unprotected.setdefault(h.task, []).append(h.condition)
    try:
        return Baseline(
            model={k: run.model.get(k) for k in ("name", "sha256", "dtype")},
            task_configs={name: measurement(cfg) for name, cfg in tasks.items()},
            headlines=run.headlines, fluency_cost=run.fluency_cost,
            per_prompt=[p for p in run.per_prompt if p.metric in keep],
            floors={name: {key: cfg.get(key) for key in ("min_effect", "max_fluency_cost")}
                    for name, cfg in tasks.items()},
            counts=run.counts, ledger=run.ledger, no_effect=unprotected,
        )
    except ValidationError as err:
        raise _refused("the run", err) from None


def write_baseline(run: RunResult, path: str | Path, no_effect: bool = False) -> Baseline:
    baseline = make_baseline(run, no_effect)
    atomic_write_text(Path(path), baseline.model_dump_json(indent=2))
    return baseline


def read_baseline(path: str | Path) -> Baseline:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable baseline ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a readable baseline (not a JSON object)")
    version = data.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        age = "an older" if isinstance(version, int) and version < SCHEMA_VERSION else "another"
        raise UserError(f"{path}: baseline schema_version {version} was written by {age} harness (this one "
                        f"reads {SCHEMA_VERSION}); write it again with `harness baseline RUN --to {path}`")
    try:
        return Baseline.model_validate(data)
    except ValidationError as err:
        raise _refused(str(path), err) from None
