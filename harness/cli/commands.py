"""What each `harness` subcommand does: parse nothing, call the library, print results."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.errors import UserError


def cmd_generate(args: argparse.Namespace) -> int:
    """Completions unsteered and steered side by side: ActAdd terms (`--add`), a task's steering
    (`--task`, `--method`), any registered method (`--method` with `--set steering.FIELD=VALUE`) or
    a vector file (`--vector`). `--greedy` is plain greedy decoding unless a penalty is given;
    `--json` records every setting that determined the tokens."""
    from rich.console import Console
    from rich.table import Table

    from harness.api import build_steering
    from harness.engine import generate
    from harness.methods.actadd import Addition, build_actadd
    from harness.models import load_model
    from harness.schema.spec import STEERED, UNSTEERED

    spec, settings, task_prompts = generate_request(args)
    prompts = args.prompt or task_prompts
    if not prompts:
        raise UserError("give --prompt (repeatable), or --task to use the task's prompts")
    additions = [Addition.parse(a) for a in args.add]
    lm = load_model(args.model, dtype=args.dtype, device=args.device or "cpu", device_map=args.device_map)
    conditions = {UNSTEERED: None}
    if additions:
        conditions[STEERED] = build_actadd(lm, additions, use_bos=settings.use_bos)
    elif spec is not None:
        conditions[STEERED] = build_steering(lm, spec, settings)
    gens = generate(lm, prompts, conditions, settings, samples=args.n, seed=args.seed)
    if args.json:
        steering = {"add": list(args.add)} if additions else spec.model_dump(mode="json") if spec else None
        records = [
            {"condition": g.row.condition, "prompt": g.row.prompt, "sample": g.row.sample, "seed": g.row.seed,
             "completion": g.completion, "token_ids": g.token_ids, "flagged": g.flagged,
             "ledger": [e.model_dump() for e in g.ledger]}
            for g in gens
        ]
        print(json.dumps({"model": lm.identity(), "generation": settings.model_dump(mode="json"),
                          "samples": args.n, "seed": args.seed, "steering": steering,
                          "generations": records}, indent=2))
        return 0
    table = Table("Unsteered", "Steered", title="Completions", show_lines=True)
    by_key = {(g.row.prompt, g.row.sample, g.row.condition): g for g in gens}
    for prompt in prompts:
        for s in range(args.n):
            cells = [by_key.get((prompt, s, c)) for c in (UNSTEERED, STEERED)]
            table.add_row(*(f"[bold]{prompt}[/bold]{g.completion}" if g else "" for g in cells))
    Console().print(table)
    return 0


def generate_request(args: argparse.Namespace):  # noqa: ANN201 (spec, settings, prompts; lazy imports)
    """What `harness generate` steers with and how it decodes, from its flags: the task's steering
    and generation settings (`--task`, `--method` picking its `methods:` entry), or a method spec
    built from `--set steering.FIELD=VALUE` (`--method`, `--vector`); then `--set generation.*`,
    `--max-new-tokens`, `--greedy`, `--repetition-penalty` and `--no-bos` on top."""
    from harness import registry
    from harness.schema.generation import GenerationSettings
    from harness.tasks import apply_overrides, load_task

    sets = list(args.set or ())
    sources = [flag for flag, given in (("--add", args.add), ("--task", args.task),
                                        ("--vector", args.vector),
                                        ("--method", args.method and not args.task)) if given]
    if len(sources) > 1:
        raise UserError(f"give one steering: {' or '.join(sources)}, not several")
    if (args.layer is not None or args.coeff is not None) and not args.vector:
        raise UserError("--layer and --coeff go with --vector FILE")
    prompts: list[str] = []
    if args.task:
        task = load_task(args.task, sets, method=args.method)
        spec, generation, prompts = task.spec.steering, task.spec.generation, [p.text for p in task.prompts]
    else:
        raw: dict = {"steering": {}, "generation": {}}
        if args.vector:
            raw["steering"] = {"method": "vector_file", "path": args.vector, "layer": args.layer,
                               "coeff": 1.0 if args.coeff is None else args.coeff}
        elif args.method:
            raw["steering"] = {"method": args.method}
        raw = apply_overrides(raw, sets)
        if set(raw) - {"steering", "generation"}:
            raise UserError("without --task, --set takes steering.FIELD=VALUE and generation.FIELD=VALUE, "
                            f"not {', '.join(sorted(set(raw) - {'steering', 'generation'}))}")
        if raw["steering"] and "method" not in raw["steering"]:
            raise UserError("--set steering.FIELD=VALUE needs --method NAME (or --vector FILE)")
        generation = _validated(GenerationSettings, raw["generation"], "generation")
        spec = None
        if raw["steering"]:
            method = registry.method(str(raw["steering"]["method"]))
            spec = _validated(method.spec, raw["steering"], "steering")
            spec = spec.resolve(Path.cwd(), lambda field: "steering." + ".".join(field))
    update: dict[str, object] = {}
    if args.max_new_tokens is not None:
        update["max_new_tokens"] = args.max_new_tokens
    if args.greedy:
        update["greedy"] = True
        if not any(s.startswith("generation.repetition_penalty=") for s in sets):
            update["repetition_penalty"] = 1.0  # plain greedy: no penalty unless one is asked for
    if args.repetition_penalty is not None:
        update["repetition_penalty"] = args.repetition_penalty
    if args.no_bos:
        update["use_bos"] = False
    return spec, _validated(GenerationSettings, {**generation.model_dump(), **update}, "generation"), prompts


def _validated(model: type, data: dict, prefix: str):  # noqa: ANN202 (an instance of `model`)
    """`model.model_validate(data)`, or a UserError naming each bad field as `prefix.FIELD`."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise UserError("; ".join(f"{prefix}.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                  for e in err.errors())) from None


