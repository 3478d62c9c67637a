"""`harness vector inspect | convert | export`: read any tool's vector file, write it as another's."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.commands import run_options
from harness.errors import UserError


def cmd_vector(args: argparse.Namespace) -> int:
    """`harness vector inspect | convert | export`: read any tool's vector file, write it as another's."""
    from harness.vectors import convert, describe, read_vectors

    if args.action == "convert":
        vs = convert(Path(args.source), Path(args.target), model_hint=args.model_hint, feature=args.feature)
        print(f"wrote {args.target}: {vs.format} -> {Path(args.target).suffix}, layers {vs.layers}")
        return 0
    if args.action == "export":
        return _export(args)
    vs = read_vectors(Path(args.source), feature=args.feature)
    hint = f", model hint {vs.model_hint}" if vs.model_hint else ""
    print(f"{args.source}: {vs.format}, point {vs.point}, operator {vs.operator}, "
          f"coefficient {vs.coefficient:g}{hint}")
    for note in vs.notes:
        print(f"  {note}")
    scale = _residual_norms(args.model) if args.model else None
    for row in describe(vs):
        layer, norm = int(row["layer"]), float(row["norm"])
        relative = f"  = {norm / scale[layer]:.3f} x the mean residual norm ({scale[layer]:.1f})" \
            if scale and 0 <= layer < len(scale) else ""
        print(f"  layer {layer:>3}: norm {norm:.4g}{relative}")
    return 0


def _residual_norms(model: str) -> list[float]:
    from harness.diagnostics.neutral_text import neutral_texts
    from harness.models import load_model
    from harness.models.tokens import encode
    from harness.steering.capture import residual_norms

    lm = load_model(model)
    return residual_norms(lm.model, [encode(lm.tokenizer, t) for t in neutral_texts(32)])


def _export(args: argparse.Namespace) -> int:
    """The vectors of a task's steering (or of a run's condition, e.g. a sweep's best config)."""
    from harness.api import build_steering, steering_to_vectors
    from harness.models import DEFAULT_MODEL, load_model
    from harness.runner import resolve_tasks
    from harness.store import read_run
    from harness.vectors import write_gguf, write_lm_eval, write_safetensors

    lm = load_model(args.model or DEFAULT_MODEL)
    source = Path(args.source)
    if (source / "run.json").is_file() or source.name == "run.json":
        run, _ = read_run(source)
        if not args.condition:
            raise UserError(f"{source} is a run: name the condition to export with --condition")
        info = next((info for info in run.tasks if args.condition in info.conditions), None)
        if info is None:
            raise UserError(f"{source}: no condition {args.condition!r}")
        spec = info.conditions[args.condition]
        steering = build_steering(lm, {k: v for k, v in spec.items() if k != "sweep"})
        use_bos = run.config["tasks"][info.name]["generation"].get("use_bos", True)
    else:
        (task,) = resolve_tasks(args.source, run_options(args))
        steering = build_steering(lm, task.spec.steering, task.spec.generation)
        use_bos = task.spec.generation.use_bos
    target = Path(args.target)
    formats = {".gguf": "gguf-control-vector", ".pt": "lm-eval-steered", ".pth": "lm-eval-steered"}
    vs = steering_to_vectors(steering, formats.get(target.suffix, "harness"), use_bos=use_bos)
    if target.suffix == ".gguf":
        write_gguf(vs, target, model_hint=args.model_hint or lm.model.config.model_type)
    elif target.suffix in (".pt", ".pth"):
        write_lm_eval(vs, target)
    elif target.suffix == ".safetensors":
        write_safetensors(vs, target)
    else:
        raise UserError(f"{target}: write .gguf (llama.cpp control vector), .pt (lm-eval steered) or "
                        ".safetensors")
    print(f"wrote {target}: layers {vs.layers}")
    return 0
