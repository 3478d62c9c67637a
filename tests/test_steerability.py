"""Steerability (issue 22, point 4): for every effect, the share of prompts the steering moved the
wrong way (exact Clopper-Pearson interval) and the spread of the per-prompt effects (chi-square
interval), in run.json and in every report; run files and baselines written before it still read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.analyses.baseline import read_baseline
from harness.pipeline.analyse import TaskSamples, analyse
from harness.report.html import render_html
from harness.report.markdown import md, render_markdown
from harness.report.terminal import results_text
from harness.schema.results import RunResult, SampleRecord, TaskInfo
from harness.schema.task import TaskSpec
from harness.stats import proportion_ci, sd_ci
from harness.stats.steerability import steerability

BASELINE = Path(__file__).resolve().parent.parent / "results/baselines/smollm2-135m/quick.json"
N_PROMPTS = 20
WRONG, TIES = 5, 3  # prompts 0-4 move against "increase", prompts 5-7 do not move at all
SPEC = TaskSpec(name="t", kind="topic", prompts=["x"], steering={"method": "m"},
                scorers={"keywords": {"words": ["x"]}},  # a registered scorer; the samples carry the metrics
                metrics={"m.value": "increase", "m.down": "decrease"}, headline="m.value")
PROMPT_IDS = [f"p{i}" for i in range(N_PROMPTS)]


def _deltas() -> np.ndarray:
    """The per-prompt effects the synthetic run is built with."""
    rng = np.random.default_rng(3)
    d = np.abs(rng.normal(0.3, 0.2, N_PROMPTS)) + 0.01
    d[:WRONG] *= -1
    d[WRONG:WRONG + TIES] = 0.0
    return d


def _samples() -> list[SampleRecord]:
    """Two samples per prompt and condition; the steered ones move each prompt by `_deltas()`
    (`m.value` and `m.down` alike; `m.free` declares no direction)."""
    d, out = _deltas(), []
    for condition in ("unsteered", "steered"):
        for i in range(N_PROMPTS):
            for j in range(2):
                value = 0.25 * i + 0.01 * j + (d[i] if condition == "steered" else 0.0)
                out.append(SampleRecord(key=f"{condition}{i}{j}", task="t", condition=condition,
                                        prompt_index=i, prompt_id=PROMPT_IDS[i], prompt=f"p{i}", sample=j,
                                        seed=j, completion="x", token_ids=[1], prompt_ids=[0],
                                        scores={"m.value": value, "m.down": value, "m.free": value}))
    return out


def _run() -> RunResult:
    numbers = analyse([TaskSamples(SPEC, PROMPT_IDS, ["unsteered", "steered"], {}, _samples())])
    return RunResult(config={"target": "t", "tasks": {}}, config_hash="x", model={}, versions={}, started="",
                     finished="", tasks=[TaskInfo(name="t", kind="topic", prompt_ids=PROMPT_IDS)],
                     effects=numbers.effects, fluency_cost=numbers.fluency, headlines=numbers.headlines,
                     per_prompt=numbers.summaries)


def test_proportion_ci_is_the_exact_clopper_pearson_interval():
    for k, n in [(5, 20), (0, 8), (8, 8), (1, 3), (17, 40)]:
        low, high = proportion_ci(k, n)
        ref = stats.binomtest(k, n).proportion_ci(0.95, method="exact")
        assert (low, high) == pytest.approx((ref.low, ref.high), abs=1e-12)
        # the defining tail probabilities, by the binomial distribution itself
        assert low == 0.0 if k == 0 else stats.binom.sf(k - 1, n, low) == pytest.approx(0.025, abs=1e-9)
        assert high == 1.0 if k == n else stats.binom.cdf(k, n, high) == pytest.approx(0.025, abs=1e-9)
    assert all(math.isnan(v) for v in proportion_ci(0, 0))


def test_sd_ci_covers_the_true_sd_of_normal_data_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    for n in (3, 8, 30):
        hits = [low <= 2.0 <= high for low, high in (sd_ci(rng.normal(5.0, 2.0, n)) for _ in range(2000))]
        assert 0.93 <= np.mean(hits) <= 0.97, (n, np.mean(hits))
    low, high = sd_ci([1.0, 2.0, 3.0, 4.0])
    assert low < np.std([1, 2, 3, 4], ddof=1) < high
    assert all(math.isnan(v) for v in sd_ci([1.0]))
    # 8 prompts moving alike: the chi-square interval would be the point [0, 0], which 8 prompts
    # cannot support; one differing prompt gives a real interval
    assert all(math.isnan(v) for v in sd_ci([0.5] * 8))
    assert 0 < sd_ci([0.5] * 7 + [0.6])[0] < sd_ci([0.5] * 7 + [0.6])[1]


def test_steerability_of_five_wrong_way_prompts_in_twenty_is_a_quarter_with_the_exact_interval():
    d = np.array([-0.3, -0.1, -0.2, -0.05, -0.4] + [0.2] * 15)
    s = steerability(d, "increase")
    ci = stats.binomtest(5, 20).proportion_ci(method="exact")
    assert (s.n, s.wrong_way, s.ties, s.share) == (20, 5, 0, 0.25)
    assert (s.share_ci_low, s.share_ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert s.sd == pytest.approx(np.std(d, ddof=1))
    assert steerability(-d, "decrease").wrong_way == 5  # the same prompts, the other declared direction
    assert steerability(d, "decrease").wrong_way == 15


def test_ties_are_not_wrong_way_but_count_in_n_and_nan_prompts_do_not_count():
    s = steerability([0.0, 0.0, -0.1, 0.2, math.nan], "increase")
    assert (s.n, s.wrong_way, s.ties, s.share) == (4, 1, 2, 0.25)
    free = steerability([0.1, -0.1, 0.3], None)  # no expected direction: only the spread
    assert free.wrong_way is None and math.isnan(free.share) and free.sd == pytest.approx(0.2)
    empty = steerability([], "increase")
    assert (empty.n, empty.wrong_way) == (0, 0) and math.isnan(empty.share) and math.isnan(empty.sd)


def test_the_run_records_steerability_of_every_effect_and_the_headline():
    run = _run()
    d = _deltas()
    ci = stats.binomtest(WRONG, N_PROMPTS).proportion_ci(method="exact")
    (headline,) = run.headlines
    s = headline.steerability
    assert (s.n, s.wrong_way, s.ties, s.share) == (N_PROMPTS, WRONG, TIES, WRONG / N_PROMPTS)
    assert (s.share_ci_low, s.share_ci_high) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert s.sd == pytest.approx(float(np.std(d, ddof=1)), rel=1e-9) == headline.estimate.sd
    assert s.sd_ci_low < s.sd < s.sd_ci_high
    effects = {e.metric: e.steerability for e in run.effects}
    assert effects["m.value"] == s
    down_wrong = int(np.sum(d > 0))  # against "decrease": the prompts that rose
    assert (effects["m.down"].wrong_way, effects["m.down"].ties) == (down_wrong, TIES)
    assert effects["m.free"].wrong_way is None and effects["m.free"].sd == pytest.approx(s.sd)
    back = RunResult.model_validate_json(run.model_dump_json())  # strict JSON, NaN as strings
    free = next(e.steerability for e in back.effects if e.metric == "m.free")
    assert back.headlines[0].steerability == s and math.isnan(free.share)


def test_every_report_shows_the_wrong_way_share_with_its_interval_and_the_spread():
    run = _run()
    s = run.headlines[0].steerability
    share = f"0.250 [{s.share_ci_low:.3f}, {s.share_ci_high:.3f}]"
    spread = f"{s.sd:.3f} [{s.sd_ci_low:.3f}, {s.sd_ci_high:.3f}]"
    text = results_text(run)
    assert "Steerability" in text and "5/20 (3 ties)" in text and share in text and spread in text
    markdown = render_markdown(run, _samples())
    assert "## Steerability" in markdown and "5/20 (3 ties)" in markdown and md(share) in markdown
    html = render_html(run, _samples())
    assert 'id="steerability"' in html and "5/20 (3 ties)" in html
    assert f"{s.share_ci_low:.3f}, {s.share_ci_high:.3f}" in html


def test_runs_and_baselines_written_before_steerability_still_read_and_report(tmp_path):
    data = json.loads(BASELINE.read_text())  # the committed baseline, as written before steerability
    for headline in data["headlines"]:
        headline.pop("steerability", None)
    (tmp_path / "old.json").write_text(json.dumps(data))
    baseline = read_baseline(tmp_path / "old.json")
    assert baseline.headlines and all(h.steerability is None for h in baseline.headlines)
    assert all(h.steerability is not None for h in read_baseline(BASELINE).headlines)  # rewritten with it
    data = json.loads(_run().model_dump_json())
    for record in (*data["effects"], *data["headlines"]):
        del record["steerability"]
    old = RunResult.model_validate(data)
    assert all(h.steerability is None for h in old.headlines)
    # the section says why it has no numbers instead of vanishing
    for text in (results_text(old), render_markdown(old, [])):
        assert "Steerability" in text and "not recorded: run written before steerability was" in text
