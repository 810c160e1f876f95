"""No import cycle between the package's modules, lazy (function-level) imports included.

The graph is read from the source with :mod:`ast`: ``from X import a`` depends on the module
``X.a`` when it is one, else on ``X`` (its ``__init__``); importing a module also runs the
``__init__`` of every package above it that is not an ancestor of the importer (ancestors are
always initialised first, so they are no edge)."""

import ast
from pathlib import Path

import translution

ROOT = Path(translution.__file__).parent
#: Cycles outside the generation/models slice, to be removed by the data rework (issue 10 item 3).
KNOWN_CYCLES: list = []                                    # none: keep it that way


def modules():
    """``{module name: (path, package parts)}`` of every module under the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = ["translution", *path.relative_to(ROOT).with_suffix("").parts]
        package = parts[:-1]
        if parts[-1] == "__init__":
            parts = package = parts[:-1]
        out[".".join(parts)] = (path, package)
    return out


def _targets(name, package, node, known):
    """Modules that the import statement ``node`` in module ``name`` runs."""
    if isinstance(node, ast.Import):
        found = [alias.name for alias in node.names]
    else:
        base = package[:len(package) - node.level + 1] if node.level else []
        source = ".".join(base + ([node.module] if node.module else []))
        found = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source
                 for a in node.names]
    out = set()
    for target in found:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):       # the target and the packages above it
            mod = ".".join(parts[:i])
            if mod in known and mod != name and not name.startswith(mod + "."):
                out.add(mod)
    return out


def import_graph():
    known = modules()
    graph = {}
    for name, (path, package) in known.items():
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= _targets(name, package, node, known)
    return graph


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_sees_the_imports():
    graph = import_graph()
    assert "translution.layers" in graph["translution.models.blocks"]
    assert "translution.generation" in graph["translution.models.gpt"]
    assert "translution.functional" in graph["translution.layers"]   # `from . import functional`
    assert "translution" not in graph["translution.layers"]           # an ancestor: no edge
    # a planted cycle is found
    planted = {**graph, "translution.generation": graph["translution.generation"]
               | {"translution.models.gpt"}}
    assert any({"translution.generation", "translution.models.gpt"} <= c
               for c in cycles(planted))


def test_no_import_cycle():
    found = [c for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert not found, f"import cycles: {[sorted(c) for c in found]}"
