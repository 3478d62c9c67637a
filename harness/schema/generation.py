"""Decoding settings shared by every row of a task (pydantic only)."""

from __future__ import annotations

from pydantic import Field

from harness.schema.spec import Spec


class GenerationSettings(Spec):
    """Decoding settings shared by all rows of a run (defaults follow the ActAdd post).

    `use_bos` is the one switch for the shared BOS position: it is put before every prompt and
    every contrast text, and every-position vectors skip it (the attention sink) when present.
    `chat` renders each prompt as a user turn of the tokenizer's chat template, the assistant's
    turn opened (instruct models are steered and judged so in AxBench and CAA); scorers still see
    only the completion.
    """

    max_new_tokens: int = Field(40, ge=1)
    greedy: bool = False
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.3, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    repetition_penalty: float = Field(1.2, gt=0)
    use_bos: bool = True
    chat: bool = False
