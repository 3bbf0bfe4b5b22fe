"""`wwwserve verify` of a streamed answer saved as the README says (`curl -N ... > answer.sse`) from a real
`wwwserve node run` process on anvil: whole, with `curl -i` headers, from stdin; and refused, one line,
when a chunk or the usage was changed or the transcript was cut short."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from duel_network import cli, register_operator

from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.devnet.localnet import LocalNet, NodeLaunch

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
MESSAGES = [{"role": "user", "content": "Say hello to the network."}]


def test_a_stream_saved_with_curl_verifies_and_a_tampered_one_does_not(
    anvil: AnvilProcess, wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WWWSERVE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)

    def refused(path: Path) -> str:
        """The one error line `wwwserve verify` prints for `path`."""
        lines = [line for line in cli("verify", str(path), code=1).splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), lines
        return lines[0]

    address, port = register_operator()
    net = LocalNet(tmp_path)
    node = net.start_node(NodeLaunch("node", port, tmp_path / "node.log", wallet="op",
                                     overrides=("backend.kind=fake", "backend.models=['fake-model']")))
    try:
        node.wait_ready(20)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"

        def curl(path: Path, request: dict[str, object], *flags: str) -> str:
            """`curl -sN URL -H ... -d '...' > path`, as the README shows it."""
            with path.open("wb") as out:
                subprocess.run(["curl", "-sN", *flags, url, "-H", "Content-Type: application/json",
                                "-d", json.dumps(request)], stdout=out, check=True, timeout=30)
            return path.read_text(encoding="utf-8")

        chat = {"model": "fake-model", "messages": MESSAGES, "stream": True}
        plain = tmp_path / "answer.sse"
        text = curl(plain, chat)
        assert text.rstrip().endswith("data: [DONE]"), text
        ok = cli("verify", str(plain))
        assert f"signed by {address}" in ok and "fake-model" in ok and "completion tokens" in ok, ok
        assert "stream of" in ok, ok
        assert "signed by" in cli("verify", "-", stdin=text)

        # With usage in the stream, and saved with curl -i (the HTTP header block first).
        with_usage = tmp_path / "usage.sse"
        text = curl(with_usage, {**chat, "stream_options": {"include_usage": True}}, "-i")
        assert text.startswith("HTTP/1.1 200"), text[:200]
        usage_event = next(json.loads(line[len("data: "):]) for line in text.splitlines()
                           if line.startswith("data: {") and '"usage":{' in line)
        usage = usage_event["usage"]
        assert usage["completion_tokens"] > 0
        ok = cli("verify", str(with_usage))
        assert f"{usage['prompt_tokens']} prompt + {usage['completion_tokens']} completion tokens" in ok, ok

        # A changed chunk, a changed usage, a transcript cut short: one line each, exit 1.
        bad = tmp_path / "bad.sse"
        first_piece = next(json.loads(line[len("data: "):])["choices"][0]["delta"]["content"]
                           for line in text.splitlines()
                           if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line)
        bad.write_text(text.replace(json.dumps(first_piece), json.dumps(first_piece + " (edited)"), 1))
        assert "output" in refused(bad) and "does not match" in refused(bad)
        inflated = dict(usage, completion_tokens=usage["completion_tokens"] * 10,
                        total_tokens=usage["prompt_tokens"] + usage["completion_tokens"] * 10)
        bad.write_text(text.replace(json.dumps(usage, separators=(",", ":")),
                                    json.dumps(inflated, separators=(",", ":")), 1))
        assert "usage" in refused(bad) and "does not match the signed usage" in refused(bad)
        bad.write_text(text[: text.index('"usage":{')])
        assert "truncated" in refused(bad)
        bad.write_text("<html>not an answer</html>\n")
        assert "neither a JSON response nor an SSE transcript" in refused(bad)

        # The whole JSON answer still verifies, saved the same way.
        whole = tmp_path / "answer.json"
        curl(whole, {"model": "fake-model", "messages": MESSAGES})
        assert "a whole answer" in cli("verify", str(whole))
    finally:
        net.stop(timeout_s=15)
    assert node.returncode == 0, node.log_path.read_text()
