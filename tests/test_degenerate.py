"""Degenerate completions are counted, not dropped (issue 21, point 5): a text of only whitespace,
newlines or punctuation is scored where the metric has a meaning for it and counted as unscorable
where it has none; scorers say "not applicable" apart from "unscorable"; `score_task` holds every
scorer to one value per sample and metric; the dropped values are shown next to each n."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest

from harness.errors import UserError
from harness.pipeline.analyse import TaskSamples, analyse, condition_counts, control_records
from harness.pipeline.score import coverage, prompt_status, sample_status, score_task
from harness.report.html import render_html
from harness.report.markdown import render_markdown
from harness.report.terminal import results_text
from harness.runner import RunOptions, run
from harness.schema.results import RunResult, SampleRecord, TaskInfo
from harness.schema.spec import to_json
from harness.scorers import make_scorer
from harness.scorers.base import BaseScorer, Sample, Score, ScoringContext, is_not_applicable, unscorable
from harness.scorers.fact import FactParams, FactScorer
from harness.tasks import load_task

NAN = float("nan")
CTX = ScoringContext()
# (completion, has tokens): the texts a steered model degenerates into, and two ordinary ones
TEXTS = {"words": "I loved it, what a day!", "spaces": "  \n\n ", "dots": "....", "bangs": "!!!!!!!!",
         "plain": "We went home."}


def _one(scorer, text: str) -> Score:
    return scorer.score([Sample("p", text, "steered")], CTX)[0]


def test_the_exclamation_task_scores_a_completion_of_only_exclamation_marks():
    """The bundled exclamation task counts "!" per 100 words; "!!!!!!!!" is exactly what it looks
    for, so it must get a real score: 8 marks, no word, counted as one word -> 800, and `any` 1."""
    task = load_task("exclamation")
    scorer = make_scorer("keywords", task.spec.scorers["keywords"])
    bangs = _one(scorer, TEXTS["bangs"])
    assert bangs.values == {"rate": 800.0, "any": 1.0} and not bangs.reasons
    # the same marks after one word read the same, so the rate has one scale
    assert _one(scorer, "Wow" + TEXTS["bangs"]).values["rate"] == 800.0
    dots = _one(scorer, TEXTS["dots"])
    assert dots.values == {"rate": 0.0, "any": 0.0}  # visible text the pattern could match, no "!"
    spaces = _one(scorer, TEXTS["spaces"])
    assert math.isnan(spaces.values["rate"]) and spaces.reasons["rate"] == "whitespace-only completion"


def test_a_word_list_cannot_score_a_text_without_words():
    scorer = make_scorer("keywords", {"words": ["love"]})
    for name in ("dots", "bangs", "spaces"):
        score = _one(scorer, TEXTS[name])
        assert math.isnan(score.values["rate"]) and score.reasons["rate"], name
        assert not score.not_applicable
    assert _one(scorer, TEXTS["words"]).values == {"rate": pytest.approx(100 / 6), "any": 1.0}


def test_scorers_score_any_visible_text_and_call_only_blank_text_unscorable():
    vader, diversity = make_scorer("vader"), make_scorer("diversity")
    for name in ("dots", "bangs"):
        assert _one(vader, TEXTS[name]).values["compound"] == 0.0, name  # VADER: neutral
    assert _one(diversity, TEXTS["bangs"]).values == {"distinct1": 1 / 8, "distinct2": 1 / 7}
    for scorer in (vader, diversity):
        for text, why in (("", "empty completion"), (TEXTS["spaces"], "whitespace-only completion")):
            score = _one(scorer, text)
            assert all(math.isnan(v) for v in score.values.values())
            assert set(score.reasons.values()) == {why} and not score.not_applicable


def test_the_fact_scorer_says_not_applicable_for_the_other_group_and_unscorable_for_a_nan_margin():
    fact = FactScorer(FactParams(target="Rome", original="Paris"))
    answers = (" Rome", " Paris")
    neighbour = fact._score_one(Sample("p", "Paris.", "u", meta={"group": "neighbourhood"}), answers, -1.5)
    assert neighbour.values["neighbour_margin"] == -1.5 and neighbour.values["specificity"] == 1.0
    assert neighbour.not_applicable == {"margin": "neighbourhood prompt", "efficacy": "neighbourhood prompt"}
    assert not neighbour.reasons
    broken = fact._score_one(Sample("p", "", "u"), answers, NAN)
    assert broken.not_applicable == {"neighbour_margin": "probe prompt", "specificity": "probe prompt"}
    assert set(broken.reasons) == {"margin", "efficacy"}
    assert broken.values["mentions_target"] == 0.0  # read from the (empty) completion: a number


class Toy(BaseScorer):
    """A scorer that breaks its contract in the way it is told to."""

    name = "toy"
    metrics = ("a", "b")

    def __init__(self, mode: str):
        self.mode = mode

    def score(self, samples, ctx):
        ok = [Score({"a": 1.0, "b": 2.0}) for _ in samples]
        if self.mode == "too few":
            return ok[:-1]
        if self.mode == "missing metric":
            return [Score({"a": 1.0}) for _ in samples]
        if self.mode == "undeclared metric":
            return [Score({"a": 1.0, "b": 2.0, "c": 3.0}) for _ in samples]
        if self.mode == "nan without reason":
            return [Score({"a": NAN, "b": 2.0}) for _ in samples]
        if self.mode == "both kinds":
            return [Score({"a": NAN, "b": 2.0}, {"a": "x"}, not_applicable={"a": "y"}) for _ in samples]
        if self.mode == "mixed":  # sample 0 unscorable, sample 1: `b` does not apply
            return [unscorable(self.metrics, "no text"),
                    Score({"a": 1.0, "b": NAN}, not_applicable={"b": "not this prompt"})][: len(samples)]
        return ok


class FirstPromptNotApplicable(BaseScorer):
    """`length` of the completion in characters; not applicable to the first exclamation prompt."""

    name = "toy"
    metrics = ("length",)

    def __init__(self):
        self.first = load_task("exclamation").prompts[0].text

    def score(self, samples, ctx):
        return [Score({"length": NAN}, not_applicable={"length": "first prompt"}) if s.prompt == self.first
                else Score({"length": float(len(s.completion))}) for s in samples]


def _task_and_records(texts: list[str], condition: str = "steered"):
    task = load_task("exclamation").limited(len(texts))
    records = [SampleRecord(key=f"k{i}", task=task.name, condition=condition, prompt_index=i,
                            prompt_id=p.identity(), prompt=p.text, sample=0, seed=i, completion=t,
                            token_ids=[5] if t else [], prompt_ids=[1, 2])
               for i, (p, t) in enumerate(zip(task.prompts, texts, strict=True))]
    return task, records


def _score(task, records, scorers):
    pool = SimpleNamespace(lm=None, judge=None)
    return score_task(pool, task, {}, records, scorers, progress=False, timings={})


@pytest.mark.parametrize(("mode", "message"), [
    ("too few", "returned 1 scores for 2 samples"),
    ("missing metric", r"no value for \['b'\]"),
    ("undeclared metric", r"values for \['c'\]"),
    ("nan without reason", "every NaN needs one reason"),
    ("both kinds", "every NaN needs one reason"),
])
def test_score_task_refuses_a_scorer_that_breaks_its_contract(mode, message):
    task, records = _task_and_records(["Hi there.", "Hello!"])
    with pytest.raises(UserError, match=f"scorer 'toy' \\(Toy\\) .*{message}"):
        _score(task, records, {"toy": Toy(mode)})
    assert _score(task, records, {"toy": Toy("ok")})[0].scores["toy.a"] == 1.0


def test_samples_jsonl_tells_not_applicable_from_unscorable():
    task, records = _task_and_records(["Hi there.", "Hello!"])
    scored = _score(task, records, {"toy": Toy("mixed")})
    lines = [json.loads(to_json(r.model_dump())) for r in scored]
    assert lines[0]["reasons"] == {"toy.a": "no text", "toy.b": "no text"}
    assert lines[1]["reasons"] == {"toy.b": "not applicable: not this prompt"}
    assert [is_not_applicable(why) for why in lines[1]["reasons"].values()] == [True]
    assert [sample_status(r, "toy.b") for r in scored] == ["unscorable", "not applicable"]
    assert [sample_status(r, "toy.a") for r in scored] == ["unscorable", "finite"]


def _record(condition: str, prompt: str, sample: int, value: float, reason: str | None = None,
            flagged: str | None = None) -> SampleRecord:
    return SampleRecord(key=f"{condition}{prompt}{sample}", task="t", condition=condition, prompt_index=0,
                        prompt_id=prompt, prompt="x", sample=sample, seed=0, completion="x", token_ids=[1],
                        prompt_ids=[1], scores={"m": value}, reasons={"m": reason} if reason else {},
                        flagged=flagged)


def test_coverage_counts_prompts_finite_not_applicable_and_unscorable():
    na = "not applicable: neighbourhood prompt"
    samples = [
        _record("u", "p1", 0, 1.0), _record("s", "p1", 0, NAN, "no words"), _record("s", "p1", 1, 2.0),
        _record("u", "p2", 0, NAN, na), _record("s", "p2", 0, NAN, na),
        _record("u", "p3", 0, 1.0), _record("s", "p3", 0, NAN, "whitespace-only completion"),
        _record("u", "p4", 0, 1.0), _record("s", "p4", 0, 3.0, flagged="non-finite logits"),
        _record("u", "p5", 0, 1.0),  # no steered sample at all
    ]
    prompts = ["p1", "p2", "p3", "p4", "p5"]
    u, s = (prompt_status(samples, "t", c, "m", prompts) for c in ("u", "s"))
    assert s == {"p1": "finite", "p2": "not applicable", "p3": "unscorable", "p4": "unscorable",
                 "p5": "unscorable"}
    got = coverage(u, s)
    assert got == (5, 1, 1, 3) and got.finite + got.not_applicable + got.unscorable == got.planned
    # several conditions pooled (the mean of random controls): finite where any of them is
    pooled = prompt_status([*samples, _record("r", "p3", 0, 0.5)], "t", ["s", "r"], "m", prompts)
    assert pooled["p3"] == "finite" and pooled["p2"] == "not applicable"


def test_degenerate_completions_are_counted_per_condition_and_shown_in_every_report():
    """Whitespace and punctuation completions have tokens (`completion.empty` 0): the word-list
    scorer cannot score them, and they are counted, per condition, as unscorable, next to the
    empty ones, in the degenerate share, in run.json and in the terminal, Markdown and HTML reports;
    the values left out of the headline are shown next to its n."""
    texts = {"unsteered": ["We love it.", "Love is all.", "I love tea.", "Love wins."],
             "steered": ["Love and love.", TEXTS["spaces"], TEXTS["dots"], ""]}
    task, _ = _task_and_records(texts["steered"])
    task = dataclasses.replace(task, spec=task.spec.model_copy(update={
        "scorers": {"keywords": {"words": ["love"]}}, "metrics": {"keywords.rate": "increase"},
        "headline": "keywords.rate"}))
    records = [r for c in texts for r in _task_and_records(texts[c], c)[1]]
    first = task.prompts[0].text
    scored = _score(task, records, {"keywords": make_scorer("keywords", {"words": ["love"]}),
                                    "toy": FirstPromptNotApplicable()})
    assert [r.scores["completion.empty"] for r in scored[4:]] == [0.0, 0.0, 0.0, 1.0]

    counts = {c.condition: c for c in condition_counts(scored, task.name, ["unsteered", "steered"])}
    steered, unsteered = counts["steered"], counts["unsteered"]
    assert (steered.empty, steered.unscorable, unsteered.unscorable) == (1, 2, 0)
    assert counts["steered"].degenerate_share == 3 / 4

    numbers = analyse([TaskSamples(task.spec, [p.identity() for p in task.prompts], ["unsteered", "steered"],
                                   {}, scored)])
    rate = next(e for e in numbers.effects if e.metric == "keywords.rate")
    e = rate.estimate
    assert (e.n_planned, e.n, e.n_not_applicable, e.n_unscorable, rate.n_excluded) == (4, 1, 0, 3, 3)
    length = next(e for e in numbers.effects if e.metric == "toy.length")
    e = length.estimate
    assert (e.n_planned, e.n, e.n_not_applicable, e.n_unscorable, length.n_excluded) == (4, 3, 1, 0, 2)
    assert sample_status(next(r for r in scored if r.prompt == first), "toy.length") == "not applicable"
    result = RunResult(config={"target": "t"}, config_hash="h", model={"name": "m"}, versions={},
                       started="", finished="",
                       tasks=[TaskInfo(name=task.name, kind="topic", n_prompts=4)],
                       effects=numbers.effects, fluency_cost=[], headlines=numbers.headlines,
                       counts=numbers.counts)
    assert json.loads(result.model_dump_json())["counts"][1]["unscorable"] == 2
    terminal, markdown = results_text(result), render_markdown(result, scored)
    html = render_html(result, scored)
    for report in (terminal, markdown, html):
        assert "unscorable" in report and "1/4 (3 unscorable; 3 NaN)" in report
        assert "3/4 (1 n/a; 2 NaN)" in report
    assert "| exclamation | steered | 4 | 0 | 1 | 2 |" in markdown
    assert "<td>4</td><td>0</td><td>1</td><td>2</td>" in html.replace("\n", "")


def test_a_run_counts_whitespace_and_punctuation_completions_in_run_json(tiny_llama, tmp_path, monkeypatch):
    """End to end on a tiny model: two steered completions replaced by whitespace and by dots
    (tokens kept) are counted unscorable in run.json and its reports, not silently dropped."""
    import harness.engine as engine
    from tests.test_runner import PROMPTS, write_task

    real = engine.generate_batch

    def degenerate(*args, **kwargs):
        text = {PROMPTS[0]: " \n\n", PROMPTS[1]: " ...."}
        return [dataclasses.replace(g, completion=text[g.row.prompt])
                if g.row.condition == "steered" and g.row.prompt in text and g.token_ids else g
                for g in real(*args, **kwargs)]

    monkeypatch.setattr(engine, "generate_batch", degenerate)
    result = run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama,
                 options=RunOptions(progress=False))
    data = json.loads((tmp_path / "out" / "run.json").read_text())
    steered = next(c for c in data["counts"] if c["condition"] == "steered")
    unscorable_texts = sum(1 for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
                           if json.loads(line)["condition"] == "steered"
                           and json.loads(line)["completion"] in (" \n\n", " ...."))
    assert unscorable_texts >= 2 and steered["unscorable"] == unscorable_texts
    assert "unscorable" in (tmp_path / "out" / "report.md").read_text()
    assert result.counts[1].degenerate_share >= unscorable_texts / steered["samples"]


def test_control_comparisons_count_not_applicable_and_unscorable_prompts():
    """The specific effect pools the random controls (a prompt counts where any control has a
    value); the direction check pairs the steered condition with its negation."""
    task = load_task("exclamation").limited(3)
    prompts = [p.identity() for p in task.prompts]
    na = "not applicable: probe prompt"
    # prompt 0: n/a everywhere; prompt 1: steered fine, one random control unscorable, the other fine,
    # negated unscorable; prompt 2: finite everywhere
    table = {"steered": [(NAN, na), (1.0, None), (2.0, None)],
             "random_0": [(NAN, na), (NAN, "no words"), (0.5, None)],
             "random_1": [(NAN, na), (0.2, None), (0.4, None)],
             "negated": [(NAN, na), (NAN, "whitespace-only completion"), (0.1, None)]}
    samples = [_record(c, prompts[i], 0, v, why).model_copy(update={"task": task.name, "key": f"{c}{i}"})
               for c, rows in table.items() for i, (v, why) in enumerate(rows)]
    records, _ = control_records(task.spec, prompts, {"random_0": ("steered", "random"),
                                                      "random_1": ("steered", "random"),
                                                      "negated": ("steered", "negated")}, samples, 0)
    got = {r.kind: r.estimate for r in records if r.metric == "m"}
    assert (got["specific"].n, got["specific"].n_not_applicable, got["specific"].n_unscorable) == (2, 1, 0)
    assert (got["direction"].n, got["direction"].n_not_applicable, got["direction"].n_unscorable) == (1, 1, 1)
