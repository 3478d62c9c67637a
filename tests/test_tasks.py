"""Every bundled task and suite loads; each kind has enough, varied prompts."""

from __future__ import annotations

import pytest

from harness.runner import RunOptions, resolve_tasks
from harness.tasks import known, load_suite, load_task

TASKS = known("task")


def test_bundled_tasks_cover_every_kind():
    kinds = {load_task(name).spec.kind: name for name in TASKS}
    assert set(kinds) == {"topic", "sentiment", "fact", "concept"}
    assert {"love_hate", "weddings", "exclamation", "eiffel_rome"} <= set(TASKS)
    assert len(TASKS) >= 7


@pytest.mark.parametrize("name", TASKS)
def test_bundled_task_loads_with_enough_distinct_prompts(name):
    task = load_task(name)
    texts = [p.text for p in task.prompts]
    assert len(set(texts)) == len(texts), "duplicate prompts"
    if task.spec.kind in ("topic", "sentiment", "concept"):
        assert len(texts) >= 24
        assert len({" ".join(t.split()[:3]) for t in texts}) >= 16, "prompts look templated"
    else:
        groups = [p.group for p in task.prompts]
        assert groups.count("probe") >= 12 and groups.count("neighbourhood") >= 6


@pytest.mark.parametrize("suite", known("suite"))
def test_suites_load_and_name_bundled_tasks(suite):
    spec = load_suite(suite)
    assert set(spec.tasks) <= set(TASKS)
    tasks = resolve_tasks(suite, RunOptions())
    assert [t.name for t in tasks] == spec.tasks
    if spec.max_prompts:
        assert all(len(t.prompts) <= spec.max_prompts for t in tasks)


def test_quick_suite_covers_all_kinds_and_full_covers_every_task():
    quick = resolve_tasks("quick", RunOptions())
    assert {t.spec.kind for t in quick} == {"topic", "sentiment", "fact"}
    concepts = {name for name in TASKS if load_task(name).spec.kind == "concept"}
    assert set(load_suite("full").tasks) == set(TASKS) - concepts  # concept tasks: the concepts suite
    assert set(load_suite("concepts").tasks) == concepts


def test_quick_fact_subset_keeps_enough_probes_for_significance():
    """With Holm over the run's declared metrics, an exact sign-flip test needs ≥ 10 probes."""
    fact = next(t for t in resolve_tasks("quick", RunOptions()) if t.spec.kind == "fact")
    assert sum(p.group == "probe" for p in fact.prompts) >= 10


def test_set_with_method_changes_the_chosen_steering_not_the_tasks_methods_entry():
    task = load_task("love_hate", ["steering.coeff=3"], method="mean_diff")
    assert task.spec.steering.coeff == 3
    assert task.spec.methods["mean_diff"].coeff != 3  # before: the two shared one dict
