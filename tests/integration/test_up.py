"""The README's main command: `wwwserve up` brings up a staked network and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devnet.anvil import chain_id_at, free_port
from ledger.client import WWWServeClient
from ledger.deployment import load_deployment
from ledger.tx import connect

pytestmark = pytest.mark.integration


def test_up_serves_a_staked_network_until_ctrl_c(wwwserve_home: Path) -> None:
    port = free_port()
    env = {**os.environ, "WWWSERVE_HOME": str(wwwserve_home), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wwwserve.cli", "up", "--nodes", "3", "--port", str(port), "--block-time", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops the network" in line:
                break
        out = "".join(lines)
        assert "Ctrl-C stops the network" in out, out
        assert "3 demo nodes, registered and staked" in out

        # a second client sees the stake on-chain while `up` keeps running
        rpc_url = f"http://127.0.0.1:{port}"
        w3 = connect(rpc_url)
        dep = load_deployment(w3.eth.chain_id, home=wwwserve_home)
        client = WWWServeClient(w3, dep.address)
        owners = [client.leaf_owner(i) for i in range(client.leaf_count())]
        assert len(owners) == 3
        for owner in owners:
            assert owner is not None and owner in out
            assert client.balances(owner).active_stake_wei == 10**18
            assert client.node(owner) is not None
        assert client.total_weight() == 3 * 10**18

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, rest
        assert "Traceback" not in rest
        assert chain_id_at(rpc_url, timeout_s=0.5) is None, "anvil still running after Ctrl-C"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
