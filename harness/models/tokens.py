"""Tokenization rules shared by vector building, generation and scoring (BOS, spaces, padding)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from harness.errors import UserError


def bos_token_id(tokenizer: Any) -> int:
    """The id put at position 0 so steered and contrast prompts share the attention sink."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token; use use_bos=False")
    return int(token_id)


def encode(tokenizer: Any, text: str, use_bos: bool = True) -> list[int]:
    """Token ids of `text` without the tokenizer's own specials, BOS first when `use_bos`."""
    ids = list(tokenizer(text, add_special_tokens=False).input_ids)
    return [bos_token_id(tokenizer), *ids] if use_bos else ids


def encode_prompt(tokenizer: Any, text: str, use_bos: bool = True, chat: bool = False) -> list[int]:
    """The token ids of a prompt as the model sees it: `encode(text)`, or with `chat` the
    tokenizer's chat template with `text` as the user's turn and the assistant's turn opened
    (BOS first when `use_bos` and the template does not begin with it)."""
    if not chat:
        return encode(tokenizer, text, use_bos)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("generation.chat needs a tokenizer with a chat template")
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                             add_generation_prompt=True)
    ids = list(rendered["input_ids"] if hasattr(rendered, "keys") else rendered)
    bos = bos_token_id(tokenizer) if use_bos else None
    return [bos, *ids] if bos is not None and ids[:1] != [bos] else ids


def encode_with_preamble(tokenizer: Any, text: str, preamble: str, use_bos: bool = True,
                         chat: bool = False) -> list[int]:
    """`encode_prompt(text)` with the tokens of `preamble` before the text (prompting): between
    BOS and the text as plain text; with `chat`, at the start of the user's turn, as a user would
    type it (AxBench), not before the template.

    As plain text the text is tokenized on its own, so its tokens are the same with and without a
    preamble; in a chat turn the two are rendered together.
    """
    if not preamble:
        return encode_prompt(tokenizer, text, use_bos, chat)
    if chat:
        if marks := [t for t in getattr(tokenizer, "all_special_tokens", []) if t and t in preamble]:
            raise UserError(f"a prompting preamble holding the special token(s) {', '.join(marks)} (a chat "
                            "template already rendered, e.g. build_prompting(lm, ..., chat=True)) inside the "
                            "user's turn of generation.chat would nest one chat in another; build it with "
                            "chat=False (the instruction then opens the user's turn) or run without "
                            "generation.chat")
        return encode_prompt(tokenizer, preamble + text, use_bos, chat)
    ids = encode_prompt(tokenizer, text, use_bos)
    pre = list(tokenizer(preamble, add_special_tokens=False).input_ids)
    return [*ids[:1], *pre, *ids[1:]] if use_bos else [*pre, *ids]


def space_token_id(tokenizer: Any) -> int:
    """The token of a single space, used to pad contrast prompts to equal length."""
    ids = tokenizer(" ", add_special_tokens=False).input_ids
    if not ids:
        raise ValueError("the tokenizer encodes ' ' to nothing; cannot pad contrast prompts")
    return int(ids[-1])


def left_pad(ids: Sequence[Sequence[int]], pad_id: int,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids padded on the left to one width, and their attention mask."""
    width = max(len(t) for t in ids)
    input_ids = torch.tensor([[pad_id] * (width - len(t)) + list(t) for t in ids], device=device)
    mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in ids], device=device)
    return input_ids, mask
