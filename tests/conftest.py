"""Shared fixtures: a real anvil devnet process and an isolated WWWSERVE_HOME."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wwwserve.devnet.anvil import AnvilProcess, start_anvil


@pytest.fixture
def wwwserve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh WWWSERVE_HOME for one test (wallets, deployments, indexes, devnet state)."""
    home = tmp_path / "wwwserve-home"
    home.mkdir()
    monkeypatch.setenv("WWWSERVE_HOME", str(home))
    return home


@pytest.fixture
def anvil() -> Iterator[AnvilProcess]:
    """A real anvil process (automine, --prune-history) on a free port, stopped after the test."""
    node = start_anvil()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="module")
def anvil_module() -> Iterator[AnvilProcess]:
    """Like `anvil`, shared by the tests of one module."""
    node = start_anvil()
    try:
        yield node
    finally:
        node.stop()
