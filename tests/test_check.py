"""`harness check` / `baseline` and the pytest plugin: regressions fail, broken runs fail, noise and
self-checks hold, too little evidence is inconclusive."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from harness.analyses.baseline import make_baseline, write_baseline
from harness.analyses.check import HOLDS, INCOMPARABLE, INCONCLUSIVE, REGRESSION, check
from harness.cli import main
from harness.runner import RunOptions, run
from harness.schema.results import (
    ConditionCounts,
    Estimate,
    FluencyRecord,
    Headline,
    LedgerRecord,
    PromptSummary,
    RunResult,
    TaskInfo,
)
from harness.schema.spec import FLUENCY_METRIC
from harness.stats.comparison import compare_values
from tests.test_runner import QUIET, write_task

TASK, METRIC, N = "t", "sentiment.p_positive", 24
PROMPTS = [f"p{i:02d}" for i in range(N)]


def synthetic(effect: np.ndarray, cost: np.ndarray, *, counts: tuple[int, int] = (0, 0),
              ledger: tuple[int, float] = (96, 480.0), dtype: str = "float32") -> RunResult:
    """A one-task run whose steered condition has these per-prompt effects and fluency costs.

    `counts`: flagged and empty steered samples (of 96); `ledger`: prompt-pass positions and norm."""
    base = np.linspace(0.2, 0.6, N)
    def summary(metric: str, delta: np.ndarray, level: np.ndarray) -> PromptSummary:
        return PromptSummary(task=TASK, condition="steered", metric=metric,
                             prompts={p: [float(u), float(u + d)]
                                      for p, u, d in zip(PROMPTS, level, delta, strict=True)})

    def estimate(delta: np.ndarray, level: np.ndarray) -> Estimate:
        return compare_values(dict(zip(PROMPTS, level.tolist(), strict=True)),
                              dict(zip(PROMPTS, (level + delta).tolist(), strict=True))).estimate

    fdiff = float(np.nanmean(cost))
    headline = Headline(task=TASK, condition="steered", metric=METRIC, expected_direction="increase",
                        estimate=estimate(effect, base), significant=True, moved_as_expected=True)
    fluency = FluencyRecord(task=TASK, condition="steered", judge="generation model",
                            estimate=estimate(cost, base + 3.0), p_adjusted=0.01, significant=True,
                            ppl_ratio=math.exp(fdiff) if math.isfinite(fdiff) else math.nan)
    flagged, empty = counts
    config = {"generation": {"max_new_tokens": 8}, "scorers": {"sentiment": {}, "perplexity": {}},
              "headline": METRIC, "prompts": PROMPTS}
    return RunResult(
        config={"target": TASK, "tasks": {TASK: config}}, config_hash="x", versions={}, started="",
        finished="", model={"name": "m", "sha256": "0" * 64, "dtype": dtype},
        tasks=[TaskInfo(name=TASK, kind="sentiment", prompt_ids=PROMPTS)], effects=[], fluency_cost=[fluency],
        headlines=[headline],
        per_prompt=[summary(METRIC, effect, base), summary(FLUENCY_METRIC, cost, base + 3.0)],
        counts=[ConditionCounts(task=TASK, condition="unsteered", samples=96, flagged=0, empty=0),
                ConditionCounts(task=TASK, condition="steered", samples=96, flagged=flagged, empty=empty)],
        ledger=[LedgerRecord(task=TASK, condition="steered", site="L5.resid", kind="prompt", samples=96,
                             positions=ledger[0], norm=ledger[1])],
    )


def noisy(mean: float, sd: float, seed: int) -> np.ndarray:
    return mean + np.random.default_rng(seed).normal(0.0, sd, N)


BASE = synthetic(noisy(0.30, 0.05, 1), noisy(0.30, 0.05, 2))


def verdicts(result) -> dict[str, str]:  # noqa: ANN001
    return {line.what.split(" ")[0]: line.verdict for line in result.lines}


def test_a_run_holds_against_a_noisy_rerun_of_itself():
    result = check(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE))
    assert result.status == HOLDS, result.lines
    assert set(verdicts(result).values()) == {"holds"} and len(result.lines) == 4
    effect = result.lines[0]
    assert effect.p_holds is not None and effect.p_holds < 0.05  # evidence, not absence of it
    change = effect.change
    assert change.ci_low < change.point < change.ci_high and change.n == N  # a noisy change has a real CI


def test_a_significantly_smaller_effect_is_a_regression_and_a_small_one_is_not():
    shrunk = check(synthetic(noisy(0.12, 0.05, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE))
    assert shrunk.status == REGRESSION and verdicts(shrunk)["effect"] == "regression"
    assert "significantly smaller" in shrunk.lines[0].reason and shrunk.lines[0].p_regression < 0.05
    within = check(synthetic(noisy(0.27, 0.05, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE))
    assert within.status == HOLDS  # 10 % smaller: inside the 25 % tolerance


def test_a_larger_fluency_cost_is_a_regression():
    result = check(synthetic(noisy(0.30, 0.05, 3), noisy(0.80, 0.05, 4)), make_baseline(BASE))
    assert result.status == REGRESSION
    assert [line.what for line in result.lines
            if line.verdict == "regression"] == ["fluency cost (Δ log-ppl)"]


def test_too_little_evidence_is_inconclusive_and_says_how_many_prompts_would_decide():
    vague = check(synthetic(noisy(0.15, 0.6, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE))
    assert vague.status == INCONCLUSIVE and verdicts(vague)["effect"] == "inconclusive"
    assert re.search(r"about \d+ prompts would decide it", vague.lines[0].reason), vague.lines[0].reason
    allowed = check(synthetic(noisy(0.15, 0.6, 3), noisy(0.30, 0.05, 4)), make_baseline(BASE),
                    allow_inconclusive=True)
    assert allowed.status == HOLDS


def test_no_finite_value_is_a_regression_not_a_pass():
    gone = np.full(N, math.nan)
    result = check(synthetic(gone, gone), make_baseline(BASE))
    assert result.status == REGRESSION
    bad = {line.what: line.reason for line in result.lines if line.verdict == "regression"}
    assert ("no finite value" in bad[f"effect {METRIC}"]
            and "no finite fluency cost" in bad["fluency cost (Δ log-ppl)"])
    floors = check(synthetic(gone, gone), make_baseline(BASE),
                   floors={"min_effect": 0.1, "max_fluency_cost": 1})
    assert floors.status == REGRESSION


def test_flagged_or_empty_steered_samples_are_a_regression():
    result = check(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4), counts=(10, 20)),
                   make_baseline(BASE))
    assert result.status == REGRESSION
    line = next(line for line in result.lines if line.what.startswith("flagged"))
    assert line.verdict == "regression" and "31%" in line.reason


@pytest.mark.parametrize(("ledger", "words"), [((0, 0.0), "changed no position in prompt passes"),
                                               ((96, 100.0), "under 0.5 x the baseline")])
def test_steering_that_did_not_apply_is_a_regression(ledger, words):
    result = check(synthetic(noisy(0.30, 0.05, 3), noisy(0.30, 0.05, 4), ledger=ledger), make_baseline(BASE))
    assert result.status == REGRESSION
    line = next(line for line in result.lines if line.what.startswith("steering"))
    assert line.verdict == "regression" and words in line.reason


def test_json_verdict_is_strict_json(tmp_path):
    result = check(synthetic(np.full(N, math.nan), noisy(0.3, 0.05, 4)), make_baseline(BASE))
    data = json.loads(result.model_dump_json(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data["status"] == REGRESSION and data["lines"][0]["now"] == "NaN"
    assert data["lines"][0]["change"] is None  # no finite value: no change to estimate


def test_different_model_dtype_tasks_or_prompts_cannot_be_compared():
    base = make_baseline(BASE)
    assert check(synthetic(noisy(0.3, 0.05, 3), noisy(0.3, 0.05, 4), dtype="bfloat16"),
                 base).status == INCOMPARABLE
    renamed = BASE.model_copy(update={"config": {"tasks": {"other": BASE.config["tasks"][TASK]}}})
    result = check(renamed, base)
    assert result.status == INCOMPARABLE and "different tasks" in result.reasons[0]
    fewer = json.loads(BASE.model_dump_json())
    fewer["config"]["tasks"][TASK]["prompts"] = PROMPTS[:3]
    result = check(RunResult.model_validate(fewer), base)
    assert result.status == INCOMPARABLE and "prompts" in result.reasons[0]


# A tiny model end to end: files, the CLI, what a baseline keeps.

@pytest.fixture(scope="module")
def tiny_run(tiny_llama, tmp_path_factory) -> tuple[Path, RunResult]:
    folder = tmp_path_factory.mktemp("tiny_check")
    return folder / "out", run(str(write_task(folder)), folder / "out", model=tiny_llama, options=QUIET)


def test_a_run_without_an_effect_checked_against_its_own_baseline_on_the_cli(tiny_run, tmp_path, capsys):
    """The tiny random model moves nothing (+0): its baseline protects no effect, so it is refused
    unless written with --no-effect, and a self-check then gates only the other lines; 16 samples
    cannot bound the degenerate share, so that line is inconclusive (exit 3) unless allowed."""
    out, _ = tiny_run
    assert main(["baseline", str(out), "--to", str(tmp_path / "b.json")]) == 2
    assert "not in the expected direction" in capsys.readouterr().err and not (tmp_path / "b.json").exists()
    assert main(["baseline", str(out), "--to", str(tmp_path / "b.json"), "--no-effect"]) == 0
    assert "no effect to protect: tiny_topic steered" in capsys.readouterr().out
    assert main(["check", str(out / "run.json"), "--baseline", str(tmp_path / "b.json")]) == INCONCLUSIVE
    assert "no effect to protect" in capsys.readouterr().out
    args = ["check", str(out), "--baseline", str(tmp_path / "b.json"), "--json", "--allow-inconclusive"]
    assert main(args) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["status"] == 0 and verdict["allowed_inconclusive"] == 1
    assert {line["kind"]: line["verdict"] for line in verdict["lines"]} == {
        "effect": "no effect to protect", "fluency": "holds", "degenerate": "inconclusive", "ledger": "holds"}


def test_baseline_keeps_summaries_counts_and_ledger_not_samples(tiny_run, tmp_path):
    _, result = tiny_run
    write_baseline(result, tmp_path / "b.json", no_effect=True)  # the tiny random model moves nothing
    data = json.loads((tmp_path / "b.json").read_text())
    assert "samples" not in data and data["per_prompt"] and data["headlines"]
    assert {p["metric"] for p in data["per_prompt"]} == {"keywords.rate", "perplexity.logppl"}
    assert {c["condition"] for c in data["counts"]} == {"unsteered", "steered"}
    assert data["ledger"] and all(r["condition"] == "steered" for r in data["ledger"])


# Real model: the behaviour the check exists for, at 8 prompts x 2 samples.

SMALL = {"samples": 2, "max_new_tokens": 16, "max_prompts": 8}


def _love_hate(lm, out: Path, *sets: str, seed: int | None = None) -> RunResult:
    return run("love_hate", out, model=lm,
               options=RunOptions(progress=False, seed=seed, overrides=sets, **SMALL))


@pytest.fixture(scope="module")
def love_baseline(smollm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("love")
    result = _love_hate(smollm, folder / "run")
    return write_baseline(result, folder / "baseline.json"), folder / "baseline.json"


def test_real_coefficient_zero_does_not_pass_and_names_task_and_metric(smollm, love_baseline, tmp_path,
                                                                        capsys):
    _, path = love_baseline
    _love_hate(smollm, tmp_path / "zero", "steering.coeff=0")
    assert main(["check", str(tmp_path / "zero"), "--baseline", str(path)]) == REGRESSION
    out = capsys.readouterr().out
    assert "love_hate" in out and "REGRESSION" in out and "changed no position" in out


def _poisoned(monkeypatch, change):  # noqa: ANN001, ANN202
    import harness.engine as engine

    real = engine.generate_batch

    def poisoned(*args, **kwargs):
        return [change(g) if g.row.condition == "steered" else g for g in real(*args, **kwargs)]

    monkeypatch.setattr(engine, "generate_batch", poisoned)


def test_real_run_whose_steered_values_are_all_nan_fails(smollm, love_baseline, tmp_path, monkeypatch):
    base, _ = love_baseline
    _poisoned(monkeypatch, lambda g: dataclasses.replace(g, flagged="non-finite logits"))
    result = check(_love_hate(smollm, tmp_path / "nan"), base)
    assert result.status == REGRESSION
    assert any("no finite value" in line.reason for line in result.lines)


def test_real_run_whose_steered_completions_are_all_empty_fails(smollm, love_baseline, tmp_path, monkeypatch):
    base, _ = love_baseline
    _poisoned(monkeypatch, lambda g: dataclasses.replace(g, completion="", token_ids=[]))
    result = check(_love_hate(smollm, tmp_path / "empty"), base)
    assert result.status == REGRESSION
    reasons = " ".join(line.reason for line in result.lines)
    assert "flagged, empty or unscorable" in reasons and "no finite value" in reasons


@pytest.mark.slow  # a real bfloat16 run; dtype incomparability is also tested on synthetic runs
def test_real_bfloat16_run_against_a_float32_baseline_cannot_be_compared(love_baseline, tmp_path, capsys):
    _, path = love_baseline
    from harness.models import load_model

    _love_hate(load_model("smollm2-135m", dtype="bfloat16"), tmp_path / "bf16")
    assert main(["check", str(tmp_path / "bf16"), "--baseline", str(path)]) == INCOMPARABLE
    assert "different model dtype" in capsys.readouterr().out


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(3, marks=pytest.mark.slow)])
def test_real_reseeded_runs_do_not_fail_each_other(smollm, love_baseline, tmp_path, seed):
    base, _ = love_baseline
    result = check(_love_hate(smollm, tmp_path / "again", seed=seed), base)
    assert result.status != REGRESSION, [line for line in result.lines if line.verdict != "holds"]


@pytest.mark.slow  # two real runs in a child pytest (~90 s on 2 quiet cores)
def test_pytest_plugin_passes_on_baseline_and_fails_on_broken_config(love_baseline, tmp_path):
    _, path = love_baseline
    (tmp_path / "test_user.py").write_text(textwrap.dedent(f"""
        KW = dict(samples=2, max_new_tokens=16, max_prompts=8)

        def test_holds(steering_check):  # 16 samples cannot bound the degenerate share: inconclusive
            steering_check("love_hate", baseline={str(path)!r}, allow_inconclusive=True, **KW)

        def test_broken(steering_check):
            steering_check("love_hate", baseline={str(path)!r}, overrides=["steering.coeff=0"], **KW)
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_user.py")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert "test_broken" in proc.stdout and "regression" in proc.stdout
