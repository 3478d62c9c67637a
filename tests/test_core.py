"""One core, thin shells: the same comparison gives the same numbers in
analysis, compare and check, and `harness.steer` is the engine's steering on any model."""

from __future__ import annotations

import pytest
import torch

from harness.analyses.baseline import make_baseline
from harness.analyses.check import check
from harness.analyses.compare import compare_runs
from harness.api import steer
from harness.cli import main
from harness.methods.actadd import Addition, build_actadd
from harness.methods.mean_diff import build_mean_diff
from harness.models.tokens import encode, left_pad
from harness.steering.session import RowLayout, steering_hooks
from harness.store import read_run
from tests.test_compare import METRIC, N_PROMPTS, null_scores, shifted_scores, write_run


def test_analysis_compare_and_check_report_the_same_difference_and_ci(tmp_path):
    """Run B against a null run A: compare's B − A, check's change against A's baseline and the
    analysis of B's own effect all come from the same per-prompt values, so they are equal."""
    null = write_run(tmp_path / "a", null_scores())
    working = write_run(tmp_path / "b", shifted_scores(shift=0.3, cost=0.0))
    compared = next(r for r in compare_runs([str(null), str(working)]).rows if r.metric == METRIC)
    own = compared.effects[1]  # the analysis of B alone: steered − unsteered
    diff = compared.vs_reference[0]
    run_a, run_b = read_run(null)[0], read_run(working)[0]
    for run, path in ((run_a, null), (run_b, working)):  # per-prompt summaries as a real run writes them
        _add_summaries(run, read_run(path)[1])
    line = next(ln for ln in check(run_b, make_baseline(run_a, no_effect=True), allow_inconclusive=True).lines
                if ln.what.startswith("effect"))
    d, e = diff.estimate, own.estimate
    c = line.change
    assert d.point == pytest.approx(e.point, abs=1e-12) == pytest.approx(c.point, abs=1e-12)
    assert (d.ci_low, d.ci_high) == pytest.approx((e.ci_low, e.ci_high), abs=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx((d.ci_low, d.ci_high), abs=1e-12)
    assert diff.n == e.n == N_PROMPTS


def _add_summaries(run, samples) -> None:  # noqa: ANN001
    from harness.pipeline.analyse import compare_conditions
    from harness.schema.results import Headline

    c, _, summary = compare_conditions(samples, "love_hate", "steered", METRIC, run.tasks[0].prompt_ids, 0)
    run.per_prompt = [summary]
    run.headlines = [Headline(task="love_hate", condition="steered", metric=METRIC,
                              expected_direction="increase", estimate=c.estimate,
                              significant=c.estimate.p_value < 0.05, moved_as_expected=c.estimate.point > 0)]


def test_compare_refuses_runs_of_other_models_or_dtypes(tmp_path, capsys):
    a = write_run(tmp_path / "a", null_scores())
    b = write_run(tmp_path / "b", shifted_scores(), dtype="bfloat16")
    assert main(["compare", str(a), str(b)]) == 2
    assert "different model dtype" in capsys.readouterr().err


@pytest.fixture(scope="module", params=["gpt2", "llama", "gpt_neox"])
def lm(request, tmp_path_factory):
    from harness.models import load_model
    from tests.conftest import save_tiny_model

    return load_model(str(save_tiny_model(request.param, tmp_path_factory.mktemp(request.param))))


def _logits(lm, ids, mask):  # noqa: ANN001, ANN202
    with torch.no_grad():
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits


@pytest.mark.parametrize("method", ["actadd", "mean_diff"])
def test_steer_gives_the_engines_logits_and_leaves_nothing_behind(lm, method):
    pairs = [("I love the way", "I hate the way")]
    steering = (build_actadd(lm, [Addition(1, 30.0, "love"), Addition(1, -30.0, "hate")])
                if method == "actadd" else build_mean_diff(lm, pairs, 2, 20.0))
    rows = [encode(lm.tokenizer, t) for t in ("I love the way the light", "The tower")]
    ids, mask = left_pad(rows, lm.tokenizer.pad_token_id)
    plain = _logits(lm, ids, mask)
    layout = RowLayout(tuple(ids.shape[1] - len(r) for r in rows), tuple(len(r) for r in rows))
    with steering_hooks(lm.model, [steering, steering], layout):
        engine = _logits(lm, ids, mask)
    with steer(lm, steering):
        public = _logits(lm, ids, mask)
    torch.testing.assert_close(public, engine, atol=0, rtol=0)
    assert (public - plain).abs().max() > 1e-3
    torch.testing.assert_close(_logits(lm, ids, mask), plain, atol=0, rtol=0)  # removed on exit
    with pytest.raises(RuntimeError, match="boom"), steer(lm.model, steering):
        _logits(lm, ids, mask)
        raise RuntimeError("boom")
    torch.testing.assert_close(_logits(lm, ids, mask), plain, atol=0, rtol=0)  # and after an error
