"""The device-side sampler: exact (chi-square against the warped softmax), seeded per row, and a
row's tokens the same alone or in a mixed batch of 32."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from harness.engine import Row, generate_batch
from harness.engine.sampling import row_uniforms, sample_tokens
from harness.methods.actadd import Addition, build_actadd
from harness.methods.mean_diff import build_mean_diff
from harness.schema.generation import GenerationSettings

LOGITS = torch.tensor([[2.0, 1.2, 0.9, 0.5, 0.1, -0.3, -1.0, -2.5, 0.7, 1.5]])
DRAWS = 40_000


def _warped(temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """transformers' own warpers, as `generate(do_sample=True)` applies them."""
    warpers = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    warpers += [TopKLogitsWarper(top_k)] if top_k else []
    warpers += [TopPLogitsWarper(top_p)] if top_p < 1 else []
    return torch.softmax(LogitsProcessorList(warpers)(None, LOGITS.clone()), dim=-1)[0].double().numpy()


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 4, 1.0),
                                                             (1.0, 0, 0.6), (1.3, 6, 0.8)])
def test_the_sampler_draws_from_the_softmax_of_the_warped_logits(temperature, top_k, top_p):
    u = row_uniforms(torch.arange(DRAWS), step=3)
    picks = sample_tokens(LOGITS.expand(DRAWS, -1), u, temperature, top_k, top_p)
    counts = np.bincount(picks.numpy(), minlength=LOGITS.shape[1])
    expected = _warped(temperature, top_k, top_p) * DRAWS
    assert (counts[expected == 0] == 0).all()  # never a token the warpers removed
    kept = expected > 0
    chi2 = stats.chisquare(counts[kept], expected[kept] / expected[kept].sum() * counts.sum())
    assert chi2.pvalue > 0.001, (counts, expected.round(1))


def test_row_uniforms_depend_on_seed_and_step_only():
    a = row_uniforms(torch.tensor([5, 6, 7]), step=2)
    assert torch.equal(row_uniforms(torch.tensor([7, 5]), step=2), a[[2, 0]])  # not on the batch
    assert not torch.equal(row_uniforms(torch.tensor([5, 6, 7]), step=3), a)
    u = row_uniforms(torch.arange(100_000), step=0).numpy()
    assert u.min() > 0 and u.max() < 1 and stats.kstest(u, "uniform").pvalue > 0.001


PROMPTS = ["I love the way", "The tower", "We talked about", "To see the", "In the morning",
           "The light falls", "People flock to", "I hate you"]


def _mixed_rows(lm):  # noqa: ANN001, ANN202
    """32 rows: 8 prompts x 4 conditions (unsteered, two ActAdd strengths, mean_diff), 2 samples."""
    conditions = {"u": None, "a4": build_actadd(lm, [Addition(1, 4.0, "love"), Addition(1, -4.0, "hate")]),
                  "a8": build_actadd(lm, [Addition(1, 8.0, "love"), Addition(1, -8.0, "hate")]),
                  "md": build_mean_diff(lm, [("I love the way", "I hate the way")], 2, 3.0)}
    rows = [Row(p, c, 0, 1000 * i) for i, p in enumerate(PROMPTS) for c in conditions]
    return rows, conditions


def test_a_row_sampled_alone_equals_it_in_a_mixed_batch_of_32_tiny(tiny_lm):
    _alone_equals_batched(tiny_lm, GenerationSettings(max_new_tokens=6))


def test_a_row_sampled_alone_equals_it_in_a_mixed_batch_of_32_embedded(smollm):
    _alone_equals_batched(smollm, GenerationSettings(max_new_tokens=8))


def _alone_equals_batched(lm, settings: GenerationSettings) -> None:  # noqa: ANN001
    rows, conditions = _mixed_rows(lm)
    assert len(rows) == 32
    batch = generate_batch(lm, rows, [conditions[r.condition] for r in rows], settings)
    for i in (0, 5, 13, 22, 31):
        (alone,) = generate_batch(lm, [rows[i]], [conditions[rows[i].condition]], settings)
        assert alone.token_ids == batch[i].token_ids, rows[i]
    reseeded = generate_batch(lm, [Row(r.prompt, r.condition, r.sample, r.seed + 7) for r in rows[:8]],
                              [conditions[r.condition] for r in rows[:8]], settings)
    assert any(a.token_ids != b.token_ids for a, b in zip(reseeded, batch[:8], strict=True))  # seeds matter
