"""Nothing left behind: `harness.evaluate()` without `out` removes its folder; a command is offline
while it runs and leaves the environment as it found it."""

from __future__ import annotations

import os
import tempfile

import harness
from harness.cli import commands, main
from harness.runner import RunOptions

TASK = ("name: tidy\nkind: sentiment\nprompts: [I love the way, The tower]\n"
        "steering: {method: actadd, layer: 1, coeff: 4, positive: love, negative: hate}\n"
        "scorers: {keywords: {words: [tower]}}\nmetrics: {keywords.rate: increase}\n"
        "headline: keywords.rate\n")
OPTIONS = RunOptions(samples=1, max_new_tokens=3, progress=False)


def test_evaluate_without_out_leaves_no_temporary_folder(tiny_llama, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp / TemporaryDirectory write
    (tmp_path / "t.yaml").write_text(TASK)
    results = [harness.evaluate(tmp_path / "t.yaml", tiny_llama, options=OPTIONS)
               for _ in range(2)]
    assert list(scratch.iterdir()) == []  # before: one harness-run-* folder per call
    assert all(r.headlines and r.tasks[0].n_prompts == 2 for r in results)  # the numbers came back
    kept = tmp_path / "kept"
    harness.evaluate(tmp_path / "t.yaml", tiny_llama, out=kept, options=OPTIONS)
    assert (kept / "run.json").is_file()


def test_a_command_runs_offline_and_restores_the_environment(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    seen = []
    monkeypatch.setattr(commands, "cmd_methods",
                        lambda args: seen.append(os.environ.get("HF_HUB_OFFLINE")) or 0)
    before = dict(os.environ)
    assert main(["methods"]) == 0
    assert seen == ["1"] and dict(os.environ) == before
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the caller's choice is kept
    assert main(["methods"]) == 0 and seen[-1] == "0" and os.environ["HF_HUB_OFFLINE"] == "0"
