"""Scorer registry: a name maps to `module:Class`; modules are imported on first use."""

from __future__ import annotations

import importlib
from typing import Any

from harness.errors import UserError
from harness.scorers.base import Sample, Score, Scorer, ScoringContext, unscorable

REGISTRY: dict[str, str] = {
    "keywords": "harness.scorers.keywords:KeywordScorer",
    "sentiment": "harness.scorers.sentiment:SentimentScorer",
    "vader": "harness.scorers.vader:VaderScorer",
    "hf_classifier": "harness.scorers.hf_classifier:HFClassifierScorer",
    "perplexity": "harness.scorers.perplexity:PerplexityScorer",
    "fact": "harness.scorers.fact:FactScorer",
    "diversity": "harness.scorers.diversity:DiversityScorer",
}


def scorer_class(name: str) -> Any:
    """The scorer class registered as `name`; an unknown name lists the known ones."""
    if name not in REGISTRY:
        raise UserError(f"unknown scorer '{name}': known scorers are {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_scorer(name: str, params: dict[str, Any] | None = None) -> Scorer:
    """Build a scorer from its name and parameters (validated by the scorer's `Params`)."""
    cls = scorer_class(name)
    return cls(cls.Params.model_validate(params or {}))


__all__ = ["REGISTRY", "Sample", "Score", "Scorer", "ScoringContext", "make_scorer", "scorer_class",
           "unscorable"]
