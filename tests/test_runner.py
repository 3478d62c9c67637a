"""`harness run` end to end on a tiny random model: files, resume after a kill, cache keys."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.report.terminal import results_text
from harness.runner import RunOptions, run
from harness.schema.results import SCHEMA_VERSION
from harness.store import read_jsonl, read_run
from tests.conftest import save_tiny_model

TASK = """\
name: tiny_topic
kind: topic
prompts: [{prompts}]
steering: {{method: actadd, layer: 1, coeff: {coeff}, positive: love, negative: hate}}
generation: {{max_new_tokens: 6}}
samples: 2
scorers:
  keywords: {{words: [love, tower, water]}}
  perplexity: {{}}
metrics: {{keywords.rate: increase}}
headline: keywords.rate
"""
PROMPTS = ["I love the way", "The tower", "We talked about", "To see the", "In the morning",
           "The light falls", "People flock to", "I hate you"]
MORE_PROMPTS = [f"{p}{end}" for end in ("", " and", " but") for p in PROMPTS]  # 3 x as many, distinct
QUIET = RunOptions(progress=False)


def write_task(folder: Path, coeff: float = 8.0, prompts: list[str] = PROMPTS) -> Path:
    path = folder / "tiny_topic.yaml"
    path.write_text(TASK.format(prompts=", ".join(json.dumps(p) for p in prompts), coeff=coeff))
    return path


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny_runner"))


def effects_of(folder: Path) -> list[dict]:
    return json.loads((folder / "run.json").read_text())["effects"]


def test_run_writes_every_file_and_all_fields(tiny_llama, tmp_path):
    result = run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama, options=QUIET)
    out = tmp_path / "out"
    for name in ("run.json", "samples.jsonl", "report.md", "report.html"):
        assert (out / name).stat().st_size > 0, name
    data = json.loads((out / "run.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION and data["model"]["sha256"] and data["versions"]["torch"]
    for field in ("task", "condition", "metric", "expected_direction", "estimate", "p_adjusted",
                  "significant"):
        assert field in data["effects"][0]
    for field in ("mean_a", "mean_b", "point", "ci_low", "ci_high", "ci_method", "p_value", "test",
                  "n_planned", "n", "n_not_applicable", "n_unscorable", "sd", "mde", "effect_size"):
        assert field in data["effects"][0]["estimate"]
    assert {f["condition"] for f in data["fluency_cost"]} == {"steered"}
    assert len(read_jsonl(out / "samples.jsonl")) == len(PROMPTS) * 2 * 2
    assert result.headlines[0].metric == "keywords.rate"
    run_back, samples = read_run(out)
    # compared as JSON: a share without an expected direction is NaN, and NaN != NaN
    assert [e.model_dump_json() for e in run_back.effects] == [e.model_dump_json() for e in result.effects]
    assert len(samples) == len(PROMPTS) * 4
    timed = ("generate.tiny_topic", "score.tiny_topic.keywords", "score.tiny_topic.perplexity")
    assert set(data["timings"]) == set(timed) and all(data["timings"][k] >= 0 for k in timed)
    assert data["timings"]["generate.tiny_topic"] > 0
    assert "time: generate" in results_text(result) and "scorers: " in results_text(result)


def test_rerun_reuses_samples_and_changed_config_does_not(tiny_llama, tmp_path):
    out = tmp_path / "out"
    run(str(write_task(tmp_path)), out, model=tiny_llama, options=QUIET)
    first = (out / "samples.jsonl").read_text()
    run(str(write_task(tmp_path)), out, model=tiny_llama, options=QUIET)
    assert (out / "samples.jsonl").read_text() == first  # nothing regenerated
    run(str(write_task(tmp_path, coeff=2.0)), out, model=tiny_llama, options=QUIET)

    def keys(records: list[dict]) -> dict[str, set[str]]:  # condition -> sample identities
        out: dict[str, set[str]] = {}
        for r in records:
            out.setdefault(r["condition"], set()).add(r["key"])
        return out

    before = keys([json.loads(line) for line in first.splitlines()])
    after = keys(read_jsonl(out / "samples.jsonl"))
    assert set(after) == {"unsteered", "steered"} and all(len(v) == len(PROMPTS) * 2 for v in after.values())
    assert not after["steered"] & before["steered"]  # a changed steering regenerates its samples
    assert after["unsteered"] == before["unsteered"]  # and never the unsteered ones it does not touch


def test_corrupt_trailing_line_is_dropped_and_regenerated(tiny_llama, tmp_path):
    out = tmp_path / "out"
    run(str(write_task(tmp_path)), out, model=tiny_llama, options=QUIET)
    expected = effects_of(out)
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:5]) + lines[5][:17])
    with pytest.warns(UserWarning, match="samples.jsonl:6"):
        run(str(write_task(tmp_path)), out, model=tiny_llama, options=QUIET)
    assert effects_of(out) == expected


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def _kill_at_random_point(args: list[str], out: Path, sig: signal.Signals, delay: float) -> str:
    """Start a run, send `sig` after `delay` seconds, and say in which phase it was hit."""
    proc = subprocess.Popen(_cli("run", *args, "--out", str(out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    samples = out / "samples.jsonl"
    lines = samples.read_text().count("\n") if samples.exists() else 0
    phase = ("finished" if proc.poll() is not None else "before the first sample" if lines == 0
             else f"after {lines} sample lines")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    # A SIGTERM landing after run.json was written may meet the interpreter's shutdown, where
    # Python's handlers are gone (exit -15); the run is complete then and nothing is lost.
    completed = (out / "run.json").exists()
    if sig == signal.SIGTERM and not completed and proc.returncode != 0:
        assert proc.returncode == 130 and "rerun the same command to resume" in err, err
    return phase


def _check_interrupted_folder(out: Path) -> None:
    """What an interrupted run may leave: whole sample lines (a torn last line is dropped with
    a warning on read), and run.json complete or absent."""
    if (out / "run.json").exists():
        read_run(out)  # complete and valid
    samples = out / "samples.jsonl"
    if samples.exists():
        text = samples.read_text()
        whole = text.splitlines()[:-1] if not text.endswith("\n") else text.splitlines()
        assert all(json.loads(line)["key"] for line in whole)


# Random kill points: seeded delays over the whole run (start-up, generation, scoring, writing).
KILL_TRIALS = [(signal.SIGKILL if i % 2 else signal.SIGTERM, i) for i in range(4)]
# one trial of each signal in the default run, two more in the slow one (about 17 s each)
KILL_PARAMS = [pytest.param(s, i, id=f"{s.name}-{i}", marks=[pytest.mark.slow] if i >= 2 else [])
               for s, i in KILL_TRIALS]


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory) -> tuple[list[str], list[dict], float]:
    """The run every kill trial must end up equal to: its arguments, effects and wall time."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    args = [str(write_task(folder, prompts=MORE_PROMPTS)), "--model", str(tiny_dir), "--batch-size", "1"]
    start = time.monotonic()
    subprocess.run(_cli("run", *args, "--out", str(folder / "full")), check=True, capture_output=True)
    return args, effects_of(folder / "full"), time.monotonic() - start


