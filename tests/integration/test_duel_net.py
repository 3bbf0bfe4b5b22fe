"""A duel from a user's request to moved stake, on anvil with six real `wwwserve node run` processes.

Node 1 (the origin) always delegates and makes every delegated answer a duel (`policy.p_inspect=1`).
Nodes 2 and 3 serve the model with answers of 4 and 12 words. Nodes 4–6 serve only a judge model: a
fake backend scripted to prefer the longer answer (`backend.fake.judge_rule=longer`), so they are the
only nodes the contract can draw as judges. One request to node 1: the user gets an answer at once;
node 1 then gets the second answer from the other executor, opens the duel on-chain, draws the judges;
the judges fetch the evidence from node 1 over the signed peer API, verify it, vote in both orders,
commit, reveal; the duel settles and the 4-word executor's stake goes to the 12-word one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner
from web3 import Web3

from devnet.anvil import AnvilProcess, free_port, mine
from ledger.client import DuelOutcome, DuelStatus, Vote, WWWServeClient
from ledger.deployment import load_deployment
from wwwserve.cli import app

pytestmark = pytest.mark.integration

PASSWORD = "duel test password"
MODEL = "fake-model"
JUDGE_MODEL = "judge-model"
ETH = 10**18


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == code, f"wwwserve {' '.join(args)} -> {result.exit_code}\n{result.output}"
    return result.output


def test_a_users_request_becomes_a_duel_that_judges_settle_on_chain(
    anvil: AnvilProcess, wwwserve_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WWWSERVE_PASSWORD", PASSWORD)
    monkeypatch.setenv("WWWSERVE_RPC_URL", anvil.rpc_url)
    _cli("devnet", "up", "--demo-nodes", "0")
    ports = [free_port() for _ in range(6)]
    addresses = []
    for i, port in enumerate(ports, start=1):
        address = _cli("wallet", "new", f"n{i}").split(": ")[1].split()[0]
        addresses.append(address)
        _cli("devnet", "fund", address, "5eth")
        model = MODEL if i <= 3 else JUDGE_MODEL
        _cli("-w", f"n{i}", "node", "register", "--endpoint", f"http://127.0.0.1:{port}", "-m", model)
        _cli("-w", f"n{i}", "credit", "deposit", "2eth")
        _cli("-w", f"n{i}", "stake", "add", "1eth")
    env = {**os.environ, "WWWSERVE_HOME": str(wwwserve_home), "WWWSERVE_PASSWORD": PASSWORD,
           "WWWSERVE_RPC_URL": anvil.rpc_url, "PYTHONUNBUFFERED": "1"}
    common = ["--set", "backend.kind=fake", "--set", "policy.auto_stake=false", "--set", "chain.poll_interval_s=0.3",
              "--set", "judge.poll_interval_s=0.3", "--set", "policy.accept_frequency=1.0"]
    per_node = [
        [f"backend.models=['{MODEL}']", "policy.target_token_usage=-1", "policy.offload_frequency=1.0",
         "policy.accept_frequency=0.0", "policy.p_inspect=1.0"],
        [f"backend.models=['{MODEL}']", "backend.fake.words=4"],
        [f"backend.models=['{MODEL}']", "backend.fake.words=12"],
        *[[f"backend.models=['{JUDGE_MODEL}']", "backend.fake.judge_rule=longer"] for _ in range(3)],
    ]
    # Blocks advance on their own (anvil automines only on transactions; the windows count blocks).
    stop_mining = threading.Event()

    def miner() -> None:
        while not stop_mining.wait(0.4):
            mine(anvil.rpc_url, 1)

    threading.Thread(target=miner, daemon=True).start()
    procs: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"node{i}.log" for i in range(1, 7)]
    try:
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

        resp = httpx.post(f"http://127.0.0.1:{ports[0]}/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": [{"role": "user", "content": "one two three four five"}]})
        assert resp.status_code == 200, resp.text
        first_executor = resp.json()["wwwserve"]["executor"]
        assert first_executor in addresses[1:3]

        # A streamed request becomes a duel too: the user reads the stream that started first, the other is judged.
        streamed_executor = None
        with httpx.stream("POST", f"http://127.0.0.1:{ports[0]}/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "stream": True,
                                "messages": [{"role": "user", "content": "six seven eight nine ten"}]}) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("data: {") and '"wwwserve"' in line:
                    streamed_executor = json.loads(line[6:])["wwwserve"]["executor"]
        assert streamed_executor in addresses[1:3]

        w3 = Web3(Web3.HTTPProvider(anvil.rpc_url))
        deployment = load_deployment(anvil.chain_id)
        assert deployment is not None
        chain = WWWServeClient(w3, deployment.address, None)
        deadline = time.monotonic() + 120
        while chain.duel_count() < 2 or any(chain.duel(i).status is not DuelStatus.SETTLED for i in (1, 2)):
            assert time.monotonic() < deadline, "\n".join(log.read_text()[-3000:] for log in logs)
            time.sleep(0.5)
        duels = [chain.duel(1), chain.duel(2)]
        assert {d.a for d in duels} == {first_executor, streamed_executor} or first_executor == streamed_executor
        duel = next(d for d in duels if d.a == first_executor)
        assert duel.origin == addresses[0]
        assert {duel.a, duel.b} == set(addresses[1:3]) and duel.a == first_executor
        assert set(duel.judges) == set(addresses[3:])  # never the origin or a duelist
        long_one, short_one = addresses[2], addresses[1]
        winner_vote = Vote.A if duel.a == long_one else Vote.B
        assert list(duel.votes) == [winner_vote] * 3  # every judge, in both orders, chose the longer answer
        assert duel.outcome is (DuelOutcome.A_WON if duel.a == long_one else DuelOutcome.B_WON)
        assert chain.balances(short_one).stake_wei == 0  # the loser's stake went to the winner's credit
        assert chain.balances(long_one).credit_wei >= 2 * ETH  # its 1 eth of credit left + the 1 eth stake won
        other = next(d for d in duels if d is not duel)  # the streamed one: same duelists, same verdict
        assert {other.a, other.b} == set(addresses[1:3]) and other.a == streamed_executor
        assert other.outcome is (DuelOutcome.A_WON if other.a == long_one else DuelOutcome.B_WON)

        standings = json.loads(_cli("duel", "leaderboard", "--json"))
        assert [s["node"] for s in standings] == [long_one, short_one]
        assert [s["wins"] for s in standings] == [2, 0]
    finally:
        stop_mining.set()
        for proc in procs:
            proc.send_signal(2)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()
