"""The HTML report: one self-contained file (inline CSS, plots as data: URIs, no scripts)."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from html import escape

from harness.report.cells import (
    MOVED,
    NOT_SIG,
    WRONG,
    Cell,
    Estimate,
    Mark,
    ci_text,
    judge_ratings,
    num,
    text,
)
from harness.report.markdown import Pair, conditions_of, headline_metric, side_by_side
from harness.report.plots import distribution_plot, effects_plot, fluency_plot
from harness.report.tables import (
    CI_LEGEND,
    CONTROL_COLUMNS,
    CONTROL_LEGEND,
    DIAGNOSE_COLUMNS,
    EFFECT_COLUMNS,
    FLUENCY_COLUMNS,
    HEADLINE_COLUMNS,
    N_LEGEND,
    SAMPLE_COLUMNS,
    SAMPLE_LEGEND,
    STEER_COLUMNS,
    STEER_LEGEND,
    TOPIC_COLUMNS,
    control_rows,
    diagnose_legend,
    diagnose_rows,
    effect_rows,
    fluency_rows,
    headline_rows,
    sample_rows,
    steer_rows,
    topic_rows,
)
from harness.schema.results import RunResult, SampleRecord, TaskInfo

HTML_SAMPLES = 10
MAX_SURPRISAL = 10.0  # nats at which a token's shading is full
_VERDICTS = {
    MOVED: ("ok", "✓ as expected"),
    WRONG: ("bad", "✗ wrong direction"),
    NOT_SIG: ("ns", "– not significant"),
    "↑": ("dir", "↑ significant"),
    "↓": ("dir", "↓ significant"),
}
CSS = """
:root{--ink:#1f2430;--muted:#667085;--line:#e4e7ec;--bg:#f5f6f8;--accent:#e4572e;--ok:#1e8e3e;
--bad:#d62828;--ns:#98a2b3}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.5 system-ui,
-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:1280px;margin:0 auto;padding:24px}
header{background:#1f2430;color:#fff;border-radius:12px;padding:20px 24px;margin-bottom:16px}
header h1{margin:0 0 6px;font-size:22px}header .target{color:#ffb199}
.meta{display:flex;flex-wrap:wrap;gap:6px 18px;color:#cfd4dc;font-size:13px}.meta b{color:#fff}
.chip{display:inline-block;background:#343b4b;border-radius:10px;padding:0 8px;margin-right:4px}
nav{margin:10px 0 0;font-size:13px}nav a{color:#ffb199;margin-right:14px;text-decoration:none}
section{background:#fff;border:1px solid var(--line);border-radius:12px;
padding:16px 20px;margin:16px 0}
h2{margin:0 0 12px;font-size:18px}h3{margin:22px 0 6px;font-size:16px}
.note{background:#fff7e6;border-left:4px solid #f0a500;padding:6px 10px;margin:8px 0 0;
color:#5c4400;border-radius:4px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th{text-align:left;background:#f0f2f5;font-weight:600;padding:6px 8px;
border-bottom:2px solid var(--line);white-space:nowrap}
td{padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
tr:nth-child(even) td{background:#fafbfc}
td.num{white-space:nowrap}.ci{display:block;color:var(--muted);font-size:11.5px}
.badge{display:inline-block;border-radius:10px;padding:1px 9px;font-weight:600;white-space:nowrap;
font-size:12px}
.badge.ok{background:#e3f4e8;color:var(--ok)}.badge.bad{background:#fde5e5;color:var(--bad)}
.badge.ns{background:#f0f2f5;color:#667085}.badge.dir{background:#fff4d6;color:#8a6100}
.badge.flag{background:#fff1c2;color:#7a5200}
.legend{color:var(--muted);font-size:12px;margin:8px 0 0}
figure{margin:12px 0}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
figcaption{color:var(--muted);font-size:12px;text-align:center}
.samples td{width:33%}.samples td.prompt{width:22%;color:#344054;background:#f7f8fa}
.completion{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,SFMono-Regular,Menlo,
Consolas,monospace;font-size:12.5px;line-height:1.6}
.tok{border-radius:2px}
.scores{color:var(--muted);font-size:11.5px;margin-top:4px}
td.flagged{outline:2px dashed #f0a500;outline-offset:-3px}
.idx{color:var(--muted);font-size:11px;display:block;margin-top:4px}
.scale{display:inline-block;width:180px;height:12px;vertical-align:middle;border-radius:3px;
margin:0 6px;background:linear-gradient(90deg,rgba(255,140,0,0),rgba(255,140,0,.85))}
details{margin:4px 0 8px;color:var(--muted);font-size:12px}pre{margin:4px 0;white-space:pre-wrap}
"""


def figure_html(data: bytes, alt: str, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _cell(cell: Cell) -> str:
    """A table cell: verdicts as badges, an estimate with its CI small below."""
    if isinstance(cell, Mark) and cell.symbol in _VERDICTS:
        cls, words = _VERDICTS[cell.symbol]
        return f'<td><span class="badge {cls}">{escape(words)}</span></td>'
    if isinstance(cell, Estimate) and cell.value is not None and not cell.note:
        return (f'<td class="num">{escape(num(cell.value, signed=cell.signed))}'
                f'<span class="ci">{escape(ci_text(cell.low, cell.high, cell.signed))}</span></td>')
    return f"<td>{escape(text(cell))}</td>"


def table_html(columns: list[str], rows: list[list[Cell]]) -> str:
    if not rows:
        return '<p class="legend">none</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(_cell(c) for c in row) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _tokens(s: SampleRecord, token_texts: dict[str, list[str]] | None) -> str:
    """The completion, each token shaded by its surprisal when texts and log-probs line up."""
    texts = (token_texts or {}).get(s.key)
    lps = s.token_logprobs
    if not texts or lps is None or not len(texts) == len(lps) == len(s.token_ids):
        return escape(s.completion)
    spans = []
    for token, lp in zip(texts, lps, strict=True):
        surprisal = -lp if math.isfinite(lp) else math.inf
        alpha = min(surprisal / MAX_SURPRISAL, 1.0) * 0.85
        tip = (
            f"surprisal {num(surprisal)} nats (p = {math.exp(lp):.3g})"
            if math.isfinite(lp)
            else "surprisal: non-finite log-prob"
        )
        spans.append(
            f'<span class="tok" style="background:rgba(255,140,0,{alpha:.2f})" '
            f'title="{escape(tip)}">{escape(token)}</span>'
        )
    return "".join(spans)


def _completion(
    s: SampleRecord | None, metric: str | None, token_texts: dict[str, list[str]] | None
) -> str:
    if s is None:
        return "<td></td>"
    shown = [m for m in (metric, "perplexity.logppl") if m and m in s.scores]
    scores = " · ".join(f"{escape(m)} = {escape(num(s.scores[m]))}" for m in shown)
    flag = f'<span class="badge flag">⚠ flagged: {escape(s.flagged)}</span> ' if s.flagged else ""
    body = _tokens(s, token_texts) or '<span class="legend">(empty)</span>'
    return (
        f'<td class="{"flagged" if s.flagged else ""}"><div class="completion">{body}</div>'
        f'<div class="scores">{flag}{scores}</div>{_judged(s)}</td>'
    )


def _judged(s: SampleRecord) -> str:
    """A judge's three ratings of the sample, its raw replies one click away."""
    ratings = judge_ratings(s)
    if not ratings:
        return ""
    shown = " · ".join(f"{escape(m)} = {escape(num(v))}" for m, v in ratings)
    replies = "".join(f"<b>{escape(m)}</b><pre>{escape(r)}</pre>" for m, r in s.replies.items())
    raw = f"<details><summary>judge reply</summary>{replies}</details>" if replies else ""
    return f'<div class="scores">{shown}</div>{raw}'


def _sample_table(
    pairs: list[Pair],
    conditions: list[str],
    metric: str | None,
    token_texts: dict[str, list[str]] | None,
) -> str:
    head = "<th>prompt</th>" + "".join(f"<th>{escape(c)}</th>" for c in conditions)
    rows = []
    for p in pairs:
        prompt = (
            f'<td class="prompt">{escape(p.prompt)}'
            f'<span class="idx">prompt #{p.prompt_index} · sample {p.sample}</span></td>'
        )
        cells = "".join(_completion(p.by_condition.get(c), metric, token_texts) for c in conditions)
        rows.append(f"<tr>{prompt}{cells}</tr>")
    return (
        f'<div class="scroll"><table class="samples"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _task(
    run: RunResult,
    info: TaskInfo,
    samples: Sequence[SampleRecord],
    token_texts: dict[str, list[str]] | None,
) -> str:
    mine = [s for s in samples if s.task == info.name]
    metric = headline_metric(run, info.name)
    flagged = sum(1 for s in mine if s.flagged)
    parts = [
        f'<h3 id="task-{escape(info.name)}">{escape(info.name)} '
        f'<span class="legend">{escape(info.kind)} · {info.n_prompts} prompts · '
        f"{len(mine)} samples{f' · {flagged} flagged' if flagged else ''}</span></h3>"
    ]
    if info.description:
        parts.append(f"<p>{escape(info.description)}</p>")
    for name, steering in info.conditions.items():
        parts.append(
            f"<details><summary>steering of <b>{escape(name)}</b></summary>"
            f"<pre>{escape(json.dumps(steering, indent=1, default=str))}</pre></details>"
        )
    if not mine:
        return "".join([*parts, '<p class="legend">no samples in this run folder</p>'])
    parts.append(
        figure_html(
            distribution_plot(samples, info.name, metric,
                              next((f.metric for f in run.fluency_cost if f.task == info.name), None)),
            f"score distributions of {info.name}",
            "Per-sample scores; box = quartiles, diamond = mean, flagged samples left out.",
        )
    )
    pairs = side_by_side(samples, info.name, HTML_SAMPLES)
    total = len({(s.prompt_index, s.sample) for s in mine})
    parts.append(
        f'<p class="legend">{len(pairs)} of {total} prompt × sample pairs '
        "(the full set is in samples.jsonl)</p>"
    )
    parts.append(_sample_table(pairs, conditions_of(samples, info.name), metric, token_texts))
    return "".join(parts)


def _topic(run: RunResult) -> str:
    """The perplexity ratio by topic-word share: its table and, per condition, its plot."""
    if not run.topic_ratio:
        return ""
    from harness.report.offtarget_plots import perplexity_ratio_plot

    figures = ""
    for task, condition in dict.fromkeys((t.task, t.condition) for t in run.topic_ratio):
        mine = [t for t in run.topic_ratio if (t.task, t.condition) == (task, condition)]
        caption = ("Steered / unsteered perplexity of texts by their share of topic words; below 1 the "
                   "steering makes them likelier (ActAdd paper, Fig. 4).")
        plot = perplexity_ratio_plot(mine, f"{task} · {condition}")
        figures += figure_html(plot, "perplexity ratio", caption)
    table = table_html(TOPIC_COLUMNS, topic_rows(run))
    return f"<h3>Perplexity ratio by topic-word share</h3>{table}{figures}"


def _header(run: RunResult) -> str:
    model = run.model
    versions = "".join(
        f'<span class="chip">{escape(k)} {escape(v)}</span>' for k, v in run.versions.items()
    )
    meta = [
        f"<b>model</b> {escape(str(model.get('name', '?')))}",
        f"<b>sha256</b> {escape(str(model.get('sha256', '?'))[:12])}",
        f"<b>dtype</b> {escape(str(model.get('dtype', '?')))}",
        f"<b>config</b> {escape(run.config_hash)}",
        f"<b>run</b> {escape(run.started)} → {escape(run.finished)}",
        f"<b>flagged samples</b> {run.flagged_samples}",
    ]
    notes = "".join(f'<div class="note">{escape(n)}</div>' for n in run.notes)
    links = "".join(
        f'<a href="#{i}">{t}</a>'
        for i, t in (
            ("headline", "Headline"),
            ("plots", "Plots"),
            ("effects", "All effects"),
            ("fluency", "Fluency"),
            ("samples", "Samples"),
        )
    )
    return (
        f'<header><h1>Steering evaluation <span class="target">'
        f"{escape(str(run.config.get('target', '')))}</span></h1>"
        f'<div class="meta">{"".join(f"<span>{m}</span>" for m in meta)}</div>'
        f'<div class="meta" style="margin-top:6px">{versions}</div>{notes}'
        f"<nav>{links}</nav></header>"
    )


def render_html(
    run: RunResult, samples: Sequence[SampleRecord], token_texts: dict[str, list[str]] | None = None
) -> str:
    """The whole run as one self-contained HTML page."""
    legend = (
        '<p class="legend">↑/↓ = expected direction. Verdicts use Holm-adjusted p &lt; 0.05; '
        f"CIs are {escape(CI_LEGEND)}; Hedges g is nan below 3 prompts. "
        "Δ logppl &gt; 0 means the steered completions are less fluent under the judge. "
        f"{escape(N_LEGEND)}.</p>"
    )
    shading = (
        '<p class="legend">Completion tokens are shaded by their surprisal −log p under the judge '
        f'(steering off): 0<span class="scale"></span>≥ {MAX_SURPRISAL:g} nats. Hover a token for '
        "its value. Plain text means no per-token log-probs lined up with the tokens. Dashed "
        "cells are flagged samples, left out of the statistics.</p>"
    )
    tasks = "".join(_task(run, info, samples, token_texts) for info in run.tasks)
    body = [
        _header(run),
        '<section id="headline"><h2>Headline effects</h2>'
        f"{table_html(HEADLINE_COLUMNS, headline_rows(run))}"
        f"{legend}</section>",
        ('<section id="steerability"><h2>Steerability: prompts moved the wrong way</h2>'
         f'{table_html(STEER_COLUMNS, steer_rows(run))}<p class="legend">{escape(STEER_LEGEND)}</p>'
         "</section>" if steer_rows(run) else ""),
        '<section id="plots"><h2>Plots</h2>'
        + figure_html(
            effects_plot(run),
            "forest plot of effects",
            "Every effect with its 95% CI; one panel per metric in its own units.",
        )
        + figure_html(fluency_plot(run), "fluency cost", "Change of mean log-perplexity under the judge.")
        + "</section>",
        ('<section id="controls"><h2>Is it the direction? Matched controls</h2>'
         f'{table_html(CONTROL_COLUMNS, control_rows(run))}<p class="legend">{escape(CONTROL_LEGEND)}</p>'
         "</section>" if run.controls else ""),
        ('<section id="offtarget"><h2>Off-target cost and capability retention</h2>'
         f"{table_html(DIAGNOSE_COLUMNS, diagnose_rows(run))}"
         f'<p class="legend">{escape(diagnose_legend(run))}</p>'
         f"{_topic(run)}</section>" if run.off_target else ""),
        f'<section id="effects"><h2>All effects</h2><p class="legend">★ = headline metric.</p>'
        f"{table_html(EFFECT_COLUMNS, effect_rows(run))}</section>",
        '<section id="fluency"><h2>Fluency cost</h2>'
        f"{table_html(FLUENCY_COLUMNS, fluency_rows(run))}</section>",
        '<section id="ledger"><h2>Samples and steering ledger</h2>'
        f'<p class="legend">{escape(SAMPLE_LEGEND)}</p>'
        f"{table_html(SAMPLE_COLUMNS, sample_rows(run))}</section>",
        f'<section id="samples"><h2>Samples</h2>{shading}{tasks}</section>',
    ]
    title = escape(f"Steering report: {run.config.get('target', '')}")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )
