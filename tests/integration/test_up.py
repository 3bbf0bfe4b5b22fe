"""The README's main command: `wwwserve up` runs a staked, serving network and stops it cleanly.

Every test drives `wwwserve up` as a real subprocess with its own WWWSERVE_HOME and free ports, then looks
for leftovers the way a user would notice them: processes still carrying that WWWSERVE_HOME in their
environment (anvil and every node inherit it), and ports still taken.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from wwwserve.devnet.anvil import AnvilProcess
from wwwserve.devnet.deploy import (
    DEMO_PASSWORD,
    bring_up_demo_nodes,
    demo_account,
    ensure_deployment,
)
from wwwserve.devnet.ports import free_port, free_port_block, ports_in_use
from wwwserve.ledger.chain import chain_id_at, connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.deployment import load_deployment
from wwwserve.ledger.wallet import load_wallet
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

# tier: integration (its folder's); the SmolLM2 test below is slow

READY_LINE = "Ctrl-C stops the network"
ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")



def _processes_with_home(home: Path) -> list[int]:
    """Pids (other than ours) whose environment has WWWSERVE_HOME=<home>: what `up` started."""
    marker = f"WWWSERVE_HOME={home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return pids


def _wait_gone(home: Path, timeout_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (left := _processes_with_home(home)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


class Up:
    """A `wwwserve up` subprocess whose output is read line by line."""

    def __init__(self, home: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.home = home
        full_env = {**os.environ, "WWWSERVE_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("WWWSERVE_PASSWORD", None)  # `up` must bring its own demo password to the nodes
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wwwserve.cli", "up", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
        )
        self.lines: list[str] = []

    @property
    def out(self) -> str:
        return "".join(self.lines)

    def read_until(self, marker: str, timeout_s: float) -> str:
        """Read output until a line holds `marker` (or the process ends); the watchdog bounds the wait."""
        assert self.proc.stdout is not None
        timer = _Watchdog(self.proc, timeout_s)
        try:
            while line := self.proc.stdout.readline():
                self.lines.append(line)
                if marker in line:
                    return self.out
        finally:
            timer.cancel()
        return self.out

    def finish(self, timeout_s: float = 60.0) -> str:
        rest, _ = self.proc.communicate(timeout=timeout_s)
        self.lines.append(rest)
        return self.out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # never leave nodes or anvil behind, whatever the test did
        for pid in _processes_with_home(self.home):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class _Watchdog:
    """SIGINT `proc` after `timeout_s` so a stuck readline returns (the test then fails on the output)."""

    def __init__(self, proc: subprocess.Popen[str], timeout_s: float) -> None:
        import threading

        def interrupt() -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)

        self._timer = threading.Timer(timeout_s, interrupt)
        self._timer.daemon = True
        self._timer.start()

    def cancel(self) -> None:
        self._timer.cancel()


@pytest.fixture
def run_up(wwwserve_home: Path) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()


def _chat(endpoint: str, model: str, timeout_s: float = 60.0) -> httpx.Response:
    return httpx.post(f"{endpoint}/v1/chat/completions", timeout=timeout_s, json={
        "model": model, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello to the network."}],
    })


def _stop_with_ctrl_c(up: Up, rpc_url: str, ports: list[int]) -> str:
    up.proc.send_signal(signal.SIGINT)
    out = up.finish()
    assert up.proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert "stopping ..." in out and "and the devnet." in out, out
    assert _wait_gone(up.home) == [], "processes left after Ctrl-C"
    assert chain_id_at(rpc_url, timeout_s=0.5) is None, "anvil still running after Ctrl-C"
    assert ports_in_use(ports) == [], "ports still taken after Ctrl-C"
    return out


def test_up_fake_backend_serves_from_every_node_until_ctrl_c(wwwserve_home: Path, run_up: list[Up]) -> None:
    port, base = free_port(), free_port_block(3)
    endpoints = [f"http://127.0.0.1:{base + i}" for i in range(3)]
    up = Up(wwwserve_home, "--backend", "fake", "--nodes", "3", "--port", str(port), "--base-port", str(base),
            "--block-time", "0")
    run_up.append(up)
    out = up.read_until(READY_LINE, timeout_s=240)
    assert READY_LINE in out, out
    assert "3 demo nodes, registered, staked and serving" in out, out
    assert f'OpenAI(base_url="{endpoints[0]}/v1", api_key="anything")' in out, out
    assert f"curl {endpoints[0]}/v1/chat/completions" in out, out
    rpc_url = f"http://127.0.0.1:{port}"
    assert f"wwwserve --rpc-url {rpc_url} stake show --all" in out, out

    # on-chain: 3 nodes registered with the model they serve, their endpoints, and the stake
    w3 = connect(rpc_url)
    client = WWWServeClient(w3, load_deployment(w3.eth.chain_id, home=wwwserve_home).address)
    addresses = [demo_account(i + 1).address for i in range(3)]
    for address, endpoint in zip(addresses, endpoints, strict=True):
        info = client.node(address)
        assert info is not None and info.active, address
        assert info.models == ("fake",) and info.endpoint == endpoint
        assert client.balances(address).active_stake_wei == 10**18
        assert address in out

    # every node answers itself, and signs as its own on-chain address
    for address, endpoint in zip(addresses, endpoints, strict=True):
        response = _chat(endpoint, "fake")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["choices"][0]["message"]["content"], body
        assert body["wwwserve"]["executor"] == address, body["wwwserve"]

    # a second process reads the same network
    show = subprocess.run(
        [sys.executable, "-m", "wwwserve.cli", "--rpc-url", rpc_url, "stake", "show", "--all"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "WWWSERVE_HOME": str(wwwserve_home)},
    )
    assert show.returncode == 0, show.stderr
    assert set(ADDRESS_RE.findall(show.stdout)) == set(addresses), show.stdout

    out = _stop_with_ctrl_c(up, rpc_url, [port, *range(base, base + 3)])
    assert "stopped 3 node processes and the devnet." in out, out


@pytest.mark.slow  # SmolLM2 on CPU in two node processes
def test_up_local_backend_answers_with_smollm2(wwwserve_home: Path, run_up: list[Up]) -> None:
    from wwwserve.node.backends.local import default_hf_cache_dir, export_hf_model

    # The converted model is shared between test runs (as tests/integration/test_vllm_cpu.py does), so
    # the nodes load it instead of each dequantizing the GGUF again under a fresh WWWSERVE_HOME.
    shared = export_hf_model(Path.home() / ".cache" / "wwwserve-test" / "smollm2-135m-instruct-hf")
    target = default_hf_cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(shared, target_is_directory=True)
    port, base = free_port(), free_port_block(2)
    up = Up(wwwserve_home, "--backend", "local", "--nodes", "2", "--port", str(port), "--base-port", str(base),
            "--block-time", "0")
    run_up.append(up)
    out = up.read_until(READY_LINE, timeout_s=480)
    assert READY_LINE in out, out
    assert DEFAULT_LOCAL_MODEL in out
    endpoint = f"http://127.0.0.1:{base + 1}"
    response = _chat(endpoint, DEFAULT_LOCAL_MODEL, timeout_s=180)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip(), body
    assert body["wwwserve"]["executor"] == demo_account(2).address
    assert body["wwwserve"]["model"] == DEFAULT_LOCAL_MODEL
    _stop_with_ctrl_c(up, f"http://127.0.0.1:{port}", [port, base, base + 1])


def test_up_node_failing_at_startup_stops_everything(wwwserve_home: Path, run_up: list[Up]) -> None:
    port, base = free_port(), free_port_block(2)
    # The nodes inherit the environment; a bad node setting from it makes them exit at start-up.
    up = Up(wwwserve_home, "--backend", "fake", "--nodes", "2", "--port", str(port), "--base-port", str(base),
            "--block-time", "0", env={"WWWSERVE_NODE__PEERS__MAX_HOPS": "0"})
    run_up.append(up)
    out = up.finish(timeout_s=240)
    assert up.proc.returncode == 1, out
    assert "Traceback" not in out, out
    assert "exited during start-up with code 2" in out, out
    assert "node-1.log" in out or "node-2.log" in out, out
    assert "peers.max_hops" in out, out  # the node's own error line, from its log tail
    assert _wait_gone(wwwserve_home) == [], "processes left after a failed start"
    assert chain_id_at(f"http://127.0.0.1:{port}", timeout_s=0.5) is None
    assert ports_in_use([port, base, base + 1]) == []


def test_up_refuses_a_taken_port_before_starting_anything(wwwserve_home: Path, run_up: list[Up]) -> None:
    port, base = free_port(), free_port_block(3)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", base + 1))
        blocker.listen()
        up = Up(wwwserve_home, "--backend", "fake", "--nodes", "3", "--port", str(port), "--base-port", str(base))
        run_up.append(up)
        out = up.finish(timeout_s=60)
    assert up.proc.returncode == 1, out
    assert f"port {base + 1} on 127.0.0.1 already in use" in out, out
    assert "starting anvil" not in out and "devnet http" not in out, out
    assert _processes_with_home(wwwserve_home) == []
    assert chain_id_at(f"http://127.0.0.1:{port}", timeout_s=0.5) is None


def test_up_twice_with_the_same_home(wwwserve_home: Path, run_up: list[Up]) -> None:
    """A second `up` is a new chain with the contract at the same address: the nodes must not resume the
    first chain's index (its cursor is a block the new chain lacks) and serve again."""
    for _ in range(2):
        port, base = free_port(), free_port_block(2)
        up = Up(wwwserve_home, "--backend", "fake", "--nodes", "2", "--port", str(port), "--base-port", str(base),
                "--block-time", "0", "--exit-after-setup")
        run_up.append(up)
        out = up.finish(timeout_s=240)
        assert up.proc.returncode == 0, out
        assert READY_LINE in out and "Traceback" not in out, out
    assert len(list((wwwserve_home / "indexes").glob("*.sqlite"))) == 4  # 2 nodes x 2 chains, never shared


def test_demo_nodes_get_keystores_and_follow_the_served_model(anvil: AnvilProcess, wwwserve_home: Path) -> None:
    """Re-running the set-up with another backend or port updates the registration instead of keeping it."""
    w3 = connect(anvil.rpc_url)
    deployment, _ = ensure_deployment(w3, anvil.rpc_url)
    first = bring_up_demo_nodes(w3, deployment, 2, stake_wei=10**18, deposit_wei=10**18, base_port=9101,
                                models=("fake",))
    client = WWWServeClient(w3, deployment.address)
    for i, node in enumerate(first, start=1):
        assert node.wallet == f"demo-node-{i}"
        # the keystore decrypts with the public devnet password to the registered account
        assert load_wallet(node.wallet, DEMO_PASSWORD).address == node.address == demo_account(i).address
        info = client.node(node.address)
        assert info is not None and info.models == ("fake",)
    again = bring_up_demo_nodes(w3, deployment, 2, stake_wei=10**18, deposit_wei=10**18, base_port=9201,
                                models=(DEFAULT_LOCAL_MODEL,))
    for node in again:
        info = client.node(node.address)
        assert info is not None and info.active
        assert info.models == (DEFAULT_LOCAL_MODEL,) and node.models == (DEFAULT_LOCAL_MODEL,)
        assert info.endpoint == node.endpoint and node.endpoint.endswith(f":{9201 + again.index(node)}")
        assert client.balances(node.address).active_stake_wei == 10**18  # staked once, not twice
    assert client.leaf_count() == 2


def test_nodes_stop_when_up_is_killed(wwwserve_home: Path, run_up: list[Up]) -> None:
    """Even a SIGKILLed `up` leaves no node and no anvil behind (Linux parent-death signal)."""
    port, base = free_port(), free_port_block(2)
    up = Up(wwwserve_home, "--backend", "fake", "--nodes", "2", "--port", str(port), "--base-port", str(base),
            "--block-time", "0")
    run_up.append(up)
    out = up.read_until(READY_LINE, timeout_s=240)
    assert READY_LINE in out, out
    up.proc.kill()
    up.proc.wait()
    deadline = time.monotonic() + 20
    while ports_in_use([base, base + 1]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ports_in_use([base, base + 1]) == [], "node processes outlived a SIGKILLed `wwwserve up`"
    while ports_in_use([port]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ports_in_use([port]) == [], "anvil outlived a SIGKILLed `wwwserve up`"
