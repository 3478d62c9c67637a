"""Hand-edited baselines that used to be read and checked against as evidence (found by attacking
the harness, issue 21): a headline point, p, interval or SD that its per-prompt values do not give, infinite
per-prompt values, impossible sample counts, a ledger that added a norm at no position,
a NaN floor. Each is refused when read, and `check` exits 2 instead of saying "holds"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.analyses.baseline import make_baseline, read_baseline
from harness.analyses.check import INCOMPARABLE, check
from harness.cli import main
from harness.errors import UserError
from tests.test_check import BASE


def _edit(data: dict) -> None:  # the per-prompt summary of the headline
    return next(p for p in data["per_prompt"] if p["metric"] == data["headlines"][0]["metric"])


@pytest.mark.parametrize(("change", "words"), [
    # point 5.0 made "holds" trivial: the run only had to keep its effect above 0.3 − 5
    (lambda d: d["headlines"][0]["estimate"].update(point=5.0), "do not give the headline's point 5"),
    # a narrowed interval or a smaller SD made an effect look better established
    (lambda d: d["headlines"][0]["estimate"].update(ci_low=d["headlines"][0]["estimate"]["point"] - 1e-3),
     "do not give the headline's ci_low"),
    (lambda d: d["headlines"][0]["estimate"].update(sd=1e-3), "do not give the headline's sd 0.001"),
    (lambda d: _edit(d)["prompts"].update({k: [0.0, "Infinity"] for k in list(_edit(d)["prompts"])[:1]}),
     "infinite per-prompt value"),
    (lambda d: d["counts"][1].update(flagged=-5), "counts must be ≥ 0"),
    (lambda d: d["counts"][1].update(empty=200), "flagged + empty + unscorable ≤ samples"),
    (lambda d: d["ledger"][0].update(positions=0), "zero where no position changed"),
    (lambda d: d["ledger"][0].update(positions=-3), "the ledger needs"),
    (lambda d: d["floors"]["t"].update(min_effect="NaN"), "must be finite"),
], ids=["point-not-mean", "ci-narrowed", "sd-shrunk", "inf-per-prompt", "negative-count",
        "more-degenerate-than-samples",
        "ledger-norm-at-no-position", "ledger-negative-positions", "nan-floor"])
def test_hand_edited_baseline_is_refused_when_read_and_check_exits_2(tmp_path, change, words, capsys):
    data = json.loads(make_baseline(BASE).model_dump_json())
    assert check(BASE, make_baseline(BASE)).status != INCOMPARABLE  # the unedited baseline is usable
    change(data)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(words)):
        read_baseline(path)
    (tmp_path / "run.json").write_text(BASE.model_dump_json())
    assert main(["check", str(tmp_path / "run.json"), "--baseline", str(path)]) == INCOMPARABLE
    assert words in capsys.readouterr().err


def test_a_prompting_ledger_entry_positions_at_norm_0_is_a_valid_baseline(tmp_path):
    """A prompting condition's ledger entry changes its instruction's positions and adds no norm."""
    data = json.loads(make_baseline(BASE).model_dump_json())
    data["ledger"][0].update(site="prompt.instruction", kind="prompt", positions=22, norm=0.0)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    assert read_baseline(path).ledger[0].norm == 0.0


def test_a_hand_lowered_p_is_refused_even_with_its_significance_edited_to_match(tmp_path):
    """The committed quick baseline's love_hate headline (p 0.0992, not significant, no effect to
    protect) edited to p 0.001 and significant: its 24 per-prompt values give p 0.0992 again."""
    committed = Path(__file__).resolve().parents[1] / "results" / "baselines" / "smollm2-135m" / "quick.json"
    data = json.loads(committed.read_text())
    head = next(h for h in data["headlines"] if h["task"] == "love_hate")
    assert head["estimate"]["p_value"] > 0.05 and not head["significant"]
    head["estimate"]["p_value"], head["significant"] = 0.001, True
    data["no_effect"].pop("love_hate", None)
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"do not give the headline's p 0\.001 \(they give 0\.099"):
        read_baseline(path)
