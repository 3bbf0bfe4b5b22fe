"""Duels from a user's request to moved stake, on anvil with six real `wwwserve node run` processes.

Node 1 (the origin) always delegates and duels every delegated answer (`policy.p_inspect=1`). Nodes 2
and 3 serve the model with answers of 4 and 12 words; node 3 declines every delegation, so node 2 is
always the executor A and node 3, the only other node serving the model, is the challenger B the
contract draws (it stakes 10 ETH against the judges' 1 ETH each: the contract tries 8 stake draws for a
challenger that serves the model, and with equal stakes all 8 would land on a judge one duel in ten).
Nodes 4–6 serve only a judge model: a fake backend scripted to prefer the longer answer
(`backend.fake.judge_rule=longer`), so they hold every judge seat. Node 2 appeals every duel it loses
(`judge.appeal=always`). Small windows (`DeploymentParams`) and a block every 0.25 s keep it fast.

1. A user's request: the user is served by A at once; the origin opens the duel over A's signed work;
   B fetches the request from the origin, checks it against the chain, answers; the judges fetch the
   evidence from the origin and B over the signed peer API, vote in both orders, commit, reveal; A
   appeals; a second, larger panel judges again; the duel settles, and every balance moved exactly as
   the contract's rules say.
2. A second request, and the origin dies right after opening its duel: B gets the request from A, the
   judges get it and A's answer from A and B's answer from B, and the duel still ends with B's win.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from web3 import Web3

from devnet.anvil import AnvilProcess, free_port, mine, start_anvil
from devnet.deploy import ensure_deployment
from ledger.client import Balances, DuelOutcome, DuelStatus, Vote, WWWServeClient
from ledger.indexer import Indexer
from ledger.params import DeploymentParams
from ledger.work import answer_hash
from wwwserve.cli import app

pytestmark = pytest.mark.integration

PASSWORD = "duel test password"
MODEL = "fake-model"
JUDGE_MODEL = "judge-model"
ETH = 10**18
# Windows of several seconds each at a block every BLOCK_S: wide enough for a loaded CI machine (a node
# polls every 0.3 s and sends its transactions one at a time).
PARAMS = DeploymentParams(epoch_blocks=24, answer_window_blocks=20, commit_window_blocks=20,
                          reveal_window_blocks=12, appeal_window_blocks=20, publish_window_blocks=12)
BLOCK_S = 0.25


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, f"wwwserve {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


@dataclass
class Network:
    anvil: AnvilProcess
    home: Path
    chain: WWWServeClient
    indexer: Indexer
    addresses: list[str]
    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]

    @property
    def origin(self) -> str:
        return self.addresses[0]

    @property
    def a(self) -> str:
        return self.addresses[1]

    @property
    def b(self) -> str:
        return self.addresses[2]

    @property
    def judges(self) -> list[str]:
        return self.addresses[3:]

    def tail(self) -> str:
        return "\n".join(f"--- node{i}\n{log.read_text()[-4000:]}" for i, log in enumerate(self.logs, start=1))

    def wait(self, what: str, done: Callable[[], bool], timeout_s: float = 120.0, duel_id: int | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() > deadline:
                story = self.story(duel_id) if duel_id is not None else ""
                raise AssertionError(f"timed out waiting for {what}\n{story}\n{self.tail()}")
            time.sleep(0.2)

    def story(self, duel_id: int) -> str:
        """What happened to a duel, block by block (for failure messages)."""
        self.indexer.sync()
        head = self.chain.w3.eth.block_number
        events = "\n".join(f"  block {e.block_number}: {e.name} {e.args}" for e in self.indexer.duel_events(duel_id))
        return f"duel {duel_id} at block {head}:\n{events}"

    def balances(self) -> dict[str, Balances]:
        return {address: self.chain.balances(address) for address in self.addresses}

    def ask(self, content: str) -> dict[str, Any]:
        resp = httpx.post(f"http://127.0.0.1:{self.ports[0]}/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": content}]})
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def duel_over(self, answer: str) -> Any:
        """The indexed duel over A's answer `answer` (None until opened)."""
        self.indexer.sync()
        wanted = "0x" + answer_hash(answer).hex()
        return next((d for d in self.indexer.duels(limit=100) if d.answer_a_hash == wanted), None)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    tmp = tmp_path_factory.mktemp("duel-net")
    home = tmp / "home"
    home.mkdir()
    saved = {k: os.environ.get(k) for k in ("WWWSERVE_HOME", "WWWSERVE_PASSWORD", "WWWSERVE_RPC_URL")}
    anvil = start_anvil()
    os.environ.update(WWWSERVE_HOME=str(home), WWWSERVE_PASSWORD=PASSWORD, WWWSERVE_RPC_URL=anvil.rpc_url)
    stop_mining = threading.Event()
    procs: list[subprocess.Popen[bytes]] = []
    indexer = None
    try:
        w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
        deployment, _ = ensure_deployment(w3, anvil.rpc_url, params=PARAMS)
        ports = [free_port() for _ in range(6)]
        addresses = []
        for i, port in enumerate(ports, start=1):
            address = _cli("wallet", "new", f"n{i}").split(": ")[1].split()[0]
            addresses.append(address)
            stake = "10eth" if i == 3 else "1eth"
            _cli("devnet", "fund", address, "15eth")
            model = MODEL if i <= 3 else JUDGE_MODEL
            _cli("-w", f"n{i}", "node", "register", "--endpoint", f"http://127.0.0.1:{port}", "-m", model)
            _cli("-w", f"n{i}", "credit", "deposit", "11eth" if i == 3 else "2eth")
            _cli("-w", f"n{i}", "stake", "add", stake)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        common = ["--set", "backend.kind=fake", "--set", "policy.auto_stake=false",
                  "--set", "chain.poll_interval_s=0.3", "--set", "judge.poll_interval_s=0.3",
                  "--set", "policy.accept_frequency=1.0",
                  "--set", "peers.fee_wei=0"]  # no fee vouchers: every credit change below is the duels'
        per_node = [
            [f"backend.models=['{MODEL}']", "policy.target_token_usage=-1", "policy.offload_frequency=1.0",
             "policy.accept_frequency=0.0", "policy.p_inspect=1.0"],
            [f"backend.models=['{MODEL}']", "backend.fake.words=4", "judge.appeal=always"],
            [f"backend.models=['{MODEL}']", "backend.fake.words=12", "policy.accept_frequency=0.0"],
            *[[f"backend.models=['{JUDGE_MODEL}']", "backend.fake.judge_rule=longer"] for _ in range(3)],
        ]

        def miner() -> None:  # the windows count blocks; anvil mines only on transactions
            while not stop_mining.wait(BLOCK_S):
                mine(anvil.rpc_url, 1)

        threading.Thread(target=miner, daemon=True).start()
        logs = [tmp / f"node{i}.log" for i in range(1, 7)]
        for i, (port, extra) in enumerate(zip(ports, per_node, strict=True), start=1):
            sets = [x for kv in extra for x in ("--set", kv)]
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "wwwserve.cli", "-w", f"n{i}", "node", "run", *common, *sets,
                 "--set", f"server.port={port}"],
                env=env, stdout=logs[i - 1].open("wb"), stderr=subprocess.STDOUT,
            ))
        for i, port in enumerate(ports):
            deadline = time.monotonic() + 120
            while True:
                assert procs[i].poll() is None, logs[i].read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, logs[i].read_text()
                time.sleep(0.1)
        chain = WWWServeClient(w3, deployment.address, None)
        indexer = Indexer(w3, deployment.address, db_url=f"sqlite:///{tmp / 'index.sqlite'}",
                          start_block=deployment.block_number)
        yield Network(anvil, home, chain, indexer, addresses, ports, procs, logs)
    finally:
        stop_mining.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(2)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if indexer is not None:
            indexer.close()
        anvil.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()


