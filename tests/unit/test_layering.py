"""The floor plan, checked over the import graph (AST, every import statement, TYPE_CHECKING ones too):

    wwwserve.errors  ←  contracts  ←  ledger  ←  node  ←  judge  ←  wwwserve (the CLI: composition root)
                                         ↑          ↑        ↑
                                      devnet       sim ──────┘
                                                 explorer ───┘

`devnet` may use `ledger` and `contracts`; `sim` may use `node`, `judge` (the judge's prompt and reply budget:
what a simulated judge's calls cost its engine) and `ledger`; `explorer` may use `judge` (the Bradley–Terry
leaderboard), `node` and `ledger`; `bench/` and `tests/` anything.
No package may import one above it or beside it, no two modules may import each other through any
chain (no file cycle), and nothing imports the folders by their bare names (`node`, `ledger`, ...): a
second copy of a module under another name splits its classes and state in two.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "devnet", "ledger", "node", "judge", "sim", "explorer")
# What each layer may import besides itself (wwwserve.errors is the base of every layer).
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "contracts": {"errors"},
    "ledger": {"errors", "contracts"},
    "devnet": {"errors", "contracts", "ledger"},
    "node": {"errors", "contracts", "ledger"},
    "judge": {"errors", "contracts", "ledger", "node"},
    "sim": {"errors", "contracts", "ledger", "node", "judge"},
    "explorer": {"errors", "contracts", "ledger", "node", "judge"},
    "cli": {"errors", "contracts", "ledger", "devnet", "node", "judge", "sim", "explorer"},
}


def _modules() -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) of every module the wheel installs."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield "wwwserve." + ".".join(parts), path
    for path in sorted((ROOT / "wwwserve").rglob("*.py")):
        if path.is_relative_to(ROOT / "wwwserve") and not any(
                (ROOT / "wwwserve" / p).is_symlink() for p in path.relative_to(ROOT / "wwwserve").parts[:1]):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    if module == "wwwserve.errors":
        return "errors"
    return "cli"  # wwwserve itself, wwwserve.cli...


def _imports(path: Path, module: str) -> Iterator[tuple[str, int]]:
    """Every module `path` imports by name (a `from X import y` names X, and X.y when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:
                yield f"{target}.{alias.name}", node.lineno


MODULES = dict(_modules())


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, set())
        for target, _ in _imports(path, module):
            if target in MODULES and target != module:
                edges.add(target)
    return graph


def test_the_walk_sees_every_package() -> None:
    layers = {_layer(m) for m in MODULES}
    assert layers == {"errors", "cli", *PACKAGES}
    assert "wwwserve.node.planner" in MODULES and "wwwserve.ledger.client" in MODULES


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_or_sideways_import(module: str) -> None:
    layer = _layer(module)
    bad = []
    for target, line in _imports(MODULES[module], module):
        root = target.split(".")[0]
        if root in PACKAGES:
            bad.append(f"line {line}: bare `{target}` (import it as wwwserve.{target})")
            continue
        if not target.startswith("wwwserve.") or target not in MODULES:
            continue
        other = _layer(target)
        if other != layer and other not in ALLOWED[layer]:
            bad.append(f"line {line}: {layer} imports {target} ({other})")
    assert not bad, f"{module}: " + "; ".join(bad)


def test_no_file_cycle() -> None:
    graph = _graph()
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    # A package's __init__ re-exporting its own modules is not a cycle of two rooms.
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c)]
    assert not real, "import cycles: " + " | ".join(" <-> ".join(c) for c in real)


def test_the_walk_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from wwwserve.devnet.anvil import DEV_KEYS\n    import wwwserve.node.main\n"
                      "from wwwserve import sim\nfrom . import sibling\nif TYPE_CHECKING:\n    import node.app\n")
    found = {target for target, _ in _imports(source, "wwwserve.ledger.m")}
    assert {"wwwserve.devnet.anvil", "wwwserve.node.main", "wwwserve.sim", "wwwserve.ledger.sibling",
            "node.app"} <= found

