"""Any local Hugging Face text classifier as a sentiment scorer: P(positive label)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from harness.errors import UserError
from harness.registry import register_scorer
from harness.schema.spec import Spec
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, no_text


class HFClassifierParams(Spec):
    """`model`: a Hub id already in the local cache, or a local directory (never downloaded).
    `positive_label`: the label whose probability is reported; default: the one label containing
    "pos" (case-insensitive), else `LABEL_1`."""

    model: str
    positive_label: str | None = None
    batch_size: int = Field(16, ge=1)


def positive_label(labels: Sequence[str], wanted: str | None) -> str:
    """The label to report: `wanted` if given, else the single "pos" label, else LABEL_1."""
    if wanted is None:
        pos = [label for label in labels if "pos" in label.lower()]
        wanted = pos[0] if len(pos) == 1 else "LABEL_1"
    if wanted not in labels:
        raise UserError(f"classifier has no label '{wanted}': its labels are {', '.join(labels)}; "
                        "set `positive_label`")
    return wanted


def load_pipeline(model: str) -> Any:
    """A CPU text-classification pipeline returning every label's score, from local files."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
        net = AutoModelForSequenceClassification.from_pretrained(
            model, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"classifier '{model}' is not available locally (no download is tried): "
                        f"give a local directory or cache it first ({e})") from e
    return pipeline("text-classification", model=net.eval(), tokenizer=tokenizer, top_k=None,
                    device="cpu")


@register_scorer
class HFClassifierScorer(BaseScorer):
    """`p_positive`: the classifier's probability (softmax over its labels, or sigmoid for a
    single-logit model) of `positive_label` for the completion, truncated to the model's length.
    Any visible text is scored ("!!!" included); an empty or whitespace-only completion is
    unscorable."""

    name = "hf_classifier"
    metrics = ("p_positive",)
    Params = HFClassifierParams

    def __init__(self, params: HFClassifierParams):
        super().__init__(params)
        self.pipe = load_pipeline(params.model)  # built before generation: a missing model fails early
        id2label = self.pipe.model.config.id2label
        labels = [id2label[i] for i in sorted(id2label)]
        self.label = positive_label(labels, params.positive_label)

    def score(self, samples: Sequence[Sample], ctx: ScoringContext) -> list[Score]:
        texts = [s.completion for s in samples]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        outputs = self.pipe([texts[i] for i in todo], batch_size=self.params.batch_size,
                            truncation=True) if todo else []
        probs = {
            i: next(d["score"] for d in out if d["label"] == self.label)
            for i, out in zip(todo, outputs, strict=True)
        }
        return [
            Score({"p_positive": float(probs[i])}) if i in probs
            else no_text(self.metrics, texts[i])
            for i in range(len(texts))
        ]
