"""The `harness` command: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence

from harness import registry
from harness.cli import commands, vector_commands
from harness.errors import UserError

Command = Callable[[argparse.Namespace], int]


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="embedded name, local path or cached HF id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the CPU, or the rank's device under "
                   "accelerate launch)")
    p.add_argument("--device-map", help="e.g. auto: spread a model too large for one device over the GPUs "
                   "and CPU (single process; under accelerate launch each process holds a whole copy)")


def _add_task_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, help="samples per prompt and condition")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--max-prompts", type=int, help="use only the first N prompts of each task")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--method", help="steer with the task's `methods:` entry of this name "
                   "(a registered method, see `harness methods`) instead of its `steering:`; "
                   "--set then applies to it")
    p.add_argument("--controls", metavar="random=R,negated",
                   help="matched controls for every steered condition: R random vectors of the same norm per "
                   "layer and/or the negated vector; reports specific effects and direction checks")
    p.add_argument("--diagnose", action="store_true",
                   help="also measure off-target cost (KL on 200 neutral texts) and capability retention "
                   "(cloze items) of every steered condition; on whenever --controls is given")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a task field, e.g. steering.layer=4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import this module's methods and scorers (repeatable; installed plugins "
                        "and the HARNESS_PLUGINS environment variable need no flag)")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="steered vs unsteered completions side by side")
    gen.add_argument("--prompt", action="append",
                     help="prompt (repeatable; default with --task: the task's prompts)")
    gen.add_argument("--add", action="append", default=[], metavar="LAYER:COEFF:TEXT",
                     help="ActAdd term, e.g. 6:+4:Love (repeatable)")
    gen.add_argument("--task", help="steer with this task's steering; decode with its generation settings")
    gen.add_argument("--method", help="with --task: its `methods:` entry of this name; alone: this "
                     "registered method, its fields given with --set steering.FIELD=VALUE")
    gen.add_argument("--vector", metavar="FILE",
                     help="steer with a vector file of any tool (see `harness vector`)")
    gen.add_argument("--layer", type=int,
                     help="with --vector: the file's layer to use (default: all it holds)")
    gen.add_argument("--coeff", type=float, help="with --vector: the coefficient (default 1)")
    gen.add_argument("--set", action="append", metavar="FIELD=VALUE",
                     help="override a field: steering.layer=4, generation.top_p=0.9 (repeatable)")
    gen.add_argument("-n", type=int, default=3, help="samples per prompt and condition")
    gen.add_argument("--max-new-tokens", type=int, help="default: the task's, else 40")
    gen.add_argument("--greedy", action="store_true",
                     help="plain greedy decoding (no repetition penalty unless --repetition-penalty)")
    gen.add_argument("--repetition-penalty", type=float,
                     help="CTRL penalty on the prompt's and completion's tokens (default: 1.2 when sampling, "
                     "1.0 with --greedy)")
    gen.add_argument("--no-bos", action="store_true", help="do not prepend BOS to prompts")
    gen.add_argument("--json", action="store_true",
                     help="print the model, every generation setting and the completions as JSON")
    _add_model_args(gen)
    gen.set_defaults(func=commands.cmd_generate)

    run = sub.add_parser("run", help="run a task or suite: samples, scores, effects, reports")
    run.add_argument("target", help="task or suite name (e.g. quick, love_hate) or a YAML path")
    run.add_argument("--out", help="run folder (default runs/TARGET); rerun to resume")
    run.add_argument("--judge", metavar="MODEL | URL::MODEL",
                     help="rate concept tasks with an LLM judge (AxBench rubric; headline: its harmonic "
                     "mean): a model name or path, in process (e.g. smollm2-135m), or an OpenAI-compatible "
                     "endpoint and model, e.g. http://localhost:8000/v1::qwen")
    run.add_argument("--judge-key-env", metavar="VAR",
                     help="the NAME of the environment variable holding the served judge's API key (only "
                     "the name is recorded)")
    run.add_argument("--judge-mode", choices=["parse", "expected"],
                     help="parse the rating from the reply (default) or, in process, the expected rating "
                     "from the rating tokens' probabilities")
    _add_task_args(run)
    _add_model_args(run)
    run.set_defaults(func=commands.cmd_run, seed=None)

    swp = sub.add_parser("sweep", help="run a task over layers x coefficients; curves and frontier")
    swp.add_argument("task", help="task name or YAML path")
    swp.add_argument("--layers", required=True, help="comma-separated layers, e.g. 2,4,6")
    swp.add_argument("--coeffs", required=True, help="comma-separated coefficients, e.g. -8,-4,0,4,8")
    swp.add_argument("--coeff-unit", choices=["raw", "norm", "kl"], default="raw",
                     help="norm: multiples of the mean residual norm at the layer; kl: the strength whose "
                     "95th-percentile per-token KL on neutral text is |c| nats (sign = direction)")
    swp.add_argument("--select-on", choices=["all", "half"], default="all",
                     help="half: pick the best config on half the prompts, report it on the other")
    swp.add_argument("--max-fluency-cost", type=float,
                     help="fluency budget (Δ log-perplexity) for the best config")
    swp.add_argument("--out", help="run folder (default runs/sweep-TASK); rerun to resume")
    _add_task_args(swp)
    _add_model_args(swp)
    swp.set_defaults(func=commands.cmd_sweep, seed=None)

    rep = sub.add_parser("report", help="print and re-render the reports of a run")
    rep.add_argument("run", help="run.json or its folder")
    rep.add_argument("--html", help="write the HTML report here")
    rep.add_argument("--md", help="write the Markdown report here")
    rep.set_defaults(func=commands.cmd_report)

    score = sub.add_parser("score", help="score JSONL samples ({prompt, completion}) with a scorer")
    score.add_argument("samples", help="JSONL file, one {prompt, completion} object per line")
    score.add_argument("--scorer", required=True)
    score.add_argument("--params", default="{}", help="scorer parameters as JSON")
    score.add_argument("--no-bos", action="store_true", help="prompts were generated without a BOS token")
    _add_model_args(score)
    score.set_defaults(func=commands.cmd_score)
    chk = sub.add_parser("check", help="compare a run with a baseline: exit 0 holds, 1 regression, "
                         "2 incomparable, 3 inconclusive, 4 the check failed (a bug)")
    chk.add_argument("run", help="run.json or its folder")
    chk.add_argument("--baseline", required=True)
    chk.add_argument("--effect-tolerance", type=float, default=0.25,
                     help="fraction of the baseline effect a significant shrink must exceed")
    chk.add_argument("--fluency-tolerance", type=float, default=0.15,
                     help="nats of log-perplexity a significant fluency-cost growth must exceed")
    chk.add_argument("--degenerate-tolerance", type=float, default=0.10,
                     help="share by which flagged or empty steered samples may exceed unsteered ones")
    chk.add_argument("--gate", choices=["effect", "specific"], default="effect",
                     help="specific: judge the headline's specific effect (vs matched random controls)")
    chk.add_argument("--min-coverage", type=float, default=0.8,
                     help="share of the prompts the baseline measured that need finite values on both "
                     "sides before a line may hold (else inconclusive)")
    chk.add_argument("--allow-inconclusive", action="store_true",
                     help="exit 0 when a line is inconclusive (too little evidence to show it held); "
                     "the line still says inconclusive")
    chk.add_argument("--min-effect", type=float, help="absolute floor of the headline effect")
    chk.add_argument("--max-fluency-cost", type=float, help="absolute ceiling of the fluency cost")
    chk.add_argument("--json", action="store_true")
    chk.add_argument("--markdown", metavar="FILE", help="also write the verdict with each line's coverage as "
                     "Markdown")
    chk.set_defaults(func=commands.cmd_check)

    cmp = sub.add_parser("compare", help="effects of several runs side by side, each vs the first")
    cmp.add_argument("runs", nargs="+", metavar="RUN[:CONDITION]",
                     help="run folders; the first is the reference; :CONDITION picks a sweep config")
    cmp.add_argument("--out", help="write compare.md, compare.html and compare.json here")
    cmp.add_argument("--json", action="store_true", help="print the comparison as JSON")
    cmp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation tests")
    cmp.set_defaults(func=commands.cmd_compare)

    bench = sub.add_parser("bench", help="speed of steering vs plain generation, side by side")
    bench.add_argument("--model", default="smollm2-135m", help="embedded name, local path or cached HF id")
    bench.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    bench.add_argument("--repeats", type=int, default=6,
                       help="interleaved timed rounds per figure: median and its 95%% interval (6 or more)")
    bench.add_argument("--batch-size", type=int, help="rows per batch (default: the engine's)")
    bench.add_argument("--max-new-tokens", type=int, default=32)
    bench.add_argument("--no-suite", action="store_true", help="skip the quick-suite wall time and RSS")
    bench.add_argument("--no-loads", action="store_true", help="skip the first/cached load times")
    bench.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 vs float32 figure")
    bench.add_argument("--no-scale", action="store_true", help="skip K-scaling and the sampler share")
    bench.add_argument("--device", default="cpu", help="cpu or cuda[:N]: where the model runs")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.set_defaults(func=commands.cmd_bench)

    vec = sub.add_parser("vector", help="inspect, convert or export steering vectors in any tool's format")
    vec.add_argument("action", choices=["inspect", "convert", "export"])
    vec.add_argument("source", help="a vector file (inspect, convert); a task, or a run folder with "
                     "--condition (export)")
    vec.add_argument("target", nargs="?", help="the file to write (convert, export): .gguf .pt .safetensors")
    vec.add_argument("--feature", type=int, help="the feature of an SAELens folder")
    vec.add_argument("--model-hint", help="controlvector.model_hint of a GGUF written (default: model type)")
    vec.add_argument("--condition", help="export: the run's condition (e.g. a sweep config 'L5 c+4')")
    vec.add_argument("--model", help="inspect: print norms as multiples of this model's residual norm; "
                     "export: the model the steering is built on (default smollm2-135m)")
    _add_task_args(vec)
    vec.set_defaults(func=vector_commands.cmd_vector, seed=None)

    pln = sub.add_parser("plan", help="power of a run: the minimum detectable effect of each headline, and "
                         "the prompts an effect would need")
    pln.add_argument("run", help="run.json or its folder")
    pln.add_argument("--effect", type=float, help="the effect size (in the metric's units) to plan for")
    pln.add_argument("--json", action="store_true")
    pln.set_defaults(func=commands.cmd_plan)

    agr = sub.add_parser("agreement", help="agreement of two metrics over the same samples of a run: the AUC "
                         "of one for the other when that one is binary (0/1), and Spearman's rho, with CIs")
    agr.add_argument("run", help="run.json or its folder, or a samples JSONL file (e.g. a run's "
                     "samples.jsonl rescored by `harness score`)")
    agr.add_argument("--a", required=True, metavar="METRIC", help="e.g. keywords.any")
    agr.add_argument("--b", required=True, metavar="METRIC", help="e.g. perplexity.logppl")
    agr.add_argument("--task", action="append", default=[],
                     help="only this task (repeatable; default: every task scoring both metrics)")
    agr.add_argument("--condition", action="append", default=[], help="only this condition (repeatable)")
    agr.add_argument("--seed", type=int, default=0, help="seed of the AUC's bootstrap")
    agr.add_argument("--json", action="store_true")
    agr.set_defaults(func=commands.cmd_agreement)

    val = sub.add_parser("validate", help="check task and suite files (schema, files, scorers, metrics) "
                         "without loading a model")
    val.add_argument("files", nargs="+", metavar="FILE", help="task or suite YAML files, or bundled names")
    val.set_defaults(func=commands.cmd_validate)

    met = sub.add_parser("methods", help="list the registered steering methods and scorers")
    met.set_defaults(func=commands.cmd_methods)

    base = sub.add_parser("baseline", help="write a baseline from a run")
    base.add_argument("run", help="run.json or its folder")
    base.add_argument("--to", required=True, help="baseline JSON to write")
    base.add_argument("--no-effect", action="store_true",
                      help="keep headlines whose effect is not established (not in the expected direction, "
                      "or not significant) as 'no effect to protect' (check then gates only their fluency, "
                      "degenerate samples and ledger); without it a wrong-way effect is refused and check "
                      "finds a non-significant one inconclusive")
    base.set_defaults(func=commands.cmd_baseline)
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
    # a command never downloads (models, classifiers, datasets, evaluate modules): offline while it
    # runs, unless the caller chose; the Python API leaves the environment to its caller
    offline = "HF_HUB_OFFLINE" not in os.environ
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        registry.add_plugins(args.plugin)
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
    finally:
        if offline:
            os.environ.pop("HF_HUB_OFFLINE", None)


if __name__ == "__main__":
    sys.exit(main())