@pytest.mark.parametrize(("sig", "trial"), KILL_PARAMS)
def test_run_killed_at_a_random_point_resumes_to_the_same_effects(uninterrupted, tmp_path, sig, trial):
    import random

    args, expected, wall = uninterrupted
    part = tmp_path / "part"
    phase = _kill_at_random_point(args, part, sig, random.Random(trial).uniform(0.3 * wall, wall))
    _check_interrupted_folder(part)
    subprocess.run(_cli("run", *args, "--out", str(part)), check=True, capture_output=True)
    assert effects_of(part) == expected, phase
    assert not [p for p in part.iterdir() if p.name.endswith(".tmp")]
    lines = read_jsonl(part / "samples.jsonl")
    assert len(lines) == len({r["key"] for r in lines}) == len(PROMPTS) * 3 * 4


def test_temp_files_of_a_killed_atomic_write_are_removed_by_the_next_run(tmp_path):
    from harness.store import folder_lock

    out = tmp_path / "out"
    out.mkdir()
    (out / ".run.json.abc123.tmp").write_text('{"half": ')  # what SIGKILL mid-write leaves
    (out / "keep.tmp").write_text("not ours")
    with folder_lock(out):
        assert not (out / ".run.json.abc123.tmp").exists()
    assert (out / "keep.tmp").exists()


def test_second_run_on_a_locked_folder_refuses(tiny_llama, tmp_path):
    from harness.errors import UserError
    from harness.store import folder_lock

    out = tmp_path / "out"
    with folder_lock(out), pytest.raises(UserError, match=f"PID {os.getpid()}"):
        run(str(write_task(tmp_path)), out, model=tiny_llama, options=QUIET)


def test_two_concurrent_runs_on_one_folder_never_interleave(tiny_dir, tmp_path):
    task = write_task(tmp_path, prompts=MORE_PROMPTS)
    cmd = _cli("run", str(task), "--model", str(tiny_dir), "--batch-size", "1", "--out", str(tmp_path / "o"))
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    assert "in use by another run (PID" in next(err for code, err in results if code == 2)
    lines = (tmp_path / "o" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == len(PROMPTS) * 3 * 4 and all(json.loads(line)["key"] for line in lines)


def test_flagged_samples_are_excluded_and_noted(tiny_llama, tmp_path, monkeypatch):
    import harness.engine as engine

    real = engine.generate_batch

    def poisoned(*args, **kwargs):
        gens = real(*args, **kwargs)
        return [g if g.row.prompt != PROMPTS[0] or g.row.condition != "steered"
                else dataclasses.replace(g, flagged="non-finite logits") for g in gens]

    monkeypatch.setattr(engine, "generate_batch", poisoned)
    result = run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama, options=QUIET)
    assert result.flagged_samples == 2 and "2 samples flagged" in result.notes[0]
    rate = next(e for e in result.effects if e.metric == "keywords.rate")
    assert rate.estimate.n == len(PROMPTS) - 1 and rate.n_excluded >= 2  # + empty completions