def cmd_run(args: argparse.Namespace) -> int:
    from harness.analyses.heldout import run_concepts
    from harness.distributed import is_main_process, model_device
    from harness.models import load_model
    from harness.report.heldout_report import heldout_markdown
    from harness.report.terminal import print_results
    from harness.runner import resolve_tasks, run
    from harness.tasks.concepts import judge_params, with_judge

    options = run_options(args)
    out = Path(args.out or f"runs/{Path(args.target).stem}")
    tasks = resolve_tasks(args.target, options)  # a bad task file fails before the model loads
    if (args.judge_key_env or args.judge_mode) and not args.judge:
        raise UserError("--judge-key-env and --judge-mode go with --judge")
    if args.judge:
        if not any(t.spec.kind == "concept" for t in tasks):
            raise UserError(f"--judge rates concept tasks, and {args.target} has none; to judge another "
                            "task, add the judge to its scorers")
        params = judge_params(args.judge, args.judge_key_env, args.judge_mode)
        tasks = [with_judge(t, params) for t in tasks]
    device = args.device or model_device()
    lm = load_model(args.model, dtype=args.dtype, device=device, device_map=args.device_map)
    if any(t.spec.concept for t in tasks):  # each method's strength chosen on half the prompts
        result, held = run_concepts(args.target, out, lm, options, tasks)
        if is_main_process():
            (out / "heldout.md").write_text(heldout_markdown(held))
            print(heldout_markdown(held))
    else:
        result = run(args.target, out, model=lm, options=options, tasks=tasks)
    if not is_main_process():  # under accelerate launch only the main process reports
        return 0
    print_results(result)
    print(f"wrote {out / 'run.json'}, {out / 'samples.jsonl'}, {out / 'report.md'}, {out / 'report.html'}")
    return 0


def run_options(args: argparse.Namespace):  # noqa: ANN201 (RunOptions; imported lazily)
    from harness.runner import RunOptions

    return RunOptions(samples=args.samples, max_new_tokens=args.max_new_tokens, seed=args.seed,
                      max_prompts=args.max_prompts, overrides=args.set or (),
                      batch_size=args.batch_size, method=args.method, controls=args.controls,
                      diagnose=args.diagnose)


