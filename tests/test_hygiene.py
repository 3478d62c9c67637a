"""The Python API leaves nothing behind: `harness.evaluate()` without `out` removes its folder."""

from __future__ import annotations

import tempfile

import harness

TASK = ("name: tidy\nkind: sentiment\nprompts: [I love the way, The tower]\n"
        "steering: {method: actadd, layer: 1, coeff: 4, positive: love, negative: hate}\n"
        "scorers: {keywords: {words: [tower]}}\nmetrics: {keywords.rate: increase}\n"
        "headline: keywords.rate\n")


def test_evaluate_without_out_leaves_no_temporary_folder(tiny_llama, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where mkdtemp / TemporaryDirectory write
    (tmp_path / "t.yaml").write_text(TASK)
    results = [harness.evaluate(tmp_path / "t.yaml", tiny_llama, samples=1, max_new_tokens=3, progress=False)
               for _ in range(2)]
    assert list(scratch.iterdir()) == []  # before: one harness-run-* folder per call
    assert all(r.headlines and r.tasks[0].n_prompts == 2 for r in results)  # the numbers came back
    kept = tmp_path / "kept"
    harness.evaluate(tmp_path / "t.yaml", tiny_llama, out=kept, samples=1, max_new_tokens=3, progress=False)
    assert (kept / "run.json").is_file()
