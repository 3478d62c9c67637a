"""Log-perplexity of each completion given its prompt, under a judge model with steering off."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, unscorable


class PerplexityParams(Spec):
    """`judge`: None = the generation model itself (shared, not loaded twice), or a model name."""

    judge: str | None = None
    batch_size: int = Field(32, ge=1)


@register_scorer
class PerplexityScorer(BaseScorer):
    """`logppl`: mean negative log-probability per completion token (log of the perplexity).

    Under the generation model the sample's own token ids are scored; text without ids (and any
    text under another judge) is tokenized: the prompt as the run does (BOS first), the
    completion as it is. Per-token log-probabilities are kept in `Score.detail["token_logprobs"]`.
    Every token is scored, whitespace and punctuation included; unscorable: a completion without
    tokens, or a non-finite log-probability.
    """

    name = "perplexity"
    metrics = ("logppl",)
    Params = PerplexityParams
    needs_model = True
    fluency_metric = "logppl"
    token_logprobs = True

    def judge_name(self) -> str:
        return self.params.judge or "generation model"

    def preflight(self, ctx: ScoringContext) -> None:
        """Load the judge now, so a missing judge fails before generation."""
        if ctx.load_judge is not None:
            ctx.load_judge(self.params.judge)

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        from harness.models.tokens import encode_prompt
        from harness.scorers.logprobs import continuation_logprobs

        if ctx.load_judge is None:
            raise ValueError("the perplexity scorer needs a judge model in the scoring context")
        judge = ctx.load_judge(self.params.judge)
        own = ctx.lm is not None and judge is ctx.lm
        tok = judge.tokenizer
        prefixes = [s.prompt_ids if own and s.prompt_ids is not None
                    else encode_prompt(tok, s.prompt, ctx.use_bos, ctx.chat) for s in samples]
        conts = [s.completion_ids if own and s.completion_ids is not None
                 else tok(s.completion, add_special_tokens=False).input_ids for s in samples]
        token_lps = continuation_logprobs(judge, prefixes, conts, batch_size=self.params.batch_size,
                                          has_bos=ctx.use_bos)
        return [self._score_one(lps) for lps in token_lps]

    def _score_one(self, lps: list[float]) -> Score:
        if not lps:
            return unscorable(self.metrics, "empty completion")
        value = -sum(lps) / len(lps)
        if not math.isfinite(value):
            return Score({"logppl": float("nan")}, {"logppl": "non-finite log-probability"},
                         {"token_logprobs": lps})
        return Score({"logppl": value}, detail={"token_logprobs": lps})
