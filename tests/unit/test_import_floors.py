"""The import graph of hooks/, plugin/ and ownvol/ is a tree of floors: no cycle, counting the imports inside
functions and under `if TYPE_CHECKING:`; no `ownvol.hook`/`ownvol.driver` import inside the tree (those are the
installed names, for tests and bench); every import of the hook made inside a function carries its reason on its
line (a `#` comment: an optional or heavy dependency).

Read by an `ast` walk over the files as they stand: a relative import resolves from the importing file's folder,
`ownvol.X` to ownvol/X.py; importing a submodule of a package counts as importing the package's __init__ too (Python
runs it first). A module loaded by name at run time (importlib.import_module: hooks/services/__init__.py loads the
built-in families on first use) is not followed. `python tests/unit/test_import_floors.py` prints the floors and the
imports made inside functions.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TREES = ("hooks", "plugin", "ownvol")
INSTALLED = ("ownvol.hook", "ownvol.driver")  # the package names setuptools gives hooks/ and plugin/
REASONED = ("hooks",)  # trees whose function-level imports must say why on their line


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, e.g. "hooks.actions"
    target: str  # imported module of the tree, e.g. "hooks.targets"
    line: int
    nested: bool  # inside a function, or under `if TYPE_CHECKING:`


def modules() -> dict[str, Path]:
    """Dotted name (hooks.services.redis; a package by its folder's name) -> file."""
    found = {}
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it is nested (in a def or under TYPE_CHECKING)."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, nested))
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) or (
                isinstance(child, ast.If) and _is_type_checking(child.test))
            visit(child, inner)

    visit(tree, False)
    return found


def _with_packages(name: str, known: dict[str, Path], source: str) -> list[str]:
    """name and the packages above it that Python runs first, those holding the importer left out."""
    parts = name.split(".")
    chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return [m for m in chain if m in known and (m == name or not source.startswith(m + "."))]


def edges(known: dict[str, Path] | None = None) -> tuple[list[Edge], list[str]]:
    """The imports between modules of the tree, and the installed-name imports found inside it."""
    known = known if known is not None else modules()
    found: list[Edge] = []
    installed: list[str] = []
    for source, path in known.items():
        is_package = path.name == "__init__.py"
        package = source.split(".") if is_package else source.split(".")[:-1]
        tree = ast.parse(path.read_text(), str(path))
        for node, nested in _imports(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                names = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                         for alias in node.names]
            for name in names:
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if any(name == p or name.startswith(p + ".") for p in INSTALLED):
                    installed.append(f"{where} imports {name}")
                    continue
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if not name or name.split(".")[0] not in TREES:
                    continue
                for target in _with_packages(name, known, source):
                    if target != source:
                        found.append(Edge(source, target, node.lineno, nested))
    return found, installed


def cycles(found: list[Edge]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for e in found:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            connect(v)
    return groups


def floors(found: list[Edge], known: dict[str, Path]) -> dict[str, int]:
    """Module -> floor: 0 imports nothing of the tree, else one above the highest module it imports.
    ValueError when there is a cycle."""
    deps: dict[str, set[str]] = {m: set() for m in known}
    for e in found:
        deps[e.source].add(e.target)
    level: dict[str, int] = {}
    visiting: set[str] = set()

    def of(m: str) -> int:
        if m in level:
            return level[m]
        if m in visiting:
            raise ValueError(f"cycle through {m}")
        visiting.add(m)
        level[m] = 1 + max((of(d) for d in deps[m]), default=-1)
        visiting.discard(m)
        return level[m]

    for m in known:
        of(m)
    return level


def unreasoned(known: dict[str, Path]) -> list[str]:
    """Imports made inside a function of a REASONED tree whose line says no reason (no `#` comment)."""
    found = []
    for source, path in known.items():
        if source.split(".")[0] not in REASONED:
            continue
        lines = path.read_text().splitlines()
        for node, nested in _imports(ast.parse(path.read_text(), str(path))):
            if nested and "#" not in lines[node.lineno - 1]:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_no_cycle_among_the_modules() -> None:
    found, _ = edges()
    assert cycles(found) == []


def test_no_installed_name_inside_the_tree() -> None:
    _, installed = edges()
    assert installed == []


def test_every_function_level_import_of_the_hook_says_why() -> None:
    assert unreasoned(modules()) == []


def test_the_walk_sees_the_imports() -> None:
    found, _ = edges()
    pairs = {(e.source, e.target) for e in found}
    assert ("hooks.watcher", "ownvol.dockertime") in pairs
    assert ("plugin.app", "plugin.protocol") in pairs
    assert all(e.target != e.source for e in found)


def main() -> None:
    known = modules()
    found, installed = edges(known)
    groups = cycles(found)
    for group in groups:
        print("cycle:", " ".join(group))
    for line in installed:
        print("installed name:", line)
    if not groups:
        level = floors(found, known)
        for n in range(max(level.values()) + 1):
            print(f"floor {n}:", " ".join(sorted(m for m in level if level[m] == n)))
    nested = sorted({(e.source, e.target, e.line) for e in found if e.nested})
    print(f"nested imports of the tree (in a function or under TYPE_CHECKING): {len(nested)}")
    for source, target, line in nested:
        print(f"  {source}:{line} -> {target}")
    for line in unreasoned(known):
        print("no reason:", line)


if __name__ == "__main__":
    main()
