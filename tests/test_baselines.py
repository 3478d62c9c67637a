"""Our own CI check: the quick suite on the embedded model holds against the committed baseline."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analyses.baseline import read_baseline
from harness.analyses.check import HOLDS, check
from harness.runner import RunOptions, run

BASELINE = Path(__file__).resolve().parent.parent / "results/baselines/smollm2-135m/quick.json"


@pytest.mark.slow  # ~3 min; .ci/run runs the same check through the CLI
def test_quick_suite_holds_against_committed_baseline(smollm, tmp_path):
    result = run("quick", tmp_path / "quick", model=smollm, options=RunOptions(progress=False))
    verdict = check(result, read_baseline(BASELINE))
    assert verdict.status == HOLDS, (verdict.reasons,
                                     [line for line in verdict.lines if line.verdict != "holds"])
    moved = {h.task: h.moved_as_expected for h in result.headlines}
    assert moved["weddings"] and moved["eiffel_rome"], moved  # the topic and fact edits move as expected
    # Love − Hate at quick size (+0.06 at seed 0) is near what 24 prompts can detect: the run says how near
    love = next(h for h in result.headlines if h.task == "love_hate")
    assert love.estimate.mde > 0 and love.estimate.ci_low <= love.estimate.point <= love.estimate.ci_high
