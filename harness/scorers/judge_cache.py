"""The judge's verdicts kept in SQLite, so rescoring with the same judge costs no judge call."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

CACHE_FILE = "judge.sqlite"


def verdict_key(judge: str, rubric_sha: str, mode: str, criterion: str, prompt: str, completion: str,
                concept: str | None) -> str:
    """The key of one verdict: the judge's identity (weights hash or endpoint + model), the
    rubric's content hash, the mode, the criterion, and the text judged."""
    blob = json.dumps([judge, rubric_sha, mode, criterion, prompt, completion, concept])
    return hashlib.sha256(blob.encode()).hexdigest()


def default_path() -> Path | None:
    """`cache_root()/judge.sqlite` (`$HARNESS_CACHE`, default `~/.cache/harness`), or None when the
    cache is off (`HARNESS_CACHE=off`)."""
    from harness.models.gguf_cache import cache_root

    root = cache_root()
    return None if root is None else root / CACHE_FILE


class VerdictCache:
    """Verdicts by key (`verdict_key`), each a JSON object (a raw reply, or rating probabilities).
    `path=None` keeps them in memory for this process only."""

    def __init__(self, path: Path | None):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(":memory:" if path is None else str(path), timeout=60,
                                   check_same_thread=False)
        with self._db:
            self._db.execute("CREATE TABLE IF NOT EXISTS verdicts "
                             "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The cached verdicts among `keys`."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT key, value FROM verdicts WHERE key IN ({marks})", chunk)
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, verdicts: Mapping[str, Any]) -> None:
        """Store verdicts (one transaction), replacing any of the same key."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in verdicts.items()])

    def close(self) -> None:
        self._db.close()
