"""The report of `harness agreement`: a few lines of text, and a Markdown table of several
agreements (one row each) to publish."""

from __future__ import annotations

import math
from collections.abc import Sequence

from harness.analyses.agreement import Agreement
from harness.report.cells import Cell, Estimate, pval, text
from harness.report.markdown import table_md

FEW = 10  # below this many samples of a class the AUC's interval covers less than it claims
AGREEMENT_COLUMNS = ["tasks", "conditions", "a", "b", "samples (prompts)", "left out", "AUC [95% CI]",
                     "Spearman ρ [95% CI]"]
AGREEMENT_LEGEND = ("AUC = P(a positive sample of the binary metric scores higher on the other metric than "
                    "a negative one), ties counting one half: 0.5 = no agreement, 1 = perfect, below 0.5 = "
                    "the other way; its 95% CI by a stratified bootstrap (BCa), too narrow with under "
                    f"{FEW} samples of a class (it covered 0.87 with 3 positives on simulated binormal "
                    "scores). Spearman ρ over the same samples, 95% CI by Fisher's z (Bonett-Wright). Both "
                    "take samples as independent: the samples of one prompt are not, so the intervals are "
                    "too narrow when they agree within a prompt. Pooled over conditions, metrics the "
                    "steering moves together agree by that alone: the rows within each condition do not.")


def _auc(ag: Agreement) -> Cell:
    if ag.label is None or not math.isfinite(ag.auc):
        return ag.auc_note or "—"
    cell = Estimate(ag.auc, ag.auc_ci_low, ag.auc_ci_high, signed=False,
                    note="" if math.isfinite(ag.auc_ci_low) else "no interval: under 2 of a class")
    few = min(ag.n_positive, ag.n_negative)
    return cell if few >= FEW else f"{text(cell)}, only {few} {_minority(ag)}: too narrow"


def _minority(ag: Agreement) -> str:
    return "positive" if ag.n_positive <= ag.n_negative else "negative"


def _rho(ag: Agreement) -> Cell:
    if not math.isfinite(ag.spearman):
        return ag.spearman_note or "—"
    return Estimate(ag.spearman, ag.spearman_ci_low, ag.spearman_ci_high,
                    note="" if math.isfinite(ag.spearman_ci_low) else "no interval: under 4 samples")


def _excluded(ag: Agreement) -> str:
    return "; ".join(f"{k} {why}" for why, k in ag.excluded.items()) or "none"


def agreement_text(ag: Agreement) -> str:
    """The agreement of one pair of metrics, in plain text."""
    auc = (f"AUC of {ag.b if ag.label == ag.a else ag.a} for {ag.label} ({ag.n_positive} positive, "
           f"{ag.n_negative} negative): {text(_auc(ag))}" if ag.label else f"AUC: {ag.auc_note}")
    p = pval(ag.spearman_p)
    p = "" if not math.isfinite(ag.spearman) else f", p < {p[1:]}" if p.startswith("<") else f", p = {p}"
    rho = f"Spearman ρ: {text(_rho(ag))}{p}"
    return "\n".join([
        f"Agreement of {ag.b} with {ag.a}" + (f" · run {ag.run}" if ag.run else ""),
        f"tasks: {', '.join(ag.tasks)} · conditions: {', '.join(ag.conditions) or 'all'}",
        f"samples: {ag.n} of {ag.n_samples} used, from {ag.n_prompts} prompts; left out: {_excluded(ag)}",
        auc + (f" · {ag.auc_method}" if ag.label else ""),
        rho + (f" · {ag.spearman_method}" if math.isfinite(ag.spearman) else ""),
        *(["within each condition (pooled, metrics the steering moves together agree by that alone):"]
          if ag.within else []),
        *(f"  {c}: {w.n} samples · AUC {text(_auc(w))} · Spearman ρ {text(_rho(w))}"
          + "".join(f" · warning: {x}" for x in w.warnings if x not in ag.warnings)
          for c, w in ag.within.items()),
        *(f"warning: {x}" for x in ag.warnings),
        AGREEMENT_LEGEND,
    ]) + "\n"


def agreement_rows(agreements: Sequence[Agreement]) -> list[list[Cell]]:
    """Rows of AGREEMENT_COLUMNS: each agreement, then (when pooled) its agreement within each condition."""
    return [[", ".join(ag.tasks), ", ".join(ag.conditions) or "all", ag.a, ag.b,
             f"{ag.n} of {ag.n_samples} ({ag.n_prompts})", _excluded(ag), _auc(ag), _rho(ag)]
            for pooled in agreements for ag in (pooled, *pooled.within.values())]


def agreement_markdown(agreements: Sequence[Agreement]) -> str:
    """Several agreements as one Markdown table with its legend."""
    warnings = dict.fromkeys(x for pooled in agreements for ag in (pooled, *pooled.within.values())
                             for x in ag.warnings)
    return "\n".join([*table_md(AGREEMENT_COLUMNS, agreement_rows(agreements)), AGREEMENT_LEGEND,
                      *(f"\nWarning: {x}." for x in warnings)]) + "\n"

