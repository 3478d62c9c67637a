"""Mean difference of activations over contrast pairs (CAA, Rimsky et al.; AxBench's DiffMean)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from harness.errors import UserError
from harness.registry import register_method
from harness.schema.generation import GenerationSettings
from harness.schema.steering import (
    ContrastPair,
    HookPoint,
    Operator,
    PairDatasetSpec,
    PairFileSpec,
    Positions,
    VectorSpec,
    Where,
)

if TYPE_CHECKING:
    import torch

    from harness.models import LoadedModel
    from harness.steering.base import Steering


class MeanDiffSpec(VectorSpec):
    """Mean difference of activations over contrast pairs, added at every position (CAA).

    Each text's activations at `layer` are reduced to one vector: the mean over its
    tokens (BOS excluded) with `token: mean`, or its last token with `token: last`.
    `coeff` × mean(positive − negative) is added at every position of the prompt and of
    the generated tokens, except the BOS position (the attention sink); `positions`,
    `steer_bos` and `operator` change where and how (see `VectorSpec`). `coeff` is required,
    except with `operator: ablate`, which takes none.
    """

    method: Literal["mean_diff"]
    layer: int = Field(ge=0)
    pairs: list[ContrastPair] | PairFileSpec | PairDatasetSpec
    token: Literal["mean", "last"] = "mean"
    point: HookPoint = "resid"

    @field_validator("pairs")
    @classmethod
    def _some_pairs(cls, pairs: list[ContrastPair] | PairFileSpec | PairDatasetSpec
                    ) -> list[ContrastPair] | PairFileSpec | PairDatasetSpec:
        if isinstance(pairs, list) and not pairs:
            raise ValueError("needs at least one contrast pair")
        return pairs

    @model_validator(mode="after")
    def _coeff_unless_ablate(self) -> MeanDiffSpec:
        if self.coeff is None and self.operator != "ablate":
            raise ValueError(f"coeff: operator '{self.operator}' needs a coefficient")
        return self

    def resolve(self, base: Path, where: Where) -> MeanDiffSpec:
        if isinstance(self.pairs, list):
            return self
        if isinstance(self.pairs, PairDatasetSpec):
            from harness.tasks.dataset_rows import dataset_pairs

            pairs = dataset_pairs(self.pairs, base, where(("pairs", "dataset")))
            return self.model_copy(update={"pairs": pairs})
        from harness.tasks.prompt_files import read_pair_file

        files = self.pairs
        pairs = read_pair_file(base / files.file, files.positive_field, files.negative_field,
                               where(("pairs", "file")))
        return self.model_copy(update={"pairs": pairs[: files.limit] if files.limit else pairs})


def text_activations(
    lm: LoadedModel,
    texts: Sequence[str],
    layer: int,
    point: HookPoint = "resid",
    token: Literal["mean", "last"] = "mean",
    use_bos: bool = True,
) -> torch.Tensor:
    """One `[d]` activation per text at (`layer`, `point`): the mean over its tokens (BOS
    excluded) or its last token; `[len(texts), d]` in float32. Texts run one at a time, so
    no padding touches the numbers."""
    import torch

    from harness.models.tokens import encode
    from harness.steering.capture import capture_outputs

    rows = []
    for text in texts:
        ids = torch.tensor([encode(lm.tokenizer, text, use_bos)], device=lm.device)
        acts = capture_outputs(lm.model, [(layer, point)], input_ids=ids,
                               attention_mask=torch.ones_like(ids))[(layer, point)][0].float()
        body = acts[1:] if use_bos and acts.shape[0] > 1 else acts
        rows.append(body.mean(dim=0) if token == "mean" else acts[-1])
    return torch.stack(rows)


def build_mean_diff(
    lm: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    layer: int,
    coeff: float | None,
    *,
    token: Literal["mean", "last"] = "mean",
    point: HookPoint = "resid",
    use_bos: bool = True,
    positions: Positions = "all",
    operator: Operator = "add",
    steer_bos: bool = False,
) -> Steering:
    """`coeff` × mean over pairs of (activation(positive) − activation(negative)), added at
    every position after BOS, generated tokens included (or placed as `positions`, `operator`
    and `steer_bos` say; ablate takes `coeff=None`). A zero mean difference (the pairs' texts
    give the same activations) has no direction: UserError."""
    from harness.models import hook_module
    from harness.steering.base import Steering, placed

    if not pairs:
        raise ValueError("mean_diff needs at least one contrast pair")
    hook_module(lm.model, layer, point)  # a layer out of range fails with the layer count
    pos = text_activations(lm, [p for p, _ in pairs], layer, point, token, use_bos)
    neg = text_activations(lm, [n for _, n in pairs], layer, point, token, use_bos)
    vector = (pos - neg).mean(dim=0)
    if not bool(vector.any()):
        raise UserError(f"mean_diff: the mean difference of the {len(pairs)} pair(s) at layer {layer} is "
                        "zero (their positive and negative texts give the same activations): no direction")
    return Steering((placed(layer, vector, coeff, point, positions, operator, steer_bos),))


def build(lm: LoadedModel, spec: MeanDiffSpec, settings: GenerationSettings) -> Steering:
    assert isinstance(spec.pairs, list), "pair files are read when the task is loaded"
    spec.check_generation(settings.use_bos)
    return build_mean_diff(lm, [(p.positive, p.negative) for p in spec.pairs], spec.layer, spec.coeff,
                           token=spec.token, point=spec.point, use_bos=settings.use_bos,
                           positions=spec.positions, operator=spec.operator, steer_bos=spec.steer_bos)


register_method(MeanDiffSpec, build)
