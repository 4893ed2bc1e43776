"""The layout's rules, read off the import graph of the source (every import statement, those inside functions
included): no import cycles; orthrus_core never imports harness; nothing imports the CLI that drives it; the
report stage never imports torch or the runner, directly or through what it imports; and no function is longer
than a screen."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "orthrus_core")
REPORT_MODULES = sorted(
    f"harness.report.{p.stem}" for p in (ROOT / "harness" / "report").glob("*.py") if p.stem != "__init__"
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py")) if p.is_file()
}


def imports(name: str) -> tuple[set[str], set[str]]:
    """(project modules `name` imports, top-level names of the other packages it imports). `from pkg import
    x` counts as importing pkg.x where that is a module, else pkg."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    project, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module for a in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                project.add(next(t for t in (target, target.rpartition(".")[0]) if t in MODULES))
            else:
                external.add(target.split(".")[0])
    return project - {name}, external


GRAPH = {name: imports(name) for name in MODULES}


def with_parents(name: str) -> list[str]:
    """A module and the packages above it: importing it runs their __init__ too."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def closure(start: str) -> set[str]:
    seen, todo = set(), with_parents(start)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [p for target in GRAPH[name][0] for p in with_parents(target)]
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_every_import():
    """The rules below see what the source imports, lazy imports inside functions included."""
    runner, runner_external = GRAPH["harness.run.runner"]
    assert {"harness.store", "harness.records", "harness.run.spec", "harness.methods"} <= runner
    assert "torch" in runner_external and "harness.progress" in runner
    assert "tqdm" in GRAPH["harness.progress"][1]  # imported inside the reporter's methods
    assert "harness.suites.data" in GRAPH["harness.cli"][0]  # inside usage_errors()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_there_are_no_import_cycles():
    assert cycles({name: project for name, (project, _) in GRAPH.items()}) == []


def test_orthrus_core_never_imports_harness():
    offending = {
        name: sorted(t for t in project if t.startswith("harness"))
        for name, (project, _) in GRAPH.items()
        if name.startswith("orthrus_core")
    }
    assert {name: targets for name, targets in offending.items() if targets} == {}


def test_only_the_cli_imports_the_cli():
    importers = [name for name, (project, _) in GRAPH.items() if "harness.cli" in {t[:11] for t in project}]
    assert all(name.startswith("harness.cli") for name in importers), importers


@pytest.mark.parametrize("module", REPORT_MODULES)
def test_the_report_stage_never_imports_torch_or_the_runner(module):
    reached = closure(module)
    assert "harness.run.runner" not in reached
    assert sorted(name for name in reached if "torch" in GRAPH[name][1]) == []


def test_a_report_renders_without_torch_in_the_process():
    """The same at run time, where third-party imports count too."""
    code = ";".join([*(f"import {m}" for m in REPORT_MODULES), "import sys", "print('torch' in sys.modules)"])
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def drafter_modules() -> set[str]:
    """The modules that define a drafter: orthrus_core.loop's Drafter or a class derived from it, however far."""
    bases = {name: [] for name in MODULES if name.startswith("orthrus_core")}
    for name in bases:
        for node in ast.walk(ast.parse(MODULES[name].read_text())):
            if isinstance(node, ast.ClassDef):
                bases[name].append(
                    (node.name, {getattr(b, "id", getattr(b, "attr", None)) for b in node.bases})
                )
    drafters, found = {"Drafter"}, {"orthrus_core.loop"}
    while True:
        more = {(m, c) for m, classes in bases.items() for c, parents in classes if parents & drafters}
        if {c for _, c in more} <= drafters:
            return found
        drafters |= {c for _, c in more}
        found |= {m for m, _ in more}


def test_the_memory_planner_sits_below_every_drafter():
    """orthrus_core.memory asks a drafter its cost (Drafter.state_bytes, ...) and tests no drafter's class: it
    imports no module that defines a drafter, directly or through what it imports."""
    drafters = drafter_modules()
    assert {
        "orthrus_core.loop",
        "orthrus_core.orthrus",
        "orthrus_core.eagle3",
        "orthrus_core.dflash",
    } <= drafters
    assert "orthrus_core.prompt_lookup" in drafters and "orthrus_core.memory" not in drafters
    assert sorted(closure("orthrus_core.memory") & drafters) == []


MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_a_screen():
    """Every function of orthrus_core and harness reads on one screen: at most MAX_FUNCTION_LINES lines from its
    def to its last line, docstring and nested functions included."""
    long = [
        f"{MODULES[name].relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name in MODULES
        for node in ast.walk(ast.parse(MODULES[name].read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
