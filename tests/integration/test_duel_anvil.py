"""Duels on a real anvil through the client, the indexer and the CLI: a challenger that could not get the
request says so, the origin publishes it on-chain, the challenger answers it, judges commit and reveal,
the duel settles and stake moves; a drawn challenger that never answers loses its bond. The indexer
agrees with the chain and does not double-count after a restart; `wwwserve duel show/list/leaderboard`
say what happened and why. (Real node processes playing every role: test_duel_net.py.)"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.devnet.anvil import DEV_KEYS, AnvilProcess, mine
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import DuelOutcome, DuelStatus, Vote, WWWServeClient
from wwwserve.ledger.deployment import Deployment
from wwwserve.ledger.errors import DuelStateError, DuelWindowError, NotAJudgeError
from wwwserve.ledger.indexer import Indexer
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    inspect_commitment,
    model_hash,
    request_bytes,
    request_hash,
    request_id_hash,
    sign_work,
)

pytestmark = pytest.mark.integration

ETH = 10**18
PARAMS = DeploymentParams(epoch_blocks=10, answer_window_blocks=8, commit_window_blocks=8,
                          reveal_window_blocks=6, appeal_window_blocks=6, publish_window_blocks=6)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 8}


def attested(w3: object, contract: str, origin: str, executor: LocalAccount, request_id: str,
             answer: str) -> tuple[WorkAttestation, bytes]:
    """A's signed work over `answer`, with the origin's commitment to duel it, and the salt opening it."""
    salt = os.urandom(32)
    rid = request_id_hash(request_id)
    work = sign_work(executor, 31337, contract, WorkAttestation(
        origin=origin, executor=executor.address, request_id=rid, request_hash=request_hash("chat", REQUEST),
        model_hash=model_hash("m"), answer_hash=answer_hash(answer), inspect=inspect_commitment(rid, True, salt),
        issued_at=int(time.time())))
    return work, salt


def test_a_withheld_request_is_published_answered_judged_and_settled(anvil: AnvilProcess, wwwserve_home: Path) -> None:
    w3 = connect(anvil.rpc_url)
    funder = TxSender(w3, Account.from_key(DEV_KEYS[0]))
    address, block = WWWServeClient.deploy(w3, funder, PARAMS)
    accounts: list[LocalAccount] = [Account.create() for _ in range(7)]
    clients: dict[str, WWWServeClient] = {}
    for i, acct in enumerate(accounts):
        funder.send(to=acct.address, value_wei=3 * ETH, function="fund")
        c = WWWServeClient(w3, address, TxSender(w3, acct))
        c.register(os.urandom(32), f"http://127.0.0.1:{9200 + i}", ["m"], "{}")
        c.deposit(2 * ETH)
        c.stake(ETH)
        clients[acct.address] = c
    mine(anvil.rpc_url, 2 * PARAMS.epoch_blocks)  # stakes count from the next epoch
    origin, a = accounts[0].address, accounts[1].address
    indexer = Indexer(w3, address, db_url=f"sqlite:///{wwwserve_home / 'index.sqlite'}", start_block=block)

    work, salt = attested(w3, address, origin, accounts[1], "chatcmpl-1", "4")
    duel_id = clients[origin].open_duel(work, salt).duel_id
    mine(anvil.rpc_url, clients[origin].duel(duel_id).seed_block + 1 - w3.eth.block_number)
    b = clients[origin].challenger_of(duel_id)
    assert b is not None and b not in (origin, a)
    clients[b].answer_duel(duel_id, b"\x00" * 32)  # B could not get the request from the origin or from A
    assert clients[origin].duel(duel_id).status is DuelStatus.AWAITING_REQUEST
    clients[origin].publish_request(duel_id, work, salt, request_bytes("chat", REQUEST))
    duel = clients[origin].duel(duel_id)
    assert duel.status is DuelStatus.AWAITING_ANSWER and duel.b == b  # the same B answers, in a new window
    assert clients[origin].published_request(duel_id) == request_bytes("chat", REQUEST)
    mine(anvil.rpc_url, duel.seed_block + 1 - w3.eth.block_number)
    clients[b].answer_duel(duel_id, answer_hash("5"))
    duel = clients[origin].duel(duel_id)
    assert duel.status is DuelStatus.JUDGING
    seats = list(duel.judges)
    holders = sorted(set(seats))
    # Seats follow stake over every node, the duel's own origin, A and B included (docs/duels.md).
    assert len(seats) == 3 and set(seats) <= {acct.address for acct in accounts}
    outsider = next(acct.address for acct in accounts if acct.address not in seats)

    # Every judge (a party or not) but (when there are several) the one with the fewest seats prefers B.
    minority = min(holders, key=lambda j: (seats.count(j), j)) if len(holders) > 1 else None
    votes = {j: Vote.A if j == minority else Vote.B for j in holders}
    salts = {j: os.urandom(32) for j in holders}
    for j in holders:
        clients[j].commit_vote(duel_id, clients[j].vote_commitment(duel_id, 1, j, votes[j], salts[j]))
    with pytest.raises(NotAJudgeError):
        clients[outsider].commit_vote(duel_id, os.urandom(32))
    mine(anvil.rpc_url, duel.commit_end_block + 1 - w3.eth.block_number)
    for j in holders:
        clients[j].reveal_vote(duel_id, votes[j], salts[j])
    before = {acct.address: clients[acct.address].balances(acct.address) for acct in accounts}
    with pytest.raises(DuelWindowError):
        clients[a].settle_duel(duel_id)  # the loser may still appeal
    mine(anvil.rpc_url, duel.appeal_end_block + 1 - w3.eth.block_number)
    settled = clients[a].settle_duel(duel_id)  # anyone may settle
    assert settled.event("DuelSettled").args["outcome"] == DuelOutcome.B_WON
    with pytest.raises(DuelStateError):
        clients[b].settle_duel(duel_id)
    after = {acct.address: clients[acct.address].balances(acct.address) for acct in accounts}
    # The deployment's first verdict, with an empty reserve (pay scale 1 / (2p) = 1, no reserve share). Each seat
    # is scored against the verdict recounted without its judge's own seats: voting the way that recount went,
    # or either way when it is even, earns JUDGE_FEE; voting the other way pays JUDGE_PENALTY from its stake.
    # (A judge drawn twice may lose both seats to the one it outvoted.) On top of that A's bond goes to B with
    # B's fee, and the origin gets back the fees no seat earned.
    credit: Counter[str] = Counter()
    stake: Counter[str] = Counter()  # lost
    n_a, n_b = sum(votes[j] == Vote.A for j in seats), sum(votes[j] == Vote.B for j in seats)
    for j in seats:
        own = seats.count(j)
        a_rest, b_rest = n_a - own * (votes[j] == Vote.A), n_b - own * (votes[j] == Vote.B)
        recount = Vote.A if a_rest > b_rest else Vote.B if b_rest > a_rest else None
        if recount is None or votes[j] == recount:
            credit[j] += PARAMS.judge_fee_wei
        else:
            stake[j] += PARAMS.judge_penalty_wei
    penalties = sum(stake.values())
    credit[origin] += PARAMS.k_judges * PARAMS.judge_fee_wei - sum(credit.values())
    credit[b] += PARAMS.duel_bond_wei + PARAMS.duelist_fee_wei
    stake[a] += PARAMS.duel_bond_wei
    for acct in accounts:
        who = acct.address
        assert after[who].credit_wei == before[who].credit_wei + credit[who], who
        assert after[who].stake_wei == before[who].stake_wei - stake[who], who
    assert clients[origin].reserve() == penalties  # the minority's

    # A second duel whose drawn challenger never answers: its bond goes to the reserve.
    work2, salt2 = attested(w3, address, origin, accounts[1], "chatcmpl-2", "4")
    second = clients[origin].open_duel(work2, salt2).duel_id
    mine(anvil.rpc_url, clients[origin].duel(second).seed_block + 1 - w3.eth.block_number)
    clients[origin].draw_challenger(second)
    no_show = clients[origin].duel(second).b
    assert no_show is not None
    stake_before = clients[no_show].balances(no_show).stake_wei
    mine(anvil.rpc_url, clients[origin].duel(second).deadline + 1 - w3.eth.block_number)
    clients[origin].settle_duel(second)
    assert clients[origin].duel(second).status is DuelStatus.CANCELLED
    assert clients[no_show].balances(no_show).stake_wei == stake_before - PARAMS.duel_bond_wei

    # The indexer follows, agrees with the chain, and a restarted indexer adds nothing twice.
    indexer.sync()
    assert indexer.reconcile(clients[origin]) == []
    indexed = indexer.duel(duel_id)
    assert indexed is not None and indexed.outcome == "b_won" and indexed.status == "settled"
    assert indexed.request == request_bytes("chat", REQUEST) and indexed.b == b
    assert indexer.duel(second).cancel_reason == "no_answer"  # type: ignore[union-attr]
    events_before = indexer.event_count()
    indexer.close()
    restarted = Indexer(w3, address, db_url=f"sqlite:///{wwwserve_home / 'index.sqlite'}", start_block=block)
    restarted.sync()
    assert restarted.event_count() == events_before
    assert restarted.reconcile(clients[origin]) == []
    restarted.close()

    # The CLI shows the duels from the chain, and says why the second one was cancelled.
    Deployment(31337, address, block, funder.address, anvil.rpc_url, PARAMS, "", "", "", "").save()
    shown = CliRunner().invoke(app, ["--rpc-url", anvil.rpc_url, "duel", "show", str(duel_id)])
    assert shown.exit_code == 0, shown.output
    assert "settled" in shown.output and "b won" in shown.output.lower()
    assert "published on-chain" in shown.output
    for j in holders:
        assert j in shown.output
    cancelled = CliRunner().invoke(app, ["--rpc-url", anvil.rpc_url, "duel", "show", str(second)])
    assert cancelled.exit_code == 0 and "never answered" in cancelled.output, cancelled.output
    listed = CliRunner().invoke(app, ["--rpc-url", anvil.rpc_url, "duel", "list"])
    assert listed.exit_code == 0 and "b won" in listed.output and "no answer" in listed.output, listed.output
    ranked = CliRunner().invoke(app, ["--rpc-url", anvil.rpc_url, "duel", "leaderboard", "--json"])
    assert ranked.exit_code == 0, ranked.output
    standings = json.loads(ranked.output)
    assert [s["node"] for s in standings] == [b, a]  # the winner first
    assert standings[0]["wins"] == 1 and standings[1]["losses"] == 1 and standings[0]["score"] > 0
