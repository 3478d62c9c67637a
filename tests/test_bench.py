"""`harness bench` on a tiny random model: all figures present and sane; nothing is timed."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from harness.bench import run_bench
from harness.bench_figures import BenchResult
from harness.commands import cmd_bench
from tests.conftest import save_tiny_model

TASK = """\
name: tiny_bench
kind: topic
prompts: ["I love the way", "The tower", "We talked about"]
steering: {method: actadd, layer: 1, coeff: 4, positive: love, negative: hate}
generation: {max_new_tokens: 4}
samples: 1
scorers:
  keywords: {words: [love, tower]}
  perplexity: {}
metrics: {keywords.rate: increase}
headline: keywords.rate
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model("llama", tmp_path_factory.mktemp("tiny_bench"))


def check_figures(result: BenchResult) -> None:
    for name, fig in result.figures().items():
        assert math.isfinite(fig.value), name
        if fig.unit == "x":
            assert 0 < fig.value < 100, name
            assert fig.numerator > 0 and fig.denominator > 0, name
        elif fig.unit == "share":
            assert 0 <= fig.value <= 1, name
        elif fig.unit == "nats":
            assert 0 <= fig.value < 100, name
        else:
            assert fig.value > 0, name
        assert (fig.met is None) == (fig.target is None), name


def test_bench_gives_every_figure_on_a_tiny_model(tiny_dir, tmp_path):
    task = tmp_path / "tiny_bench.yaml"
    task.write_text(TASK)
    result = run_bench(str(tiny_dir), repeats=1, max_new_tokens=3, suite_target=str(task))
    assert None not in dict(result).values(), [k for k, v in result if v is None]
    assert set(result.figures()) == {
        "steered_vs_plain", "unsteered_vs_plain", "sampled_vs_plain", "sweep_speedup",
        "perplexity_vs_forward", "bf16_vs_fp32", "bf16_max_abs_dlogprob", "bf16_mean_abs_dlogppl",
        "bf16_same_completions", "k4_vs_k1", "k16_vs_k1", "k64_vs_k1", "sampler_share_device",
        "sampler_share_host", "load_seconds_first", "load_seconds_cached", "peak_rss_mb",
        "quick_suite_seconds"}
    check_figures(result)
    assert result.unsteered_matches_plain  # greedy engine rows are exactly plain generate's
    assert result.model["source"] == str(tiny_dir.resolve())
    assert result.settings["batch_size"] == 8 and result.settings["kv_cache"]
    assert result.details["sweep_ms_per_step_batched"] > 0
    # every K-scaling batch made exactly 64 rows x 3 tokens: the ratios compare equal work
    assert [result.details[f"k{k}_tokens"] for k in (1, 4, 16, 64)] == [64 * 3] * 4
    assert result.details["sampler_device_ms_per_step"] > 0 and result.details["sampler_host_ms_per_step"] > 0
    assert 0 < result.sampler_share_device.value < 1 and 0 < result.sampler_share_host.value < 1
    assert result.settings["device"].startswith("cpu")


def test_bench_json_command_without_subprocesses(tiny_dir, capsys):
    args = argparse.Namespace(model=str(tiny_dir), dtype="float32", repeats=1, batch_size=3, max_new_tokens=2,
                              no_suite=True, no_loads=True, no_bf16=True, no_scale=False, device="cpu",
                              json=True)
    assert cmd_bench(args) == 0
    data = json.loads(capsys.readouterr().out)
    result = BenchResult.model_validate(data)
    check_figures(result)
    assert result.settings["batch_size"] == 3
    assert data["load_seconds_first"] is None and data["bf16_vs_fp32"] is None
    assert data["k64_vs_k1"]["target"] == 0.9 and data["sampler_share_device"]["at_most"] is True
    for name in ("steered_vs_plain", "unsteered_vs_plain", "sweep_speedup", "perplexity_vs_forward",
                 "k64_vs_k1"):
        assert set(data[name]) >= {"value", "numerator", "denominator", "raw_unit", "target", "met"}
