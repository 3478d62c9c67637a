"""Plugins are real: a small package with its own pyproject and a `harness.plugins` entry point,
installed into a temporary folder, adds a method and a scorer that `methods`, `validate`, `run`,
`sweep` and `compare` use with no change to the harness; modules that are not installed come in
with `--plugin MODULE` or the `HARNESS_PLUGINS` environment variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import save_tiny_model

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]  # PEP 621 metadata; built without isolation
build-backend = "setuptools.build_meta"

[project]
name = "harness-toy-plugin"
version = "0.1.0"

[project.entry-points."harness.plugins"]
toy = "harness_toy"
"""

PLUGIN = '''
"""A toy plugin: a method (alpha x the first axis at every position, at block `depth`; a sweep sets
those two fields, as it declares) and a scorer (share of capital letters)."""
from typing import ClassVar, Literal

from harness.registry import register_method, register_scorer
from harness.schema.spec import Spec
from harness.schema.steering import MethodSpec
from harness.scorers.base import BaseScorer, Score, unscorable


class ToySpec(MethodSpec):
    """A toy: alpha along the first axis."""

    method: Literal["toy"]
    depth: int
    alpha: float
    sweep_axes: ClassVar = ("depth", "alpha")


def build(lm, spec, settings):
    import torch

    from harness.steering.base import Intervention, Steering

    vector = torch.zeros(lm.model.config.hidden_size)
    vector[0] = spec.alpha
    return Steering((Intervention(spec.depth, vector, "resid", "all"),))


register_method(ToySpec, build)


class CapsParams(Spec):
    """No parameters."""


@register_scorer
class CapsScorer(BaseScorer):
    """`caps`: the share of letters that are capitals."""

    name = "caps"
    metrics = ("share",)
    Params = CapsParams

    def score(self, samples, ctx):
        out = []
        for s in samples:
            letters = [c for c in s.completion if c.isalpha()]
            out.append(Score({"share": sum(c.isupper() for c in letters) / len(letters)}) if letters
                       else unscorable(self.metrics, "no letters"))
        return out
'''

TASK = """\
name: toy_task
kind: topic
prompts: ["I love the way", "The tower", "We talked about", "To see the"]
steering: {method: toy, depth: 1, alpha: 30}
generation: {max_new_tokens: 4, greedy: true}
samples: 1
scorers: {caps: {}, perplexity: {}}
metrics: {caps.share: increase}
headline: caps.share
"""


def _harness(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The toy plugin package built and installed (pip, no dependencies) into its own folder."""
    root = tmp_path_factory.mktemp("plugin")
    package = root / "src"
    (package / "harness_toy").mkdir(parents=True)
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "harness_toy" / "__init__.py").write_text(PLUGIN)
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(package)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return root, env


def test_an_installed_plugin_package_runs_through_every_command(installed, tmp_path):
    root, env = installed
    model = save_tiny_model("llama", tmp_path / "model")
    task = tmp_path / "toy.yaml"
    task.write_text(TASK)
    listed = _harness("methods", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "method toy: A toy: alpha along the first axis." in listed.stdout
    assert "sweep axes: depth (layer) × alpha (strength)" in listed.stdout
    assert "scorer caps: metrics caps.share" in listed.stdout
    assert _harness("validate", str(task), env=env, cwd=tmp_path).returncode == 0
    for out, coeff in (("a", "30"), ("b", "60")):
        ran = _harness("run", str(task), "--model", str(model), "--out", str(tmp_path / out),
                       "--set", f"steering.alpha={coeff}", env=env, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
    swept = _harness("sweep", str(task), "--model", str(model), "--layers", "1,2", "--coeffs", "10,40",
                     "--out", str(tmp_path / "s"), env=env, cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    compared = _harness("compare", str(tmp_path / "a"), str(tmp_path / "b"), f"{tmp_path / 's'}:L2 c+40",
                        "--json", env=env, cwd=tmp_path)
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    assert [r["condition"] for r in result["runs"]] == ["steered", "steered", "L2 c+40"]
    config = json.loads((tmp_path / "s" / "run.json").read_text())["tasks"][0]["conditions"]["L2 c+40"]
    assert (config["depth"], config["alpha"]) == (2, 40)  # the sweep set the fields the method declares
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["tasks"][0]["conditions"]["steered"]["method"] == "toy"
    assert {h["metric"] for h in run["headlines"]} == {"caps.share"}
    assert run["ledger"] and all(r["site"] == "L1.resid" for r in run["ledger"])


def test_without_the_package_the_task_names_the_unknown_method(installed, tmp_path):
    _, env = installed
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    task = tmp_path / "toy.yaml"
    task.write_text(TASK)
    result = _harness("validate", str(task), env=bare, cwd=tmp_path)
    assert result.returncode == 2
    assert "toy" in result.stderr


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_module_that_is_not_installed_comes_in_by_flag_or_environment(tmp_path, how):
    (tmp_path / "loose_toy.py").write_text(PLUGIN)
    env = {k: v for k, v in os.environ.items() if k != "HARNESS_PLUGINS"}
    env["PYTHONPATH"] = str(tmp_path)
    args = ["--plugin", "loose_toy", "methods"] if how == "flag" else ["methods"]
    if how == "environment":
        env["HARNESS_PLUGINS"] = "loose_toy"
    result = _harness(*args, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "method toy:" in result.stdout and "scorer caps:" in result.stdout
    plain = _harness("methods", env={k: v for k, v in env.items() if k != "HARNESS_PLUGINS"}, cwd=tmp_path)
    assert "method toy:" not in plain.stdout


def test_a_plugin_module_that_cannot_be_imported_is_a_clear_error(tmp_path):
    result = _harness("--plugin", "no_such_plugin_module", "methods", env=dict(os.environ), cwd=tmp_path)
    assert result.returncode == 2
    assert "plugin module 'no_such_plugin_module' (from --plugin) cannot be imported" in result.stderr
