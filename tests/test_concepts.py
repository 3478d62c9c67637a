"""Concept tasks the AxBench way: the bundled suite, the judge-free concept score, `--judge`,
held-out strength selection that never sees the reported half, and the judge's ratings in reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from harness.analyses.heldout import HELDOUT_FILE, choose, heldout_scores, split_half
from harness.errors import UserError
from harness.pipeline.score import checked
from harness.schema.results import SampleRecord
from harness.scorers import make_scorer
from harness.scorers.base import Sample, ScoringContext
from harness.tasks import load_suite, load_task, validate
from harness.tasks.concepts import judge_params, with_judge

CONCEPTS = load_suite("concepts").tasks


@pytest.fixture(autouse=True)
def judge_cache(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "verdicts.sqlite"
    monkeypatch.setenv("HARNESS_JUDGE_CACHE", str(path))
    return path


# --- the bundled suite ------------------------------------------------------------------------------

def test_concepts_suite_has_ten_concepts_each_with_actadd_mean_diff_and_prompting():
    assert len(CONCEPTS) >= 10 and not validate(["concepts"])
    descriptions = set()
    for name in CONCEPTS:
        task = load_task(name)
        spec = task.spec
        assert spec.kind == "concept" and spec.concept is not None
        descriptions.add(spec.concept.description)
        methods = {spec.steering.method, *(m.method for m in spec.methods.values())}
        assert {"actadd", "mean_diff", "prompting"} <= methods
        assert len(spec.methods["mean_diff"].pairs) >= 4
        assert spec.headline == "concept_similarity.similarity"  # judge-free without --judge
        assert len(task.prompts) >= 60  # the shared instructions
        assert {p.concept for p in task.prompts} == {spec.concept.description}  # each prompt carries it
    assert len(descriptions) == len(CONCEPTS)


def test_shared_instructions_are_60_distinct_varied_ones():
    texts = [p.text for p in load_task(CONCEPTS[0]).prompts]
    assert len(set(texts)) == len(texts) >= 60
    lengths = [len(t.split()) for t in texts]
    assert min(lengths) <= 6 and max(lengths) >= 14  # short and long asks
    assert sum(t.startswith("Write") for t in texts) < len(texts) / 2  # not one genre


def test_a_concept_task_needs_a_concept_and_only_a_concept_task_has_one():
    from harness.tasks import task_from_spec

    base = {"name": "c", "prompts": ["Hi"], "steering": {"method": "actadd", "layer": 1, "coeff": 1,
                                                         "positive": "a", "negative": "b"},
            "scorers": {"keywords": {"words": ["x"]}}, "metrics": {"keywords.any": "increase"},
            "headline": "keywords.any"}
    with pytest.raises(UserError, match="kind concept needs `concept:`"):
        task_from_spec({**base, "kind": "concept"})
    with pytest.raises(UserError, match="kind concept needs `concept:`"):
        task_from_spec({**base, "kind": "topic", "concept": {"description": "dogs"}})
    with pytest.raises(UserError, match="names no steering of the task: \\['mean_diff'\\]"):
        task_from_spec({**base, "kind": "concept", "concept": {"description": "dogs",
                                                               "strengths": {"mean_diff": [1]}}})
    with pytest.raises(UserError, match="distinct"):
        task_from_spec({**base, "kind": "concept", "concept": {"description": "dogs",
                                                               "strengths": {"actadd": [1, 1]}}})
    task = task_from_spec({**base, "kind": "concept", "concept": {"description": "dogs"},
                           "prompts": ["Hi", {"text": "Yo", "concept": "cats"}]})
    assert [p.concept for p in task.prompts] == ["dogs", "cats"]  # a prompt's own concept is kept


# --- judge-free concept score -----------------------------------------------------------------------

def test_concept_similarity_is_the_cosine_of_minilm_embeddings_and_nan_with_a_reason():
    from harness.scorers.embeddings import load_minilm

    concept = "dogs: pet dogs and puppies, their breeds, barking, walks and behaviour"
    texts = ["My puppy barks at the postman and loves long walks in the park.",
             "The quarterly budget report is due on Friday.", "", "   "]
    scorer = make_scorer("concept_similarity", {})
    samples = [Sample("p", t, "steered", meta={"concept": concept}) for t in texts]
    samples.append(Sample("p", texts[0], "steered"))  # no concept
    scores = checked("concept_similarity", scorer, scorer.score(samples, ScoringContext()), len(samples))
    raw = load_minilm().encode([concept, *texts[:2]], normalize_embeddings=False)
    expected = [float(raw[0] @ v / np.linalg.norm(raw[0]) / np.linalg.norm(v)) for v in raw[1:]]
    got = [s.values["similarity"] for s in scores[:2]]
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[0] > got[1] + 0.2  # the dog text is about the concept, the budget one is not
    for s in scores[2:4]:
        assert math.isnan(s.values["similarity"]) and "completion" in s.reasons["similarity"]
    assert math.isnan(scores[4].values["similarity"])
    assert "no concept" in scores[4].not_applicable["similarity"]
    pinned = make_scorer("concept_similarity", {"concept": concept}).score([samples[4]], ScoringContext())
    assert pinned[0].values["similarity"] == pytest.approx(expected[0], abs=1e-5)


# --- --judge ------------------------------------------------------------------------------------------

def test_judge_option_in_process_or_served_records_the_key_variable_name_only(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-never-recorded")
    assert judge_params("smollm2-135m") == {"backend": "local", "model": "smollm2-135m"}
    served = judge_params("http://127.0.0.1:8000/v1::qwen-judge", key_env="MY_JUDGE_KEY")
    assert served == {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "qwen-judge",
                      "api_key_env": "MY_JUDGE_KEY"}
    with pytest.raises(UserError, match="bad --judge"):
        judge_params("http://127.0.0.1:8000/v1::m", mode="expected")  # expected needs logits
    with pytest.raises(UserError, match="bad --judge"):
        judge_params("smollm2-135m", key_env="MY_JUDGE_KEY")  # a key is for a served judge
    with pytest.raises(UserError, match=r"BASE_URL::MODEL, e.g. http://127.0.0.1:8000/v1::"):
        judge_params("http://127.0.0.1:8000/v1/")  # a URL alone was taken for a local model's name
    with pytest.raises(UserError, match="both BASE_URL and MODEL"):
        judge_params("http://127.0.0.1:8000/v1::")
    task = with_judge(load_task(CONCEPTS[0]), served)
    assert task.spec.headline == "judge.score" and task.spec.scorers["judge"] == served
    assert "concept_similarity.similarity" in task.spec.metrics  # the judge-free score stays beside it
    assert "sk-never-recorded" not in task.spec.model_dump_json()
    topic = load_task("weddings")
    assert with_judge(topic, served) is topic  # only concept tasks get the judge


def test_cli_judge_option_parses_into_the_run_command():
    from harness.cli import build_parser

    args = build_parser().parse_args(["run", "concepts", "--judge", "http://h:1/v1::m",
                                      "--judge-key-env", "K", "--judge-mode", "parse"])
    assert (args.judge, args.judge_key_env, args.judge_mode) == ("http://h:1/v1::m", "K", "parse")


# --- held-out strength selection ---------------------------------------------------------------------

PROMPTS = [f"p{i:02d}" for i in range(12)]


def records(values: dict[tuple[str, str], float]) -> list[SampleRecord]:
    """One sample per (condition, prompt) with `score` = the given value."""
    return [SampleRecord(key=f"{c}/{p}", task="t", condition=c, prompt_index=PROMPTS.index(p), prompt_id=p,
                         prompt=p, sample=0, seed=0, completion="x", token_ids=[1], prompt_ids=[1],
                         scores={"m": v}) for (c, p), v in values.items()]


def synthetic(seed: int = 3) -> dict[tuple[str, str], float]:
    rng = np.random.default_rng(seed)
    conditions = ["unsteered", "actadd L1 c+1", "actadd L1 c+2", "actadd L1 c+4"]
    return {(c, p): float(rng.normal(i * 0.1, 1.0)) for i, c in enumerate(conditions) for p in PROMPTS}


def test_split_is_seeded_disjoint_and_covers_every_prompt():
    a, b = split_half(PROMPTS, 0), split_half(PROMPTS, 0)
    assert a == b and split_half(PROMPTS, 1) != a
    assert not set(a.select) & set(a.report) and sorted(a.select + a.report) == PROMPTS
    assert len(a.select) == 6 and len(split_half(PROMPTS[:5], 0).report) == 3


def test_choice_is_the_best_mean_on_the_selection_half_by_brute_force():
    values = synthetic()
    split = split_half(PROMPTS, 7)
    candidates = {"actadd L1 c+1": 1.0, "actadd L1 c+2": 2.0, "actadd L1 c+4": 4.0}
    means = {c: np.mean([values[c, p] for p in split.select]) for c in candidates}
    assert choose(records(values), "t", "m", candidates, split.select, 1.0) == (
        max(means, key=means.get), pytest.approx(max(means.values())))
    assert choose(records(values), "t", "m", candidates, split.select, -1.0)[0] == min(means, key=means.get)


def test_selection_never_sees_the_reported_half():
    values = synthetic()
    split = split_half(PROMPTS, 7)
    candidates = {"actadd L1 c+1": 1.0, "actadd L1 c+2": 2.0, "actadd L1 c+4": 4.0}
    chosen, _ = choose(records(values), "t", "m", candidates, split.select, 1.0)
    for loser in (c for c in candidates if c != chosen):
        poisoned = {k: (1e6 if k[0] == loser and k[1] in split.report else v) for k, v in values.items()}
        assert choose(records(poisoned), "t", "m", candidates, split.select, 1.0)[0] == chosen
        # the same poison on the selection half does change the choice: the test can fail
        flipped = {k: (1e6 if k[0] == loser and k[1] in split.select else v) for k, v in values.items()}
        assert choose(records(flipped), "t", "m", candidates, split.select, 1.0)[0] == loser


def test_a_strength_cannot_win_the_selection_by_emptying_the_prompts_it_does_badly_on():
    split = split_half(PROMPTS, 7)
    values = {("unsteered", p): 0.0 for p in PROMPTS}  # the worst value seen: 0
    values |= {("actadd L1 c+1", p): 1.0 for p in PROMPTS}  # moderate everywhere
    keep = split.select[0]  # c+8 scores 2.0 on one prompt and leaves every other one without a value
    values |= {("actadd L1 c+8", p): (2.0 if p == keep else math.nan) for p in PROMPTS}
    candidates = {"actadd L1 c+1": 1.0, "actadd L1 c+8": 8.0}
    assert choose(records(values), "t", "m", candidates, split.select, 1.0) == ("actadd L1 c+1", 1.0)
    # the emptied prompts count as the worst value of the task on the selection half (0): 2 / 6
    assert choose(records(values), "t", "m", {"actadd L1 c+8": 8.0}, split.select, 1.0)[1] == pytest.approx(
        2.0 / 6)
    # averaging the finite prompts only, as before, would have chosen c+8 (2.0 > 1.0): the test can fail
    values |= {("actadd L1 c+1", p): 0.25 for p in PROMPTS}
    assert choose(records(values), "t", "m", candidates, split.select, 1.0)[0] == "actadd L1 c+8"
    # a decrease headline: the worst value is the largest one
    flipped = {k: -v for k, v in values.items()}
    assert choose(records(flipped), "t", "m", candidates, split.select, -1.0)[0] == "actadd L1 c+8"


def test_heldout_scores_report_the_chosen_strength_on_the_other_half_only():
    from scipy import stats

    values = synthetic()
    split = split_half(PROMPTS, 7)
    run = run_with(["actadd L1 c+1", "actadd L1 c+2", "actadd L1 c+4"])
    base, score = heldout_scores(run, records(values), {"t": split})
    assert heldout_scores(run, records(values), {"t": split}, metric="m") == [base, score]  # the headline
    assert base.method == base.condition == "unsteered" and base.score == pytest.approx(
        np.mean([values["unsteered", p] for p in split.report]))
    assert score.method == "actadd" and set(score.per_prompt) == set(split.report)
    chosen = score.condition
    assert chosen == choose(records(values), "t", "m", {c: 0.0 for c in run.tasks[0].conditions},
                            split.select, 1.0)[0]
    reported = [values[chosen, p] for p in split.report]
    ci = stats.ttest_1samp(reported, 0).confidence_interval(0.95)
    assert score.score == pytest.approx(np.mean(reported)) and score.n == score.n_planned == len(split.report)
    assert (score.ci_low, score.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    diffs = [values[chosen, p] - values["unsteered", p] for p in split.report]
    assert score.effect.point == pytest.approx(np.mean(diffs)) and score.effect.n == len(split.report)


def test_method_table_pools_concepts_and_pairs_each_method_with_prompting():
    from harness.analyses.heldout import MethodScore, method_table

    rng = np.random.default_rng(0)
    scores, raw = [], {}
    for task in ("a", "b"):
        for method in ("prompting", "actadd"):
            raw[task, method] = {f"q{i}": float(rng.uniform(0, 2)) for i in range(5)}
            scores.append(MethodScore(task=task, method=method, metric="m", condition=method, coeff=None,
                                      selection_score=0.0, score=0.0, ci_low=0.0, ci_high=0.0, n=5,
                                      effect=None, per_prompt=raw[task, method]))
    table = {m.method: m for m in method_table(scores)}
    pooled = {m: [v for t in ("a", "b") for v in raw[t, m].values()] for m in ("prompting", "actadd")}
    assert table["actadd"].score == pytest.approx(np.mean(pooled["actadd"])) and table["actadd"].n == 10
    diff = np.subtract(pooled["actadd"], pooled["prompting"])
    ci = __import__("scipy").stats.ttest_1samp(diff, 0).confidence_interval(0.95)
    d = table["actadd"].difference
    assert d.paired and d.point == pytest.approx(diff.mean()) and (d.ci_low, d.ci_high) == (
        pytest.approx(ci.low), pytest.approx(ci.high))
    assert table["prompting"].difference is None and table["actadd"].versus == "prompting"


def run_with(conditions: list[str]):
    """A run of task `t` whose headline is `m` (increase), with these sweep conditions of actadd."""
    from harness.schema.results import EffectRecord, RunResult, TaskInfo

    effects = [EffectRecord.model_construct(task="t", condition=c, metric="m", headline=True,
                                            expected_direction="increase") for c in conditions]
    info = TaskInfo.model_construct(
        name="t", kind="concept", description="", n_prompts=12, prompt_ids=PROMPTS,
        conditions={c: {"method": "actadd", "sweep": {"layer": 1, "coeff": float(c.rsplit("c", 1)[1])}}
                    for c in conditions} | {"actadd L1 c+1 · random 1": {"control": "random"}})
    return RunResult.model_construct(tasks=[info], effects=effects)


# --- reports --------------------------------------------------------------------------------------------

def test_reports_show_the_three_ratings_beside_the_text_and_the_raw_reply_one_click_away():
    from harness.report import html, markdown
    from harness.report.cells import judge_ratings

    (s,) = records({("actadd L1 c+1", "p00"): 1.0})
    s = s.model_copy(update={"completion": "Dogs <bark>", "scores": {
        "judge.concept": 2.0, "judge.instruction": 1.0, "judge.fluency": 0.0, "judge.score": 0.0},
        "replies": {"judge.concept": "Rating: 2", "judge.instruction": "1 <b>", "judge.fluency": "0"}})
    assert judge_ratings(s) == [("judge.concept", 2.0), ("judge.instruction", 1.0), ("judge.fluency", 0.0)]
    cell = html._completion(s, "judge.score", None)
    assert "judge.concept = 2.000" in cell and "judge.fluency = 0.000" in cell
    assert "<details><summary>judge reply</summary>" in cell  # the raw reply one click away
    assert "1 &lt;b&gt;" in cell  # escaped
    assert "judge.instruction = 1.000" in markdown._completion(s, "judge.score")
    plain = s.model_copy(update={"scores": {"m": 1.0}, "replies": {}})
    assert judge_ratings(plain) == [] and "judge reply" not in html._completion(plain, "m", None)


# --- end to end on the embedded model -------------------------------------------------------------------

@pytest.mark.slow
def test_concepts_run_end_to_end_with_the_in_process_judge(smollm, tmp_path):
    """2 concepts x 4 instructions x 8 tokens, one strength per vector method: every method chosen on 2
    instructions and reported on the other 2; the split is in run.json; the judge's replies are in
    samples.jsonl and the HTML report."""
    from harness.analyses.heldout import run_concepts
    from harness.runner import RunOptions, resolve_tasks
    from harness.store import read_run

    options = RunOptions(samples=1, max_new_tokens=8, max_prompts=4, progress=False,
                         overrides=["concept.strengths={actadd: [8], mean_diff: [2]}"])
    tasks = [with_judge(t, judge_params("smollm2-135m", mode="expected"))
             for name in ("concept_dogs", "concept_ocean") for t in resolve_tasks(name, options)]
    out = tmp_path / "run"
    _, held = run_concepts("concepts", out, smollm, options, tasks)
    run, samples = read_run(out)
    assert set(run.config["heldout"]) == {"concept_dogs", "concept_ocean"}
    for split in run.config["heldout"].values():
        assert len(split["select"]) == len(split["report"]) == 2
        assert not set(split["select"]) & set(split["report"])
    methods = ("unsteered", "actadd", "mean_diff", "prompting")
    assert {(s.task, s.method) for s in held.scores} == {
        (t, m) for t in ("concept_dogs", "concept_ocean") for m in methods}
    for s in held.scores:  # the expected rating is finite wherever the judge puts mass on the digits
        assert s.metric == "judge.score" and s.condition is not None
        assert set(s.per_prompt) == set(run.config["heldout"][s.task]["report"])
    assert json.loads((out / HELDOUT_FILE).read_text())["scores"]
    judged = [s for s in samples if s.completion.strip()]
    assert judged and all({"judge.concept", "judge.instruction", "judge.fluency"} <= set(s.scores)
                          for s in judged)
    assert "judge.concept = " in (out / "report.html").read_text()  # the ratings beside each text


def test_method_option_on_a_concept_task_runs_that_method_only():
    """`--method mean_diff` on a concept task was refused ("concept.strengths names no steering"):
    the chosen steering replaced the task's ActAdd, which its strengths still named."""
    from harness.analyses.heldout import methods_of
    from harness.runner import RunOptions, resolve_tasks

    for method, strengths in (("mean_diff", {"mean_diff"}), ("actadd", {"actadd"}), ("prompting", set())):
        (task,) = resolve_tasks("concept_dogs", RunOptions(method=method))
        assert list(methods_of(task)) == [method] and set(task.spec.concept.strengths) == strengths
    (task,) = resolve_tasks("concept_dogs", RunOptions(method="mean_diff", overrides=["steering.layer=9"]))
    assert task.spec.steering.layer == 9  # --set applies to the chosen method
    assert len(methods_of(load_task("concept_dogs"))) == 3  # without --method: every steering
