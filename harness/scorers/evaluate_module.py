"""Any Hugging Face `evaluate` metric or measurement as a per-sample scorer (e.g. the toxicity and
regard measurements of detoxification studies): a local module file or folder offline, a hub name
when the user is online."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from harness.errors import UserError
from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text, unscorable


class EvaluateParams(Spec):
    """`module`: a local module file or folder, or a hub name; `key`: the result field holding one
    number per completion (it names the metric, `evaluate.KEY`); `input`: the argument the
    completions are passed as (`predictions` for most, `data` for some measurements); `args`:
    more keyword arguments of `compute`."""

    module: str = Field(min_length=1)
    module_type: Literal["metric", "measurement", "comparison"] = "measurement"
    config: str | None = None
    key: str = Field(min_length=1)
    input: str = "predictions"
    args: dict[str, Any] = Field(default_factory=dict)
    batch_size: int = Field(64, ge=1)


@register_scorer
class EvaluateScorer(BaseScorer):
    """`KEY`: the module's per-completion value. Any visible text is passed to the module; an
    empty or whitespace-only completion, and a non-finite value, are unscorable."""

    name = "evaluate"
    metrics = ()
    Params = EvaluateParams

    def __init__(self, params: EvaluateParams):
        super().__init__(params)
        self.metrics = (params.key,)
        self.module: Any = None

    @classmethod
    def metric_names(cls, params: EvaluateParams) -> tuple[str, ...]:
        return (params.key,)

    def preflight(self, ctx: ScoringContext) -> None:
        """Load the module now, so a module that is missing (or on the hub while offline) fails
        before any generation."""
        if self.module is not None:
            return
        import evaluate

        p = self.params
        try:
            self.module = evaluate.load(p.module, p.config, module_type=p.module_type)
        except Exception as err:  # evaluate raises FileNotFoundError, ConnectionError, ImportError, ...
            detail = str(err).splitlines()[0] if str(err) else ""
            raise UserError(f"evaluate module {p.module!r} ({p.module_type}) cannot be loaded: "
                            f"{type(err).__name__}: {detail}; offline, give a local module file or "
                            "folder") from None

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        self.preflight(ctx)
        key = self.params.key
        todo = [i for i, s in enumerate(samples) if s.completion.strip()]
        values: dict[int, float] = {}
        for start in range(0, len(todo), self.params.batch_size):
            idx = todo[start : start + self.params.batch_size]
            texts = [samples[i].completion for i in idx]
            result = self.module.compute(**{self.params.input: texts}, **self.params.args)
            got = result.get(key) if isinstance(result, dict) else None
            if not isinstance(got, list | tuple) or len(got) != len(idx):
                keys = ", ".join(result) if isinstance(result, dict) else "none"
                raise UserError(f"evaluate module {self.params.module!r}: result {key!r} is {str(got)[:80]}, "
                                f"not one number per completion (result keys: {keys})")
            values.update(zip(idx, (float(v) for v in got), strict=True))
        return [(Score({key: values[i]}) if math.isfinite(values[i])
                 else unscorable((key,), f"non-finite value {values[i]}")) if i in values
                else no_text((key,), samples[i].completion) for i in range(len(samples))]
