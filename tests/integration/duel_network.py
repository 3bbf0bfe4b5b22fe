"""A network of real `wwwserve node run` processes on a real anvil, for the duel integration tests.

Shared by test_duel_net.py (honest nodes play duels end to end) and test_attacks_live.py (a scripted
attacker against the same kind of network). `start_network` deploys the contracts with the given
parameters, creates, funds, registers and stakes one wallet per `NodeSpec` through the CLI, starts one
node process per wallet and waits until each says it is ready; a background thread mines a block every
`block_s` seconds (the duel windows count blocks, and anvil mines only on transactions), which a test can
pause (`Network.mining_paused`) when it must say exactly which block its next transaction lands in.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner
from web3 import Web3

from wwwserve.cli import app
from wwwserve.devnet.anvil import AnvilProcess, mine
from wwwserve.devnet.deploy import ensure_deployment
from wwwserve.devnet.localnet import LocalNet, NodeLaunch
from wwwserve.devnet.ports import free_port
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import Balances, WWWServeClient
from wwwserve.ledger.deployment import Deployment
from wwwserve.ledger.indexer import Indexer
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.work import answer_hash

PASSWORD = "duel test password"


def cli(*args: str, code: int = 0, stdin: str | None = None) -> str:
    """Run the `wwwserve` CLI in-process (with `stdin` as its input); fail on a traceback or an unexpected
    exit code."""
    result = CliRunner().invoke(app, list(args), input=stdin)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, f"wwwserve {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


def register_operator(wallet: str = "op", model: str = "fake-model") -> tuple[str, int]:
    """A deployment without demo nodes and one operator on it: the wallet `wallet`, funded with 2 ETH and
    registered at http://127.0.0.1:<a free port> serving `model`. Returns its address and that port, for the
    node a test then starts (WWWSERVE_PASSWORD and WWWSERVE_RPC_URL set by the test)."""
    cli("devnet", "up", "--demo-nodes", "0")
    address = cli("wallet", "new", wallet).split(": ")[1].split()[0]
    cli("devnet", "fund", address, "2eth")
    port = free_port()
    cli("-w", wallet, "node", "register", "--endpoint", f"http://127.0.0.1:{port}", "-m", model)
    return address, port


@dataclass(frozen=True)
class NodeSpec:
    """One node: the models it registers, its stake and credit deposit (CLI amounts such as "1eth"), and
    its `--set key=value` settings beyond `start_network`'s common ones."""

    models: tuple[str, ...]
    stake: str = "1eth"
    deposit: str = "2eth"
    fund: str = "15eth"
    settings: tuple[str, ...] = ()


@dataclass
class Network:
    anvil: AnvilProcess
    home: Path
    deployment: Deployment
    chain: WWWServeClient
    indexer: Indexer
    addresses: list[str]
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    _mining: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def w3(self) -> Web3:
        return self.chain.w3

    def tail(self) -> str:
        return "\n".join(f"--- node{i}\n{log.read_text()[-4000:]}" for i, log in enumerate(self.logs, start=1))

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float = 120.0, duel_id: int | None = None) -> None:
        """Poll `done` until it holds; on timeout fail with the duel's story and the nodes' logs."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                story = self.story(duel_id) if duel_id is not None else ""
                raise AssertionError(f"timed out waiting for {what}\n{story}\n{self.tail()}")
            time.sleep(0.2)

    def story(self, duel_id: int) -> str:
        """What happened to a duel, block by block (for failure messages)."""
        self.indexer.sync()
        head = self.w3.eth.block_number
        events = "\n".join(f"  block {e.block_number}: {e.name} {e.args}" for e in self.indexer.duel_events(duel_id))
        return f"duel {duel_id} at block {head}:\n{events}"

    def balances(self, addresses: Sequence[str] | None = None) -> dict[str, Balances]:
        return {address: self.chain.balances(address) for address in (addresses or self.addresses)}

    def ask(self, content: str, model: str, node: int = 0) -> dict[str, Any]:
        """A user's chat request to node `node` (0-based), answered whole."""
        resp = httpx.post(f"http://127.0.0.1:{self.ports[node]}/v1/chat/completions", timeout=30,
                          json={"model": model, "messages": [{"role": "user", "content": content}]})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def duel_over(self, answer: str, executor: str | None = None) -> Any:
        """The indexed duel over A's answer `answer`, by `executor` when given (None until opened): two tests
        of one network may duel the same short answer, and the older duel must not stand in for the new."""
        self.indexer.sync()
        wanted = "0x" + answer_hash(answer).hex()
        return next((d for d in self.indexer.duels(limit=100) if d.answer_a_hash == wanted
                     and (executor is None or d.a.lower() == executor.lower())), None)

    def mine_to(self, block: int) -> None:
        """Mine until the head is `block` (nothing if it is there already)."""
        behind = block - self.w3.eth.block_number
        if behind > 0:
            mine(self.anvil.rpc_url, behind)

    @contextlib.contextmanager
    def mining_paused(self) -> Iterator[None]:
        """No background blocks inside (transactions are still mined, one block each)."""
        self._mining.clear()
        try:
            yield
        finally:
            self._mining.set()


