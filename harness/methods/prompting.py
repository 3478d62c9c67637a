"""The prompting baseline: no vector, an instruction before the prompt (AxBench's strongest)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from harness.errors import UserError
from harness.registry import register_method
from harness.schema.generation import GenerationSettings
from harness.schema.steering import MethodSpec

if TYPE_CHECKING:
    from harness.models import LoadedModel
    from harness.steering.base import Steering


class PromptingSpec(MethodSpec):
    """The prompting baseline: no vector; `instruction` is put before every prompt.

    `chat: false` puts the instruction and a newline before the prompt: as plain text, or, with
    `generation.chat`, at the start of the user's turn (as AxBench); `chat: true` renders it as
    the system message of the tokenizer's chat template and lets the assistant's turn begin with
    the prompt. Scorers see only the completion, and the repetition penalty sees only the prompt
    and the completion, as for every method.
    """

    method: Literal["prompting"]
    instruction: str = Field(min_length=1)
    chat: bool = False
    sweep_axes: ClassVar[tuple[str, str] | None] = None  # no layer, no strength


def build_prompting(lm: LoadedModel, instruction: str, chat: bool = False) -> Steering:
    """A steering with no interventions whose preamble carries `instruction`.

    Plain text: the instruction and a newline. Chat: the tokenizer's chat template with the
    instruction as the system message and the assistant's turn opened, so the prompt is
    the beginning of the assistant's reply.
    """
    from harness.steering.base import Steering

    if not chat:
        return Steering((), preamble=instruction.rstrip() + "\n")
    tok = lm.tokenizer
    if not getattr(tok, "chat_template", None):
        raise UserError(f"model '{lm.name}' has no chat template; use `chat: false` for prompting")
    text = tok.apply_chat_template([{"role": "system", "content": instruction}], tokenize=False,
                                   add_generation_prompt=True)
    return Steering((), preamble=str(text))


def build(lm: LoadedModel, spec: PromptingSpec, settings: GenerationSettings) -> Steering:
    if spec.chat and settings.chat:
        raise UserError("prompting with `chat: true` opens its own chat turn; with generation.chat the "
                        "prompt is already a chat turn: set one of them to false")
    return build_prompting(lm, spec.instruction, spec.chat)


register_method(PromptingSpec, build)
