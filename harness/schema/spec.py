"""The base classes of every spec and record, and the names the whole harness shares.

Pydantic and the standard library only: task files validate without torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

UNSTEERED = "unsteered"
"""The condition name of the samples generated with no steering."""

STEERED = "steered"
"""The condition name of a task's own steering."""

FLUENCY_METRIC = "perplexity.logppl"
"""The built-in fluency metric: a run records the one a scorer of each task declares
(`BaseScorer.fluency_metric`) in its fluency records; files from before carry this one."""

ALPHA = 0.05
"""Family-wise error rate of every significance verdict (see `harness.stats.comparison`)."""


class Spec(BaseModel):
    """Something a user writes (a task file, a method's parameters): unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class Record(BaseModel):
    """Something the harness writes: unknown keys are errors when read back, and NaN or infinity
    are written as the strings "NaN" / "Infinity" so every file stays strict JSON."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="strings")


_STRICT = TypeAdapter(Any, config=ConfigDict(ser_json_inf_nan="strings"))


def to_json(value: Any) -> str:
    """`value` as strict JSON in one line, NaN and infinity as strings (as every file we write)."""
    return _STRICT.dump_json(value).decode()
