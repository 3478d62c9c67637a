"""Write a finished run: samples.jsonl, run.json and the reports, each atomically."""

from __future__ import annotations

import sys
from pathlib import Path

from harness.models import LoadedModel
from harness.report.io import write_reports
from harness.schema.results import RunResult, SampleRecord
from harness.store import atomic_write_text


def notes(records: list[SampleRecord]) -> list[str]:
    """What a reader must know about excluded samples (also said on stderr)."""
    out = []
    flagged = [r for r in records if r.flagged]
    if flagged:
        out.append(f"{len(flagged)} samples flagged and excluded from statistics "
                   f"({'; '.join(sorted({r.flagged for r in flagged if r.flagged}))})")
        print(f"warning: {out[-1]}", file=sys.stderr)
    return out


def write_run(out: Path, result: RunResult, records: list[SampleRecord], lm: LoadedModel) -> None:
    atomic_write_text(out / "samples.jsonl", "".join(r.model_dump_json() + "\n" for r in records))
    atomic_write_text(out / "run.json", result.model_dump_json(indent=2))
    token_texts = {r.key: [lm.tokenizer.decode([t]) for t in r.token_ids] for r in records}
    write_reports(result, records, out, token_texts=token_texts)
