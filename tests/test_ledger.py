"""One ledger type end to end: the engine's per-sequence entries, samples.jsonl's per-sample
entries, `harness generate --json` and run.json's per-condition records are `LedgerEntry`s, and
the run's records are the sums of its samples'."""

from __future__ import annotations

import json
import math
from collections import defaultdict

from harness.cli import main
from harness.runner import RunOptions, run
from harness.schema.results import LedgerEntry, LedgerRecord, SampleRecord
from harness.store import read_jsonl
from tests.conftest import save_tiny_model
from tests.test_runner import write_task


def test_run_json_ledger_is_the_sum_of_the_samples_entries(tiny_llama, tmp_path):
    result = run(str(write_task(tmp_path)), tmp_path / "out", model=tiny_llama,
                 options=RunOptions(progress=False))
    samples = [SampleRecord.model_validate(r) for r in read_jsonl(tmp_path / "out" / "samples.jsonl")]
    sums: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for s in samples:
        assert all(type(e) is LedgerEntry for e in s.ledger)
        if s.condition == "unsteered":  # its rows changed nothing; the run keeps no record of them
            assert not any(e.positions or e.norm for e in s.ledger)
            continue
        for e in s.ledger:
            sums[(s.condition, e.site, e.kind)][0] += e.positions
            sums[(s.condition, e.site, e.kind)][1] += e.norm
    assert result.ledger and all(isinstance(r, LedgerRecord) for r in result.ledger)
    assert {(r.condition, r.site, r.kind) for r in result.ledger} == set(sums)
    for r in result.ledger:
        positions, norm = sums[(r.condition, r.site, r.kind)]
        assert r.positions == positions > 0 or r.kind == "decode"
        assert math.isclose(r.norm, norm, rel_tol=1e-9)


def test_samples_jsonl_of_schema_3_reads_its_nested_ledger_as_entries():
    record = {"key": "k", "task": "t", "condition": "steered", "prompt_index": 0, "prompt_id": "p",
              "prompt": "x", "sample": 0, "seed": 1, "completion": "y", "token_ids": [1], "prompt_ids": [0],
              "ledger": {"L1.resid": {"prompt": [3, 1.5], "decode": [2, 0.5]}}}
    assert SampleRecord.model_validate(record).ledger == [
        LedgerEntry(site="L1.resid", kind="prompt", positions=3, norm=1.5),
        LedgerEntry(site="L1.resid", kind="decode", positions=2, norm=0.5)]


def test_generate_json_writes_the_same_entries(tmp_path, capsys):
    model = save_tiny_model("llama", tmp_path / "tiny")
    assert main(["generate", "--model", str(model), "--prompt", "The tower", "--add", "1:4:love",
                 "--add", "1:-4:hate", "--max-new-tokens", "3", "--greedy", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    steered = next(g for g in out["generations"] if g["condition"] == "steered")
    entries = [LedgerEntry.model_validate(e) for e in steered["ledger"]]
    assert {(e.site, e.kind) for e in entries} == {("L1.resid", "prompt"), ("L1.resid", "decode")}
    assert sum(e.positions for e in entries if e.kind == "prompt") > 0
