"""The `harness` command: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence

from harness.errors import UserError

Command = Callable[[argparse.Namespace], int]


def _cmd_generate(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.engine import UNSTEERED, GenerationSettings, generate
    from harness.models import load_model
    from harness.steering.actadd import Addition, build_actadd

    additions = [Addition.parse(a) for a in args.add]
    lm = load_model(args.model, dtype=args.dtype)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, greedy=args.greedy, use_bos=not args.no_bos
    )
    conditions = {UNSTEERED: None}
    if additions:
        conditions["steered"] = build_actadd(lm, additions, use_bos=not args.no_bos)
    gens = generate(lm, args.prompt, conditions, settings, samples=args.n, seed=args.seed)
    if args.json:
        records = [
            {"condition": g.row.condition, "prompt": g.row.prompt, "sample": g.row.sample,
             "seed": g.row.seed, "completion": g.completion, "token_ids": g.token_ids}
            for g in gens
        ]
        print(json.dumps(records, indent=2))
        return 0
    table = Table("Unsteered", "Steered", title="Completions", show_lines=True)
    by_key = {(g.row.prompt, g.row.sample, g.row.condition): g for g in gens}
    for prompt in args.prompt:
        for s in range(args.n):
            cells = [by_key.get((prompt, s, c)) for c in (UNSTEERED, "steered")]
            table.add_row(*(f"[bold]{prompt}[/bold]{g.completion}" if g else "" for g in cells))
    Console().print(table)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.models import load_model
    from harness.report.terminal import print_results
    from harness.runner import resolve_tasks, run

    options = _run_options(args)
    out = Path(args.out or f"runs/{Path(args.target).stem}")
    tasks = resolve_tasks(args.target, options)  # a bad task file fails before the model loads
    lm = load_model(args.model, dtype=args.dtype)
    result = run(args.target, out, model=lm, options=options, tasks=tasks)
    print_results(result)
    print(f"wrote {out / 'run.json'}, {out / 'samples.jsonl'}, {out / 'report.md'}, {out / 'report.html'}")
    return 0


def _run_options(args: argparse.Namespace):  # noqa: ANN202 (RunOptions; imported lazily)
    from harness.runner import RunOptions

    return RunOptions(samples=args.samples, max_new_tokens=args.max_new_tokens, seed=args.seed,
                      max_prompts=args.max_prompts, overrides=args.set or (),
                      batch_size=args.batch_size, method=args.method)


def _numbers(text: str, kind: type) -> tuple:  # noqa: ANN001
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"bad list {text!r}: expected comma-separated {kind.__name__}s, e.g. 2,4,6") from None


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.models import load_model
    from harness.report.io import read_run
    from harness.report.sweep_report import print_sweep, write_sweep_reports
    from harness.runner import resolve_tasks
    from harness.sweep import SweepGrid, run_sweep
    from harness.sweep_analysis import summarize_sweep
    from harness.tasks import is_suite

    grid = SweepGrid(_numbers(args.layers, int), _numbers(args.coeffs, float), args.coeff_unit)
    options = _run_options(args)
    if is_suite(args.task):
        raise UserError(f"sweep takes one task, not the suite '{args.task}'")
    (task,) = resolve_tasks(args.task, options)
    out = Path(args.out or f"runs/sweep-{task.name}")
    lm = load_model(args.model, dtype=args.dtype)
    run_sweep(task, out, lm, grid, options)
    run, samples = read_run(out)
    budget = args.max_fluency_cost if args.max_fluency_cost is not None else task.spec.max_fluency_cost
    summary = summarize_sweep(run, samples, task.name, max_fluency_cost=budget, select_on=args.select_on,
                              seed=task.spec.seed)
    write_sweep_reports(summary, out)
    print_sweep(summary)
    print(f"wrote {out / 'sweep.md'}, {out / 'sweep.html'}, {out / 'sweep.json'}, {out / 'run.json'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.report.html import render_html
    from harness.report.io import read_run
    from harness.report.markdown import render_markdown
    from harness.report.terminal import print_results
    from harness.store import atomic_write_text

    run, samples = read_run(Path(args.run))
    print_results(run)
    if args.md:
        atomic_write_text(Path(args.md), render_markdown(run, samples))
    if args.html:
        atomic_write_text(Path(args.html), render_html(run, samples))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.scorers import make_scorer
    from harness.scorers.base import Sample, ScoringContext
    from harness.store import read_jsonl

    rows = read_jsonl(Path(args.samples))
    samples = [Sample(r.get("prompt", ""), r["completion"], r.get("condition", ""),
                      meta={k: r[k] for k in ("target", "original", "group") if k in r}) for r in rows]
    scorer = make_scorer(args.scorer, json.loads(args.params))
    lm = None
    if args.scorer in ("perplexity", "fact"):
        from harness.models import load_model

        lm = load_model(args.model, dtype=args.dtype)
    ctx = ScoringContext(lm=lm, load_judge=lambda name: lm if name is None else load_model(name))
    for row, score in zip(rows, scorer.score(samples, ctx), strict=True):
        print(json.dumps({**row, "scores": score.values, "reasons": score.reasons}))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.check import Tolerance, compare, lines_as_json, print_check, read_baseline
    from harness.report.io import read_run

    baseline = read_baseline(Path(args.baseline))
    run, _ = read_run(Path(args.run))
    tolerance = Tolerance(effect=args.effect_tolerance, fluency=args.fluency_tolerance)
    floors = {"min_effect": args.min_effect, "max_fluency_cost": args.max_fluency_cost}
    status, lines, reasons = compare(run, baseline, tolerance, floors)
    if args.json:
        print(lines_as_json(status, lines, reasons))
    else:
        print_check(status, lines, reasons)
    return status


def _cmd_baseline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.check import write_baseline
    from harness.report.io import read_run

    run, _ = read_run(Path(args.run))
    write_baseline(run, Path(args.to))
    print(f"wrote baseline {args.to}")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="embedded name, local path or cached HF id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0)


def _add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, help="samples per prompt and condition")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--max-prompts", type=int, help="use only the first N prompts of each task")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--method", help="steer with the task's `methods:` entry of this name "
                   "(e.g. mean_diff, prompting) instead of its `steering:`")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a task field, e.g. steering.layer=4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="steered vs unsteered completions side by side")
    gen.add_argument("--prompt", action="append", required=True, help="prompt (repeatable)")
    gen.add_argument("--add", action="append", default=[], metavar="LAYER:COEFF:TEXT",
                     help="ActAdd term, e.g. 6:+4:Love (repeatable)")
    gen.add_argument("-n", type=int, default=3, help="samples per prompt and condition")
    gen.add_argument("--max-new-tokens", type=int, default=40)
    gen.add_argument("--greedy", action="store_true")
    gen.add_argument("--no-bos", action="store_true", help="do not prepend BOS to prompts")
    gen.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    _add_model_args(gen)
    gen.set_defaults(func=_cmd_generate)

    run = sub.add_parser("run", help="run a task or suite: samples, scores, effects, reports")
    run.add_argument("target", help="task or suite name (e.g. quick, love_hate) or a YAML path")
    run.add_argument("--out", help="run folder (default runs/TARGET); rerun to resume")
    _add_task_args(run)
    _add_model_args(run)
    run.set_defaults(func=_cmd_run, seed=None)

    swp = sub.add_parser("sweep", help="run a task over layers x coefficients; curves and frontier")
    swp.add_argument("task", help="task name or YAML path")
    swp.add_argument("--layers", required=True, help="comma-separated layers, e.g. 2,4,6")
    swp.add_argument("--coeffs", required=True, help="comma-separated coefficients, e.g. -8,-4,0,4,8")
    swp.add_argument("--coeff-unit", choices=["raw", "norm"], default="raw",
                     help="norm: multiples of the mean residual norm at the layer")
    swp.add_argument("--select-on", choices=["all", "half"], default="all",
                     help="half: pick the best config on half the prompts, report it on the other")
    swp.add_argument("--max-fluency-cost", type=float,
                     help="fluency budget (Δ log-perplexity) for the best config")
    swp.add_argument("--out", help="run folder (default runs/sweep-TASK); rerun to resume")
    _add_task_args(swp)
    _add_model_args(swp)
    swp.set_defaults(func=_cmd_sweep, seed=None)

    rep = sub.add_parser("report", help="print and re-render the reports of a run")
    rep.add_argument("run", help="run.json or its folder")
    rep.add_argument("--html", help="write the HTML report here")
    rep.add_argument("--md", help="write the Markdown report here")
    rep.set_defaults(func=_cmd_report)

    score = sub.add_parser("score", help="score JSONL samples ({prompt, completion}) with a scorer")
    score.add_argument("samples", help="JSONL file, one {prompt, completion} object per line")
    score.add_argument("--scorer", required=True)
    score.add_argument("--params", default="{}", help="scorer parameters as JSON")
    _add_model_args(score)
    score.set_defaults(func=_cmd_score)
    chk = sub.add_parser("check", help="compare a run with a baseline; exit 1 on regression")
    chk.add_argument("run", help="run.json or its folder")
    chk.add_argument("--baseline", required=True)
    chk.add_argument("--effect-tolerance", type=float, default=0.25,
                     help="fraction of the baseline effect a significant shrink must exceed")
    chk.add_argument("--fluency-tolerance", type=float, default=0.15,
                     help="nats of log-perplexity a significant fluency-cost growth must exceed")
    chk.add_argument("--min-effect", type=float, help="absolute floor of the headline effect")
    chk.add_argument("--max-fluency-cost", type=float, help="absolute ceiling of the fluency cost")
    chk.add_argument("--json", action="store_true")
    chk.set_defaults(func=_cmd_check)

    base = sub.add_parser("baseline", help="write a baseline from a run")
    base.add_argument("run", help="run.json or its folder")
    base.add_argument("--to", required=True, help="baseline JSON to write")
    base.set_defaults(func=_cmd_baseline)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _join_lists(argv: Sequence[str]) -> list[str]:
    """`--coeffs -8,-4,0` as `--coeffs=-8,-4,0`: argparse reads a leading '-' as an option."""
    out = list(argv)
    for i in range(len(out) - 1):
        if out[i] in ("--coeffs", "--layers"):
            out[i : i + 2] = [f"{out[i]}={out[i + 1]}", ""]
    return [a for a in out if a != ""]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_join_lists(sys.argv[1:] if argv is None else argv))
    func: Command = args.func
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM unwinds like Ctrl-C: locks and hooks released
    try:
        return func(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished samples are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
