"""Attacks on today's evidence rules: inputs where check, baselines and the held-out choice were
silently wrong before (each test names the old outcome)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.analyses.baseline import make_baseline
from harness.analyses.check import HOLDS, INCONCLUSIVE, check
from harness.analyses.heldout import choose, split_half
from harness.errors import UserError
from harness.schema.results import SampleRecord
from harness.stats.comparison import compare_values
from tests.test_check import BASE, PROMPTS, N, noisy
from tests.test_check_evidence import _line, _specific


def test_gate_specific_self_check_of_a_specific_effect_that_was_noise_is_inconclusive_not_holds():
    """`--gate specific` protects the specific effect, yet it asked whether the headline effect vs
    unsteered was significant: a specific effect at p = 0.43 "held" against itself (p_holds 1e-4)."""
    effect = noisy(0.01, 0.3, 9)
    level = np.linspace(0.3, 0.5, N)
    p = compare_values(dict(zip(PROMPTS, level, strict=True)),
                       dict(zip(PROMPTS, level + effect, strict=True))).estimate.p_value
    assert p > 0.4  # the specific effect really is noise
    run = _specific(BASE, effect)
    assert run.headlines[0].significant  # the effect vs unsteered is established
    result = check(run, make_baseline(run), gate="specific")
    line = _line(result, "effect")
    assert result.status == INCONCLUSIVE and line.verdict == "inconclusive"
    assert "not significant in its own run" in line.reason and f"p = {p:.3g}" in line.reason
    # an established specific effect still holds against itself
    strong = _specific(BASE, noisy(0.2, 0.05, 7))
    assert check(strong, make_baseline(strong), gate="specific").status == HOLDS


def test_a_headline_marked_significant_with_p_above_alpha_is_refused():
    """Holm never lowers a p-value, so `significant: true` with a raw p of 0.9 is an edited baseline;
    before, it was accepted and its self-check held."""
    (h,) = BASE.headlines
    edited = BASE.model_copy(update={"headlines": [
        h.model_copy(update={"estimate": h.estimate.model_copy(update={"p_value": 0.9})})]})
    with pytest.raises(UserError, match="marked significant with p = 0.9"):
        make_baseline(edited)
    at_alpha = BASE.model_copy(update={"headlines": [
        h.model_copy(update={"estimate": h.estimate.model_copy(update={"p_value": 0.05})})]})
    with pytest.raises(UserError, match="marked significant"):  # p < α, not ≤
        make_baseline(at_alpha)
    make_baseline(BASE)  # a consistent one is kept


SELECT_PROMPTS = [f"p{i:02d}" for i in range(12)]


def _samples(values: dict[tuple[str, str], list[float]]) -> list[SampleRecord]:
    return [SampleRecord(key=f"{c}/{p}/{i}", task="t", condition=c, prompt_index=SELECT_PROMPTS.index(p),
                         prompt_id=p, prompt=p, sample=i, seed=i, completion="x", token_ids=[1],
                         prompt_ids=[1], scores={"m": v})
            for (c, p), vs in values.items() for i, v in enumerate(vs)]


def test_a_strength_cannot_win_the_selection_by_emptying_the_samples_it_does_badly_on():
    """With 3 samples per prompt, c+8 scores 2.0 on one sample of each prompt and leaves the other
    two without a value; c+1 scores 1.0 on all. Before, per-prompt means of the finite samples gave
    c+8 2.0 and chose it; an unscored sample counts as the worst value (0) as an unscored prompt does."""
    split = split_half(SELECT_PROMPTS, 7)
    values = {("unsteered", p): [0.0, 0.0, 0.0] for p in SELECT_PROMPTS}
    values |= {("actadd L1 c+1", p): [1.0, 1.0, 1.0] for p in SELECT_PROMPTS}
    values |= {("actadd L1 c+8", p): [2.0, math.nan, math.nan] for p in SELECT_PROMPTS}
    candidates = {"actadd L1 c+1": 1.0, "actadd L1 c+8": 8.0}
    assert choose(_samples(values), "t", "m", candidates, split.select, 1.0) == ("actadd L1 c+1", 1.0)
    assert choose(_samples(values), "t", "m", {"actadd L1 c+8": 8.0}, split.select, 1.0)[1] == pytest.approx(
        2.0 / 3)


def test_spearman_p_of_few_pairs_is_exact_not_the_t_approximation():
    """rho = 1 of 4 pairs happens by chance in 2 of the 4! = 24 pairings: p = 1/12, where scipy's t
    approximation said 0 (reported "p < 0.001"); rho = 0.8 of 4 pairs: 8 of 24 pairings reach |rho| ≥ 0.8."""
    from itertools import permutations

    from harness.stats import spearman

    def brute(x: list[float], y: list[float]) -> float:
        rho = spearman(x, y)[0]
        pairings = [spearman(x, list(q))[0] for q in permutations(y)]
        return sum(abs(r) >= abs(rho) - 1e-12 for r in pairings) / len(pairings)

    for y in ([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]):
        x = sorted(y)
        assert spearman(x, y)[3] == pytest.approx(brute(x, y), abs=1e-12)
    assert spearman([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])[3] == pytest.approx(1 / 12)


def test_agreement_warns_when_the_ranks_agree_perfectly_and_the_interval_is_a_point():
    from harness.analyses.agreement import agreement_of

    samples = [SampleRecord(key=f"k{i}", task="t", condition="steered", prompt_index=i, prompt_id=f"p{i}",
                            prompt="x", sample=0, seed=0, completion="x", token_ids=[1], prompt_ids=[1],
                            scores={"judge.concept": float(i), "perplexity.logppl": 2.0 * i + 1})
               for i in range(5)]
    ag = agreement_of(samples, "judge.concept", "perplexity.logppl")
    assert ag.spearman == pytest.approx(1.0) and ag.spearman_ci_low == pytest.approx(1.0)
    assert any("agree perfectly" in w for w in ag.warnings), ag.warnings
    assert ag.spearman_p == pytest.approx(2 / 120)  # exact: 2 of the 5! pairings


def test_the_committed_quick_baseline_lists_every_headline_its_run_did_not_establish():
    """Since check finds a non-significant baseline effect inconclusive, love_hate (+0.063, p = 0.099
    at quick size) made CI's `harness check runs/ci --baseline quick.json` exit 3 whatever the run did:
    the baseline lists it as `harness baseline --no-effect` would (its other lines still gate)."""
    from pathlib import Path

    from harness.analyses.baseline import read_baseline

    base = read_baseline(Path(__file__).resolve().parent.parent / "results/baselines/smollm2-135m/quick.json")
    unlisted = [(h.task, h.estimate.p_value) for h in base.headlines
                if not h.significant and h.condition not in base.no_effect.get(h.task, [])]
    assert not unlisted
    assert {h.task for h in base.headlines if h.significant} == {"weddings", "eiffel_rome"}


def test_a_chat_rendered_prompting_preamble_is_refused_inside_a_chat_prompt():
    """build_prompting(lm, ..., chat=True) passed to evaluate() with a generation.chat task (the task
    file's guard never sees it) put a whole rendered chat (system turn, assistant turn opened) inside
    the user's turn, silently; a plain instruction still opens the user's turn."""
    from harness.models.tokens import encode_prompt, encode_with_preamble
    from tests.conftest import _tiny_tokenizer

    tok = _tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|endoftext|>{{ m['role'] }}\n{{ m['content'] }}\n"
                         "{% endfor %}{% if add_generation_prompt %}<|endoftext|>assistant\n{% endif %}")
    rendered = tok.apply_chat_template([{"role": "system", "content": "Talk about towers."}], tokenize=False,
                                       add_generation_prompt=True)
    with pytest.raises(UserError, match="nest one chat in another"):
        encode_with_preamble(tok, "The city", rendered, use_bos=False, chat=True)
    ids = encode_with_preamble(tok, "The city", "Talk about towers.\n", use_bos=False, chat=True)
    assert ids == encode_prompt(tok, "Talk about towers.\nThe city", use_bos=False, chat=True)
    assert encode_with_preamble(tok, "The city", rendered, use_bos=False)  # plain text: the chat: true design


def test_harness_baseline_says_when_a_headline_it_keeps_was_not_significant(tmp_path, capsys):
    """Written without --no-effect, such a baseline made every later check exit 3 with no word when
    it was written; now `harness baseline` says so, and with --no-effect it lists the headline."""
    from harness.cli import main
    from tests.test_check import synthetic

    weak = synthetic(noisy(0.02, 0.3, 9), noisy(0.30, 0.05, 2))
    (h,) = weak.headlines
    weak = weak.model_copy(update={"headlines": [h.model_copy(update={"significant": False})]})
    (tmp_path / "run.json").write_text(weak.model_dump_json())
    assert main(["baseline", str(tmp_path / "run.json"), "--to", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "note: not significant in this run: t steered (p = " in out and "--no-effect" in out
    args = ["baseline", str(tmp_path / "run.json"), "--to", str(tmp_path / "b.json")]
    assert main([*args, "--no-effect"]) == 0
    out = capsys.readouterr().out
    assert "no effect to protect: t steered" in out and "note:" not in out


def test_gate_specific_no_effect_line_cites_the_effect_it_was_listed_for():
    """A headline listed by --no-effect for its effect vs unsteered (p > 0.05) under --gate specific:
    the reason paired the specific effect's point (+0.2) with the unsteered effect's p-value."""
    from harness.analyses.check import NO_EFFECT
    from tests.test_check import synthetic

    plain = synthetic(noisy(0.02, 0.3, 9), noisy(0.30, 0.05, 2))
    (h,) = plain.headlines
    plain = plain.model_copy(update={"headlines": [h.model_copy(update={"significant": False})]})
    run = _specific(plain, noisy(0.2, 0.05, 7))
    line = _line(check(run, make_baseline(run, no_effect=True), gate="specific"), "effect")
    assert line.verdict == NO_EFFECT and line.baseline == pytest.approx(0.2, abs=0.05)  # the specific effect
    assert line.reason == (f"the baseline (written with --no-effect) moved {h.estimate.point:+.3g}, not "
                           f"significantly (p = {h.estimate.p_value:.3g} before adjustment): nothing to "
                           "protect")


def test_a_sweep_config_cannot_win_the_half_selection_by_emptying_prompts():
    """`harness sweep --select-on half` chose by the paired effect over the prompts with a value on
    both sides, so c+8, which scores 2.0 on one selection prompt and leaves every other one empty,
    beat c+1 (+1.0 everywhere). The held-out choice of concept tasks already counted an unscored
    prompt as the worst value seen; the sweep now chooses the same way."""
    from harness.analyses.sweep_analysis import _select_on_half

    split = split_half(SELECT_PROMPTS, 0)  # the sweep's split: the same seeded permutation
    keep = split.select[0]
    values = {("unsteered", p): [0.0] for p in SELECT_PROMPTS}
    values |= {("L1 c+1", p): [1.0] for p in SELECT_PROMPTS}
    values |= {("L1 c+8", p): [2.0 if p == keep else math.nan] for p in SELECT_PROMPTS}
    chosen = _select_on_half(_samples(values), "t", "m", ["L1 c+1", "L1 c+8"], 1.0, None, 0, SELECT_PROMPTS,
                             None)
    assert chosen.selected_prompts == split.select
    assert chosen.condition == "L1 c+1" and chosen.estimate.point == pytest.approx(1.0)
