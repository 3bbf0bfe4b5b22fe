"""`wwwserve node run` as a real process against anvil, and `wwwserve verify` of what it signed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from duel_network import cli, register_operator

from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.devnet.localnet import LocalNet, NodeLaunch

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
MESSAGES = [{"role": "user", "content": "Say hello to the network."}]


def _last_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, "no output"
    return lines[-1]


def test_node_run_serves_signed_answers_that_verify(
    anvil: AnvilProcess, wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WWWSERVE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)

    address, port = register_operator()

    # Bad settings never start a server: exit 2, one error line naming the field.
    bad = cli("-w", "op", "node", "run", "--set", "backend.kind=fake", "--set", "server.port=-1", code=2)
    assert _last_line(bad).startswith("error:") and "server.port" in _last_line(bad), bad
    # A backend kind missing what it needs is refused the same way.
    vllm = cli("-w", "op", "node", "run", "--set", "backend.kind=vllm", code=2)
    assert _last_line(vllm).startswith("error:") and "vllm.model" in _last_line(vllm), vllm

    # The environment names the home, the password and the chain (monkeypatched above).
    net = LocalNet(tmp_path)
    node = net.start_node(NodeLaunch("node", port, tmp_path / "node.log", wallet="op",
                                     overrides=("backend.kind=fake", "backend.models=['fake-model']")))
    try:
        base = f"http://127.0.0.1:{port}"
        node.wait_ready(20)
        resp = httpx.post(f"{base}/v1/chat/completions", json={"model": "fake-model", "messages": MESSAGES},
                          timeout=10.0)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["wwwserve"]["executor"] == address
        assert body["wwwserve"]["chain_id"] == anvil.chain_id
        assert body["choices"][0]["message"]["content"]

        with httpx.stream("POST", f"{base}/v1/chat/completions", timeout=10.0,
                          json={"model": "fake-model", "messages": MESSAGES, "stream": True}) as stream:
            assert stream.status_code == 200
            events = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        pieces = [json.loads(e[len("data: "):]) for e in events[:-1]]
        streamed = "".join(p["choices"][0]["delta"].get("content") or "" for p in pieces if p.get("choices"))
        assert streamed == body["choices"][0]["message"]["content"]  # the fake backend is deterministic

        # Bodies that crashed or poisoned a node (issue 13): 400,000 nested arrays overflowed the C stack of a
        # real node process (eth_keyfile raises the recursion limit to 100,000); 1e400 and a lone surrogate
        # reached the backend. Each is a 400 on the user API and refused on the peer API; the process lives.
        deep = b"[" * 400_000 + b"]" * 400_000
        poison = [deep, b'{"model": "fake-model", "messages": ' + deep + b"}",
                  b'{"model": "fake-model", "max_tokens": 1e400, "messages": []}',
                  b'{"model": "fake-model", "messages": [{"role": "user", "content": "\\udfff"}]}']
        for payload in poison:
            for path in ("/v1/chat/completions", "/v1/completions", "/peer/delegate", "/peer/evidence"):
                refused = httpx.post(f"{base}{path}", content=payload, timeout=10.0)
                assert refused.status_code in (400, 401), (path, refused.status_code, refused.text[:200])
                assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
        assert node.poll() is None
        assert httpx.get(f"{base}/health", timeout=5.0).status_code == 200
        again = httpx.post(f"{base}/v1/chat/completions", json={"model": "fake-model", "messages": MESSAGES},
                           timeout=10.0)
        assert again.status_code == 200, again.text

        saved = tmp_path / "answer.json"
        saved.write_text(json.dumps(body))
        ok = cli("verify", str(saved))
        assert f"signed by {address}" in ok and "fake-model" in ok and body["id"] in ok, ok
        assert "signed by" in cli("verify", "-", stdin=json.dumps(body))

        tampered = json.loads(json.dumps(body))
        tampered["choices"][0]["message"]["content"] += " (edited)"
        bad_file = tmp_path / "tampered.json"
        bad_file.write_text(json.dumps(tampered))
        out = cli("verify", str(bad_file), code=1)
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "does not match" in lines[0], out

        forged = json.loads(json.dumps(body))
        forged["wwwserve"]["model"] = "other-model"  # the signature covers the model
        bad_file.write_text(json.dumps(forged))
        assert _last_line(cli("verify", str(bad_file), code=1)).startswith("error:")
        bad_file.write_text(json.dumps({"choices": []}))
        assert "wwwserve" in _last_line(cli("verify", str(bad_file), code=1))
    finally:
        net.stop(timeout_s=15)  # SIGTERM: a graceful stop, status 0; SIGKILL (status -9) after 15 s
    log = node.log_path.read_text()
    assert node.returncode == 0, log
    assert "Traceback" not in log, log
    assert len(log.splitlines()) < 200, log[-5000:]  # no per-level traceback for the nested bodies


def test_a_node_set_to_exit_on_a_chain_reset_stops_with_one_line(
    anvil: AnvilProcess, wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`chain.on_reset = "exit"` (issue 13, finding 8): anvil killed and started afresh on the same port, the
    node stops gracefully with exit code 1 and one error line, for a supervisor to restart it on the new
    chain (the default, "wait", re-indexes in place: tests/integration/test_ledger_manager.py)."""
    from wwwserve.devnet.anvil import start_anvil

    monkeypatch.setenv("WWWSERVE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)
    _, port = register_operator()
    net = LocalNet(tmp_path)
    node = net.start_node(NodeLaunch("node", port, tmp_path / "node.log", wallet="op", overrides=(
        "backend.kind=fake", "backend.models=['fake-model']", "chain.on_reset=exit", "chain.poll_interval_s=0.2")))
    fresh = None
    try:
        node.wait_ready(20)
        anvil_port = int(anvil.rpc_url.rsplit(":", 1)[1])
        anvil.stop()
        fresh = start_anvil(port=anvil_port)  # a new chain: no contract, the index's blocks gone
        code = node.proc.wait(timeout=60)
    finally:
        net.stop()
        if fresh is not None:
            fresh.stop()
    log = node.log_path.read_text()
    assert code == 1, log[-3000:]
    assert _last_line(log).startswith("error: the chain was reset"), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
