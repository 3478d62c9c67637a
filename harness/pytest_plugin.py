"""pytest plugin: the `steering_check` fixture runs a task and fails the test on regression.

Example (in a user's test file)::

    def test_love_hate_holds(steering_check):
        steering_check("love_hate", baseline="results/baselines/smollm2-135m/love_hate.json")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

_MODELS: dict[str, Any] = {}


def _model(name: str) -> Any:
    from harness.models import load_model

    if name not in _MODELS:
        _MODELS[name] = load_model(name)
    return _MODELS[name]


@pytest.fixture
def steering_check(tmp_path: Path) -> Callable[..., Any]:
    """Run `target` (task, suite or YAML path) and compare it with `baseline`.

    Keyword arguments: `model`, `overrides` (`--set` strings), `samples`,
    `max_new_tokens`, `max_prompts`, `seed`, `tolerance` (a `harness.analyses.check.Tolerance`),
    `out` (run folder; default a temporary one), `allow_inconclusive` (pass when no line
    is a regression but some lack the evidence to hold). Returns the `RunResult`; fails the
    test with the verdict table on a regression, an inconclusive line (unless allowed) or
    when the run cannot be compared.
    """
    from rich.console import Console

    from harness.analyses.baseline import read_baseline
    from harness.analyses.check import HOLDS, check
    from harness.report.check_report import print_check
    from harness.runner import RunOptions, run

    def run_and_check(target: str, baseline: str | Path, *, model: str = "smollm2-135m",
              overrides: Sequence[str] = (), samples: int | None = None,
              max_new_tokens: int | None = None, max_prompts: int | None = None,
              seed: int | None = None, tolerance: Any = None, out: Path | None = None,
              allow_inconclusive: bool = False) -> Any:
        options = RunOptions(samples=samples, max_new_tokens=max_new_tokens, max_prompts=max_prompts,
                             seed=seed, overrides=overrides, progress=False)
        result = run(target, out or tmp_path / "run", model=_model(model), options=options)
        verdict = check(result, read_baseline(Path(baseline)), tolerance,
                        allow_inconclusive=allow_inconclusive)
        if verdict.status != HOLDS:
            console = Console(record=True, width=140)
            print_check(verdict, console)
            pytest.fail(console.export_text(), pytrace=False)
        return result

    return run_and_check
