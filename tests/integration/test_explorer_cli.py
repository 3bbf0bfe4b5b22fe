"""`wwwserve explorer` against a real anvil: a process of its own that indexes the contract's events and serves
the explorer's page and JSON; it shows every node with its on-chain stake and follows the chain as stake moves."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.devnet.deploy import DEMO_PASSWORD
from wwwserve.devnet.ports import free_port
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.deployment import load_deployment

pytestmark = pytest.mark.integration


def cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, f"wwwserve {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


def wait_for(what: str, done: Callable[[], bool], proc: subprocess.Popen[str], log: Path,
             timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert proc.poll() is None, f"wwwserve explorer exited ({proc.returncode}):\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{log.read_text()}"
        time.sleep(0.2)


@pytest.fixture
def explorer(anvil: AnvilProcess, wwwserve_home: Path, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)
    monkeypatch.setenv("WWWSERVE_PASSWORD", DEMO_PASSWORD)
    cli("devnet", "up", "--demo-nodes", "3")
    port = free_port()
    log = tmp_path / "explorer.log"
    env = {**os.environ, "WWWSERVE_HOME": str(wwwserve_home)}
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wwwserve.cli", "--rpc-url", anvil.rpc_url, "explorer",
                                 "--port", str(port), "--poll-interval", "0.2"],
                                stdout=out, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        wait_for("the explorer's ready line", lambda: "/explorer/" in log.read_text(), proc, log)
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_standalone_explorer_shows_every_node_with_its_on_chain_stake_and_follows_the_chain(
        anvil: AnvilProcess, explorer: tuple[str, subprocess.Popen[str], Path]) -> None:
    base, proc, log = explorer
    client = WWWServeClient(connect(anvil.rpc_url), load_deployment(31337).address)
    with httpx.Client(base_url=base, timeout=10) as http:
        home = http.get("/", follow_redirects=False)
        assert home.status_code in (302, 307) and home.headers["location"].endswith("/explorer/")
        page = http.get("/explorer/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        nodes = http.get("/explorer/api/nodes", params={"limit": 200}).json()
        assert nodes["total"] == 3
        for row in nodes["items"]:
            assert int(row["stake_wei"]) == client.balances(row["address"]).active_stake_wei  # wei, exactly
        totals = http.get("/explorer/api/totals").json()
        assert totals["nodes_active"] == 3 and totals["node"] is None and totals["requests_logged"] is None
        assert int(totals["stake_total_wei"]) == sum(int(r["stake_wei"]) for r in nodes["items"])
        requests = http.get("/explorer/api/requests").json()
        assert requests["items"] == [] and requests["available"] is False  # requests pass nodes, not this

        # stake moves on-chain; the explorer's index follows it
        listed_before = {r["address"]: int(r["stake_wei"]) for r in nodes["items"]}
        cli("-w", "demo-node-1", "stake", "add", "0.25eth")
        [moved] = [a for a, wei in listed_before.items() if client.balances(a).active_stake_wei != wei]
        assert client.balances(moved).active_stake_wei == listed_before[moved] + 25 * 10**16

        def stake_shown(address: str) -> int:
            listed = http.get("/explorer/api/nodes", params={"limit": 200}).json()["items"]
            return next(int(r["stake_wei"]) for r in listed if r["address"] == address)

        wait_for("the new stake in the explorer",
                 lambda: stake_shown(moved) == listed_before[moved] + 25 * 10**16, proc, log)

        bad = http.get("/explorer/api/nodes", params={"limit": 0})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert http.get("/explorer/api/duels/12345").status_code == 404


def test_an_unreachable_chain_is_one_line_and_exit_1(wwwserve_home: Path) -> None:
    out = cli("--rpc-url", f"http://127.0.0.1:{free_port()}", "explorer", code=1)
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "unreachable" in lines[0], out