@contextlib.contextmanager
def start_network(tmp: Path, params: DeploymentParams, specs: Sequence[NodeSpec], common: Sequence[str],
                  block_s: float) -> Iterator[Network]:
    """Anvil, the contracts, and one running node per spec (wallets n1, n2, ... in a fresh WWWSERVE_HOME);
    everything is stopped on exit, and the nodes' logs must hold no traceback."""
    home = tmp / "home"
    home.mkdir()
    saved = {k: os.environ.get(k) for k in ("WWWSERVE_HOME", "WWWSERVE_PASSWORD", "WWWSERVE_RPC_URL")}
    net = LocalNet(tmp)  # anvil.log and node<i>.log
    anvil = net.start_anvil()
    os.environ.update(WWWSERVE_HOME=str(home), WWWSERVE_PASSWORD=PASSWORD, WWWSERVE_RPC_URL=anvil.rpc_url)
    stop_mining = threading.Event()
    mining = threading.Event()
    mining.set()
    logs = [tmp / f"node{i}.log" for i in range(1, len(specs) + 1)]
    indexer = None
    try:
        w3 = connect(anvil.rpc_url)
        deployment, _ = ensure_deployment(w3, anvil.rpc_url, params=params)
        ports = [free_port() for _ in specs]
        addresses = []
        for i, (port, spec) in enumerate(zip(ports, specs, strict=True), start=1):
            address = cli("wallet", "new", f"n{i}").split(": ")[1].split()[0]
            addresses.append(address)
            cli("devnet", "fund", address, spec.fund)
            models = [x for m in spec.models for x in ("-m", m)]
            cli("-w", f"n{i}", "node", "register", "--endpoint", f"http://127.0.0.1:{port}", *models)
            cli("-w", f"n{i}", "credit", "deposit", spec.deposit)
            cli("-w", f"n{i}", "stake", "add", spec.stake)

        def miner() -> None:  # the windows count blocks; anvil mines only on transactions
            while not stop_mining.wait(block_s):
                if mining.is_set():
                    mine(anvil.rpc_url, 1)

        threading.Thread(target=miner, daemon=True).start()
        # The nodes read the home, the password and the chain from the environment set above.
        procs = []
        for i, (port, spec) in enumerate(zip(ports, specs, strict=True), start=1):
            launch = NodeLaunch(f"node{i}", port, logs[i - 1], (*common, *spec.settings), wallet=f"n{i}")
            procs.append(net.start_node(launch).proc)
        net.wait_ready(120)
        chain = WWWServeClient(w3, deployment.address, None)
        indexer = Indexer(w3, deployment.address, db_url=f"sqlite:///{tmp / 'index.sqlite'}",
                          start_block=deployment.block_number)
        yield Network(anvil, home, deployment, chain, indexer, addresses, ports, procs, logs, mining)
    finally:
        stop_mining.set()
        net.stop(timeout_s=15)  # the nodes (SIGTERM, SIGKILL after 15 s), then anvil
        if indexer is not None:
            indexer.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()
