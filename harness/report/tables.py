"""The rows every report of a run shares, as typed cells (`harness.report.cells`)."""

from __future__ import annotations

import math

from harness.report.cells import MOVED, NOT_SIG, WRONG, Cell, Estimate, arrow, estimate, num, pval, verdict
from harness.schema.results import EffectRecord, FluencyRecord, RunResult
from harness.schema.results import Estimate as EstimateRecord

CI_LEGEND = ("95% Student t intervals over prompts, paired by prompt (their coverage is simulated by "
             "`python -m harness.stats.calibration`); MDE = minimum detectable effect at 80% power, "
             "\"too few prompts\" below 6, where the sign-flip test cannot reach p < 0.05")
N_LEGEND = ("n = prompts compared / planned; left out: prompts the metric does not apply to (n/a) and "
            "prompts without a finite value on a side (unscorable: flagged, empty or unscorable texts); "
            "k NaN = sample values dropped")
LEGEND = (
    f"↑/↓ expected direction · {MOVED} moved as expected, significant · {WRONG} significant, "
    f"wrong direction · {NOT_SIG} not significant (Holm-adjusted p < 0.05) · "
    f"CIs: {CI_LEGEND} · " + N_LEGEND
)
HEADLINE_COLUMNS = ["task", "condition", "metric", "expected", "n", "unsteered → steered", "diff [95% CI]",
                    "Hedges g", "p_adj", "verdict", "MDE (80%)", "Δ logppl [95% CI]", "ppl ratio"]
EFFECT_COLUMNS = ["task", "condition", "metric", "expected", "n", "unsteered → steered", "diff [95% CI]",
                  "Hedges g", "p_adj", "verdict"]
FLUENCY_COLUMNS = ["task", "condition", "judge", "n", "logppl unsteered → steered", "Δ logppl [95% CI]",
                   "p_adj", "ppl ratio"]
SAMPLE_COLUMNS = ["task", "condition", "samples", "flagged", "empty", "unscorable", "steering ledger"]
SAMPLE_LEGEND = ("Per condition: samples, and the degenerate ones: flagged (excluded), empty completions, "
                 "and unscorable ones (tokens, but a text some scorer cannot score: whitespace only, no "
                 "words for a word list, too short); the positions the steering hooks changed per sample "
                 "in the prompt pass and the decode steps, and the mean norm added.")
CONTROL_COLUMNS = ["task", "condition", "metric", "expected", "effect [95% CI]", "specific [95% CI]", "p_adj",
                   "steered − negated [95% CI]", "p_adj", "label"]
CONTROL_LEGEND = ("specific = steered − mean of the matched random controls (same norm per layer); "
                  "steered − negated = the direction check; \"disruption, not direction\" = the negated "
                  "vector moves the metric significantly the same way as the steered one")


def _effects(run: RunResult) -> dict[tuple[str, str, str], EffectRecord]:
    return {(e.task, e.condition, e.metric): e for e in run.effects}


def _fluency(run: RunResult) -> dict[tuple[str, str], FluencyRecord]:
    return {(f.task, f.condition): f for f in run.fluency_cost}


def mde_text(mde: float) -> str:
    """The minimum detectable effect, or why there is none."""
    return num(mde) if math.isfinite(mde) else "too few prompts"


def n_text(e: EstimateRecord, excluded: int) -> str:
    """`6/8 (1 n/a, 1 unscorable; 4 NaN)`: prompts compared of those planned, the prompts left out
    by why, and the sample values dropped."""
    why = [f"{k} {label}" for k, label in ((e.n_not_applicable, "n/a"), (e.n_unscorable, "unscorable")) if k]
    dropped = [f"{excluded} NaN"] if excluded else []
    detail = "; ".join(part for part in (", ".join(why), *dropped) if part)
    return f"{e.n}/{e.n_planned}" + (f" ({detail})" if detail else "")


