"""Capability retention: does a steering break what the model already knows?

A bundled cloze set (`data/capability.jsonl`: facts, arithmetic, word knowledge, sequences),
kept to items the unsteered embedded model answers right, is scored with and without the
steering in forward passes only (no sampling). An item is answered **right** when the greedy
next token after BOS + prompt (the argmax of the logits, ties to the lowest id) is the first
token of the answer (the answer carries its leading space and is tokenized on its own).

The bundled items were written for this module (200 candidates) and kept when the unsteered
SmolLM2-135M-Instruct answers them right with a margin of at least 0.25 nats between its top
two next tokens (137 kept), so float noise (batching, threads, devices) cannot flip them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import UserError
from harness.schema.results import Estimate
from harness.stats import bootstrap_ci
from harness.stats.comparison import compare_values

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.steering.base import Steering

DATA = Path(__file__).resolve().parent / "data" / "capability.jsonl"


@dataclass(frozen=True)
class Item:
    """One cloze item: the model should continue `prompt` with `answer` (leading space included)."""

    prompt: str
    answer: str
    kind: str

    @property
    def key(self) -> str:
        return f"{self.kind}|{self.prompt}|{self.answer}"


def load_items(path: Path | None = None) -> list[Item]:
    """The bundled cloze items (or those of `path`, same JSONL fields: prompt, answer, kind)."""
    source = DATA if path is None else path
    items = []
    for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(Item(str(row["prompt"]), str(row["answer"]), str(row["kind"])))
        except (ValueError, KeyError) as err:
            raise UserError(f"{source}:{n}: not a capability item ({err})") from None
    return items


@dataclass(frozen=True)
class ItemScores:
    """Per item (input order): right or not (greedy first token) and log P(whole answer | prompt)."""

    right: tuple[bool, ...]
    logprob: tuple[float, ...]
    greedy: tuple[int, ...]  # the greedy next-token id


def score_items(lm: LoadedModel, items: Sequence[Item], steering: Steering | None = None,
                batch_size: int = 32) -> ItemScores:
    """Greedy first token and answer log-probability of every item, in batched forward passes
    over BOS + prompt + answer (left-padded, position ids counted from each row's first token,
    the steering's layout with the prompt as the prompt, as in `continuation_logprobs`). A
    steering's preamble (prompting) goes between BOS and the prompt."""
    import torch

    from harness.models.tokens import encode_with_preamble, left_pad
    from harness.steering.session import RowLayout, steering_hooks

    preamble = steering.preamble if steering is not None else ""
    prompts = [encode_with_preamble(lm.tokenizer, it.prompt, preamble, use_bos=True) for it in items]
    answers = [list(lm.tokenizer(it.answer, add_special_tokens=False).input_ids) for it in items]
    empty = [it.answer for it, a in zip(items, answers, strict=True) if not a]
    if empty:
        raise UserError(f"capability answer(s) that tokenize to nothing: {empty[:3]}")
    right, logprob, greedy = [False] * len(items), [0.0] * len(items), [0] * len(items)
    order = sorted(range(len(items)), key=lambda i: (len(prompts[i]) + len(answers[i]), i))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        rows = [prompts[i] + answers[i] for i in idx]
        ids, mask = left_pad(rows, lm.tokenizer.pad_token_id, lm.device)
        width = ids.shape[1]
        keep = max(len(answers[i]) for i in idx) + 1
        layout = RowLayout(tuple(width - len(r) for r in rows), tuple(len(prompts[i]) for i in idx), True)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        with steering_hooks(lm.model, [steering] * len(idx), layout), torch.no_grad():
            logits = lm.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                              logits_to_keep=keep, use_cache=False).logits[:, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        for row, i in enumerate(idx):
            n = len(answers[i])
            span = logp[row, keep - 1 - n :]  # predicts the answer's n tokens
            target = torch.tensor(answers[i], device=span.device)
            greedy[i] = int(span[0].argmax())
            right[i] = greedy[i] == answers[i][0]
            logprob[i] = float(span.gather(-1, target[:, None]).sum())
    return ItemScores(tuple(right), tuple(logprob), tuple(greedy))


@dataclass(frozen=True)
class Capability:
    """Accuracy and mean log P(answer) with and without a steering (95 % CIs over items), and
    the paired changes (steered − unsteered, `compare_values` over items)."""

    n_items: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    logprob: float
    logprob_ci: tuple[float, float]
    unsteered_accuracy: float
    unsteered_accuracy_ci: tuple[float, float]
    unsteered_logprob: float
    unsteered_logprob_ci: tuple[float, float]
    accuracy_change: Estimate
    logprob_change: Estimate
    broken: tuple[str, ...]  # prompts right unsteered and wrong steered


def capability(lm: LoadedModel, steering: Steering, items: Sequence[Item] | None = None,
               seed: int = 0, batch_size: int = 32) -> Capability:
    """Score `items` (default: the bundled set) unsteered and under `steering`."""
    items = load_items() if items is None else list(items)
    if len(items) < 2:
        raise UserError("capability needs at least 2 items")
    base = score_items(lm, items, None, batch_size)
    new = score_items(lm, items, steering, batch_size)
    keys = [it.key for it in items]

    def mean_ci(values: Sequence[float]) -> tuple[float, tuple[float, float]]:
        return float(np.mean(values)), bootstrap_ci(values, seed=seed)

    acc, acc_ci = mean_ci([float(r) for r in new.right])
    lp, lp_ci = mean_ci(new.logprob)
    acc0, acc0_ci = mean_ci([float(r) for r in base.right])
    lp0, lp0_ci = mean_ci(base.logprob)
    return Capability(
        n_items=len(items), accuracy=acc, accuracy_ci=acc_ci, logprob=lp, logprob_ci=lp_ci,
        unsteered_accuracy=acc0, unsteered_accuracy_ci=acc0_ci, unsteered_logprob=lp0,
        unsteered_logprob_ci=lp0_ci,
        accuracy_change=compare_values(dict(zip(keys, map(float, base.right), strict=True)),
                                       dict(zip(keys, map(float, new.right), strict=True)),
                                       seed=seed).estimate,
        logprob_change=compare_values(dict(zip(keys, base.logprob, strict=True)),
                                      dict(zip(keys, new.logprob, strict=True)), seed=seed).estimate,
        broken=tuple(it.prompt for it, a, b in zip(items, base.right, new.right, strict=True) if a and not b),
    )
