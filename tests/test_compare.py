"""`harness compare` on synthetic run folders (run.json + samples.jsonl, no model)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from harness.analyses.compare import compare_runs, parse_ref
from harness.errors import UserError
from harness.report.compare_report import (
    compare_text,
    headline_lines,
    render_compare_html,
    render_compare_markdown,
    write_compare,
)
from harness.schema.results import EffectRecord, Estimate, FluencyRecord, RunResult, SampleRecord, TaskInfo
from harness.schema.task import PromptRecord
from harness.stats import CI_ZERO_SPREAD

TASK, METRIC, FLUENCY = "love_hate", "sentiment.p_positive", "perplexity.logppl"
N_PROMPTS, N_SAMPLES = 12, 3
# scores(condition, prompt index, sample index) -> {metric: value}
Scores = Callable[[str, int, int], dict[str, float]]


def _base(i: int, j: int) -> float:
    return 0.2 + 0.03 * i + 0.01 * ((7 * i + 3 * j) % 5)


def null_scores(noise: float = 0.0, seed: int = 1) -> Scores:
    """Steered = unsteered (+ tiny noise); fluency unchanged."""
    rng = np.random.default_rng(seed)
    jitter = rng.normal(0, noise, size=(N_PROMPTS, N_SAMPLES)) if noise else np.zeros((N_PROMPTS, N_SAMPLES))

    def scores(cond: str, i: int, j: int) -> dict[str, float]:
        extra = float(jitter[i, j]) if cond != "unsteered" else 0.0
        return {METRIC: _base(i, j) + extra, FLUENCY: 3.0 + 0.1 * i + extra}

    return scores


def shifted_scores(shift: float = 0.3, cost: float = 0.5) -> Scores:
    """Steered = unsteered + a clear, prompt-dependent shift; fluency costs `cost`."""

    def scores(cond: str, i: int, j: int) -> dict[str, float]:
        on = cond != "unsteered"
        wobble = 0.02 * ((5 * i + j) % 4)
        return {METRIC: _base(i, j) + on * (shift + wobble), FLUENCY: 3.0 + 0.1 * i + on * (cost + wobble)}

    return scores


def placeholder_estimate(n: int, p: float, point: float = 0.0) -> Estimate:
    """A recorded estimate with only its point, p-value and n (compare recomputes the rest)."""
    return Estimate(paired=True, mean_a=0.0, mean_b=point, point=point, ci_low=point, ci_high=point,
                    ci_method="Student t", p_value=p, test="sign-flip permutation", n_planned=n, n=n, sd=0.0,
                    mde=float("nan"), effect_size=0.0)


def write_run(folder: Path, scores: Scores, conditions: tuple[str, ...] = ("steered",),
              prompts: list[str] | None = None, dtype: str = "float32") -> Path:
    """A run folder with run.json (one headline effect per condition) and samples.jsonl."""
    prompts = prompts or [f"prompt {i:02d}" for i in range(N_PROMPTS)]
    samples = [
        SampleRecord(key=f"{TASK}:{cond}:{i}:{j}", task=TASK, condition=cond, prompt_index=i,
                     prompt_id=PromptRecord(text=p).identity(), prompt=p,
                     sample=j, seed=100 * i + j, completion=f"text {i}.{j}", token_ids=[1, 2], prompt_ids=[3],
                     scores=scores(cond, i, j))
        for cond in ("unsteered", *conditions) for i, p in enumerate(prompts) for j in range(N_SAMPLES)
    ]
    effects = [EffectRecord(task=TASK, condition=c, metric=METRIC, expected_direction="increase",
                            headline=True, estimate=placeholder_estimate(len(prompts), 0.5), p_adjusted=0.25,
                            significant=False)
               for c in conditions]
    fluency = [FluencyRecord(task=TASK, condition=c, judge="generation model",
                             estimate=placeholder_estimate(len(prompts), 0.75), ppl_ratio=1.0,
                             p_adjusted=0.75, significant=False) for c in conditions]
    task_config = {"generation": {"max_new_tokens": 8}, "scorers": {"sentiment": {}}, "headline": METRIC}
    run = RunResult(config={"target": "test", "tasks": {TASK: task_config}}, config_hash="abc",
                    model={"name": "fake", "sha256": "0" * 64, "dtype": dtype}, versions={},
                    started="", finished="",
                    tasks=[TaskInfo(name=TASK, kind="sentiment",
                                    prompt_ids=[PromptRecord(text=p).identity() for p in prompts])],
                    effects=effects, fluency_cost=fluency, headlines=[])
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(run.model_dump_json(indent=2), encoding="utf-8")
    lines = "".join(s.model_dump_json() + "\n" for s in samples)
    (folder / "samples.jsonl").write_text(lines, encoding="utf-8")
    return folder


def _row(result, metric: str = METRIC):  # noqa: ANN001, ANN202
    return next(r for r in result.rows if r.metric == metric)


def test_same_config_twice_no_difference(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", shifted_scores())
    b = write_run(tmp_path / "b", shifted_scores())
    result = compare_runs([str(a), str(b)])
    assert [r.label for r in result.runs] == ["a", "b"]
    assert {r.metric for r in result.rows} == {METRIC, FLUENCY}
    for row in result.rows:
        d = row.vs_reference[0]
        assert d.estimate.paired and d.n == N_PROMPTS
        assert d.estimate.point == 0.0 and d.estimate.sd == 0.0  # identical runs: no interval is claimed
        assert d.estimate.ci_method == CI_ZERO_SPREAD and math.isnan(d.estimate.ci_low)
        assert d.estimate.p_value == 1.0 and not d.significant
        assert row.effects[0].estimate.point == pytest.approx(row.effects[1].estimate.point)
    assert _row(result).headline and _row(result, FLUENCY).is_fluency
    assert "not significant" in headline_lines(result)[0]


def test_null_vs_working_is_significant(tmp_path: Path) -> None:
    null = write_run(tmp_path / "coef0", null_scores(noise=0.005))
    working = write_run(tmp_path / "coef8", shifted_scores(shift=0.3, cost=0.5))
    result = compare_runs([str(null), str(working)], seed=3)
    row = _row(result)
    assert abs(row.effects[0].estimate.point) < 0.01
    assert row.effects[1].estimate.point == pytest.approx(0.33, abs=0.01)  # 0.3 + mean wobble 0.03
    d = row.vs_reference[0]
    assert d.estimate.paired and d.significant and d.p_adjusted < 0.05
    assert d.estimate.point == pytest.approx(row.effects[1].estimate.point - row.effects[0].estimate.point)
    assert 0.25 < d.estimate.ci_low < d.estimate.point < d.estimate.ci_high < 0.4
    fluency = _row(result, FLUENCY).vs_reference[0]
    assert fluency.significant and fluency.estimate.point > 0.4
    # recorded p-values come from run.json: the effect's and the fluency record's p_adjusted
    assert row.effects[0].p_adjusted == 0.25 and _row(result, FLUENCY).effects[0].p_adjusted == 0.75
    assert headline_lines(result)[0].startswith(f"{TASK}: coef8 moves {METRIC} by +0.3")
    assert re.search(r"\(paired, p_adj <0\.001, significant\); fluency cost coef0 [+-]\S+, coef8 \+0\.530$",
                     headline_lines(result)[0])
    # reversed: the sign flips
    back = _row(compare_runs([str(working), str(null)], seed=3)).vs_reference[0]
    assert back.estimate.point == pytest.approx(-d.estimate.point) and back.significant


def test_paired_matches_hand_computation(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", null_scores(noise=0.05, seed=7))
    b = write_run(tmp_path / "b", shifted_scores(shift=0.02, cost=0.0))
    d = compare_runs([str(a), str(b)], seed=5)
    got = _row(d).vs_reference[0]

    def effect(scores: Scores) -> np.ndarray:  # per prompt, in the order of prompt identities
        order = sorted(range(N_PROMPTS), key=lambda i: PromptRecord(text=f"prompt {i:02d}").identity())
        return np.array([np.mean([scores("steered", i, j)[METRIC] - scores("unsteered", i, j)[METRIC]
                                  for j in range(N_SAMPLES)]) for i in order])

    diffs = effect(shifted_scores(shift=0.02, cost=0.0)) - effect(null_scores(noise=0.05, seed=7))
    ci = sps.ttest_1samp(diffs, 0.0).confidence_interval(0.95)
    p = sps.permutation_test((diffs,), np.mean, permutation_type="samples", n_resamples=9999,
                             rng=np.random.default_rng(5)).pvalue
    assert got.estimate.paired and got.n == N_PROMPTS
    assert got.estimate.point == pytest.approx(diffs.mean(), abs=1e-12)
    assert (got.estimate.ci_low, got.estimate.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert got.estimate.p_value == pytest.approx(p, abs=1e-12)
    # Holm over the two rows (metric, fluency)
    p_metric, p_fluency = (r.vs_reference[0].estimate.p_value for r in d.rows)
    expected = 2 * p_metric if p_metric <= p_fluency else max(2 * p_fluency, p_metric)
    assert got.p_adjusted == pytest.approx(min(1.0, expected))
    # same seed, same output
    assert compare_runs([str(a), str(b)], seed=5) == d


def test_unpaired_when_prompts_differ(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", null_scores(noise=0.02))
    b = write_run(tmp_path / "b", shifted_scores(shift=0.3),
                  prompts=[f"other prompt {i}" for i in range(N_PROMPTS)])
    result = compare_runs([str(a), str(b)], seed=2)
    got = _row(result).vs_reference[0]
    assert not got.estimate.paired and (got.n, got.n_reference) == (N_PROMPTS, N_PROMPTS)
    ea, eb = (np.array(list(_per_prompt(tmp_path / n).values())) for n in ("a", "b"))
    welch = sps.ttest_ind(eb, ea, equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert got.estimate.point == pytest.approx(eb.mean() - ea.mean())
    assert (got.estimate.ci_low, got.estimate.ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert got.estimate.p_value == pytest.approx(welch.pvalue) and got.significant
    assert "unpaired" in headline_lines(result)[0] and "unpaired, n=12+12" in compare_text(result)


def _per_prompt(folder: Path) -> dict[str, float]:
    """Per-prompt effect on METRIC straight from samples.jsonl, in prompt-text order."""
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    by: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        by.setdefault((r["prompt"], r["condition"]), []).append(r["scores"][METRIC])
    prompts = sorted({p for p, _ in by}, key=lambda p: PromptRecord(text=p).identity())
    return {p: float(np.mean(by[(p, "steered")]) - np.mean(by[(p, "unsteered")])) for p in prompts}


def test_condition_selection(tmp_path: Path) -> None:
    sweep = write_run(tmp_path / "sweep", shifted_scores(), conditions=("L4 c+2", "L4 c+8"))
    single = write_run(tmp_path / "single", shifted_scores())
    with pytest.raises(UserError, match=r"conditions: L4 c\+2, L4 c\+8"):
        compare_runs([str(single), str(sweep)])
    with pytest.raises(UserError, match="no condition 'L9'.*L4 c\\+2"):
        compare_runs([str(single), f"{sweep}:L9"])
    with pytest.raises(UserError, match="at least two"):
        compare_runs([str(single)])
    result = compare_runs([str(single), f"{sweep}:L4 c+8", f"{sweep}:L4 c+2"])
    assert [r.label for r in result.runs] == ["single", "sweep:L4 c+8", "sweep:L4 c+2"]
    assert [r.condition for r in result.runs] == ["steered", "L4 c+8", "L4 c+2"]
    assert [d.label for d in _row(result).vs_reference] == ["sweep:L4 c+8", "sweep:L4 c+2"]
    assert all(d.estimate.point == 0.0 for d in _row(result).vs_reference)  # every condition scored alike
    assert parse_ref(str(single)) == (single, None)
    assert parse_ref("runs/x:steered") == (Path("runs/x"), "steered")


def test_duplicate_labels_disambiguated(tmp_path: Path) -> None:
    a = write_run(tmp_path / "one" / "run", shifted_scores())
    b = write_run(tmp_path / "two" / "run", shifted_scores())
    assert [r.label for r in compare_runs([str(a), str(b / "run.json")]).runs] == ["one/run", "two/run"]


def test_reports_written(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", null_scores(noise=0.01))
    b = write_run(tmp_path / "b<x>", shifted_scores())
    result = compare_runs([str(a), str(b)])
    paths = write_compare(result, tmp_path / "out")
    assert [p.name for p in paths] == ["compare.md", "compare.html", "compare.json"]
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "## love_hate" in md and "★ sentiment.p_positive" in md and "fluency cost (Δ logppl)" in md
    assert md == render_compare_markdown(result)
    html = (tmp_path / "out" / "compare.html").read_text()
    assert html == render_compare_html(result)
    assert "<h2>love_hate</h2>" in html and "sentiment.p_positive" in html
    assert "b&lt;x&gt;" in html and "b<x>" not in html
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [r["label"] for r in data["runs"]] == ["a", "b<x>"]
    assert {(r["task"], r["metric"]) for r in data["rows"]} == {(TASK, METRIC), (TASK, FLUENCY)}
    row = next(r for r in data["rows"] if r["metric"] == METRIC)
    first = row["vs_reference"][0]
    assert first["significant"] is True and first["estimate"]["paired"] is True
    text = compare_text(result)
    assert TASK in text and METRIC in text and "b<x> − a" in text


def test_too_few_prompts_gives_nan_as_string(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", shifted_scores())
    b = write_run(tmp_path / "b", shifted_scores(), prompts=["a single prompt"])
    result = compare_runs([str(a), str(b)])
    got = _row(result).vs_reference[0]
    assert not got.estimate.paired and (got.n, got.n_reference) == (1, N_PROMPTS)
    assert math.isnan(got.estimate.ci_low) and math.isnan(got.estimate.p_value) and not got.significant
    assert got.estimate.ci_method.startswith("none")
    row = json.loads(result.model_dump_json())["rows"][0]["vs_reference"][0]
    assert row["estimate"]["ci_low"] == "NaN" and row["p_adjusted"] == "NaN"
