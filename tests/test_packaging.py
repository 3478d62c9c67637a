"""The distribution: a wheel built from the tree (not the editable checkout) carries the bundled
tasks and data, and runs a task from another directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_a_wheel_installed_elsewhere_runs_a_bundled_task_from_another_directory(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheels.glob("steering_harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("harness/bundled_tasks/suites/quick.yaml",
                   "harness/bundled_tasks/sentiment/love_hate.yaml",
                   "harness/bundled_tasks/topic/conversation_openers.jsonl",
                   "harness/scorers/data/sentiment_lr.json",
                   "harness/scorers/data/rubrics/axbench.yaml",
                   "harness/diagnostics/data/capability.jsonl", "harness/py.typed"):
        assert needed in names, needed
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("HARNESS_TASKS_DIR", None)
    where = subprocess.run([sys.executable, "-c",
                            "import harness.tasks as t; print(t.__file__, t.tasks_dir())"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert where[0].startswith(str(site)) and where[1].startswith(str(site)), where
    done = subprocess.run([sys.executable, "-m", "harness", "run", "love_hate", "--max-prompts", "2",
                           "--samples", "1", "--max-new-tokens", "4", "--out", "out"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((elsewhere / "out" / "run.json").read_text())
    assert run["tasks"][0]["name"] == "love_hate" and run["tasks"][0]["n_prompts"] == 2
