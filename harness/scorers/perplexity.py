"""Log-perplexity of each completion given its prompt, under a judge model with steering off."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from harness.scorers.base import Sample, Score, ScoringContext, unscorable
from harness.scorers.logprobs import continuation_logprobs
from harness.tokens import encode


class PerplexityParams(BaseModel):
    """`judge`: None = the generation model itself (shared, not loaded twice), or a model name."""

    model_config = ConfigDict(extra="forbid")

    judge: str | None = None
    batch_size: int = Field(32, ge=1)


class PerplexityScorer:
    """`logppl`: mean negative log-probability per completion token (log of the perplexity).

    Per-token log-probabilities are kept in `Score.detail["token_logprobs"]` for reports.
    """

    name = "perplexity"
    metrics = ("logppl",)
    Params = PerplexityParams

    def __init__(self, params: PerplexityParams):
        self.params = params

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        if ctx.load_judge is None:
            raise ValueError("the perplexity scorer needs a judge model in the scoring context")
        judge = ctx.load_judge(self.params.judge)
        same = ctx.lm is not None and judge is ctx.lm
        prefixes = [s.prompt_ids if same else encode(judge.tokenizer, s.prompt) for s in samples]
        conts = [
            s.completion_ids if same else judge.tokenizer(s.completion, add_special_tokens=False).input_ids
            for s in samples
        ]
        token_lps = continuation_logprobs(judge, prefixes, conts, batch_size=self.params.batch_size)
        return [self._score_one(lps) for lps in token_lps]

    def _score_one(self, lps: list[float]) -> Score:
        if not lps:
            return unscorable(self.metrics, "empty completion")
        value = -sum(lps) / len(lps)
        if not math.isfinite(value):
            return Score({"logppl": float("nan")}, {"logppl": "non-finite log-probability"},
                         {"token_logprobs": lps})
        return Score({"logppl": value}, detail={"token_logprobs": lps})