def test_a_users_request_becomes_a_duel_that_is_answered_judged_appealed_and_settled(network: Network) -> None:
    net = network
    before = net.balances()
    body = net.ask("one two three four five")
    text = body["choices"][0]["message"]["content"]
    assert body["wwwserve"]["executor"] == net.a and len(text.split()) == 4  # served by A, at once
    net.wait("the duel to open", lambda: net.duel_over(text) is not None)
    duel_id = net.duel_over(text).id
    net.wait("the duel to settle", lambda: net.chain.duel(duel_id).status is DuelStatus.SETTLED, timeout_s=180,
             duel_id=duel_id)

    duel = net.chain.duel(duel_id)
    indexed = net.duel_over(text)
    story = net.story(duel_id)
    assert (duel.origin, duel.a, duel.b) == (net.origin, net.a, net.b), story  # B drawn by the contract
    assert indexed.answer_b_hash is not None and indexed.appellant == net.a, story  # A lost round 1, appealed
    first, second = duel.rounds
    assert len(first.judges) == PARAMS.k_judges and len(second.judges) == 2 * PARAMS.k_judges + 1
    assert set(first.judges) | set(second.judges) <= set(net.judges)  # never the origin or a duelist
    assert list(first.votes) == [Vote.B] * 3 and list(second.votes) == [Vote.B] * 7, story  # the longer answer
    assert duel.outcome is DuelOutcome.B_WON

    after = net.balances()
    bond, fee, judge_fee = PARAMS.duel_bond_wei, PARAMS.duelist_fee_wei, PARAMS.judge_fee_wei
    assert after[net.a].stake_wei == before[net.a].stake_wei - bond  # A's bond went to B
    assert after[net.a].credit_wei == before[net.a].credit_wei - PARAMS.appeal_fee_wei  # a lost appeal
    assert after[net.b].credit_wei == before[net.b].credit_wei + bond + fee
    assert after[net.b].stake_wei == before[net.b].stake_wei and after[net.b].bonded_wei == 0
    assert after[net.origin].credit_wei == before[net.origin].credit_wei - PARAMS.duel_escrow_wei
    # Every seat voted with the verdict: a fee per seat, both rounds (scaled by 1 / (2p) for p the share of
    # past verdicts like this one, which is 1 for the deployment's first verdict: this one).
    for judge in net.judges:
        seats = list(first.judges).count(judge) + list(second.judges).count(judge)
        assert after[judge].credit_wei == before[judge].credit_wei + seats * judge_fee, judge
        assert after[judge].stake_wei == before[judge].stake_wei
    total = sum(b.total_wei for b in after.values()) + net.chain.reserve()
    assert total == sum(b.total_wei for b in before.values())  # nothing created or lost

    standings = json.loads(_cli("duel", "leaderboard", "--json"))
    assert [s["node"] for s in standings] == [net.b, net.a]


