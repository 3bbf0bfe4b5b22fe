"""A real network: anvil + three `wwwserve node run` processes, driven with the official `openai` client.

Node 1 is saturated (its fake engine has one slot, held by a slow request), so a streamed request to it
is delegated by PoS to node 2 or 3 over the signed peer API; the answer streams back through node 1 and
its signature verifies against the executor's key registered on-chain; node 1's fee voucher reaches the
executor, which claims it on-chain. Then an executor is killed mid-request: a non-streamed request is
re-dispatched to the survivor, a streamed one that already sent text ends with an OpenAI error event.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.devnet.localnet import LocalNet, NodeLaunch
from wwwserve.devnet.ports import free_port
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.deployment import load_deployment
from wwwserve.node.signing import SignedResult, verify_against_chain

pytestmark = pytest.mark.integration

PASSWORD = "delegation test password"
MODEL = "fake-model"
MESSAGES = [{"role": "user", "content": "Tell the network something."}]


@dataclass
class NodeProc:
    name: str
    address: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def in_flight(self) -> int:
        text = httpx.get(f"{self.base}/metrics", timeout=2.0).text
        gauge = next(f for f in text_string_to_metric_families(text) if f.name == "wwwserve_http_requests_in_flight")
        return int(gauge.samples[0].value) - 1  # minus this scrape itself


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, f"wwwserve {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


@pytest.fixture
def network(
    anvil: AnvilProcess, wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("WWWSERVE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)
    _cli("devnet", "up", "--demo-nodes", "0")
    ports = [free_port() for _ in range(3)]
    addresses = []
    for i, port in enumerate(ports, start=1):
        address = _cli("wallet", "new", f"n{i}").split(": ")[1].split()[0]
        addresses.append(address)
        _cli("devnet", "fund", address, "5eth")
        _cli("-w", f"n{i}", "node", "register", "--endpoint", f"http://127.0.0.1:{port}", "-m", MODEL)
        _cli("-w", f"n{i}", "credit", "deposit", "2eth")
        _cli("-w", f"n{i}", "stake", "add", "1eth")
    common = ("backend.kind=fake", f"backend.models=['{MODEL}']", "policy.auto_stake=false",
              "chain.poll_interval_s=0.5", "chain.voucher_claim_interval_s=1", "peers.ban_initial_s=60")
    per_node = [
        # Node 1: one slot, slow answers; when busy it always offloads and never takes peers' work.
        ("backend.fake.capacity=1", "backend.fake.tokens_per_s=4", "backend.fake.words=24",
         "policy.offload_frequency=1.0", "policy.accept_frequency=0.0", "server.max_concurrent_requests=1"),
        ("backend.fake.tokens_per_s=8", "backend.fake.words=24", "policy.accept_frequency=1.0"),
        ("backend.fake.tokens_per_s=8", "backend.fake.words=24", "policy.accept_frequency=1.0"),
    ]
    # The environment names the home, the password and the chain (set above).
    net = LocalNet(tmp_path)
    nodes = []
    try:
        for i, (port, address, extra) in enumerate(zip(ports, addresses, per_node, strict=True), start=1):
            launch = NodeLaunch(f"node{i}", port, tmp_path / f"node{i}.log", (*common, *extra), wallet=f"n{i}")
            nodes.append(NodeProc(launch.name, address, port, net.start_node(launch).proc, launch.log_path))
        net.wait_ready(120)
        w3 = connect(anvil.rpc_url)
        deployment = load_deployment(anvil.chain_id)
        assert deployment is not None
        client = WWWServeClient(w3, deployment.address, None)
        yield {"nodes": nodes, "client": client, "anvil": anvil}
    finally:
        net.stop()
    for node in nodes:
        assert "Traceback" not in node.log.read_text(), node.log.read_text()


def _saturate(node: NodeProc) -> threading.Thread:
    """Hold node's only slot with a slow local request (it has no peer to give it to: it is idle-first)."""

    def run() -> None:
        httpx.post(f"{node.base}/v1/chat/completions", timeout=60,
                   json={"model": MODEL, "messages": MESSAGES, "max_tokens": 24})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while node.in_flight() < 1:
        assert time.monotonic() < deadline, "the saturating request never started"
        time.sleep(0.05)
    return thread


def test_saturated_node_delegates_stream_signed_by_executor_and_pays(network: dict[str, Any]) -> None:
    n1, n2, n3 = network["nodes"]
    chain: WWWServeClient = network["client"]
    holder = _saturate(n1)
    client = openai.OpenAI(base_url=f"{n1.base}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}  # type: ignore[arg-type]
    )
    text = ""
    attestation: dict[str, Any] | None = None
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
        extra = chunk.model_extra or {}
        if extra.get("wwwserve"):
            attestation = extra["wwwserve"]
    assert text and attestation is not None
    signed = SignedResult.from_json(attestation)
    assert signed.executor in (n2.address, n3.address)
    assert list(signed.route) == [n1.address, signed.executor]
    # The signature holds against the key the executor registered on-chain, over exactly this text.
    verify_against_chain(signed, chain, output_text=text, prompt=MESSAGES)
    holder.join(timeout=30)

    # The fee voucher travelled to the executor, which claimed it on-chain (claims every second).
    deadline = time.monotonic() + 30
    while chain.claimed(n1.address, signed.executor) == 0:
        assert time.monotonic() < deadline, "the executor never claimed its fee voucher"
        time.sleep(0.5)
    assert chain.claimed(n1.address, signed.executor) == 10**15  # one request at the default fee


def test_executor_killed_mid_request(network: dict[str, Any]) -> None:
    n1, n2, n3 = network["nodes"]
    holder = _saturate(n1)
    client = openai.OpenAI(base_url=f"{n1.base}/v1", api_key="unused", max_retries=0, timeout=60)

    # Non-streamed: nothing reached the user yet, so the request is re-dispatched to the survivor.
    result: dict[str, Any] = {}

    def ask() -> None:
        result["response"] = client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 10
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, "no executor picked up the request"
        for node in (n2, n3):
            if node.in_flight() >= 1:
                victim = node
        time.sleep(0.05)
    survivor = n3 if victim is n2 else n2
    victim.proc.kill()
    asker.join(timeout=60)
    response = result["response"]
    signed = SignedResult.from_json((response.model_extra or {})["wwwserve"])
    assert signed.executor == survivor.address
    assert response.choices[0].message.content
    holder.join(timeout=30)

    # Streamed: the survivor starts sending, dies, and the user's stream ends with an error event.
    holder = _saturate(n1)
    with httpx.stream("POST", f"{n1.base}/v1/chat/completions", timeout=60,
                      json={"model": MODEL, "messages": MESSAGES, "stream": True}) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-wwwserve-executor"] == survivor.address
        events = []
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            events.append(line[6:])
            if len(events) == 3:
                survivor.proc.kill()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    holder.join(timeout=30)
    # And node 1 still answers (its own slot is free again).
    assert httpx.get(f"{n1.base}/health", timeout=5).status_code == 200
