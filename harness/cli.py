"""The `harness` command: parses arguments and calls the library, nothing more."""

from __future__ import annotations

import argparse
import json
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


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="embedded name, local path or cached HF id")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0)


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Command = args.func
    try:
        return func(args)
    except UserError as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
