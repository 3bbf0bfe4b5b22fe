"""The devnet as a user meets it: installed from npm, started in the background, stopped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.devnet.anvil import ANVIL_VERSION, find_anvil, install_anvil
from wwwserve.devnet.ports import free_port
from wwwserve.ledger.chain import chain_id_at

pytestmark = pytest.mark.integration


def test_anvil_installs_from_npm_into_the_home(wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WWWSERVE_ANVIL", raising=False)
    binary = install_anvil(quiet=True)
    assert binary.is_relative_to(wwwserve_home)
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert f"anvil Version: {ANVIL_VERSION}" in version
    assert find_anvil() is not None


def test_background_devnet_up_status_down(wwwserve_home: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["--rpc-url", url, "devnet", "up", "--block-time", "0", "--demo-nodes", "1"])
        assert up.exit_code == 0, up.output
        assert "started anvil in the background" in up.output and "staking demo-node-1" in up.output
        assert chain_id_at(url) == 31337
        status = runner.invoke(app, ["--rpc-url", url, "devnet", "status"])
        assert status.exit_code == 0 and ": deployed" in status.output, status.output
        # a second `up` attaches instead of starting another anvil
        again = runner.invoke(app, ["--rpc-url", url, "devnet", "up", "--demo-nodes", "1"])
        assert again.exit_code == 0 and "attaching" in again.output and "already deployed" in again.output
    finally:
        down = runner.invoke(app, ["devnet", "down"])
    assert down.exit_code == 0, down.output
    assert chain_id_at(url, timeout_s=0.5) is None
    missing = runner.invoke(app, ["devnet", "down"])
    assert missing.exit_code == 1 and "no devnet" in missing.output