def headline_rows(run: RunResult) -> list[list[Cell]]:
    """One row of HEADLINE_COLUMNS per task and steered condition."""
    effects, fluency, rows = _effects(run), _fluency(run), []
    for h in run.headlines:
        e = effects.get((h.task, h.condition, h.metric))
        f = fluency.get((h.task, h.condition))
        rows.append([
            h.task, h.condition, h.metric, arrow(h.expected_direction),
            n_text(h.estimate, e.n_excluded if e else 0),
            f"{num(h.estimate.mean_a)} → {num(h.estimate.mean_b)}",
            estimate(h.estimate), num(h.estimate.effect_size, signed=True),
            pval(e.p_adjusted) if e else "—", verdict(h.expected_direction, h.estimate.point, h.significant),
            mde_text(h.estimate.mde), estimate(h.fluency),
            num(f.ppl_ratio) + "×" if f else "—",
        ])
    return rows


STEER_COLUMNS = ["task", "condition", "metric", "expected", "n", "wrong way", "share wrong way [95% CI]",
                 "SD of per-prompt effects [95% CI]"]
STEER_LEGEND = ("Steerability (Tan et al. 2024: a mean effect can hide prompts pushed the wrong way), per "
                "headline: n = prompts with a per-prompt effect (steered − unsteered, the mean over its "
                "samples); wrong way = prompts whose effect is against the expected direction (a tie, an "
                "effect of exactly 0, is not wrong-way but counts in n), and their share with an exact "
                "Clopper-Pearson 95% CI; the SD of the per-prompt effects with a chi-square 95% CI (exact "
                "for normal effects, too narrow for heavy-tailed ones). Both include each prompt's "
                "sampling noise: with few samples per prompt the spread exceeds that of the true effects "
                "and the wrong-way share is pulled toward one half")


def steer_rows(run: RunResult) -> list[list[Cell]]:
    """One row of STEER_COLUMNS per headline; a run written before steerability was recorded says so."""
    rows: list[list[Cell]] = []
    for h in run.headlines:
        if (s := h.steerability) is None:
            rows.append([h.task, h.condition, h.metric, arrow(h.expected_direction), str(h.estimate.n),
                         "not recorded: run written before steerability was; rerun to get it", "—", "—"])
            continue
        ties = f" ({s.ties} tie{'s' * (s.ties != 1)})" if s.ties else ""
        rows.append([h.task, h.condition, h.metric, arrow(h.expected_direction), str(s.n),
                     f"{s.wrong_way}/{s.n}{ties}",
                     Estimate(s.share, s.share_ci_low, s.share_ci_high, signed=False),
                     Estimate(s.sd, s.sd_ci_low, s.sd_ci_high, signed=False,
                              note="no interval: every prompt moved alike" if s.n > 1 and s.sd == 0 else "")])
    return rows


def effect_rows(run: RunResult, headlines: bool = True) -> list[list[Cell]]:
    """One row of EFFECT_COLUMNS per effect; headline metrics are starred (or left out)."""
    return [
        [e.task, e.condition, ("★ " if e.headline else "") + e.metric, arrow(e.expected_direction),
         n_text(e.estimate, e.n_excluded),
         f"{num(e.estimate.mean_a)} → {num(e.estimate.mean_b)}", estimate(e.estimate),
         num(e.estimate.effect_size, signed=True), pval(e.p_adjusted),
         verdict(e.expected_direction, e.estimate.point, e.significant)]
        for e in run.effects
        if headlines or not e.headline
    ]


def fluency_rows(run: RunResult) -> list[list[Cell]]:
    """One row of FLUENCY_COLUMNS per task and steered condition."""
    return [
        [f.task, f.condition, f.judge, str(f.estimate.n),
         f"{num(f.estimate.mean_a)} → {num(f.estimate.mean_b)}",
         estimate(f.estimate), pval(f.p_adjusted),
         num(f.ppl_ratio) + "×"]
        for f in run.fluency_cost
    ]


def ledger_text(run: RunResult, task: str, condition: str) -> str:
    """`L5.resid: prompt 4.0 pos/sample (norm 12.3)`: what the steering hooks did, per site and pass."""
    parts = [f"{r.site} {r.kind} {r.positions_per_sample:.1f} pos/sample (norm {num(r.mean_norm)})"
             for r in run.ledger if (r.task, r.condition) == (task, condition) and r.positions]
    return "; ".join(parts) if parts else "—"


