"""The Markdown report, and the choice of side-by-side samples it shares with the HTML one."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from harness.report.cells import Cell, judge_ratings, num, text
from harness.report.tables import (
    CONTROL_COLUMNS,
    CONTROL_LEGEND,
    DIAGNOSE_COLUMNS,
    EFFECT_COLUMNS,
    FLUENCY_COLUMNS,
    HEADLINE_COLUMNS,
    LEGEND,
    SAMPLE_COLUMNS,
    SAMPLE_LEGEND,
    STEER_COLUMNS,
    STEER_LEGEND,
    TOPIC_COLUMNS,
    control_rows,
    diagnose_legend,
    diagnose_rows,
    effect_rows,
    fluency_rows,
    headline_rows,
    sample_rows,
    steer_rows,
    topic_rows,
)
from harness.schema.results import RunResult, SampleRecord
from harness.schema.spec import UNSTEERED

MD_SAMPLES = 4
# Inline syntax (no cell starts a line); `_` inside a word (love_hate) is no emphasis and
# a `]` without its `[` is no link.
_SPECIAL = re.compile(r"([\\`*\[<>|&~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


@dataclass(frozen=True)
class Pair:
    """The completions of one prompt and sample index under every condition."""

    prompt_index: int
    sample: int
    prompt: str
    by_condition: dict[str, SampleRecord]


def conditions_of(samples: Sequence[SampleRecord], task: str) -> list[str]:
    """Unsteered first, then the steered conditions of `task` in order of appearance."""
    seen = dict.fromkeys(
        s.condition for s in samples if s.task == task and s.condition != UNSTEERED
    )
    return [UNSTEERED, *seen]


def side_by_side(samples: Sequence[SampleRecord], task: str, limit: int) -> list[Pair]:
    """Up to `limit` pairs of `task`, spread over prompts (sample 0 of every prompt first)."""
    groups: dict[tuple[int, int], dict[str, SampleRecord]] = defaultdict(dict)
    for s in samples:
        if s.task == task:
            groups[(s.prompt_index, s.sample)][s.condition] = s
    keys = sorted(
        (k for k, g in groups.items() if UNSTEERED in g and len(g) > 1), key=lambda k: (k[1], k[0])
    )[:limit]
    return [Pair(i, j, groups[(i, j)][UNSTEERED].prompt, groups[(i, j)]) for i, j in sorted(keys)]


def headline_metric(run: RunResult, task: str) -> str | None:
    return next((h.metric for h in run.headlines if h.task == task), None)


def md(text: str) -> str:
    """`text` safe in a Markdown table cell: punctuation escaped, newlines as <br>."""
    return _SPECIAL.sub(r"\\\1", text).replace("\r", "").replace("\n", "<br>")


def table_md(columns: list[str], rows: list[list[Cell]]) -> list[str]:
    lines = ["| " + " | ".join(md(c) for c in columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(md(text(c)) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _completion(s: SampleRecord | None, metric: str | None) -> str:
    if s is None:
        return ""
    cell = md(s.completion) or "*(empty)*"
    if metric and metric in s.scores:
        cell += f"<br>*{md(metric)} = {md(num(s.scores[metric]))}*"
    if ratings := judge_ratings(s):
        cell += "<br>*" + " · ".join(f"{md(m)} = {md(num(v))}" for m, v in ratings) + "*"
    if s.flagged:
        cell += f"<br>**⚠ flagged: {md(s.flagged)}**"
    return cell


def _samples(run: RunResult, samples: Sequence[SampleRecord]) -> list[str]:
    lines = ["## Samples", ""]
    for info in run.tasks:
        pairs = side_by_side(samples, info.name, MD_SAMPLES)
        if not pairs:
            continue
        conditions = conditions_of(samples, info.name)
        metric = headline_metric(run, info.name)
        lines += [f"### {md(info.name)}", ""]
        if info.description:
            lines += [f"*Task:* {md(info.description)}", ""]
        lines += [
            "| prompt | " + " | ".join(md(c) for c in conditions) + " |",
            "|" + " --- |" * (len(conditions) + 1),
        ]
        for p in pairs:
            cells = [_completion(p.by_condition.get(c), metric) for c in conditions]
            lines.append(
                f"| {md(p.prompt)} *(#{p.prompt_index}, sample {p.sample})* | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    return lines if len(lines) > 2 else []


def render_markdown(run: RunResult, samples: Sequence[SampleRecord]) -> str:
    """The whole run as a Markdown document."""
    model = run.model
    versions = " · ".join(f"{md(k)} {md(v)}" for k, v in run.versions.items())
    lines = [
        f"# Steering evaluation: {md(str(run.config.get('target', '')))}",
        "",
        f"- **Model:** {md(str(model.get('name', '?')))} "
        f"(sha256 {md(str(model.get('sha256', '?'))[:12])}, "
        f"{md(str(model.get('dtype', '?')))})",
        f"- **Versions:** {versions}",
        f"- **Config hash:** `{run.config_hash}`",
        f"- **Started:** {md(run.started)} · **finished:** {md(run.finished)}",
        f"- **Flagged samples:** {run.flagged_samples} (excluded from the statistics)",
        *(f"- **Note:** {md(note)}" for note in run.notes),
        "",
        "## Headline effects",
        "",
        *table_md(HEADLINE_COLUMNS, headline_rows(run)),
        md(LEGEND),
        "",
        *(["## Steerability: prompts moved the wrong way", "", *table_md(STEER_COLUMNS, steer_rows(run)),
            md(STEER_LEGEND), ""] if steer_rows(run) else []),
        *(["## Is it the direction? Matched controls", "", *table_md(CONTROL_COLUMNS, control_rows(run)),
            md(CONTROL_LEGEND), ""] if run.controls else []),
        *(["## Off-target cost and capability retention", "", *table_md(DIAGNOSE_COLUMNS, diagnose_rows(run)),
            md(diagnose_legend(run)), ""] if run.off_target else []),
        *(["## Perplexity ratio by topic-word share", "", *table_md(TOPIC_COLUMNS, topic_rows(run))]
          if run.topic_ratio else []),
        "## All effects",
        "",
        "★ = headline metric of the task.",
        "",
        *table_md(EFFECT_COLUMNS, effect_rows(run)),
        "## Fluency cost",
        "",
        "Δ mean log-perplexity of the completions under the judge (steered − unsteered); "
        "ppl ratio = exp(Δ).",
        "",
        *table_md(FLUENCY_COLUMNS, fluency_rows(run)),
        "## Samples and steering ledger",
        "",
        md(SAMPLE_LEGEND),
        "",
        *table_md(SAMPLE_COLUMNS, sample_rows(run)),
        *_samples(run, samples),
    ]
    return "\n".join(lines).rstrip() + "\n"
