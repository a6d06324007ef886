"""The import graph of ``grader/``: layers by stage and no cycles, counting imports inside functions
too (imports under ``if TYPE_CHECKING:`` are annotations only and do not count).

The packages are stages, lowest first (:data:`LAYERS`): a module imports only from its own layer
or lower ones, so a lower stage never depends on a higher one.

A cycle hidden in a function body still couples two modules both ways (and breaks at import time
as soon as someone moves the import to the top). This test parses every module with ``ast``,
resolves ``from grader.x import y`` to the module ``grader.x`` (or ``grader.x.y`` when that is a
module), and fails naming the cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "grader"


# Lowest first. A module belongs to the layer of the longest prefix listed (``grader`` itself: only the
# package's __init__); it may import only from its own layer or a lower one.
LAYERS: list[tuple[str, ...]] = [
    ("grader.result", "grader.errors", "grader.limits", "grader.resources"),  # what every stage shares
    ("grader.tasks",),  # what each homework is
    ("grader.submission",),  # what was handed in
    ("grader.runtime",),  # where a model runs (with the budgets of grader.limits, not the rubric)
    ("grader.scoring",),  # how points are made
    ("grader.notebook",),  # a notebook's evidence, in its sandbox
    ("grader.outputs",),  # what people read
    ("grader.pipeline", "grader.api"),  # one grading
    ("grader.classroom",),  # grading a class
    ("grader.gradescope",),  # the Gradescope autograder
    ("grader.site",),  # the course website
    ("grader", "grader.__main__", "grader.cli", "grader.baseline_run", "grader.doctor"),  # the commands
]


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (the longest listed prefix), or None."""
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for n in names:
            if (module == n or (n != "grader" and module.startswith(n + "."))) and len(n) > best:
                best, rank = len(n), i
    return rank


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer's module, as ``a -> b`` lines."""
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})" for a in sorted(graph)
            for b in sorted(graph[a]) if (layer_of(b) or 0) > (layer_of(a) or 0)]


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        if "templates" in path.parts:
            continue  # scripts shipped as data (the Gradescope run_autograder), not modules
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                 for stmt in block.body for n in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue  # `if TYPE_CHECKING:` imports are for annotations only: no runtime coupling
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t != "grader":
                out.add(t)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(path, name, known) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycles_in_grader():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer():
    unplaced = [m for m in import_graph() if layer_of(m) is None]
    assert not unplaced, f"modules in no layer (add them to LAYERS, or move them into a stage package): {unplaced}"


def test_lower_stages_never_import_higher_ones():
    bad = layer_violations(import_graph())
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_the_layer_check_finds_an_upward_import():
    graph = {"grader.tasks.base": {"grader.outputs.report"}, "grader.outputs.report": {"grader.tasks.base"}}
    assert layer_violations(graph) == ["grader.tasks.base (layer 1) imports grader.outputs.report (layer 6)"]
    assert layer_of("grader.cli") == len(LAYERS) - 1 and layer_of("grader.tasks.mspacman") == 1
    assert layer_of("grader.pipeline") == 7 and layer_of("grader.pipelines") is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module", ["grader.tasks.contract", "grader.tasks", "grader.pipeline"])
def test_the_graph_sees_imports_inside_functions(module):
    graph = import_graph()
    assert module in graph and graph[module], f"{module} imports nothing?"
