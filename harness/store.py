"""Files of a run folder: append-only samples while running, atomic writes at the end, and
reading a finished run back."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from harness.errors import UserError
from harness.schema.results import SCHEMA_VERSION, RunResult, SampleRecord

T = TypeVar("T")


class CorruptLineWarning(UserWarning):
    """A partial or malformed line in samples.jsonl was dropped (e.g. after a crash)."""


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so readers see the old file or the new one, never half of it."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write_text` for bytes (PNG figures)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Whole, valid JSON lines of `path`; a broken line is dropped with a warning."""
    if not path.is_file():
        return []
    records = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                if not line.endswith("\n"):
                    raise ValueError("no line end")
                records.append(json.loads(line))
            except ValueError:
                warnings.warn(f"{path}:{number}: dropped a corrupt line", CorruptLineWarning, stacklevel=2)
    return records


class SampleLog:
    """Append generation records to a JSONL file as they are produced, one whole line each."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = read_jsonl(path)
        # Rewrite without any broken tail so appends start on a fresh line.
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in existing))
        self.records: dict[str, dict[str, Any]] = {r["key"]: r for r in existing if "key" in r}

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        records = list(records)
        lines = "".join(json.dumps(r) + "\n" for r in records)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
        for r in records:
            self.records[r["key"]] = r


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold `folder/.lock` (with our PID in it) for the duration of a run.

    A second run on the same folder is refused with the owner's PID. The lock is
    a kernel `flock`, so a lock file left by a dead process is simply taken over, and
    so are the temporary files of an atomic write it was killed in the middle of.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    fh = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "unknown"
            raise UserError(f"{folder} is in use by another run (PID {owner}); wait for it to "
                            "finish or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        for stale in folder.glob(".*.tmp"):  # only a writer holding this lock makes them
            stale.unlink(missing_ok=True)
        yield
    finally:
        fh.close()


def read_run(path: str | Path) -> tuple[RunResult, list[SampleRecord]]:
    """The run of `path` (run.json or its folder) and the samples.jsonl beside it ([] if none)."""
    path = Path(path)
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
    if isinstance(version, int) and version < SCHEMA_VERSION:
        raise UserError(
            f"{file}: schema_version {version} was written by an older harness (this one reads "
            f"{SCHEMA_VERSION}); rerun the run with this harness to compare it"
        )
    run = _validate(file, lambda: RunResult.model_validate(data))
    samples_file = file.parent / "samples.jsonl"
    samples = _validate(
        samples_file, lambda: [SampleRecord.model_validate(r) for r in read_jsonl(samples_file)]
    )
    return run, samples


def read_samples(path: Path) -> list[SampleRecord]:
    """The samples of a run (run.json or its folder), or of a samples JSONL file given itself (a
    run's samples.jsonl, or `harness score`'s output of it)."""
    if path.suffix != ".jsonl":
        return read_run(path)[1]
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return _validate(path, lambda: [SampleRecord.model_validate(r) for r in read_jsonl(path)])


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
