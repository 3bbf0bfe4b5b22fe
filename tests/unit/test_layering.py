"""The packages import downward only: contracts ← ledger ← node ← judge ← wwwserve (the CLI), devnet → ledger,
sim → node, ledger (issue 14). Read from the sources' import statements, so a lazy import inside a function
counts as much as one at the top of a file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wwwserve

ROOT = Path(wwwserve.__file__).resolve().parent

# What each package must never import (itself and everything below it are allowed).
FORBIDDEN: dict[str, set[str]] = {
    "contracts": {"ledger", "node", "judge", "devnet", "sim", "cli"},
    "ledger": {"node", "judge", "devnet", "sim", "cli"},
    "devnet": {"node", "judge", "sim", "cli"},
    "node": {"devnet", "sim", "cli"},
    "sim": {"devnet", "cli"},
}


def _imported_packages(path: Path) -> set[str]:
    """The wwwserve sub-packages a source file imports (`wwwserve.<pkg>...` and `from wwwserve import <pkg>`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != "wwwserve" else [f"wwwserve.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "wwwserve" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package: str) -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT.parent)} imports wwwserve.{target}"
        for path in (ROOT / package).rglob("*.py")
        if "node_modules" not in path.parts
        for target in _imported_packages(path) & FORBIDDEN[package]
    )
    assert not offenders, "\n".join(offenders)


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from wwwserve.devnet.anvil import DEV_KEYS\n    import wwwserve.node.main\n"
                      "from wwwserve import sim\n")
    assert _imported_packages(source) == {"devnet", "node", "sim"}
