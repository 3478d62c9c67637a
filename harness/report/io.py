"""Read a run folder back, and write its Markdown and HTML reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from harness.errors import UserError
from harness.report.schema import SCHEMA_VERSION, RunResult, SampleRecord
from harness.store import atomic_write_text, read_jsonl

T = TypeVar("T")


def read_run(path: Path) -> tuple[RunResult, list[SampleRecord]]:
    """The run of `path` (run.json or its folder) and the samples.jsonl beside it ([] if none)."""
    file = path / "run.json" if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{file}: cannot read ({err})") from None
    except ValueError as err:
        raise UserError(f"{file}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{file}: not a run.json (expected a JSON object)")
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise UserError(
            f"{file}: schema_version {version} is newer than this harness supports "
            f"({SCHEMA_VERSION}); upgrade the harness"
        )
    run = _validate(file, lambda: RunResult.model_validate(data))
    samples_file = file.parent / "samples.jsonl"
    samples = _validate(
        samples_file, lambda: [SampleRecord.model_validate(r) for r in read_jsonl(samples_file)]
    )
    return run, samples


def _validate(file: Path, parse: Callable[[], T]) -> T:
    try:
        return parse()
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise UserError(
            f"{file}: does not match the run schema ({err.error_count()} error(s); "
            f"{where}: {first['msg']})"
        ) from None


def write_reports(
    result: RunResult,
    samples: list[SampleRecord],
    out: Path,
    token_texts: dict[str, list[str]] | None = None,
) -> None:
    """Write `out/report.md` and `out/report.html`, each atomically."""
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown

    atomic_write_text(out / "report.md", render_markdown(result, samples))
    atomic_write_text(out / "report.html", render_html(result, samples, token_texts=token_texts))
