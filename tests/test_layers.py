"""The package's imports point one way: no circle between modules or between units (a
subpackage or a top-level module), and no unit imports one on a higher layer of `LAYERS`.

The imports are read statically (ast) from every module of `assocjax/`, those inside
functions included: a lazy import is still a dependency, it only moves the failure from
import time to call time. Relative imports are resolved; `from pkg import name` is an import
of `pkg.name` when that is a module, else of `pkg` (its `__init__`).

Placing a new module: a module inside a subpackage belongs to it; a new top-level module or
subpackage must be added to `LAYERS` (the test fails until it is), on the lowest layer above
everything it imports. Units on one layer may import each other (no circle, though).
"""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "assocjax"

# The layers, lowest first: a unit may import its own layer and the ones below, never above.
# Data flows stimuli -> models -> features -> (with the fMRI data) ridge -> scores -> reports;
# augment edits the stimuli and tune the models, and the pipeline and CLIs compose them all.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundations", ("options", "io", "numerics", "fingerprint", "stats", "cachefile", "outputs", "results")),
    ("signal", ("alignment",)),  # word -> TR resampling, FIR delays, z-scoring: pure maths on arrays
    ("stimuli", ("stimuli",)),  # a story's words, timing and text (reads its onsets through alignment)
    ("models", ("models",)),  # the language models and their prompt formats
    ("features", ("features",)),  # models read stimuli
    ("data", ("data",)),  # the fMRI files and the synthetic world
    ("augment", ("augment",)),  # associations inserted into stimuli (stories found in data, written by models)
    ("tune", ("tune",)),  # models tuned on augment's associations
    ("scores", ("ridge", "ceiling", "rois", "gains")),
    ("reports", ("plots",)),
    ("entry points", ("pipeline", "demo", "cli")),
)


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted
    target: str  # the imported module, dotted
    where: str  # "assocjax/stimuli.py:197"
    lazy: bool  # inside a function: run at call time, not import time

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}{' (inside a function)' if self.lazy else ''}"


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a subpackage is its __init__.py)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        here = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def _import_nodes(node: ast.AST, lazy: bool = False):
    """(import statement, inside a function?) anywhere under node."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        yield from _import_nodes(child, lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))


def imports(package: Path) -> list[Import]:
    """Every import of one of the package's modules by another, with file:line."""
    known = modules(package)
    found = []
    for module, path in known.items():
        for node, lazy in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            where = f"{path.relative_to(package.parent)}:{node.lineno}"
            for target in dict.fromkeys(_targets(node, module, path.name == "__init__.py", known)):
                if target.split(".")[0] != package.name:
                    continue
                if target not in known:
                    raise AssertionError(f"{where}: {target} is not a module of {package}")
                found.append(Import(module, target, where, lazy))
    return found


def unit(module: str) -> str:
    """The subpackage or top-level module a module belongs to: assocjax.data.synthetic.model
    -> assocjax.data."""
    return ".".join(module.split(".")[:2])


def _edges(found: list[Import], node=lambda m: m) -> dict[str, dict[str, list[Import]]]:
    """node -> imported node -> the imports that make the arrow (a node's own are none)."""
    graph: dict[str, dict[str, list[Import]]] = {}
    for imp in found:
        a, b = node(imp.source), node(imp.target)
        if a != b:
            graph.setdefault(a, {}).setdefault(b, []).append(imp)
    return graph


def _shortest_cycle(graph, start: str, members: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component."""
    paths, seen = [[start]], set()
    while paths:
        path = paths.pop(0)
        for nxt in sorted(graph.get(path[-1], {})):
            if nxt == start:
                return path + [start]
            if nxt in members and nxt not in seen:
                seen.add(nxt)
                paths.append(path + [nxt])
    raise AssertionError(f"no cycle through {start}")


def cycles(graph: dict[str, dict[str, list[Import]]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component of more than one node, as the
    list of nodes start -> ... -> start (Tarjan)."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_shortest_cycle(graph, min(c), c) for c in components if len(c) > 1]


def describe(cycle: list[str], graph) -> str:
    lines = [" -> ".join(cycle)]
    for a, b in zip(cycle, cycle[1:]):
        lines += [f"    {imp}" for imp in graph[a][b]]
    return "\n".join(lines)


def layer_of() -> dict[str, tuple[int, str]]:
    """Unit (dotted) -> (rank, layer name); the package's own __init__ is its face, above all."""
    ranks = {f"{PACKAGE.name}.{u}": (rank, name) for rank, (name, units) in enumerate(LAYERS) for u in units}
    ranks[PACKAGE.name] = (len(LAYERS), "package face")
    return ranks


def test_every_unit_is_placed_once():
    listed = [u for _, units in LAYERS for u in units]
    assert len(listed) == len(set(listed)), f"a unit is listed twice in LAYERS: {sorted(listed)}"
    present = {unit(m) for m in modules(PACKAGE)}
    missing = sorted(present - set(layer_of()))
    stale = sorted(set(layer_of()) - present)
    assert not missing, (f"not placed in tests/test_layers.py LAYERS: {', '.join(missing)}; put each on the lowest "
                         "layer above everything it imports")
    assert not stale, f"LAYERS names units that do not exist: {', '.join(stale)}"


def test_no_module_imports_in_a_circle():
    graph = _edges(imports(PACKAGE))
    found = cycles(graph)
    assert not found, "modules that import each other in a circle:\n" + "\n".join(describe(c, graph) for c in found)


def test_no_circle_between_subpackages():
    graph = _edges(imports(PACKAGE), unit)
    found = cycles(graph)
    assert not found, ("subpackages / top-level modules that import each other in a circle:\n"
                       + "\n".join(describe(c, graph) for c in found))


def test_no_import_reaches_up_a_layer():
    ranks = layer_of()
    upward = [f"{imp}: layer {ranks[unit(imp.source)][1]!r} imports layer {ranks[unit(imp.target)][1]!r}"
              for imp in imports(PACKAGE)
              if unit(imp.source) in ranks and unit(imp.target) in ranks
              and ranks[unit(imp.source)][0] < ranks[unit(imp.target)][0]]
    assert not upward, "imports from a lower layer to a higher one (tests/test_layers.py LAYERS):\n" + "\n".join(upward)


def test_the_walk_sees_lazy_relative_and_package_imports(tmp_path):
    """The reader itself: a circle closed only by an import inside a function, through
    `from . import name` and `from ..pkg.mod import name`, is found with its lines."""
    files = {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    from .sub import high  # lazy\n",
        "pkg/sub/__init__.py": "from .high import g\n",
        "pkg/sub/high.py": "import os\nfrom .. import low\nfrom ..low import f as g\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = imports(tmp_path / "pkg")
    assert {(i.source, i.target, i.where, i.lazy) for i in found} == {
        ("pkg.low", "pkg.sub.high", "pkg/low.py:2", True),
        ("pkg.sub", "pkg.sub.high", "pkg/sub/__init__.py:1", False),
        ("pkg.sub.high", "pkg.low", "pkg/sub/high.py:2", False),
        ("pkg.sub.high", "pkg.low", "pkg/sub/high.py:3", False),
    }
    graph = _edges(found)
    assert cycles(graph) == [["pkg.low", "pkg.sub.high", "pkg.low"]]
    assert "pkg/low.py:2: pkg.low imports pkg.sub.high (inside a function)" in describe(cycles(graph)[0], graph)
    assert cycles(_edges(found, unit)) == [["pkg.low", "pkg.sub", "pkg.low"]]


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