def test_a_duel_survives_its_origin_going_offline_after_opening(network: Network) -> None:
    net = network
    body = net.ask("six seven eight nine ten")
    text = body["choices"][0]["message"]["content"]
    assert body["wwwserve"]["executor"] == net.a
    net.wait("the duel to open", lambda: net.duel_over(text) is not None)
    net.procs[0].kill()  # the origin is gone: nobody can ask it for the request or A's answer any more
    net.procs[0].wait(timeout=10)
    duel_id = net.duel_over(text).id
    net.wait("the duel to settle", lambda: net.chain.duel(duel_id).status is DuelStatus.SETTLED, timeout_s=180,
             duel_id=duel_id)
    duel = net.chain.duel(duel_id)
    # B got the request from A; the judges got the request and A's answer from A, B's answer from B:
    # every seat voted on the answers (B's, the longer), none for lack of evidence.
    assert duel.b == net.b and duel.outcome is DuelOutcome.B_WON
    assert all(list(r.votes) == [Vote.B] * len(r.judges) for r in duel.rounds), net.story(duel_id)
    b_log = net.logs[2].read_text()
    assert f"evidence of duel {duel_id} from {net.origin}" in b_log  # the origin was asked, and was gone
    assert f"duel {duel_id}: answered as challenger" in b_log
