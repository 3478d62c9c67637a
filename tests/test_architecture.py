"""The layout shows the data flow: every module imports only its own layer or those below it, no
module imports itself back through others, and the schema layer validates tasks without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "harness"
# Lowest first. A module may import modules of its own layer and of the layers before it.
LAYERS = [
    ["harness.errors", "harness.version", "harness.schema"],
    ["harness.stats", "harness.power", "harness.comparison", "harness.comparable"],
    ["harness.registry"],
    ["harness.prompt_files", "harness.dataset_rows", "harness.tasks"],
    ["harness.gguf_cache", "harness.models", "harness.tokens", "harness.vectors"],
    ["harness.steering"],
    ["harness.methods"],
    ["harness.sampling", "harness.engine"],
    ["harness.scorers", "harness.neutral_text", "harness.offtarget", "harness.topic_ratio",
     "harness.capability"],
    ["harness.store"],
    ["harness.pipeline.pool", "harness.pipeline.plan", "harness.pipeline.generate", "harness.pipeline.score",
     "harness.pipeline.analyse", "harness.pipeline.diagnose"],
    ["harness.report.cells", "harness.report.tables", "harness.report.plots", "harness.report.markdown",
     "harness.report.html", "harness.report.io", "harness.report.terminal",
     "harness.report.offtarget_plots"],
    ["harness.pipeline.write"],
    ["harness.distributed", "harness.runner"],
    ["harness.sweep", "harness.sweep_analysis", "harness.compare", "harness.baseline", "harness.check",
     "harness.plan_power",
     "harness.bench_figures",
     "harness.bench_suite", "harness.bench_scale", "harness.bench"],
    ["harness.report.compare_report", "harness.report.check_report", "harness.report.sweep_report",
     "harness.report.bench_report"],
    ["harness.api", "harness.pytest_plugin"],
    ["harness.commands", "harness.vector_commands", "harness.cli", "harness.__main__", "harness"],
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def layer(module: str) -> int:
    """The layer of a module: its longest matching prefix in LAYERS."""
    best, found = -1, None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            # the root package is only itself
            inside = module.startswith(prefix + ".") and prefix != "harness"
            if (module == prefix or inside) and len(prefix) > best:
                best, found = len(prefix), i
    if found is None:
        raise AssertionError(f"{module} is in no layer of tests/test_architecture.py")
    return found


def imports(module: str) -> set[str]:
    """The harness modules `module` imports, at the top or inside functions (not those imported
    for type checking only)."""
    tree = ast.parse(MODULES[module].read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for n in ast.walk(block)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            names = [f"{node.module}.{a.name}" for a in node.names]
            out |= {n for n in names if n in MODULES} or {node.module}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("harness")}
    return {m for m in out if m in MODULES and m != module}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_layer_and_those_below(module):
    upward = {m: layer(m) for m in imports(module) if layer(m) > layer(module)}
    assert not upward, f"{module} (layer {layer(module)}) imports modules above it: {upward}"


def test_no_import_cycles():
    graph = {m: imports(m) for m in MODULES}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(n):], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_validating_every_bundled_task_never_imports_torch():
    code = ("import sys, glob; from harness.tasks import validate, tasks_dir; "
            "files = sorted(map(str, tasks_dir().rglob('*.yaml'))); problems = validate(files); "
            "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'scipy') if m in sys.modules); "
            "print(len(files), problems, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[] []"), out
    assert int(out.split()[0]) >= 9


def test_importing_the_schema_layer_imports_nothing_heavy():
    code = "import sys, harness.schema; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('torch', 'transformers', 'numpy', 'scipy')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"
