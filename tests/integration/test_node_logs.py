"""`wwwserve node run --log-format json` as a real process against anvil: every line it writes is one JSON
object (uvicorn's too), and the lines written while a request is served carry its id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from duel_network import register_operator

from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.devnet.localnet import LocalNet, NodeLaunch

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class JsonLogLaunch(NodeLaunch):
    def command(self) -> list[str]:
        return [*super().command(), "--log-format", "json"]


def test_node_run_writes_json_lines_with_the_request_id(
    anvil: AnvilProcess, wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WWWSERVE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)
    _, port = register_operator()
    net = LocalNet(tmp_path)
    node = net.start_node(JsonLogLaunch("node", port, tmp_path / "node.log", wallet="op", overrides=(
        "backend.kind=fake", "backend.models=['fake-model']", "server.access_log=true")))
    try:
        node.wait_ready(30)
        resp = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=10.0,
                          json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]})
        assert resp.status_code == 200, resp.text
    finally:
        net.stop(timeout_s=15)
    log = node.log_path.read_text()
    assert node.returncode == 0, log
    # Every line parses (but the command line LocalNet writes first).
    lines = [json.loads(line) for line in log.splitlines() if line.strip() and not line.startswith("$ ")]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines), log
    assert any(line["logger"] == "uvicorn.error" for line in lines), log  # uvicorn's own lines are JSON too
    access = [line for line in lines
              if line["logger"] == "uvicorn.access" and "/v1/chat/completions" in line["message"]]
    assert [line.get("request_id") for line in access] == [resp.json()["id"]], log
