"""Read prompt records and contrast pairs from JSONL or CSV files, with line-level errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from pydantic import ValidationError

from harness.errors import UserError
from harness.schema.steering import ContrastPair
from harness.schema.task import PromptRecord

RECORD_FIELDS = ("target", "original", "group")


def read_prompt_file(path: Path, field: str, where: str) -> list[PromptRecord]:
    """Prompt records of a `.jsonl` or `.csv` file; `field` holds the prompt text."""
    records = []
    for line, row in _read_rows(path, where, "prompts"):
        if field not in row:
            raise UserError(f"{path}:{line}: no field '{field}' (fields: {', '.join(row)})")
        extra = {k: row[k] for k in RECORD_FIELDS if row.get(k) not in (None, "")}
        try:
            records.append(PromptRecord(text=row[field], **extra))
        except ValidationError as err:
            first = err.errors()[0]
            raise UserError(f"{path}:{line}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return records


def read_pair_file(path: Path, positive: str, negative: str, where: str) -> list[ContrastPair]:
    """Contrast pairs of a `.jsonl` or `.csv` file with a positive and a negative text field."""
    pairs = []
    for line, row in _read_rows(path, where, "pairs"):
        missing = [f for f in (positive, negative) if f not in row]
        if missing:
            raise UserError(f"{path}:{line}: no field '{missing[0]}' (fields: {', '.join(row)})")
        try:
            pairs.append(ContrastPair(positive=row[positive], negative=row[negative]))
        except ValidationError as err:
            first = err.errors()[0]
            raise UserError(f"{path}:{line}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return pairs


def _read_rows(path: Path, where: str, what: str) -> list[tuple[int, dict[str, object]]]:
    """(line number, row) of every record of a JSONL or CSV file."""
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
    if path.suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        return [(reader.line_num, dict(row)) for row in reader]
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: malformed JSON: {err.msg}") from None
        if not isinstance(value, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, found {type(value).__name__}")
        rows.append((number, value))
    return rows