def sample_rows(run: RunResult) -> list[list[Cell]]:
    """One row of SAMPLE_COLUMNS per task and condition: counts and the steering ledger."""
    return [[c.task, c.condition, str(c.samples), str(c.flagged), str(c.empty), str(c.unscorable),
             ledger_text(run, c.task, c.condition) if c.condition != "unsteered" else ""]
            for c in run.counts]


def control_rows(run: RunResult) -> list[list[Cell]]:
    """One row of CONTROL_COLUMNS per controlled condition and metric."""
    effects: dict[tuple[str, str, str], EffectRecord | FluencyRecord] = dict(_effects(run))
    effects |= {(f.task, f.condition, f.metric): f for f in run.fluency_cost}
    rows: list[list[Cell]] = []
    keys = list(dict.fromkeys((c.task, c.condition, c.metric) for c in run.controls))
    for task, condition, metric in keys:
        checks = {c.kind: c for c in run.controls
                  if (c.task, c.condition, c.metric) == (task, condition, metric)}
        e, s, d = effects.get((task, condition, metric)), checks.get("specific"), checks.get("direction")
        rows.append([
            task, condition, ("★ " if s and s.headline or d and d.headline else "") + metric,
            arrow((s or d).expected_direction), estimate(e.estimate if e else None),
            estimate(s.estimate if s else None), pval(s.p_adjusted) if s else "—",
            estimate(d.estimate if d else None), pval(d.p_adjusted) if d else "—",
            (d.label or "") if d else ""])
    return rows


DIAGNOSE_COLUMNS = ["task", "condition", "mean KL [95% CI]", "p95 KL [95% CI]", "Δ logppl neutral [95% CI]",
                    "capability acc", "Δ acc [95% CI]", "Δ log P(answer) [95% CI]"]
DIAGNOSE_LEGEND = ("off-target cost on {n} neutral tweets: per-token KL(unsteered ‖ steered) of the "
                   "next-token distributions, its 95th percentile over tokens, and Δ log-perplexity of the "
                   "text; capability retention on {items} cloze items (those the unsteered "
                   "SmolLM2-135M-Instruct answers right: another model's unsteered accuracy says how many "
                   "it does); CIs over texts and items")


def diagnose_rows(run: RunResult) -> list[list[Cell]]:
    """One row of DIAGNOSE_COLUMNS per diagnosed condition: off-target cost and capability."""
    caps = {(c.task, c.condition): c for c in run.capability}
    rows: list[list[Cell]] = []
    for o in run.off_target:
        c = caps.get((o.task, o.condition))
        rows.append([o.task, o.condition,
                     Estimate(o.mean_kl, o.mean_kl_ci_low, o.mean_kl_ci_high, signed=False),
                     Estimate(o.p95_kl, o.p95_kl_ci_low, o.p95_kl_ci_high, signed=False),
                     Estimate(o.delta_logppl, o.delta_logppl_ci_low, o.delta_logppl_ci_high),
                     f"{c.accuracy_unsteered:.0%} → {c.accuracy_steered:.0%}" if c else "—",
                     Estimate(c.accuracy_diff, c.accuracy_ci_low, c.accuracy_ci_high) if c else "—",
                     Estimate(c.logprob_diff, c.logprob_ci_low, c.logprob_ci_high) if c else "—"])
    return rows


def diagnose_legend(run: RunResult) -> str:
    n = run.off_target[0].n_texts if run.off_target else 0
    items = run.capability[0].n_items if run.capability else 0
    return DIAGNOSE_LEGEND.format(n=n, items=items)


TOPIC_COLUMNS = ["task", "condition", "topic-word share", "texts", "perplexity ratio [95% CI]"]


def topic_rows(run: RunResult) -> list[list[Cell]]:
    """The perplexity ratio of texts by their share of topic words (the ActAdd paper's picture)."""
    return [[t.task, t.condition, t.bin, str(t.n),
             Estimate(t.ratio, t.ratio_ci_low, t.ratio_ci_high, signed=False)] for t in run.topic_ratio]
