"""Issue 21 points 4, 6, 7 and 12a: every check line shows its coverage and needs evidence to hold,
baselines without evidence are refused, `--gate specific` works, a bug in check is not a regression."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from scipy.stats import binomtest

from harness.analyses.baseline import make_baseline, read_baseline, write_baseline
from harness.analyses.check import (
    ERROR,
    HOLDS,
    INCOMPARABLE,
    INCONCLUSIVE,
    MIN_PROMPTS,
    NO_EFFECT,
    REGRESSION,
    CheckResult,
    Coverage,
    Line,
    Tolerance,
    check,
)
from harness.cli import main
from harness.errors import UserError
from harness.report.check_report import check_markdown, print_check
from harness.schema.results import SCHEMA_VERSION, PromptSummary, RunResult
from harness.schema.spec import FLUENCY_METRIC
from harness.stats import proportion_upper_bound
from tests.test_check import BASE, METRIC, PROMPTS, TASK, N, noisy, synthetic


@pytest.mark.parametrize(("k", "n"), [(0, 16), (0, 96), (3, 20), (7, 40)])
def test_proportion_upper_bound_is_the_one_sided_clopper_pearson_bound(k, n):
    # the one-sided 95 % bound is the upper end of the two-sided exact 90 % interval
    expected = binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").high
    assert proportion_upper_bound(k, n, 0.05) == pytest.approx(expected, rel=1e-9)
    assert proportion_upper_bound(n, n, 0.05) == 1.0


# Synthetic runs (tests.test_check.synthetic): one task, 24 prompts, per-prompt effects and costs.

def _specific(run: RunResult, effect: np.ndarray) -> RunResult:
    """`run` with a per-prompt summary of its specific effect (steered − its matched random controls)."""
    level = np.linspace(0.3, 0.5, N)
    controls = PromptSummary(task=TASK, condition="steered", metric=METRIC, reference="random controls",
                             prompts={p: [float(u), float(u + d)] for p, u, d in zip(PROMPTS, level, effect,
                                                                                    strict=True)})
    return run.model_copy(update={"per_prompt": [*run.per_prompt, controls]})


def _line(result: CheckResult, kind: str) -> Line:
    return next(line for line in result.lines if line.kind == kind)


def _with(run: RunResult, **update: object) -> RunResult:
    return run.model_copy(update=update)


def test_point4_gate_specific_holds_for_a_run_against_its_own_baseline():
    run = _specific(BASE, noisy(0.2, 0.05, 7))
    result = check(run, make_baseline(run), gate="specific")  # raised StopIteration before
    assert result.status == HOLDS, result.lines
    effect = _line(result, "effect")
    assert effect.what == f"specific effect {METRIC}" and effect.verdict == "holds"
    assert effect.coverage.compared == effect.coverage.planned == N
    assert [line.kind for line in result.lines] == ["effect", "fluency", "degenerate", "ledger"]


def test_point4_gate_specific_on_the_cli_exits_0_for_a_self_check(tmp_path):
    run = _specific(BASE, noisy(0.2, 0.05, 7))
    (tmp_path / "run.json").write_text(run.model_dump_json())
    write_baseline(run, tmp_path / "b.json")
    args = ["check", str(tmp_path / "run.json"), "--baseline", str(tmp_path / "b.json")]
    assert main([*args, "--gate", "specific"]) == HOLDS


def test_point4_a_bug_in_check_exits_4_never_1_the_regression_code(tmp_path, monkeypatch, capsys):
    (tmp_path / "run.json").write_text(BASE.model_dump_json())
    write_baseline(BASE, tmp_path / "b.json")

    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise StopIteration  # what --gate specific raised

    monkeypatch.setattr("harness.analyses.check.check", broken)
    status = main(["check", str(tmp_path / "run.json"), "--baseline", str(tmp_path / "b.json")])
    assert status == ERROR == 4 and status != REGRESSION
    assert "a bug, not a verdict" in capsys.readouterr().err


# Point 6: a baseline is evidence, validated when written and when read.

WRONG_WAY = synthetic(noisy(-0.30, 0.05, 5), noisy(0.30, 0.05, 6))  # as a run with steering.coeff=-4


def test_point6_a_baseline_whose_effect_went_the_wrong_way_is_refused_unless_no_effect():
    with pytest.raises(UserError, match="not in the expected direction"):
        make_baseline(WRONG_WAY)
    base = make_baseline(WRONG_WAY, no_effect=True)
    assert base.no_effect == {TASK: ["steered"]}
    # a later run that moves nothing does not "hold" against it: the line says there is nothing to protect
    result = check(synthetic(noisy(0.0, 0.05, 3), noisy(0.30, 0.05, 4)), base)
    effect = _line(result, "effect")
    assert effect.verdict == NO_EFFECT and "--no-effect" in effect.reason
    assert result.status == HOLDS and {line.verdict for line in result.lines} == {NO_EFFECT, "holds"}


def test_point6_no_effect_keeps_protecting_headlines_that_have_an_effect():
    assert make_baseline(BASE, no_effect=True).no_effect == {}
    shrunk = check(synthetic(noisy(0.05, 0.05, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE, no_effect=True))
    assert shrunk.status == REGRESSION and _line(shrunk, "effect").verdict == "regression"


def test_a_baseline_effect_not_significant_in_its_own_run_is_no_effect_to_protect():
    """A self-check of a run whose effect is noise "held" before: the same samples change by exactly
    0 per prompt, so the holds test passes whatever the effect. Now the line is inconclusive, and
    --no-effect lists the headline, after which the other lines still gate."""
    weak = synthetic(noisy(0.02, 0.3, 9), noisy(0.30, 0.05, 2))
    (h,) = weak.headlines
    weak = weak.model_copy(update={"headlines": [h.model_copy(update={"significant": False})]})
    assert h.estimate.p_value > 0.05  # the data really are not significant
    result = check(weak, make_baseline(weak))
    effect = _line(result, "effect")
    assert result.status == INCONCLUSIVE and effect.verdict == "inconclusive"
    assert "was not significant in its own run" in effect.reason and "--no-effect" in effect.reason
    # before, the same check held; marking the headline significant by hand is now refused (p > α)
    significant = weak.model_copy(update={"headlines": [h.model_copy(update={"significant": True})]})
    with pytest.raises(UserError, match="marked significant"):
        make_baseline(significant)
    listed = make_baseline(weak, no_effect=True)
    assert listed.no_effect == {TASK: ["steered"]}
    result = check(weak, listed)
    assert result.status == HOLDS and _line(result, "effect").verdict == NO_EFFECT
    assert "not significantly (p = " in _line(result, "effect").reason


def _baseline_json(tmp_path: Path, change) -> Path:  # noqa: ANN001
    data = json.loads(make_baseline(BASE).model_dump_json())
    change(data)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("change", "words"), [
    (lambda d: d.update(headlines=[]), "no headlines"),
    (lambda d: d["headlines"][0]["estimate"].update(point="NaN"), "no finite value"),
    (lambda d: d["headlines"][0]["estimate"].update(point=-0.3), "not in the expected direction"),
    (lambda d: d.update(schema_version=99), "schema_version 99"),
    (lambda d: d.update(schema_version=SCHEMA_VERSION - 1), "older harness"),
    (lambda d: d.update(per_prompt=[]), "no per-prompt summary"),
    (lambda d: d.update(no_effect={"other": ["steered"]}), "has no headline"),
], ids=["empty", "nan", "wrong-direction", "newer-version", "older-version", "no-summary",
        "unknown-no-effect"])
def test_point6_a_baseline_without_evidence_is_refused_when_read(tmp_path, change, words, capsys):
    path = _baseline_json(tmp_path, change)
    with pytest.raises(UserError, match=words):
        read_baseline(path)
    (tmp_path / "run.json").write_text(BASE.model_dump_json())
    assert main(["check", str(tmp_path / "run.json"), "--baseline", str(path)]) == INCOMPARABLE
    assert words in capsys.readouterr().err


def test_point6_a_nan_headline_is_refused_when_written_even_with_no_effect():
    nan = synthetic(np.full(N, math.nan), noisy(0.30, 0.05, 6))
    for flag in (False, True):
        with pytest.raises(UserError, match="no finite value"):
            make_baseline(nan, no_effect=flag)


# Point 7: every line shows its coverage and needs evidence.

def test_point7_fluency_with_23_of_24_prompts_nan_and_a_5_nat_cost_is_inconclusive_not_holds():
    cost = np.full(N, math.nan)
    cost[-1] = 5.0
    result = check(synthetic(noisy(0.30, 0.05, 3), cost), make_baseline(BASE))
    fluency = _line(result, "fluency")
    assert fluency.verdict == "inconclusive" and "too little evidence" in fluency.reason
    assert fluency.coverage == Coverage(planned=N, compared=1, excluded={"steered NaN in the run": 23})
    assert result.status == INCONCLUSIVE


def test_point7_fluency_holds_only_when_a_one_sided_test_shows_the_growth_below_the_tolerance():
    # 24 prompts, growth +0.10 ± 0.30 nats: no significant regression, but nothing shows it is below 0.15
    now = synthetic(noisy(0.30, 0.05, 3), noisy(0.40, 0.30, 4))
    fluency = _line(check(now, make_baseline(BASE)), "fluency")
    assert fluency.verdict == "inconclusive" and "prompts would decide it" in fluency.reason
    assert fluency.p_regression >= 0.05 and fluency.p_holds >= 0.05
    # the same test by brute force: Monte Carlo sign flips of (growth − 0.15), one-sided "less"
    growth = _effects(now, FLUENCY_METRIC) - _effects(BASE, FLUENCY_METRIC)
    assert growth.mean() == pytest.approx(fluency.change.point)
    assert _sign_flip_less(growth - 0.15) == pytest.approx(fluency.p_holds, abs=0.01)
    steady = synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4))
    clearly = _line(check(steady, make_baseline(BASE)), "fluency")
    assert clearly.verdict == "holds" and clearly.p_holds < 0.05


def _effects(run: RunResult, metric: str) -> np.ndarray:
    """Per-prompt steered − unsteered of `metric`, in prompt order."""
    prompts = next(p for p in run.per_prompt if p.metric == metric).prompts
    return np.array([prompts[k][1] - prompts[k][0] for k in PROMPTS])


def _sign_flip_less(d: np.ndarray, draws: int = 200_000) -> float:
    """Monte Carlo one-sided sign-flip p-value that mean(d) < 0 (independent of harness code)."""
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(draws, d.size))
    return float((np.mean(signs * d, axis=1) <= d.mean() + 1e-12).mean())


def test_point7_an_effect_below_the_coverage_floor_is_inconclusive():
    effect = noisy(0.30, 0.05, 3)
    effect[:6] = math.nan  # 18 of 24 = 0.75 < 0.8
    result = check(synthetic(effect, noisy(0.30, 0.05, 4)), make_baseline(BASE))
    line = _line(result, "effect")
    assert line.verdict == "inconclusive" and "18 of the 24" in line.reason and line.p_holds < 0.05
    assert check(synthetic(effect, noisy(0.30, 0.05, 4)), make_baseline(BASE),
                 Tolerance(min_coverage=0.7)).status == HOLDS


def test_point7_four_prompts_cannot_hold_whatever_their_values():
    # the baseline measured only 4 prompts: a one-sided sign-flip test needs 5 to reach p < 0.05
    few = np.full(N, math.nan)
    few[:4] = 0.3
    four = synthetic(few, few)
    (h,) = four.headlines  # 4 prompts cannot be significant in their own run either (p ≥ 0.125)
    four = _with(four, headlines=[h.model_copy(update={"significant": False})])
    assert MIN_PROMPTS == 5 and 0.5 ** 4 > 0.05 > 0.5 ** 5
    result = check(four, make_baseline(four))
    assert {line.kind: line.verdict for line in result.lines if line.kind in ("effect", "fluency")} == {
        "effect": "inconclusive", "fluency": "inconclusive"}
    assert all(_line(result, k).coverage.compared == 4 for k in ("effect", "fluency"))


@pytest.mark.parametrize(("samples", "verdict"), [(16, "inconclusive"), (28, "inconclusive"),
                                                  (29, "holds"), (96, "holds")])
def test_point7_degenerate_share_needs_enough_samples_to_hold(samples, verdict):
    run = _with(BASE, counts=[c.model_copy(update={"samples": samples}) for c in BASE.counts])
    line = _line(check(run, make_baseline(BASE)), "degenerate")
    # with none degenerate the exact 95 % upper bound is 1 - 0.05 ** (1 / n): within 10 % from n = 29
    assert (1 - 0.05 ** (1 / samples) <= 0.10) == (verdict == "holds")
    assert line.verdict == verdict and line.coverage == Coverage(unit="samples", planned=2 * samples,
                                                                 compared=2 * samples)


def test_point7_missing_counts_or_ledger_give_no_evidence():
    result = check(_with(BASE, counts=[], ledger=[]), make_baseline(_with(BASE, ledger=[])))
    assert _line(result, "degenerate").verdict == "inconclusive"
    assert _line(result, "ledger").verdict == "inconclusive"
    assert result.status == INCONCLUSIVE


# Point 12a and the report: --allow-inconclusive changes the exit status only.

def _render(result: CheckResult) -> str:
    console = Console(record=True, width=400)
    print_check(result, console)
    return console.export_text()


def test_point12a_allow_inconclusive_keeps_the_line_inconclusive_and_says_it_was_allowed():
    cost = np.full(N, math.nan)
    cost[-1] = 5.0
    result = check(synthetic(noisy(0.30, 0.05, 3), cost), make_baseline(BASE), allow_inconclusive=True)
    assert result.status == HOLDS and result.allowed_inconclusive == 1
    assert _line(result, "fluency").verdict == "inconclusive"
    text = _render(result)
    assert "holds (exit 0)" not in text and "1 line(s) inconclusive, accepted by --allow-inconclusive" in text
    assert "accepted by --allow-inconclusive" in check_markdown(result)


def test_every_line_shows_its_coverage_on_the_terminal_in_markdown_and_json(tmp_path):
    cost = np.full(N, math.nan)
    cost[-1] = 5.0
    run = synthetic(noisy(0.30, 0.05, 3), cost)
    (tmp_path / "run.json").write_text(run.model_dump_json())
    write_baseline(BASE, tmp_path / "b.json")
    args = ["check", str(tmp_path / "run.json"), "--baseline", str(tmp_path / "b.json")]
    assert main([*args, "--markdown", str(tmp_path / "check.md")]) == INCONCLUSIVE
    result = check(run, make_baseline(BASE))
    text, markdown = _render(result), (tmp_path / "check.md").read_text()
    for shown in (text, markdown):
        assert "1/24 prompts (23 steered NaN in the run)" in shown and "24/24 prompts" in shown
        assert "192/192 samples" in shown and "96/96 samples" in shown
    data = json.loads(result.model_dump_json())
    assert all({"planned", "compared", "excluded", "unit"} <= set(line["coverage"]) for line in data["lines"])


# Inputs a skeptical user tries.

@pytest.mark.parametrize(("flag", "words"), [
    (["--effect-tolerance", "-1"], "check tolerances"), (["--min-coverage", "1.5"], "check tolerances"),
    (["--fluency-tolerance", "nan"], "check tolerances"),
    (["--degenerate-tolerance", "2"], "check tolerances"),
    (["--min-effect", "nan"], "not a finite number"), (["--max-fluency-cost", "inf"], "not a finite number")])
def test_nonsense_tolerances_and_floors_are_refused_on_the_cli(tmp_path, flag, words, capsys):
    (tmp_path / "run.json").write_text(BASE.model_dump_json())
    write_baseline(BASE, tmp_path / "b.json")
    assert main(["check", str(tmp_path / "run.json"), "--baseline", str(tmp_path / "b.json"), *flag]) == 2
    assert words in capsys.readouterr().err


def test_a_non_finite_ledger_norm_is_a_regression_not_a_pass():
    ledger = [r.model_copy(update={"norm": math.inf}) for r in BASE.ledger]
    line = _line(check(_with(BASE, ledger=ledger), make_baseline(BASE)), "ledger")
    assert line.verdict == "regression" and "non-finite norm" in line.reason


def test_a_baseline_with_a_headline_twice_is_refused(tmp_path):
    path = _baseline_json(tmp_path, lambda d: d["headlines"].append(d["headlines"][0]))
    with pytest.raises(UserError, match="more than one headline"):
        read_baseline(path)


def test_unscorable_steered_samples_count_as_degenerate_in_the_check():
    # 30 of 96 steered completions have tokens but nothing a scorer can score (issue 21 point 5)
    counts = [c.model_copy(update={"unscorable": 30}) if c.condition == "steered" else c for c in BASE.counts]
    line = _line(check(_with(BASE, counts=counts), make_baseline(BASE)), "degenerate")
    assert line.verdict == "regression" and "flagged, empty or unscorable" in line.reason
    assert line.now == pytest.approx(30 / 96)
