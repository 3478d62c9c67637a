"""The prompting baseline: no vector, an instruction before the prompt (AxBench's strongest)."""

from __future__ import annotations

from harness.errors import UserError
from harness.models import LoadedModel
from harness.steering.base import Steering


def build_prompting(lm: LoadedModel, instruction: str, chat: bool = False) -> Steering:
    """A steering with no interventions whose preamble carries `instruction`.

    Plain text: the instruction and a newline. Chat: the tokenizer's chat template with the
    instruction as the system message and the assistant's turn opened, so the prompt is
    the beginning of the assistant's reply.
    """
    if not chat:
        return Steering((), preamble=instruction.rstrip() + "\n")
    tok = lm.tokenizer
    if not getattr(tok, "chat_template", None):
        raise UserError(f"model '{lm.name}' has no chat template; use `chat: false` for prompting")
    text = tok.apply_chat_template([{"role": "system", "content": instruction}], tokenize=False,
                                   add_generation_prompt=True)
    return Steering((), preamble=str(text))
