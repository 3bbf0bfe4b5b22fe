"""Shared fixtures (a real anvil devnet process, an isolated WWWSERVE_HOME, a throwaway PostgreSQL server and
index database URLs on SQLite and on it) and the test tiers.

Every test gets exactly one tier (`unit`, `component`, `integration`, `property`, `postgres`, `browser`, `slow`,
`compose`) at collection, by the rule in tests/tiers.py: its one tier mark, else its folder's. `unit` tests run under a
guard that fails them if they open a socket or start a process.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer, running_postgres
from tiers import COLLECTED, TIER, TierError, in_process_only, tier_of, workers_for

from wwwserve.devnet.anvil import AnvilProcess, start_anvil

CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects: every collected test gets its tier, slow ones too
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier; a test with two tier marks, or none and no folder tier, stops the run."""
    errors: list[str] = []
    for item in items:
        try:
            tier = tier_of(item)
        except TierError as exc:
            errors.append(str(exc))
            continue
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)
        item.stash[TIER] = tier
    if errors:
        raise pytest.UsageError("tests without exactly one tier (tests/tiers.py):\n  " + "\n  ".join(errors))
    config.stash[COLLECTED] = list(items)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` (pyproject's addopts) is one worker per core, except where one process serves better."""
    return workers_for(config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                          pytest.TestReport]:
    """Remember whether the test itself failed (the guard below then adds no second report)."""
    report = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


@pytest.fixture(autouse=True)
def _unit_tests_stay_in_process(request: pytest.FixtureRequest) -> Iterator[None]:
    """A `unit` test that opens a socket or starts a process fails, even if the code swallowed the error."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    with in_process_only(request.node.nodeid) as violations:
        yield
    if violations and not request.node.stash.get(CALL_FAILED, False):  # one report, not a failure and an error
        pytest.fail("\n".join(violations), pytrace=False)


@pytest.fixture
def collected_tests(request: pytest.FixtureRequest) -> list[pytest.Item]:
    """Every test this session collected, before `-m` deselected any; `item.stash[TIER]` is its tier."""
    return request.config.stash[COLLECTED]


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server (tests/postgres_server.py) shared by the session (one per xdist worker)."""
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def fresh_index_url(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes URLs of fresh, empty index databases: SQLite files, or databases on the `postgres_server`
    (that parameter is the `postgres` tier). A test taking it runs once on each backend."""
    if request.param == "sqlite":
        numbers = itertools.count()
        return lambda: f"sqlite:///{tmp_path / f'index-{next(numbers)}.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return lambda: server.fresh_database("index")
