"""`wwwserve devnet up` as docker-compose.yml's deployer runs it: it dials the chain at one address
(http://anvil:8545 in compose), records another for the host, and registers each demo node under its own
host name (http://node1:9101, http://node2:9102, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.devnet.deploy import demo_account
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient

pytestmark = pytest.mark.integration

HOST_URL = "http://127.0.0.1:8545"


def test_record_rpc_url_and_endpoint_host_per_node(wwwserve_home: Path, anvil: AnvilProcess) -> None:
    runner = CliRunner()
    up = runner.invoke(app, ["--rpc-url", anvil.rpc_url, "devnet", "up", "--demo-nodes", "2",
                             "--record-rpc-url", HOST_URL, "--demo-endpoint-host", "node{i}"])
    assert up.exit_code == 0, up.output
    record = json.loads((wwwserve_home / "deployments" / "31337.json").read_text())
    assert record["rpcUrl"] == HOST_URL  # not the address the deployer dialled
    client = WWWServeClient(connect(anvil.rpc_url), record["address"])
    for i in (1, 2):
        info = client.node(demo_account(i).address)
        assert info is not None and info.active
        assert info.endpoint == f"http://node{i}:{9100 + i}"
        assert client.balances(demo_account(i).address).active_stake_wei == 10**18

    # Run again (compose up on a kept ./.wwwserve) without the option: the contract is reused and the
    # record names the address given now.
    again = runner.invoke(app, ["--rpc-url", anvil.rpc_url, "devnet", "up", "--demo-nodes", "2",
                                "--demo-endpoint-host", "node{i}"])
    assert again.exit_code == 0 and "already deployed" in again.output, again.output
    record_again = json.loads((wwwserve_home / "deployments" / "31337.json").read_text())
    assert record_again["address"] == record["address"]
    assert record_again["rpcUrl"] == anvil.rpc_url


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--record-rpc-url", "anvil:8545", "expected an http:// or https:// URL"),
    ("--demo-endpoint-host", "http://node1", "expected a host name or address"),
    ("--demo-endpoint-host", "", "expected a host name or address"),
])
def test_bad_compose_options_are_refused_before_any_work(wwwserve_home: Path, option: str, value: str,
                                                         message: str) -> None:
    # the chain address is never dialled: the check comes first
    result = CliRunner().invoke(app, ["--rpc-url", "http://127.0.0.1:9", "devnet", "up", option, value])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (wwwserve_home / "deployments").exists()
