"""Scorers: one module each, registered by name in `harness.registry`."""

from __future__ import annotations

from typing import Any

from harness.registry import scorer_class
from harness.scorers.base import Sample, Score, Scorer, ScoringContext, no_text, unscorable


def make_scorer(name: str, params: dict[str, Any] | None = None) -> Scorer:
    """Build a scorer from its name and parameters (validated by the scorer's `Params`)."""
    cls = scorer_class(name)
    return cls(cls.Params.model_validate(params or {}))


__all__ = ["Sample", "Score", "Scorer", "ScoringContext", "make_scorer", "no_text", "scorer_class",
           "unscorable"]
