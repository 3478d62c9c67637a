"""Reports of a run: reading run folders, terminal tables, Markdown, HTML and plots (no model)."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.report.html import render_html
from harness.report.io import write_reports
from harness.report.markdown import render_markdown, side_by_side
from harness.report.plots import distribution_plot, effects_plot, fluency_plot
from harness.report.terminal import results_text
from harness.schema.results import (
    SCHEMA_VERSION,
    EffectRecord,
    Estimate,
    FluencyRecord,
    Headline,
    RunResult,
    SampleRecord,
    TaskInfo,
)
from harness.store import read_run

NAN = float("nan")
PROMPTS = ["I think that", "Yesterday my neighbour", "The best thing about"]
PIPE = "a table | with a pipe"
XSS = "<script>alert('x')</script> & more"


def _effect(
    task: str,
    metric: str,
    diff: float,
    low: float,
    high: float,
    p: float,
    *,
    direction: str | None = "increase",
    headline: bool = False,
    g: float = 0.8,
) -> EffectRecord:
    return EffectRecord(
        task=task,
        condition="steered",
        metric=metric,
        expected_direction=direction,
        headline=headline,
        estimate=_estimate(0.1, diff, low, high, p, g),
        p_adjusted=p,
        significant=p < 0.05,
    )


def _estimate(base: float, diff: float, low: float, high: float, p: float, g: float = 0.0) -> Estimate:
    return Estimate(paired=True, mean_a=base, mean_b=base + diff, point=diff, ci_low=low, ci_high=high,
                    ci_method="Student t" if low == low else "none: fewer than 2 prompts", p_value=p,
                    test="sign-flip permutation", n_planned=3, n=3, sd=0.1,
                    mde=NAN, effect_size=g)


def _completion(task: str, condition: str, i: int, j: int) -> str:
    if (task, condition, i, j) == ("love_hate", "steered", 0, 0):
        return PIPE
    if (task, condition, i, j) == ("love_hate", "steered", 1, 0):
        return XSS
    return f" {condition} text {i}.{j} of {task}"


def make_samples() -> list[SampleRecord]:
    metrics = {
        "love_hate": ["vader.compound", "perplexity.logppl"],
        "weddings": ["keywords.rate", "diversity.distinct2", "perplexity.logppl"],
    }
    out = []
    for task, names in metrics.items():
        for i, prompt in enumerate(PROMPTS):
            for j in range(2):
                for c, condition in enumerate(("unsteered", "steered")):
                    scores = {m: 0.1 * (i + j) + c * 0.4 + k for k, m in enumerate(names)}
                    if (task, condition, i, j) == ("love_hate", "steered", 2, 1):
                        scores["vader.compound"] = NAN
                    text = _completion(task, condition, i, j)
                    n = 4
                    out.append(
                        SampleRecord(
                            key=f"{task}:{condition}:{i}:{j}",
                            task=task,
                            condition=condition,
                            prompt_index=i,
                            prompt_id=f"p{i}",
                            prompt=prompt,
                            sample=j,
                            seed=i * 10 + j,
                            completion=text,
                            token_ids=list(range(n)),
                            prompt_ids=[1, 2],
                            scores=scores,
                            token_logprobs=[-0.05, -2.0, -6.5, -14.0][:n],
                            flagged="non-finite logits"
                            if (task, condition, i, j) == ("weddings", "steered", 1, 1)
                            else None,
                        )
                    )
    return out


def _fluency(task: str, diff: float, low: float, high: float, p: float) -> FluencyRecord:
    return FluencyRecord(task=task, condition="steered", judge="generation model",
                         estimate=_estimate(3.0, diff, low, high, p), ppl_ratio=math.exp(diff), p_adjusted=p,
                         significant=p < 0.05)


def make_run() -> RunResult:
    effects = [
        _effect("love_hate", "vader.compound", 0.42, 0.21, 0.6, 0.012, headline=True, g=1.234),
        _effect("weddings", "keywords.rate", -0.05, -0.08, -0.02, 0.003, headline=True),
        _effect("weddings", "diversity.distinct2", 0.02, NAN, NAN, 0.7, direction=None, g=NAN),
    ]
    fluency = [_fluency("love_hate", 0.4, 0.1, 0.7, 0.02), _fluency("weddings", -0.1, NAN, NAN, NAN)]
    headlines = [
        Headline(
            task=e.task,
            condition=e.condition,
            metric=e.metric,
            expected_direction="increase",
            estimate=e.estimate,
            significant=e.significant,
            moved_as_expected=e.significant and e.estimate.point > 0,
            fluency=f.estimate,
            ppl_ratio=f.ppl_ratio,
        )
        for e, f in zip(effects[:2], fluency, strict=True)
    ]
    tasks = [
        TaskInfo(
            name="love_hate",
            kind="sentiment",
            description="Love − Hate at layer 6",
            conditions={"steered": {"layer": 6, "coeff": 4.0}},
            n_prompts=3,
        ),
        TaskInfo(name="weddings", kind="topic", conditions={"steered": {"layer": 4}}, n_prompts=3),
    ]
    return RunResult(
        config={"target": "quick", "model": "tiny", "tasks": {}},
        config_hash="abc123def4567890",
        model={"name": "tiny", "sha256": "f" * 64, "dtype": "float32"},
        versions={"harness": "0.1", "torch": "2.x"},
        started="2025-01-01T00:00:00+00:00",
        finished="2025-01-01T00:05:00+00:00",
        tasks=tasks,
        effects=effects,
        fluency_cost=fluency,
        headlines=headlines,
        flagged_samples=1,
        notes=["judge differs from the generation model"],
    )


TOKEN_TEXTS = {
    s.key: ["<script>", "alert('x')", "</script>", " & more"]
    if s.completion == XSS
    else ["<b>", " one", " two", " three"]
    for s in make_samples()
}


@pytest.fixture(scope="module")
def html_report() -> str:
    return render_html(make_run(), make_samples(), token_texts=TOKEN_TEXTS)


def write_run_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(make_run().model_dump_json(indent=2))
    (folder / "samples.jsonl").write_text(
        "".join(s.model_dump_json() + "\n" for s in make_samples())
    )
    return folder


def test_read_run_round_trip_from_folder_and_file(tmp_path):
    folder = write_run_folder(tmp_path / "run")
    assert '"NaN"' in (folder / "run.json").read_text()
    for path in (folder, folder / "run.json"):
        run, samples = read_run(path)
        assert run.model_dump_json() == make_run().model_dump_json()
        assert [s.model_dump_json() for s in samples] == [
            s.model_dump_json() for s in make_samples()
        ]
    assert math.isnan(run.effects[2].estimate.ci_low)
    (folder / "samples.jsonl").unlink()
    assert read_run(folder)[1] == []


@pytest.mark.parametrize(
    "content, words",
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        (json.dumps({**json.loads(make_run().model_dump_json()), "schema_version": 99}), "newer"),
        (json.dumps({"schema_version": SCHEMA_VERSION, "config": {}}), "run schema"),
        (json.dumps({"schema_version": SCHEMA_VERSION - 1, "config": {}}), "older harness"),
    ],
)
def test_read_run_errors_name_the_file(tmp_path, content, words):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=words) as info:
        read_run(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_results_text_has_tasks_metrics_verdicts_and_numbers():
    text = results_text(make_run())
    for expected in (
        "love_hate",
        "weddings",
        "vader.compound",
        "keywords.rate",
        "diversity.distinct2",
        "✓",
        "✗",
        "–",
        "+0.420 [+0.210, +0.600]",
        "+1.234",
        "0.012",
        "0.100 → 0.520",
        "+0.400 [+0.100, +0.700]",
        "1.492×",
        "+0.020 (none: fewer than 2 prompts)",
        "1 flagged sample",
        "note: judge differs",
    ):
        assert expected in text, expected
    assert "\x1b[" not in text


def test_markdown_has_tables_and_escapes_completions():
    text = render_markdown(make_run(), make_samples())
    for expected in (
        "# Steering evaluation: quick",
        "## Headline effects",
        "## All effects",
        "## Fluency cost",
        "### love_hate",
        "| task | condition | metric |",
        r"a table \| with a pipe",
        r"\<script\>alert",
        "★ vader.compound",
        "config hash",
        r"diff \[95% CI]",
    ):
        assert expected.lower() in text.lower(), expected
    assert "<script>" not in text and PIPE not in text
    # every table row of the samples has the same number of unescaped pipes as its header
    sample_rows = [line for line in text.splitlines() if line.startswith("| I think that")]
    assert sample_rows and all(len(re.findall(r"(?<!\\)\|", r)) == 4 for r in sample_rows)


def test_side_by_side_pairs_conditions_of_the_same_prompt_and_sample():
    pairs = side_by_side(make_samples(), "love_hate", 4)
    assert len(pairs) == 4 and [(p.prompt_index, p.sample) for p in pairs][:3] == [
        (0, 0),
        (0, 1),
        (1, 0),
    ]
    for p in pairs:
        assert {s.prompt_index for s in p.by_condition.values()} == {p.prompt_index}
        assert {s.sample for s in p.by_condition.values()} == {p.sample}


def test_html_is_self_contained_with_plots_tables_and_token_spans(html_report):
    html = html_report
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert 'src="http' not in html and "<script" not in html and "<link" not in html
    assert html.count('<img src="data:image/png;base64,') == 2 + 2  # effects, fluency, one per task
    for expected in (
        '<table class="samples">',
        "Headline effects",
        "All effects",
        "Fluency cost",
        "✓ as expected",
        "✗ wrong direction",
        "– not significant",
        "⚠ flagged: non-finite logits",
        "abc123def4567890",
        "judge differs from the generation model",
        "surprisal",
    ):
        assert expected in html, expected
    assert "&lt;script&gt;" in html and "alert(&#x27;x&#x27;)" in html and "&amp; more" in html
    spans = re.findall(
        r'<span class="tok" style="background:rgba\(255,140,0,([0-9.]+)\)" '
        r'title="surprisal ([0-9.]+) nats',
        html,
    )
    assert spans and {a for a, _ in spans} == {"0.00", "0.17", "0.55", "0.85"}
    assert "&lt;b&gt;" in html and "<b>one" not in html


def test_html_without_token_texts_shows_escaped_plain_completions():
    html = render_html(make_run(), make_samples())
    assert 'class="tok"' not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in html
    assert "a table | with a pipe" in html


def test_write_reports_writes_both_files(tmp_path):
    write_reports(make_run(), make_samples(), tmp_path / "out", token_texts=TOKEN_TEXTS)
    assert "## Headline effects" in (tmp_path / "out" / "report.md").read_text()
    assert 'class="tok"' in (tmp_path / "out" / "report.html").read_text()


def test_plots_are_png_and_survive_nan_and_empty_input():
    run, samples = make_run(), make_samples()
    empty = run.model_copy(update={"effects": [], "fluency_cost": [], "headlines": []})
    for data in (
        effects_plot(run),
        fluency_plot(run),
        distribution_plot(samples, "love_hate", "vader.compound"),
        distribution_plot(samples, "no_such_task"),
        effects_plot(empty),
        fluency_plot(empty),
    ):
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000


def _browser() -> str | None:
    return next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )


@pytest.mark.slow
@pytest.mark.skipif(_browser() is None, reason="needs headless Chromium (apt-get install chromium)")
def test_html_renders_in_headless_chromium(tmp_path, html_report):
    page, shot = tmp_path / "report.html", tmp_path / "shot.png"
    page.write_text(html_report, encoding="utf-8")
    subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    assert shot.stat().st_size > 50_000
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert len({tuple(p) for p in pixels[::20, ::20].reshape(-1, pixels.shape[2])}) > 20