def numbers(text: str, kind: type) -> tuple:  # noqa: ANN001
    try:
        return tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"bad list {text!r}: expected comma-separated {kind.__name__}s, e.g. 2,4,6") from None


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness.analyses.sweep import SweepGrid, run_sweep
    from harness.analyses.sweep_analysis import summarize_sweep
    from harness.distributed import is_main_process, model_device
    from harness.models import load_model
    from harness.report.sweep_report import print_sweep, write_sweep_reports
    from harness.runner import resolve_tasks
    from harness.store import read_run
    from harness.tasks import is_suite

    grid = SweepGrid(numbers(args.layers, int), numbers(args.coeffs, float), args.coeff_unit)
    options = run_options(args)
    if is_suite(args.task):
        raise UserError(f"sweep takes one task, not the suite '{args.task}'")
    (task,) = resolve_tasks(args.task, options)
    out = Path(args.out or f"runs/sweep-{task.name}")
    device = args.device or model_device()
    lm = load_model(args.model, dtype=args.dtype, device=device, device_map=args.device_map)
    run_sweep(task, out, lm, grid, options)
    if not is_main_process():  # under accelerate launch only the main process reports
        return 0
    run, samples = read_run(out)
    budget = args.max_fluency_cost if args.max_fluency_cost is not None else task.spec.max_fluency_cost
    summary = summarize_sweep(run, samples, task.name, max_fluency_cost=budget, select_on=args.select_on,
                              seed=task.spec.seed)
    write_sweep_reports(summary, out)
    print_sweep(summary)
    print(f"wrote {out / 'sweep.md'}, {out / 'sweep.html'}, {out / 'sweep.json'}, {out / 'run.json'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report.html import render_html
    from harness.report.markdown import render_markdown
    from harness.report.terminal import print_results
    from harness.store import atomic_write_text, read_run

    run, samples = read_run(Path(args.run))
    print_results(run)
    if args.md:
        atomic_write_text(Path(args.md), render_markdown(run, samples))
    if args.html:
        atomic_write_text(Path(args.html), render_html(run, samples))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """Score JSONL rows ({prompt, completion}, or samples.jsonl lines with their token ids); one
    strict-JSON line out per row (NaN as the string "NaN", with its reason). A row's scores, reasons
    and judge replies from other scorers are kept, this scorer's replaced: rescoring a run's
    samples.jsonl gives a file `harness agreement` reads."""
    from harness.pipeline.score import record_replies
    from harness.schema.spec import to_json
    from harness.scorers import make_scorer
    from harness.scorers.base import Sample, ScoringContext
    from harness.store import read_jsonl

    try:
        params = json.loads(args.params)
    except ValueError as err:
        raise UserError(f"--params is not JSON: {err}") from None
    scorer = make_scorer(args.scorer, params)
    rows = read_jsonl(Path(args.samples))
    for i, r in enumerate(rows, start=1):
        if not isinstance(r.get("completion"), str):
            raise UserError(f"{args.samples}:{i}: no string field 'completion' (fields: {', '.join(r)})")
        try:
            json.dumps(r, ensure_ascii=False).encode()
        except UnicodeEncodeError as err:
            raise UserError(f"{args.samples}:{i}: not valid Unicode ({err.reason}: a lone \\ud800-\\udfff "
                            "escape?)") from None
    samples = [Sample(r.get("prompt", ""), r["completion"], r.get("condition", ""),
                      tuple(r["prompt_ids"]) if "prompt_ids" in r else None,
                      tuple(r["token_ids"]) if "token_ids" in r else None,
                      {k: r[k] for k in ("target", "original", "group") if k in r}) for r in rows]
    pool = None
    if scorer.needs_model:
        from harness.models import load_model
        from harness.pipeline.pool import ModelPool

        pool = ModelPool(load_model(args.model, dtype=args.dtype))
    ctx = ScoringContext(lm=pool.lm if pool else None, load_judge=pool.judge if pool else None,
                         use_bos=not args.no_bos)
    scorer.preflight(ctx)
    mine = f"{args.scorer}."
    for row, score in zip(rows, scorer.score(samples, ctx), strict=True):
        new = {"scores": {f"{mine}{m}": v for m, v in score.values.items()},
               "reasons": score.record_reasons(args.scorer), "replies": record_replies(args.scorer, score)}
        kept = {field: {k: v for k, v in (row.get(field) or {}).items() if not k.startswith(mine)}
                for field in new}
        print(to_json({**row, **{field: kept[field] | new[field] for field in new}}))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 holds, 1 regression, 2 cannot compare (or bad input), 3 inconclusive, 4 the check
    itself failed: a bug in the harness is never read as a regression."""
    import traceback

    from harness.analyses.check import ERROR

    try:
        return _check(args)
    except (UserError, KeyboardInterrupt):
        raise
    except Exception:
        if args.debug:
            raise
        traceback.print_exc()
        print(f"error: harness check failed (a bug, not a verdict): exit {ERROR}", file=sys.stderr)
        return ERROR


def _check(args: argparse.Namespace) -> int:
    import math

    from pydantic import ValidationError

    from harness.analyses.baseline import read_baseline
    from harness.analyses.check import Tolerance, check
    from harness.report.check_report import check_markdown, print_check
    from harness.store import atomic_write_text, read_run

    baseline = read_baseline(Path(args.baseline))
    run, _ = read_run(Path(args.run))
    try:
        tolerance = Tolerance(effect=args.effect_tolerance, fluency=args.fluency_tolerance,
                              degenerate=args.degenerate_tolerance, min_coverage=args.min_coverage)
    except ValidationError as err:
        raise UserError(f"check tolerances: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}") from None
    floors = {"min_effect": args.min_effect, "max_fluency_cost": args.max_fluency_cost}
    for name, value in floors.items():
        if value is not None and not math.isfinite(value):
            raise UserError(f"--{name.replace('_', '-')} {value}: not a finite number")
    result = check(run, baseline, tolerance, floors, allow_inconclusive=args.allow_inconclusive,
                   gate=args.gate)
    if args.markdown:
        atomic_write_text(Path(args.markdown), check_markdown(result))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_check(result)
    return result.status


def cmd_baseline(args: argparse.Namespace) -> int:
    from harness.analyses.baseline import unestablished, write_baseline
    from harness.store import read_run

    run, _ = read_run(Path(args.run))
    baseline = write_baseline(run, Path(args.to), no_effect=args.no_effect)
    unprotected = [f"{task} {c}" for task, conditions in baseline.no_effect.items() for c in conditions]
    note = f" (no effect to protect: {', '.join(unprotected)})" if unprotected else ""
    print(f"wrote baseline {args.to}{note}")
    weak = [f"{h.task} {h.condition} (p = {h.estimate.p_value:.3g})" for h in baseline.headlines
            if unestablished(h) and h.condition not in baseline.no_effect.get(h.task, [])]
    if weak:
        print(f"note: not significant in this run: {', '.join(weak)}; check will find their effect lines "
              "inconclusive (exit 3): write the baseline with --no-effect, or from a run with more prompts")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.analyses.compare import compare_runs
    from harness.report.compare_report import print_compare, write_compare

    result = compare_runs(args.runs, seed=args.seed)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_compare(result)
    if args.out:
        written = write_compare(result, Path(args.out))
        print(f"wrote {', '.join(map(str, written))}")
    return 0


def cmd_agreement(args: argparse.Namespace) -> int:
    """Agreement of two metrics over the same samples of a run."""
    from harness.analyses.agreement import agreement
    from harness.report.agreement_report import agreement_text

    result = agreement(args.run, args.a, args.b, tasks=args.task, conditions=args.condition, seed=args.seed)
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print(agreement_text(result), end="")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Per headline of a run: the minimum detectable effect at 80 % power, and the prompts an effect
    needs."""
    from harness.analyses.plan_power import power_lines
    from harness.store import read_run

    run, _ = read_run(Path(args.run))
    lines = power_lines(run, args.effect)
    if args.json:
        print("[" + ",\n".join(line.model_dump_json() for line in lines) + "]")
        return 0
    for line in lines:
        need = ""
        if line.effect is not None:
            need = (f"; an effect of {line.effect:+g} needs {line.prompts_needed} prompts"
                    if line.prompts_needed else f"; an effect of {line.effect:+g} cannot be planned")
        print(f"{line.task} · {line.condition} · {line.metric}: {line.n} prompts, paired SD {line.sd:.3g}, "
              f"observed {line.observed:+.3g}; minimum detectable effect at 80 % power "
              f"{_mde_text(line.mde)} (one test), {_mde_text(line.mde_family)} in its Holm family of "
              f"{line.family} (its test needs at least {line.min_prompts} prompts){need}")
    return 0


def _mde_text(mde: float) -> str:
    import math

    return f"{mde:.3g}" if math.isfinite(mde) else "none (too few prompts for the test to reach α)"


def cmd_validate(args: argparse.Namespace) -> int:
    """Check task and suite files without loading a model (or torch): exit 2 on any problem."""
    import time

    from harness.tasks import validate

    start = time.perf_counter()
    problems = validate(args.files)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    ok = len(args.files) - len(problems)
    print(f"{ok} of {len(args.files)} file(s) valid in {time.perf_counter() - start:.2f} s")
    return 2 if problems else 0


def cmd_methods(args: argparse.Namespace) -> int:
    """The registered steering methods and scorers, with their parameters (built from the registry)."""
    from harness import registry

    for name, entry in sorted(registry.methods().items()):
        fields = ", ".join(f for f in entry.spec.model_fields if f != "method")
        axes = entry.spec.sweep_axes
        sweep = f"{axes[0]} (layer) × {axes[1]} (strength)" if axes else "none (not sweepable)"
        print(f"method {name}: {entry.summary}\n    fields: {fields}\n    sweep axes: {sweep}")
    for name, cls in sorted(registry.scorers().items()):
        fields = ", ".join(cls.Params.model_fields) or "none"
        print(f"scorer {name}: metrics {', '.join(f'{name}.{m}' for m in cls.metrics)}; params: {fields}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """`harness bench [--model M] [--dtype D] [--repeats N] [--batch-size B] [--max-new-tokens T]
    [--no-suite] [--no-loads] [--no-bf16] [--json]`."""
    from harness.bench import run_bench
    from harness.report.bench_report import print_bench

    if args.repeats < 1:
        raise UserError("--repeats must be at least 1")
    result = run_bench(args.model, repeats=args.repeats, batch_size=args.batch_size,
                       max_new_tokens=args.max_new_tokens, dtype=args.dtype, compare_bf16=not args.no_bf16,
                       loads=not args.no_loads, suite=not args.no_suite, device=args.device,
                       scale=not args.no_scale,
                       progress=lambda msg: print(f"bench: {msg}", file=sys.stderr))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        print_bench(result)
    return 0
