"""`harness bench` figures measured in fresh processes (model load, the quick suite), and the
notes that explain the figures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.bench.figures import (
    CONFIDENCE,
    MIN_REPEATS,
    SWEEP_K,
    SWEEP_PROMPTS,
    TARGETS,
    BenchResult,
    measured,
)

_LOAD = ("import sys, time\nfrom harness.models import load_model\nstart = time.perf_counter()\n"
         "load_model(sys.argv[1], dtype=sys.argv[2])\nprint('LOAD_SECONDS', time.perf_counter() - start)\n")


def measure_suite(model: str, dtype: str, *, loads: bool, suite: bool, target: str = "quick",
                  extra_args: Sequence[str] = (), say: Callable[[str], None] = print,
                  notes: list[str] | None = None, repeats: int = MIN_REPEATS) -> dict[str, Any]:
    """First `load_model` seconds (in a fresh process, on an empty temporary model cache), cached
    ones (`repeats` fresh processes: their median and interval), then the wall seconds and peak RSS
    of `harness run TARGET` in a fresh process."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        env = {**os.environ, "HARNESS_CACHE": str(Path(tmp) / "cache")}
        if loads:
            say("model load in fresh processes: first (empty cache), then cached")
            out["load_seconds_first"] = measured([_load_seconds(model, dtype, env)], "s")
            cached = [_load_seconds(model, dtype, env) for _ in range(repeats)]
            out["load_seconds_cached"] = measured(cached, "s", TARGETS["load_seconds_cached"], at_most=True)
        if suite:
            say(f"harness run {target} in a fresh process")
            seconds, rss = run_in_process(
                [sys.executable, "-m", "harness", "run", target, "--out", str(Path(tmp) / "run"),
                 "--model", model, "--dtype", dtype, *extra_args], env, Path(tmp) / "suite.log")
            out["quick_suite_seconds"] = measured([seconds], "s")
            out["peak_rss_mb"] = measured([rss], "MB")
            if notes is not None and not loads:
                notes.append("the suite ran on an empty model cache: its time includes any GGUF conversion")
    return out


def _load_seconds(model: str, dtype: str, env: dict[str, str]) -> float:
    proc = subprocess.run([sys.executable, "-c", _LOAD, model, dtype], env=env, capture_output=True,
                          text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("LOAD_SECONDS "):
            return float(line.split()[1])
    raise RuntimeError(f"loading {model} in a fresh process failed:\n{proc.stderr[-2000:]}")


def run_in_process(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run `cmd`; its wall seconds and its own peak resident memory in MB (from wait4)."""
    with log.open("w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[1:])}` exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports kB


def explain(result: BenchResult) -> list[str]:
    """Notes: noisy conditions, each figure that misses its target or cannot be decided, with its
    interval and measurements and what is known to block it, and what bfloat16 does."""
    out = []
    d, threads = result.details, result.settings["threads"]
    if result.settings["load_average"] > 0.5:
        out.append(f"load average {result.settings['load_average']} when the bench started: other "
                   "processes shared the CPU, so the figures are noisy and their intervals wide")
    for name, fig in result.figures().items():
        if fig.verdict not in ("misses", "undecided"):
            continue
        bound = "at most" if fig.at_most else "at least"
        raw = f", {fig.numerator:.4g} / {fig.denominator:.4g} {fig.raw_unit}" if fig.raw_unit else ""
        if fig.low is None:
            out.append(f"{name} = {fig.value:.3g}{raw}: {fig.n} measurement(s) give no {CONFIDENCE:.0%} "
                       f"interval of the median (at least {MIN_REPEATS}: --repeats {MIN_REPEATS}), so "
                       f"whether it meets its target ({bound} {fig.target:g}) is undecided")
            continue
        measured_ = f"{fig.value:.3g} [{fig.low:.3g}, {fig.high:.3g}] (median of {fig.n}{raw})"
        if fig.verdict == "undecided":
            out.append(f"{name} = {measured_}: the {CONFIDENCE:.0%} interval holds the target ({bound} "
                       f"{fig.target:g}), so it neither meets nor misses it; more --repeats or a quieter "
                       "machine narrow it")
            continue
        line = f"{name} = {measured_} misses its target ({bound} {fig.target:g})"
        if name == "sweep_speedup" and d:
            seq, bat = d["sweep_ms_per_step_sequential"], d["sweep_ms_per_step_batched"]
            line += (f": a decode step of all {SWEEP_K * SWEEP_PROMPTS} rows takes {bat:.0f} ms, one of a "
                     f"single config's {SWEEP_PROMPTS} rows {seq:.0f} ms, so batching can save at most "
                     f"k x {seq:.0f} / {bat:.0f} = {SWEEP_K * seq / bat:.1f}; the batched run computes "
                     f"{d['sweep_batched_gflops']:.0f} GFLOP/s on {threads} threads")
        out.append(line)
    bf16, dlp = result.bf16_vs_fp32, result.bf16_max_abs_dlogprob
    if bf16 is not None and dlp is not None and bf16.value > 1.05:
        ppl, same = result.bf16_mean_abs_dlogppl, result.bf16_same_completions
        out.append(f"--dtype bfloat16 generates {bf16.value:.2f}x as fast here; it moves token log-probs "
                   f"by up to {dlp.value:.2f} nats (mean |Δ logppl| {ppl.value if ppl else 0:.3f}) and "
                   f"{same.value if same else 0:.0%} of greedy completions stay identical: fine for "
                   "exploring, keep float32 for baselines and regression checks")
    return out
