"""Write a run's Markdown and HTML reports."""

from __future__ import annotations

from pathlib import Path

from harness.schema.results import RunResult, SampleRecord
from harness.store import atomic_write_text


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
