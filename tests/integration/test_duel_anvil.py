"""A full duel on a real anvil: open, draw, commit, reveal, settle; stake moves; the indexer agrees."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner

from devnet.anvil import DEV_KEYS, AnvilProcess, mine
from ledger.client import DuelOutcome, DuelStatus, Vote, WWWServeClient
from ledger.deployment import Deployment
from ledger.errors import AlreadyVotedError, DuelStateError, NotAJudgeError
from ledger.indexer import Indexer
from ledger.params import DeploymentParams
from ledger.tx import TxSender, connect
from wwwserve.cli import app

pytestmark = pytest.mark.integration

ETH = 10**18
PARAMS = DeploymentParams(commit_window_blocks=5, reveal_window_blocks=5)


def test_full_duel_moves_stake_and_indexer_resumes(anvil: AnvilProcess, wwwserve_home: Path) -> None:
    w3 = connect(anvil.rpc_url)
    funder = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    address, block = WWWServeClient.deploy(w3, funder, PARAMS)
    accounts: list[LocalAccount] = [Account.create() for _ in range(7)]
    clients: dict[str, WWWServeClient] = {}
    for i, acct in enumerate(accounts):
        funder.send(to=acct.address, value_wei=3 * ETH, function="fund")
        c = WWWServeClient(w3, address, TxSender(w3, acct))
        c.register(os.urandom(32), f"http://127.0.0.1:{9200 + i}", ["smollm2"], "{}")
        c.deposit(2 * ETH)
        c.stake(ETH)
        clients[acct.address] = c
    origin, a, b = accounts[0].address, accounts[1].address, accounts[2].address
    indexer = Indexer(w3, address, db_url=f"sqlite:///{wwwserve_home / 'index.sqlite'}", start_block=block)
    indexer.sync()

    opened = clients[origin].open_duel(a, b, os.urandom(32), os.urandom(32), os.urandom(32))
    duel_id = opened.duel_id
    assert duel_id == 1
    # estimateGas runs against the latest block, so it must already be past the seed block
    mine(anvil.rpc_url, PARAMS.seed_delay_blocks + 1)
    clients[origin].draw_judges(duel_id)
    duel = clients[origin].duel(duel_id)
    assert duel.status is DuelStatus.VOTING
    judges = list(duel.judges)
    assert len(judges) == 3 and not {origin, a, b} & set(judges)

    # two judges prefer B, one prefers A: B wins, the A-voter is a minority judge
    votes = {judges[0]: Vote.B, judges[1]: Vote.B, judges[2]: Vote.A}
    salts = {j: os.urandom(32) for j in judges}
    for j in judges:
        clients[j].commit_vote(duel_id, clients[j].vote_commitment(duel_id, j, votes[j], salts[j]))
    with pytest.raises(NotAJudgeError):
        clients[origin].commit_vote(duel_id, os.urandom(32))
    duel = clients[origin].duel(duel_id)
    mine(anvil.rpc_url, max(0, duel.commit_end_block + 1 - w3.eth.block_number))
    for j in judges:
        clients[j].reveal_vote(duel_id, votes[j], salts[j])
    with pytest.raises(AlreadyVotedError):
        clients[judges[0]].reveal_vote(duel_id, votes[judges[0]], salts[judges[0]])

    before = {acct.address: clients[acct.address].balances(acct.address) for acct in accounts}
    settled = clients[a].settle_duel(duel_id)  # anyone may settle; all judges revealed -> no wait
    assert settled.event("DuelSettled").args["outcome"] == DuelOutcome.B_WON
    with pytest.raises(DuelStateError):
        clients[b].settle_duel(duel_id)
    after = {acct.address: clients[acct.address].balances(acct.address) for acct in accounts}
    fee = PARAMS.duelist_fee_wei
    assert after[a].stake_wei == 0  # the loser's whole stake (gamma = 1.0) ...
    assert after[b].credit_wei == before[b].credit_wei + ETH + fee  # ... goes to the winner's credit
    assert after[judges[2]].stake_wei == ETH * 8 // 10  # minority judge loses 20 %
    pool = ETH // 5
    for j in judges[:2]:
        assert after[j].credit_wei == before[j].credit_wei + pool // 2 + PARAMS.judge_fee_wei
    assert w3.eth.get_balance(address) == sum(x.total_wei for x in after.values())

    # the indexer follows, agrees with the chain, and a restarted indexer adds nothing twice
    indexer.sync()
    assert indexer.reconcile(clients[origin]) == []
    events_before = indexer.event_count()
    indexed = indexer.duel(duel_id)
    assert indexed is not None and indexed.outcome == "b_won" and indexed.status == "settled"
    indexer.close()
    restarted = Indexer(w3, address, db_url=f"sqlite:///{wwwserve_home / 'index.sqlite'}", start_block=block)
    restarted.sync()
    assert restarted.event_count() == events_before
    assert restarted.reconcile(clients[origin]) == []
    restarted.close()

    # the CLI shows the duel from the chain
    Deployment(31337, address, block, funder.address, anvil.rpc_url, PARAMS, "", "", "", "").save()
    result = CliRunner().invoke(app, ["--rpc-url", anvil.rpc_url, "duel", "show", str(duel_id)])
    assert result.exit_code == 0, result.output
    assert "settled" in result.output and "b_won" in result.output.lower()
    for j in judges:
        assert j in result.output
    assert "stake moved" in result.output and "1 / 2" in result.output  # votes A / B
    assert client_settlement(clients[origin], duel_id) == (DuelOutcome.B_WON, ETH, ETH // 5)
    listed = CliRunner().invoke(app, ["--rpc-url", anvil.rpc_url, "duel", "list"])
    assert listed.exit_code == 0, listed.output
    assert "b_won" in listed.output and "1/2/0/0" in listed.output  # votes A/B/abstain/none: A 1, B 2
    ranked = CliRunner().invoke(app, ["--rpc-url", anvil.rpc_url, "duel", "leaderboard", "--json"])
    assert ranked.exit_code == 0, ranked.output
    standings = json.loads(ranked.output)
    assert [s["node"] for s in standings] == [b, a]  # the winner first
    assert standings[0]["wins"] == 1 and standings[1]["losses"] == 1 and standings[0]["score"] > 0


def client_settlement(client: WWWServeClient, duel_id: int) -> tuple[DuelOutcome, int, int]:
    settled = client.duel_settlement(duel_id)
    assert settled is not None and client.duel_settlement(duel_id + 1) is None
    return DuelOutcome(settled["outcome"]), settled["stake_moved_wei"], settled["judge_pool_wei"]
