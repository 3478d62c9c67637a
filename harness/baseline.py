"""Baselines: what `harness check` keeps of a run to compare later runs with (identities, headlines,
per-prompt summaries, sample counts and the steering ledger; no samples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field

from harness.comparable import measurement
from harness.errors import UserError
from harness.schema.results import (
    SCHEMA_VERSION,
    ConditionCounts,
    FluencyRecord,
    Headline,
    LedgerRecord,
    PromptSummary,
    RunResult,
)
from harness.schema.spec import FLUENCY_METRIC, Record
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


def make_baseline(run: RunResult) -> Baseline:
    keep = {h.metric for h in run.headlines} | {FLUENCY_METRIC}
    return Baseline(
        model={k: run.model.get(k) for k in ("name", "sha256", "dtype")},
        task_configs={name: measurement(cfg) for name, cfg in run.config["tasks"].items()},
        headlines=run.headlines, fluency_cost=run.fluency_cost,
        per_prompt=[p for p in run.per_prompt if p.metric in keep],
        floors={name: {"min_effect": cfg.get("min_effect"), "max_fluency_cost": cfg.get("max_fluency_cost")}
                for name, cfg in run.config["tasks"].items()},
        counts=run.counts, ledger=run.ledger,
    )


def write_baseline(run: RunResult, path: Path) -> Baseline:
    baseline = make_baseline(run)
    atomic_write_text(path, baseline.model_dump_json(indent=2))
    return baseline


def read_baseline(path: Path) -> Baseline:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable baseline ({err})") from None
    if isinstance(data, dict) and data.get("schema_version", 1) < SCHEMA_VERSION:
        raise UserError(f"{path}: baseline schema_version {data.get('schema_version', 1)} was written by an "
                        f"older harness; write it again with `harness baseline RUN --to {path}`")
    try:
        return Baseline.model_validate(data)
    except ValueError as err:
        raise UserError(f"{path}: not a readable baseline ({err})") from None
