"""Our own CI check: the quick suite on the embedded model holds against the committed baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.check import HOLDS, check, read_baseline
from harness.runner import RunOptions, run

BASELINE = Path(__file__).resolve().parent.parent / "results/baselines/smollm2-135m/quick.json"


@pytest.mark.slow  # ~3 min; .ci/run runs the same check through the CLI
def test_quick_suite_holds_against_committed_baseline(smollm, tmp_path):
    result = run("quick", tmp_path / "quick", model=smollm, options=RunOptions(progress=False))
    verdict = check(result, read_baseline(BASELINE))
    assert verdict.status == HOLDS, (verdict.reasons,
                                     [line for line in verdict.lines if line.verdict != "holds"])
    for head in result.headlines:  # the demo's promise: every quick task moves as expected
        assert head.moved_as_expected, head
