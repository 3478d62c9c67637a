"""Rows of a dataset for prompts and contrast pairs, through `datasets`; errors name the dataset,
split and field and list what exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.errors import UserError
from harness.schema.steering import ContrastPair, PairDatasetSpec
from harness.schema.task import DatasetSpec, PromptRecord

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _load(spec: DatasetSpec | PairDatasetSpec, base: Path, where: str) -> Any:
    """The split of the dataset `spec` names, shuffled with its seed and cut to its limit."""
    import datasets

    datasets.disable_progress_bars()
    local = base / spec.dataset
    name = f"dataset {spec.dataset!r}"
    try:
        if local.is_dir() and any((local / f).is_file() for f in ("dataset_dict.json", "state.json")):
            data = datasets.load_from_disk(str(local))
        elif local.is_file():
            if local.suffix not in BUILDERS:
                raise UserError(f"{where}: {name}: a data file must be one of {', '.join(BUILDERS)}")
            data = datasets.load_dataset(BUILDERS[local.suffix], data_files={spec.split: str(local)})
        else:
            data = datasets.load_dataset(spec.dataset, spec.config)
    except UserError:
        raise
    except Exception as err:  # datasets raises many types: missing, offline, corrupt
        detail = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{where}: {name} (config {spec.config!r}) cannot be loaded: "
                        f"{type(err).__name__}: {detail}; give a local save_to_disk folder, a parquet, "
                        "arrow, JSON or CSV file, or a hub id already in the cache") from None
    if isinstance(data, datasets.DatasetDict):
        if spec.split not in data:
            raise UserError(f"{where}: {name} has no split {spec.split!r} (splits: {', '.join(data)})")
        data = data[spec.split]
    if spec.seed is not None:
        data = data.shuffle(seed=spec.seed)
    return data.select(range(min(spec.limit, len(data)))) if spec.limit else data


def _require(data: Any, fields: list[str | None], spec: DatasetSpec | PairDatasetSpec, where: str) -> None:
    for field in (f for f in fields if f):
        if field not in data.column_names:
            raise UserError(f"{where}: dataset {spec.dataset!r} split {spec.split!r} has no field {field!r} "
                            f"(fields: {', '.join(data.column_names)})")


def dataset_prompts(spec: DatasetSpec, base: Path, where: str) -> list[PromptRecord]:
    """Prompt records of the rows of a dataset."""
    data = _load(spec, base, where)
    _require(data, [spec.field, spec.target_field, spec.original_field, spec.group_field], spec, where)
    names = {"target": spec.target_field, "original": spec.original_field, "group": spec.group_field}
    out = []
    for i, row in enumerate(data):
        extra = {k: row[f] for k, f in names.items() if f and row.get(f) not in (None, "")}
        try:
            out.append(PromptRecord(text=row[spec.field], **extra))
        except ValidationError as err:
            first = err.errors()[0]
            raise UserError(f"{where}: dataset {spec.dataset!r} row {i}: {'.'.join(map(str, first['loc']))}: "
                            f"{first['msg']}") from None
    return out


def dataset_pairs(spec: PairDatasetSpec, base: Path, where: str) -> list[ContrastPair]:
    """Contrast pairs of the rows of a dataset."""
    data = _load(spec, base, where)
    _require(data, [spec.positive_field, spec.negative_field], spec, where)
    try:
        return [ContrastPair(positive=row[spec.positive_field], negative=row[spec.negative_field])
                for row in data]
    except ValidationError as err:
        raise UserError(f"{where}: dataset {spec.dataset!r}: {err.errors()[0]['msg']}") from None
