"""The layout shows the data flow: every module imports only its own layer or those below it, no
module imports itself back through others, and the schema layer validates tasks without torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "harness"
ARCHITECTURE = ROOT.parent / "ARCHITECTURE.md"


def read_layers(text: str) -> list[list[str]]:
    """The layer table of ARCHITECTURE.md, lowest first: per row, the modules and packages its
    modules column names in backticks (`schema/` is a package, `__init__` the root package); what a
    package holds, in parentheses after it, is documentation."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ")]
    layers = []
    for cells in rows[1:]:  # the header row first
        names = re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cells[2]))  # (what a package holds)
        layers.append(["harness" if n == "__init__" else "harness." + n.rstrip("/").replace("/", ".")
                       for n in names])
    return layers


LAYERS = read_layers(ARCHITECTURE.read_text(encoding="utf-8"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def layer(module: str) -> int:
    """The layer of a module: its longest matching name in LAYERS."""
    best, found = -1, None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            # the root package is only itself
            inside = module.startswith(prefix + ".") and prefix != "harness"
            if (module == prefix or inside) and len(prefix) > best:
                best, found = len(prefix), i
    if found is None:
        raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md's layer table")
    return found


_LOADERS = ("importlib.import_module", "import_module", "__import__")


def imports_in(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The harness modules that `source` (the text of `module`) imports: absolute and relative
    imports, at the top or inside functions, and `importlib` loads of a literal name or of an
    f-string whose fixed start names a harness package; not those for type checking only."""
    tree = ast.parse(source)
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
                   for n in ast.walk(block)}
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            names = {f"{base}.{a.name}" for a in node.names}
            found |= (names & known) or {base}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.Call) and ast.unparse(node.func) in _LOADERS and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                found.add(str(arg.values[0].value).rstrip("."))
    return {m for m in found if m.startswith("harness") and m in known and m != module}


def imports(module: str) -> set[str]:
    path = MODULES[module]
    return imports_in(path.read_text(), module, path.name == "__init__.py", set(MODULES))


def test_the_import_reader_sees_relative_imports_and_importlib_loads():
    source = ("import importlib\nfrom .. import engine\nfrom ..report import html\nfrom .base import x\n"
              "importlib.import_module('harness.cli')\nimportlib.import_module(f'harness.methods.{n}')\n"
              "__import__('harness.api')\n")
    known = {"harness.engine", "harness.report.html", "harness.pipeline.base", "harness.cli",
             "harness.methods", "harness.api", "harness.pipeline"}
    assert imports_in(source, "harness.pipeline.score", False, known) == known - {"harness.pipeline"}


def test_the_layer_table_is_read_from_architecture_md():
    assert LAYERS[0] == ["harness.errors", "harness.version", "harness.schema"]
    assert LAYERS[1] == ["harness.stats"]
    assert "harness.cli" in LAYERS[-1] and "harness" in LAYERS[-1]
    assert layer("harness.pipeline.write") > layer("harness.report.html") > layer("harness.pipeline.plan")


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


def test_public_names_stay_what_they_name_after_every_module_is_imported():
    """`harness.check` is the function even after `import harness.analyses.check`: no subpackage
    or module of the root package shares a public name (importing one would shadow the name)."""
    import importlib

    import harness

    for module in MODULES:
        if not module.endswith("__main__"):
            importlib.import_module(module)
    for name, target in harness._PUBLIC.items():
        module, _, attribute = target.partition(":")
        assert getattr(harness, name) is getattr(importlib.import_module(module), attribute), name
