"""Read prompt records and contrast pairs from JSONL or CSV files (through `datasets`), with
line-level errors."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from harness.config import ContrastPair, PromptRecord
from harness.errors import UserError


def read_prompt_file(path: Path, field: str, where: str) -> list[PromptRecord]:
    """Prompt records of a `.jsonl` or `.csv` file; `field` holds the prompt text."""
    rows = _read_rows(path, where, "prompts")
    records = []
    for i, row in enumerate(rows, start=1 if path.suffix == ".jsonl" else 2):
        if field not in row:
            raise UserError(f"{path}:{i}: no field '{field}' (fields: {', '.join(row)})")
        extra = {k: row[k] for k in ("target", "original", "group") if row.get(k) is not None}
        try:
            records.append(PromptRecord(text=row[field], **extra))
        except ValidationError as err:
            first = err.errors()[0]
            raise UserError(f"{path}:{i}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return records


def read_pair_file(path: Path, positive: str, negative: str, where: str) -> list[ContrastPair]:
    """Contrast pairs of a `.jsonl` or `.csv` file with a positive and a negative text field."""
    rows = _read_rows(path, where, "pairs")
    pairs = []
    for i, row in enumerate(rows, start=1 if path.suffix == ".jsonl" else 2):
        missing = [f for f in (positive, negative) if f not in row]
        if missing:
            raise UserError(f"{path}:{i}: no field '{missing[0]}' (fields: {', '.join(row)})")
        try:
            pairs.append(ContrastPair(positive=row[positive], negative=row[negative]))
        except ValidationError as err:
            first = err.errors()[0]
            raise UserError(f"{path}:{i}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return pairs


def _read_rows(path: Path, where: str, what: str) -> list[dict[str, object]]:
    if not path.is_file():
        raise UserError(f"{where}: {what} file not found: {path}")
    if path.suffix not in (".jsonl", ".csv"):
        raise UserError(f"{where}: {what} file must be .jsonl or .csv, got {path.name}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    if not text.strip():
        raise UserError(f"{path}: {what} file is empty")
    if path.suffix == ".jsonl":
        _check_jsonl(path, text)
    return _load_with_datasets(path)


def _check_jsonl(path: Path, text: str) -> None:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: malformed JSON: {err.msg}") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, found {type(value).__name__}")


def _load_with_datasets(path: Path) -> list[dict[str, object]]:
    import datasets

    datasets.disable_progress_bars()
    builder = "json" if path.suffix == ".jsonl" else "csv"
    try:
        data = datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as err:  # datasets wraps parser errors in several types
        raise UserError(f"{path}: could not read rows: {err}") from None
    return list(data)
