"""The package layering of ARCHITECTURE.md, checked on the source: every import of an rlhfkit
module (at the top of a file, inside a function, or under TYPE_CHECKING) is an edge between two
packages (the first name under rlhfkit: train, evaluate, project, criteria, ...). No circle
among packages; train imports nothing from evaluate, report, demo or cli; library code imports
nothing from the demo. And the size limits: no function over 80 lines, no file over 600.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "rlhfkit"

# {path::function or path: why it may exceed the limit}
LONG_FUNCTIONS = {
    "decode.py::decode": "the decoder's loop, kept whole on purpose: 80 lines plus its "
    "@torch.no_grad() decorator",
}
LONG_FILES: dict[str, str] = {}
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 600

LAYERS = {
    **dict.fromkeys(
        (
            "errors",
            "strict_json",
            "spec_base",
            "choices",
            "lineage",
            "data",
            "decode",
            "callables",
            "stats",
        ),
        0,
    ),
    **dict.fromkeys(("models", "criteria", "project"), 1),
    "train": 2,
    **dict.fromkeys(("generate", "agreement", "annotate"), 3),
    "evaluate": 4,
    **dict.fromkeys(("report", "doctor"), 5),
    "templates": 6,
    "pipeline": 6,
    "demo": 7,
    "cli": 8,
}
"""ARCHITECTURE.md's layer table: a package imports only from its own layer and below."""

LIBRARY_MAY_NOT_IMPORT = {"demo", "cli"}
"""Packages only the demo and the command line may import."""
TRAIN_MAY_NOT_IMPORT = {"evaluate", "report", "demo", "cli"}


def _files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _module(path: Path) -> list[str]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _package(module: list[str]) -> str:
    """rlhfkit.train.ppo -> train; rlhfkit.project -> project; rlhfkit -> rlhfkit."""
    return module[1] if len(module) > 1 else "rlhfkit"


def _imported(path: Path) -> list[tuple[list[str], int]]:
    """The rlhfkit modules a file imports (the module, or the package an imported name is
    from), with the line of each import."""
    module = _module(path)
    here = module if path.name == "__init__.py" else module[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name.split("."), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = base + (node.module.split(".") if node.module else [])
            # `from rlhfkit import strict_json` imports a module of the top package
            for alias in node.names:
                found.append(([*target, alias.name], node.lineno))
    return [(m, line) for m, line in found if m[0] == "rlhfkit"]


def _edges() -> dict[tuple[str, str], list[str]]:
    """{(importer package, imported package): ['train/ppo.py:33', ...]}."""
    modules = {tuple(_module(p)) for p in _files()}
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in _files():
        src = _package(_module(path))
        for target, line in _imported(path):
            # `from rlhfkit.x import name`: the package is x whether name is a module or not;
            # `from rlhfkit import strict_json`: the module strict_json
            if len(target) == 2 and tuple(target) not in modules:
                continue  # a name defined in rlhfkit/__init__.py (__version__)
            dst = _package(target)
            if dst != src and dst != "rlhfkit":
                edges[(src, dst)].append(f"{path.relative_to(SRC)}:{line}")
    return edges


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in _edges():
        graph[src].add(dst)
    return graph


def _describe(component: list[str], edges: dict[tuple[str, str], list[str]]) -> str:
    inside = set(component)
    return "; ".join(
        f"{a} -> {b} ({', '.join(where[:3])})"
        for (a, b), where in sorted(edges.items())
        if a in inside and b in inside
    )


def test_the_import_graph_sees_known_edges():
    """The test itself: it finds imports at the top, in functions and relative ones."""
    edges = _edges()
    assert ("cli", "train") in edges  # cli/train.py, at the top
    assert ("pipeline", "train") in edges  # pipeline/stages.py
    assert ("evaluate", "train") in edges  # evaluate/rm.py, inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_circle_among_packages():
    edges = _edges()
    cycles = _cycles(_graph())
    assert not cycles, "import circles: " + " | ".join(_describe(c, edges) for c in cycles)


def test_every_package_has_a_layer_and_imports_only_its_layer_and_below():
    edges = _edges()
    packages = {p for edge in edges for p in edge}
    assert packages <= LAYERS.keys(), f"add to LAYERS: {packages - LAYERS.keys()}"
    upward = {(a, b): where for (a, b), where in edges.items() if LAYERS[b] > LAYERS[a]}
    assert not upward, f"imports from a higher layer: {upward}"


def test_train_imports_nothing_above_it():
    bad = {
        (a, b): where
        for (a, b), where in _edges().items()
        if a == "train" and b in TRAIN_MAY_NOT_IMPORT
    }
    assert not bad, f"train imports from above it: {bad}"


def test_library_code_imports_nothing_from_demo_or_cli():
    allowed = {"demo": {"cli"}, "cli": set()}  # besides the package itself
    bad = {
        (a, b): where
        for (a, b), where in _edges().items()
        if b in LIBRARY_MAY_NOT_IMPORT and a not in allowed[b]
    }
    assert not bad, f"library code imports the demo or the CLI: {bad}"


def _long_functions() -> dict[str, int]:
    found = {}
    for path in _files():
        rel = str(path.relative_to(SRC))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - start + 1
                if length > MAX_FUNCTION_LINES:
                    found[f"{rel}::{node.name}"] = length
    return found


def test_no_function_over_80_lines():
    too_long = {k: n for k, n in _long_functions().items() if k not in LONG_FUNCTIONS}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


def test_no_file_over_600_lines():
    too_long = {}
    for path in _files():
        rel = str(path.relative_to(SRC))
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_FILE_LINES and rel not in LONG_FILES:
            too_long[rel] = n
    assert not too_long, f"files over {MAX_FILE_LINES} lines: {too_long}"


def test_the_exceptions_still_exist():
    """An exception whose function or file was split (or renamed) goes from the list."""
    long_functions = _long_functions()
    stale = [k for k in LONG_FUNCTIONS if k not in long_functions]
    stale += [f for f in LONG_FILES if len((SRC / f).read_text().splitlines()) <= MAX_FILE_LINES]
    assert not stale, f"no longer needed (delete them): {stale}"
