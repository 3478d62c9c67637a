"""`harness check` / `baseline` and the pytest plugin: regressions fail, noise and self-checks hold."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.check import HOLDS, INCOMPARABLE, REGRESSION, compare, make_baseline, write_baseline
from harness.cli import main
from harness.report.schema import PromptSummary, RunResult
from harness.runner import RunOptions, run
from tests.test_runner import QUIET, write_task


@pytest.fixture(scope="module")
def tiny_run(tiny_llama, tmp_path_factory) -> tuple[Path, RunResult]:
    folder = tmp_path_factory.mktemp("tiny_check")
    return folder / "out", run(str(write_task(folder)), folder / "out", model=tiny_llama, options=QUIET)


def shifted(result: RunResult, by: float) -> RunResult:
    """The same run with every headline per-prompt steered mean moved by `by`."""
    metrics = {h.metric for h in result.headlines}
    per_prompt = [
        p.model_copy(update={"prompts": {k: [u, s + by] for k, (u, s) in p.prompts.items()}})
        if p.metric in metrics else p for p in result.per_prompt
    ]
    heads = [h.model_copy(update={"diff": h.diff + by}) for h in result.headlines]
    return result.model_copy(update={"per_prompt": per_prompt, "headlines": heads})


def test_a_run_holds_against_its_own_baseline_on_the_cli(tiny_run, tmp_path, capsys):
    out, _ = tiny_run
    assert main(["baseline", str(out), "--to", str(tmp_path / "b.json")]) == 0
    assert main(["check", str(out / "run.json"), "--baseline", str(tmp_path / "b.json")]) == 0
    assert "holds" in capsys.readouterr().out
    assert main(["check", str(out), "--baseline", str(tmp_path / "b.json"), "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["status"] == 0 and {line["verdict"] for line in verdict["lines"]} == {"holds"}


def test_baseline_keeps_summaries_not_samples(tiny_run, tmp_path):
    _, result = tiny_run
    write_baseline(result, tmp_path / "b.json")
    data = json.loads((tmp_path / "b.json").read_text())
    assert "samples" not in data and data["per_prompt"] and data["headlines"]
    assert {p["metric"] for p in data["per_prompt"]} == {"keywords.rate", "perplexity.logppl"}


def test_a_significantly_smaller_effect_is_a_regression(tiny_run):
    _, result = tiny_run
    base = make_baseline(shifted(result, 5.0))
    status, lines, _ = compare(result, base)
    assert status == REGRESSION
    bad = [line for line in lines if line.verdict == "regression"]
    assert bad[0].task == "tiny_topic" and "keywords.rate" in bad[0].what
    assert compare(shifted(result, 5.0), base)[0] == HOLDS


def test_a_larger_fluency_cost_is_a_regression(tiny_run):
    _, result = tiny_run
    worse = [p.model_copy(update={"prompts": {k: [u, s + 1.0] for k, (u, s) in p.prompts.items()}})
             if p.metric == "perplexity.logppl" else p for p in result.per_prompt]
    status, lines, _ = compare(result.model_copy(update={"per_prompt": worse}), make_baseline(result))
    assert status == REGRESSION
    assert [line.what for line in lines if line.verdict == "regression"] == ["fluency cost (Δ log-ppl)"]


def test_floors_fail_even_without_a_baseline_difference(tiny_run):
    _, result = tiny_run
    floor = result.headlines[0].diff + 1.0
    status, lines, _ = compare(result, make_baseline(result), floors={"min_effect": floor})
    assert status == REGRESSION and "min_effect" in lines[0].reason


def test_different_tasks_or_prompts_cannot_be_compared(tiny_run, tmp_path, capsys):
    out, result = tiny_run
    renamed = json.loads((out / "run.json").read_text())
    renamed["config"]["tasks"] = {"other": renamed["config"]["tasks"]["tiny_topic"]}
    (tmp_path / "b").mkdir()
    write_baseline(RunResult.model_validate(renamed), tmp_path / "b.json")
    assert main(["check", str(out), "--baseline", str(tmp_path / "b.json")]) == 2
    assert "different tasks" in capsys.readouterr().out
    changed = json.loads((out / "run.json").read_text())
    config = changed["config"]["tasks"]["tiny_topic"]
    config["prompts"] = config["prompts"][:3]
    status, _, reasons = compare(RunResult.model_validate(changed), make_baseline(result))
    assert status == INCOMPARABLE and "prompts" in reasons[0]


def test_summaries_pair_by_prompt(tiny_run):
    _, result = tiny_run
    summary = next(p for p in result.per_prompt if p.metric == "keywords.rate")
    assert isinstance(summary, PromptSummary) and len(summary.prompts) == 8


# Real model: the behaviour the check exists for.

def _love_hate(smollm, out: Path, *sets: str, seed: int | None = None) -> RunResult:
    options = RunOptions(progress=False, samples=4, max_new_tokens=16, seed=seed, overrides=sets)
    return run("love_hate", out, model=smollm, options=options)


@pytest.fixture(scope="module")
def love_baseline(smollm, tmp_path_factory):
    folder = tmp_path_factory.mktemp("love")
    result = _love_hate(smollm, folder / "run")
    return write_baseline(result, folder / "baseline.json"), folder / "baseline.json"


def test_real_coefficient_zero_fails_and_names_task_and_metric(smollm, love_baseline, tmp_path, capsys):
    base, path = love_baseline
    assert base.headlines[0].significant, "the baseline config must have a real effect to lose"
    _love_hate(smollm, tmp_path / "zero", "steering.coeff=0")
    assert main(["check", str(tmp_path / "zero"), "--baseline", str(path)]) == 1
    out = capsys.readouterr().out
    assert "love_hate" in out and "sentiment.p_positive" in out and "REGRESSION" in out


@pytest.mark.parametrize("seed", [1, pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(3, marks=pytest.mark.slow)])
def test_real_reseeded_runs_do_not_fail_each_other(smollm, love_baseline, tmp_path, seed):
    base, _ = love_baseline
    status, lines, _ = compare(_love_hate(smollm, tmp_path / "again", seed=seed), base)
    assert status == HOLDS, [line for line in lines if line.verdict != "holds"]


def test_pytest_plugin_passes_on_baseline_and_fails_on_broken_config(love_baseline, tmp_path):
    _, path = love_baseline
    (tmp_path / "test_user.py").write_text(textwrap.dedent(f"""
        KW = dict(samples=4, max_new_tokens=16)

        def test_holds(steering_check):
            steering_check("love_hate", baseline={str(path)!r}, **KW)

        def test_broken(steering_check):
            steering_check("love_hate", baseline={str(path)!r}, overrides=["steering.coeff=0"], **KW)
    """))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_user.py")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)
    assert "1 failed, 1 passed" in proc.stdout, proc.stdout[-3000:]
    assert "test_broken" in proc.stdout and "regression" in proc.stdout
