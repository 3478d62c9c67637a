"""Batched generation where every row carries its own steering (or none)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm
from transformers import LogitsProcessorList

from harness.models import LoadedModel
from harness.sampling import NonFiniteGuard, RowSeededSampler
from harness.steering.base import Steering
from harness.steering.hooks import build_deltas, steering_hooks
from harness.tokens import encode, encode_with_preamble, left_pad

UNSTEERED = "unsteered"


class GenerationSettings(BaseModel):
    """Decoding settings shared by all rows of a run (defaults follow the ActAdd post)."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(40, ge=1)
    greedy: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.3, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.2, gt=0)
    use_bos: bool = True


@dataclass(frozen=True)
class Row:
    """One completion to produce: a prompt under a condition, with its own seed."""

    prompt: str
    condition: str
    sample: int
    seed: int


@dataclass(frozen=True)
class Generation:
    """A produced completion; `token_ids` are the completion's tokens only, `prompt_ids` the
    prompt's (without a prompting preamble: scorers condition on the task's prompt alone)."""

    row: Row
    completion: str
    token_ids: list[int]
    prompt_ids: list[int]
    flagged: str | None = None  # why the completion cannot be trusted (e.g. NaN logits)


def row_seed(seed: int, prompt: str, sample: int) -> int:
    """Seed of a (prompt, sample) pair, shared by all its conditions (common random numbers)."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}\x00{sample}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def plan_rows(prompts: Sequence[str], conditions: Sequence[str], samples: int, seed: int) -> list[Row]:
    """Every (prompt, condition, sample) row, unsteered and steered of one prompt side by side."""
    return [
        Row(prompt, condition, s, row_seed(seed, prompt, s))
        for prompt in prompts
        for s in range(samples)
        for condition in conditions
    ]


def default_batch_size(lm: LoadedModel) -> int:
    """Rows per batch: large for small models, so the KV cache fits comfortably."""
    params = sum(p.numel() for p in lm.model.parameters())
    return 32 if params < 5e8 else 16 if params < 3e9 else 4


def generate_rows(
    lm: LoadedModel,
    rows: Sequence[Row],
    steerings: Mapping[str, Steering | None],
    settings: GenerationSettings,
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> Iterator[list[Generation]]:
    """Generate `rows` in batches, yielding each batch's generations as soon as it is done."""
    size = batch_size or default_batch_size(lm)
    bar = tqdm(total=len(rows), desc="generate", unit="row", disable=not progress)
    for start in range(0, len(rows), size):
        batch = list(rows[start : start + size])
        yield _generate_batch(lm, batch, [steerings[r.condition] for r in batch], settings)
        bar.update(len(batch))
    bar.close()


def generate(
    lm: LoadedModel,
    prompts: Sequence[str],
    conditions: Mapping[str, Steering | None],
    settings: GenerationSettings | None = None,
    *,
    samples: int = 1,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> list[Generation]:
    """Completions of every prompt under every condition, `samples` each.

    `conditions` maps a condition name to its steering (`None` = unsteered).
    """
    settings = settings or GenerationSettings()
    rows = plan_rows(prompts, list(conditions), samples, seed)
    batches = generate_rows(lm, rows, conditions, settings, batch_size=batch_size, progress=progress)
    return [g for batch in batches for g in batch]


def _generate_batch(
    lm: LoadedModel,
    rows: list[Row],
    steerings: list[Steering | None],
    settings: GenerationSettings,
) -> list[Generation]:
    tok = lm.tokenizer
    prompt_ids = [encode(tok, r.prompt, settings.use_bos) for r in rows]
    inputs = [encode_with_preamble(tok, r.prompt, s.preamble if s else "", settings.use_bos)
              for r, s in zip(rows, steerings, strict=True)]
    input_ids, attention_mask = left_pad(inputs, tok.pad_token_id, lm.device)
    hidden = lm.model.config.get_text_config().hidden_size
    dtype = next(lm.model.parameters()).dtype
    deltas = build_deltas(steerings, attention_mask, hidden, dtype)
    eos = tok.eos_token_id
    guard = NonFiniteGuard(eos if isinstance(eos, int) else eos[0])
    processors = LogitsProcessorList([guard])
    if not settings.greedy:
        processors.append(
            RowSeededSampler([r.seed for r in rows], settings.temperature, settings.top_k, settings.top_p)
        )
    with steering_hooks(lm.model, deltas), torch.no_grad():
        out = lm.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=settings.max_new_tokens,
            do_sample=False,
            repetition_penalty=settings.repetition_penalty,
            logits_processor=processors,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    new = [_until_eos(t, eos) for t in out[:, input_ids.shape[1] :].tolist()]
    return [
        Generation(row, tok.decode(ids, skip_special_tokens=True), ids, p,
                   "non-finite logits" if i in guard.bad_rows else None)
        for i, (row, ids, p) in enumerate(zip(rows, new, prompt_ids, strict=True))
    ]


def _until_eos(ids: list[int], eos: int | list[int] | None) -> list[int]:
    stops = set(eos) if isinstance(eos, list) else {eos}
    for i, t in enumerate(ids):
        if t in stops:
            return ids[:i]
    return ids

