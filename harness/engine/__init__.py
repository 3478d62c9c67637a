"""Batched generation where every row carries its own steering (or none)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from harness.engine.sampling import NonFiniteGuard, PromptRepetitionPenalty, RowSeededSampler
from harness.models import LoadedModel
from harness.models.tokens import encode_prompt, encode_with_preamble, left_pad
from harness.schema.generation import GenerationSettings
from harness.schema.results import LedgerEntry
from harness.steering.base import PREAMBLE_SITE, Steering
from harness.steering.session import RowLayout, SteeringNotAppliedError, steering_hooks, unapplied

SEMANTICS_VERSION = 3  # 3: a prompting instruction in a chat prompt opens the user turn
"""Bump whenever the tokens the engine produces for the same inputs could change: samples
generated under another version are never reused (it is part of every sample's identity)."""


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
    prompt's (without a prompting preamble: scorers condition on the task's prompt alone).

    `ledger`: per site (`L5.resid`) and forward kind ("prompt", "decode"), the positions the
    row's steering changed and the total norm it added; a preamble's instruction tokens under
    `PREAMBLE_SITE` ("prompt" kind, norm 0)."""

    row: Row
    completion: str
    token_ids: list[int]
    prompt_ids: list[int]
    flagged: str | None = None  # why the completion cannot be trusted (e.g. NaN logits)
    ledger: list[LedgerEntry] = field(default_factory=list)


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
        yield generate_batch(lm, batch, [steerings[r.condition] for r in batch], settings)
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


@contextmanager
def _plain_generation_config(lm: LoadedModel) -> Iterator[None]:
    """The checkpoint's own generation defaults (a repetition penalty, sampling, banned n-grams)
    would silently change every row: generate under a blank config instead."""
    saved = lm.model.generation_config
    lm.model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        lm.model.generation_config = saved


SamplerFactory = Callable[[list[int], float, int, float, int, torch.device], LogitsProcessor]
"""Builds the sampling processor of a batch from (seeds, temperature, top_k, top_p, prompt width,
device); `harness bench` swaps in timed or earlier samplers to measure them side by side."""


def generate_batch(
    lm: LoadedModel,
    rows: Sequence[Row],
    steerings: Sequence[Steering | None],
    settings: GenerationSettings,
    *,
    min_new_tokens: int = 0,
    sampler: SamplerFactory = RowSeededSampler,
) -> list[Generation]:
    """One batch: left-padded prompts, each row with its own steering, seed and stopping.

    A row whose steering is not null but changed no position at one of its sites is an error,
    never a result; a row whose steering added a non-finite norm or drowned the prompt out is
    flagged (`Ledger.problem`).
    `min_new_tokens` keeps EOS out until then (the bench's equal-work runs).
    """
    tok = lm.tokenizer
    prompt_ids = [encode_prompt(tok, r.prompt, settings.use_bos, settings.chat) for r in rows]
    inputs = [encode_with_preamble(tok, r.prompt, s.preamble if s else "", settings.use_bos, settings.chat)
              for r, s in zip(rows, steerings, strict=True)]
    input_ids, attention_mask = left_pad(inputs, tok.pad_token_id, lm.device)
    width = input_ids.shape[1]
    layout = RowLayout(tuple(width - len(t) for t in inputs), tuple(len(t) for t in inputs), settings.use_bos)
    eos = tok.eos_token_id
    guard = NonFiniteGuard(eos if isinstance(eos, int) else eos[0], len(rows), lm.device)
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    processors = LogitsProcessorList([guard])
    if settings.repetition_penalty != 1.0:
        processors.append(PromptRepetitionPenalty(settings.repetition_penalty, prompt_ids, width, vocab,
                                                  lm.device))
    if not settings.greedy:
        processors.append(sampler([r.seed for r in rows], settings.temperature, settings.top_k,
                                  settings.top_p, width, lm.device))
    config: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": False,
                              "use_cache": True, "pad_token_id": tok.pad_token_id, "eos_token_id": eos,
                              "min_new_tokens": min_new_tokens}
    with _plain_generation_config(lm), steering_hooks(lm.model, steerings, layout) as session, \
            torch.no_grad():
        out = lm.model.generate(input_ids=input_ids, attention_mask=attention_mask,
                                generation_config=GenerationConfig(**config), logits_processor=processors)
    ledger = session.ledgers[0] if session.ledgers else None
    new = [_until_eos(t, eos) for t in out[:, width:].tolist()]
    bad = guard.bad_rows
    gens = [
        Generation(row, tok.decode(ids, skip_special_tokens=True), ids, p,
                   "non-finite logits" if i in bad else ledger.problem(i) if ledger else None,
                   [*(ledger.row(i) if ledger else ()),
                    *([LedgerEntry(site=PREAMBLE_SITE, kind="prompt", positions=len(x) - len(p), norm=0.0)]
                      if s and s.preamble else ())])
        for i, (row, ids, p, x, s) in enumerate(zip(rows, new, prompt_ids, inputs, steerings, strict=True))
    ]
    _check_applied(gens, steerings)
    return gens


def _check_applied(gens: Sequence[Generation], steerings: Sequence[Steering | None]) -> None:
    for g, s in zip(gens, steerings, strict=True):
        if s is None or s.is_null():
            continue
        if dead := unapplied(s, g.ledger):
            raise SteeringNotAppliedError(
                f"condition '{g.row.condition}': its steering is not zero but changed no position of "
                f"the prompt {g.row.prompt!r} at {', '.join(dead)} (of {', '.join(s.sites())}); "
                "check the layer, the positions and max_new_tokens")


def _until_eos(ids: list[int], eos: int | list[int] | None) -> list[int]:
    stops = set(eos) if isinstance(eos, list) else {eos}
    for i, t in enumerate(ids):
        if t in stops:
            return ids[:i]
    return ids
