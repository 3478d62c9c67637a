"""Fact-edit probes: does steering make the model prefer the edited answer (CounterFact style)?"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import Field

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.schema.task import PromptRecord
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, indicator

NAN = float("nan")


class FactParams(Spec):
    """`target`/`original` are the default answers; a prompt record's own fields override them."""

    target: str | None = None
    original: str | None = None
    batch_size: int = Field(32, ge=1)


def _answer(text: str) -> str:
    return text if text[:1].isspace() else " " + text


@register_scorer
class FactScorer(BaseScorer):
    """Per prompt, under the sample's own steering and prompting preamble (next-token
    log-probs, answers summed):

    - `margin`: log P(target) − log P(original) on probe prompts;
    - `efficacy`: 1 if the target beats the original on a probe prompt;
    - `neighbour_margin`, `specificity`: the same margin, and 1 if the original still wins,
      on neighbourhood prompts (other subjects whose answer must not change);
    - `mentions_target`, `mentions_original`: whether the completion names each answer.
    Metrics of the other prompt group are NaN and *not applicable* ("neighbourhood prompt" /
    "probe prompt"); a non-finite answer log-probability makes the margins *unscorable*. The
    probes read the prompt, not the completion, so an empty completion is scored like any other.
    """

    name = "fact"
    metrics = ("margin", "efficacy", "neighbour_margin", "specificity", "mentions_target",
               "mentions_original")
    Params = FactParams
    needs_model = True

    @classmethod
    def prompt_problem(cls, params: FactParams, prompt: PromptRecord) -> str | None:
        if (prompt.target or params.target) and (prompt.original or params.original):
            return None
        return "the fact scorer needs `target` and `original` answers (on the prompt or in scorers.fact)"

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        from harness.models.tokens import encode_with_preamble
        from harness.scorers.logprobs import continuation_logprobs

        if ctx.lm is None:
            raise ValueError("the fact scorer needs the generation model in the scoring context")
        answers = [self._answers(s) for s in samples]
        keys = sorted({(s.prompt, s.condition, a) for s, a in zip(samples, answers, strict=True)})
        prefixes, conts, steer = [], [], []
        for prompt, condition, (target, original) in keys:
            steering = ctx.steerings.get(condition)
            for ans in (target, original):
                prefixes.append(encode_with_preamble(ctx.lm.tokenizer, prompt,
                                                     steering.preamble if steering else "", ctx.use_bos,
                                                     ctx.chat))
                conts.append(ctx.lm.tokenizer(ans, add_special_tokens=False).input_ids)
                steer.append(steering)
        lps = continuation_logprobs(ctx.lm, prefixes, conts, steer, self.params.batch_size,
                                    has_bos=ctx.use_bos)
        margin = {k: sum(lps[2 * i]) - sum(lps[2 * i + 1]) for i, k in enumerate(keys)}
        return [
            self._score_one(s, a, margin[(s.prompt, s.condition, a)])
            for s, a in zip(samples, answers, strict=True)
        ]

    def _answers(self, s: Sample) -> tuple[str, str]:
        target = s.meta.get("target") or self.params.target
        original = s.meta.get("original") or self.params.original
        if not target or not original:
            raise ValueError(f"fact prompt {s.prompt!r} needs `target` and `original` answers")
        return _answer(target), _answer(original)

    def _score_one(self, s: Sample, answers: tuple[str, str], margin: float) -> Score:
        mentions = [float(bool(re.search(rf"\b{re.escape(a.strip())}\b", s.completion, re.I)))
                    for a in answers]
        probe = s.meta.get("group", "probe") == "probe"
        own = ({"margin": margin, "efficacy": indicator(margin > 0, margin)} if probe
               else {"neighbour_margin": margin, "specificity": indicator(margin < 0, margin)})
        other = [m for m in ("margin", "efficacy", "neighbour_margin", "specificity") if m not in own]
        values = own | dict.fromkeys(other, NAN) | {"mentions_target": mentions[0],
                                                     "mentions_original": mentions[1]}
        reasons = {m: "non-finite log-probability of an answer" for m, v in own.items() if v != v}
        why = "neighbourhood prompt" if not probe else "probe prompt"
        return Score(values, reasons, not_applicable=dict.fromkeys(other, why))
