"""Event indexer against an in-process py-evm chain (web3 EthereumTesterProvider).

One module-scoped chain runs a scenario that emits every WWWServe event (registry, credits,
withdrawals, stake, unbonding, fee vouchers paid from credit and from pending, and duels over
attested work: one appealed and overturned, with a slash spread over active and unbonding stake;
one whose challenger, drawn with less free stake than DUEL_BOND (both bonds lowered to it), never
answered; two that bonded that challenger's stake and lapsed unanswered; one whose request was
withheld, published and answered, with a silent judge; one cancelled for a withheld request; one
still awaiting its answer). The challenger and the judges are drawn by the contract (seats exclude
nobody: the origin and the challenger may judge; A's active stake is below MIN_STAKE, so it is never
drawn), so the tests compare the index with the contract's own views rather than with fixed
addresses. Each test snapshots the chain and reverts it afterwards, and indexes into its own database:
the tests that take `db_url` (or `fresh_index_url`) run once on a SQLite file and once, in the
`postgres` tier, on a throwaway PostgreSQL server (tests/conftest.py, tests/postgres_server.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ledger_world import PARAMS, STAKE_WEI, Duel, World, make_world
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract

from wwwserve.contracts import load_artifact
from wwwserve.ledger.client import DuelStatus, Vote, WWWServeClient
from wwwserve.ledger.db import (
    SCHEMA_VERSION,
    AccountRow,
    Base,
    CursorRow,
    EventRow,
    StakeHistoryRow,
    Uint256,
    VoucherClaimRow,
    default_db_url,
    drop_index,
    make_engine,
    schema_version,
)
from wwwserve.ledger.indexer import (
    DUEL_OUTCOME,
    DUEL_STATUS,
    Indexer,
    IndexerDatabaseMismatchError,
    IndexerReorgError,
    IndexerStateError,
)
from wwwserve.ledger.indexer.replay import EventReplay, LogContext
from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.ledger.tx import TxSender

C = WEI_PER_CREDIT
MIN = PARAMS.min_stake_wei
ROLES = ("origin", "a", "c1", "c2", "c3", "c4", "leaver")
LOW_STAKE = 12 * C  # the challengers' stake in duel "no answer": drawable, and 2 C over two bonds


@dataclass
class Chain:
    """The deployed scenario: handles plus the facts the tests check against."""

    world: World
    contract: Contract
    nodes: list[str]  # the registered roles' addresses, in ROLES order
    payer: str  # signs fee vouchers, is not a node
    log_count: int = 0  # logs the contract emitted in the scenario
    duels: dict[str, int] = field(default_factory=dict)  # scenario name -> duel id
    lowered_block: int = 0  # the block whose ChallengerDrawn lowered both bonds of "no answer"

    @property
    def w3(self) -> Web3:
        return self.world.w3

    def client(self) -> WWWServeClient:
        return self.world.client()


@dataclass(frozen=True)
class ClientLike:
    """Stands in for the ledger client: anything with a `.contract` can back reconcile()."""

    contract: Contract


def send(w3: Web3, fn: Any, sender: str, value: int = 0, gas: int | None = 2_000_000) -> Any:
    """Transact from an unlocked eth-tester account; the receipt must succeed.

    A fixed gas limit skips eth_estimateGas, which doubles the cost of every py-evm transaction.
    """
    params: dict[str, Any] = {"from": sender, "value": value}
    if gas is not None:
        params["gas"] = gas
    tx_hash = fn.transact(params)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    return receipt


def eth_testing(w3: Web3) -> Any:
    """web3's eth-tester-only `testing` module (mine, snapshot, revert), which web3 leaves untyped."""
    return getattr(w3, "testing")  # noqa: B009


def _settle_when_open(world: World, duel_id: int) -> None:
    """Mine to the end of whatever window the duel is in, then settle it (anyone may)."""
    info = world.client().duel(duel_id)
    last = {DuelStatus.AWAITING_ANSWER: info.answer_deadline_block,
            DuelStatus.AWAITING_REQUEST: info.publish_deadline_block,
            DuelStatus.JUDGING: info.appeal_end_block or info.reveal_end_block}[info.status]
    assert last is not None
    world.mine_to(last)
    world.client("c4").settle_duel(duel_id)


def build_scenario() -> Chain:
    world = make_world(ROLES)
    contract = world.client().contract
    nodes = [world.addr(r) for r in ROLES]
    chain = Chain(world=world, contract=contract, nodes=nodes, payer=world.addr("outsider"))
    client = world.client

    def restake() -> None:
        """Judges' penalties drain stake: restake it, so the next challenger has a full bond and
        every silent seat has stake to lose (draw weights, which slashes leave alone, stay equal).
        Seats exclude nobody, so the origin judges too."""
        for role in ("origin", "c1", "c2", "c3", "c4"):
            missing = STAKE_WEI - client().active_stake(world.addr(role))
            if missing > 0:
                client(role).stake(missing)

    # registry, withdrawals (cancelled by c3, completed by c2)
    client("c4").update_node(b"\x99" * 32, "http://c4-moved:8000", ["smollm2"], "moved")
    client("c3").request_withdrawal(7 * C)
    client("c3").cancel_withdrawal()
    client("c2").request_withdrawal(11 * C)
    world.time_travel(PARAMS.withdrawal_notice_s + 1)
    client("c2").withdraw()
    # the leaver unstakes everything, takes it back to credit and leaves (so it is never drawn)
    unstake = client("leaver").request_unstake(STAKE_WEI)
    world.time_travel(PARAMS.unbonding_period_s + 1)
    world.mine_to(unstake.block_number + PARAMS.duel_span_blocks)
    client("leaver").withdraw_stake()
    client("leaver").leave()
    client("leaver").release_slot()  # its registration bond back as credit

    # vouchers: the payer has credit 3 C and pending 7 C; claims pay 5 (3 credit + 2 pending), then 3
    # (pending), then 2 of 92 owed (what is left); c1 submits them
    payer = client("outsider")
    payer.deposit(10 * C)
    payer.request_withdrawal(7 * C)
    for cumulative in (5 * C, 8 * C, 100 * C):
        sig = payer.sign_voucher(world.accounts["outsider"], world.addr("a"), cumulative)
        client("c1").claim_voucher(chain.payer, world.addr("a"), cumulative, sig)

    # A unbonds most of its stake: a slash of its bond then spans active and unbonding stake
    client("a").request_unstake(STAKE_WEI - 2 * C)
    world.mine(PARAMS.epoch_blocks)  # the leaver's exit counts for draws from here

    # duel "appealed": round 1 for A, B appeals, round 2 (final) for B
    d1 = world.open_duel("appealed")
    world.answer(d1.duel_id)
    world.vote(d1.duel_id, 1, lambda j: Vote.A)
    info = client().duel(d1.duel_id)
    assert info.b is not None and info.reveal_end_block is not None
    world.mine_to(info.reveal_end_block)
    client(info.b).appeal(d1.duel_id)
    world.mine_to(client().duel(d1.duel_id).seed_block)
    client("origin").draw_judges(d1.duel_id)
    world.vote(d1.duel_id, 2, lambda j: Vote.B, salt_tag="round 2")
    client("c4").settle_duel(d1.duel_id)  # every seat revealed: final at once

    restake()

    # duel "no answer": B is drawn with less free stake than DUEL_BOND and never answers. The
    # challengers (c1..c4) first take their stake down to LOW_STAKE (still drawable); once the draw is
    # known (it reads only the epoch's frozen stake), the origin opens two duels over B's own work,
    # which bond 2 DUEL_BOND of it, so B's bond (and A's, lowered to match) is the 2 C left free
    challengers = ("c1", "c2", "c3", "c4")
    unstaked = [client(role).request_unstake(STAKE_WEI - LOW_STAKE) for role in challengers]
    world.time_travel(PARAMS.unbonding_period_s + 1)
    world.mine_to(unstaked[-1].block_number + PARAMS.duel_span_blocks)
    for role in challengers:
        client(role).withdraw_stake()
    world.mine(PARAMS.epoch_blocks)  # the lower stakes count for draws from here
    d2 = world.open_duel("no answer")
    b2 = world.role_of(world.challenger(d2.duel_id))
    bonding = [world.open_duel(f"bonding {i}", a=b2) for i in (1, 2)]
    chain.lowered_block = client("origin").draw_challenger(d2.duel_id).block_number
    _settle_when_open(world, d2.duel_id)
    # nobody recorded a challenger of the bonding duels within their seed epoch: they lapse unslashed
    world.mine_to(max(client().duel(d.duel_id).seed_block for d in bonding) + PARAMS.epoch_blocks - 1)
    for d in bonding:
        client("c4").settle_duel(d.duel_id)

    restake()

    # duel "published": B cannot get the request, the origin publishes it, B answers; the first
    # judge commits and stays silent, the others vote A
    d3 = world.open_duel("published")
    world.no_request(d3.duel_id)
    client("origin").publish_request(d3.duel_id, d3.work, d3.salt, d3.request)
    world.answer(d3.duel_id)
    silent = client().judges(d3.duel_id, 1)[0]
    world.vote(d3.duel_id, 1, lambda j: None if j == silent else Vote.A)
    _settle_when_open(world, d3.duel_id)

    # duel "withheld": nobody publishes the request
    d4 = world.open_duel("withheld")
    world.no_request(d4.duel_id)
    _settle_when_open(world, d4.duel_id)

    # duel "open": awaiting its answer when the scenario ends
    d5 = world.open_duel("open")

    chain.duels = {"appealed": d1.duel_id, "no answer": d2.duel_id, "bonding 1": bonding[0].duel_id,
                   "bonding 2": bonding[1].duel_id, "published": d3.duel_id, "withheld": d4.duel_id,
                   "open": d5.duel_id}
    chain.published = d3  # type: ignore[attr-defined]
    chain.log_count = len(world.w3.eth.get_logs({"address": contract.address, "fromBlock": 0, "toBlock": "latest"}))
    return chain


@pytest.fixture(scope="module")
def scenario() -> Chain:
    return build_scenario()


@pytest.fixture
def chain(scenario: Chain) -> Iterator[Chain]:
    """The scenario chain, restored after the test (tests may add blocks)."""
    snapshot = eth_testing(scenario.w3).snapshot()
    yield scenario
    eth_testing(scenario.w3).revert(snapshot)


@pytest.fixture
def db_url(fresh_index_url: Callable[[], str]) -> str:
    """A fresh index database: a SQLite file, or (the `postgres` tier) a PostgreSQL database."""
    return fresh_index_url()


def new_indexer(chain: Chain, db_url: str, **kwargs: Any) -> Indexer:
    return Indexer(chain.w3, chain.contract.address, db_url, **kwargs)


def held_in_open_duels_wei(idx: Indexer) -> int:
    """Escrow and appeal deposits of duels still open (the contract holds them for the duel)."""
    return sum(d.escrow_wei + (d.appeal_deposit_wei or 0) for d in idx.duels(limit=1000) if d.is_open)


# ---------------------------------------------------------------------------------------------
def test_scenario_indexes_every_balance_exactly(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url)
    report = idx.sync()
    n = dict(zip(ROLES, chain.nodes, strict=True))
    c = chain.client()

    assert report.from_block == 0
    assert report.to_block == chain.w3.eth.block_number
    assert report.events_applied == chain.log_count == idx.event_count()
    with Session(idx.engine) as s:
        names = set(s.scalars(select(EventRow.event_name).distinct()))
    assert names == {e["name"] for e in load_artifact().abi if e["type"] == "event"}  # all 26 covered
    assert len(names) == 26
    assert idx.reconcile() == []
    # conservation: the contract's ETH equals the indexed balances, what open duels hold, and the reserve
    bonds = PARAMS.registration_bond_wei * sum(node.slot_held for node in idx.nodes(active_only=False))
    total = sum(a.total_wei for a in idx.accounts()) + held_in_open_duels_wei(idx) + idx.reserve() + bonds
    assert total == chain.w3.eth.get_balance(chain.contract.address)
    assert idx.reserve() == c.reserve() > 0

    # registry
    assert [x.address for x in idx.nodes()] == sorted(v for k, v in n.items() if k != "leaver")
    assert len(idx.nodes(active_only=False)) == len(ROLES)
    left = idx.node(n["leaver"])
    assert left is not None and left.active is False and left.slot_held is False and left.leaf == 0
    assert all(node.slot_held for node in idx.nodes())
    moved = idx.node(n["c4"])
    assert moved is not None
    assert (moved.endpoint, moved.models, moved.metadata) == ("http://c4-moved:8000", ("smollm2",), "moved")
    assert moved.pubkey == "0x" + "99" * 32 and moved.updated_block > moved.registered_block

    # vouchers: credit first, then pending; the last claim was only partly payable
    with Session(idx.engine) as s:
        claims = s.scalars(select(VoucherClaimRow).order_by(VoucherClaimRow.id)).all()
        split = [(v.paid_wei, v.from_credit_wei, v.from_pending_wei) for v in claims]
    assert split == [(5 * C, 3 * C, 2 * C), (3 * C, 0, 3 * C), (2 * C, 0, 2 * C)]
    payer = idx.account(chain.payer)
    assert (payer.credit_wei, payer.pending_withdrawal_wei) == (0, 0)

    # every duel agrees with the contract's own view of it, seat by seat
    for duel_id in chain.duels.values():
        indexed, onchain = idx.duel(duel_id), c.duel(duel_id)
        assert indexed is not None
        assert (indexed.origin, indexed.a, indexed.b, indexed.round, indexed.bond_wei, indexed.seed_block) == (
            onchain.origin, onchain.a, onchain.b, onchain.round, onchain.bond_wei, onchain.seed_block)
        assert indexed.status == DUEL_STATUS[onchain.status]
        assert indexed.outcome == DUEL_OUTCOME.get(onchain.outcome)
        # the first round's seats are announced (JudgesDrawn) with B's answer; the contract draws them
        # already with "no request", so a duel withheld there holds seats no event named (below)
        announced = indexed.answer_b_hash is not None
        for r in (1, 2):
            if r == 1 and not announced:
                assert indexed.seats(1) == ()
                continue
            assert tuple(s.judge for s in indexed.seats(r)) == c.judges(duel_id, r)
            assert tuple(Vote(s.vote or 0) for s in indexed.seats(r)) == c.votes(duel_id, r)
        hashes = c.duel_hashes(duel_id)
        assert indexed.request_hash == "0x" + hashes.request_hash.hex()
        assert indexed.answer_b_hash == (None if hashes.answer_b_hash is None else "0x" + hashes.answer_b_hash.hex())

    # one ReserveChanged per settlement or cancellation, when the reserve moved: the appealed duel's
    # first-round penalties (from an empty reserve) paid the appeal panel's shares and the appellant's
    # refund, so its reserve ended where it began
    reserve_events = {k: [e.name for e in idx.duel_events(v)].count("ReserveChanged") for k, v in chain.duels.items()}
    assert reserve_events == {"appealed": 0, "no answer": 1, "bonding 1": 0, "bonding 2": 0, "published": 1,
                              "withheld": 1, "open": 0}

    # the appealed duel: overturned in round 2; A's lost bond came from active, then unbonding stake
    d1 = idx.duel(chain.duels["appealed"])
    assert d1 is not None and d1.b is not None
    assert (d1.status, d1.outcome, d1.final_round, d1.round) == ("settled", "b_won", 2, 2)
    assert (d1.appellant, d1.appeal_deposit_wei) == (d1.b, PARAMS.appeal_fee_wei)
    assert d1.votes_b == len(d1.seats(2)) == 2 * PARAMS.k_judges + 1 and d1.votes_a == 0
    assert d1.stake_moved_wei == d1.bond_wei
    assert d1.commit_end_r1 is not None and d1.reveal_end_r1 == d1.commit_end_r1 + PARAMS.reveal_window_blocks
    assert d1.commit_end_r2 is not None and d1.reveal_end_r2 == d1.commit_end_r2 + PARAMS.reveal_window_blocks
    assert (d1.commit_end, d1.reveal_end) == (d1.commit_end_r2, d1.reveal_end_r2)
    assert all(s.commitment is not None and s.revealed_block is not None for s in d1.judges)
    a = idx.account(n["a"])
    assert (a.active_stake_wei, a.unbonding_stake_wei) == (0, STAKE_WEI - 2 * C - (d1.bond_wei - 2 * C))
    kinds = [m.kind for m in idx.stake_moves(d1.id)]
    assert kinds[:2] == ["escrow", "appeal_deposit"]
    assert {"slashed_lost_duel", "reward_stake_won", "refund_appeal", "fee_judge",
            "slashed_incoherent_judge"} <= set(kinds)
    assert kinds.count("slashed_incoherent_judge") == len(d1.seats(1))  # per seat, not per judge
    events = idx.duel_events(d1.id)
    assert [e.name for e in events][:4] == ["DuelOpened", "ChallengerDrawn", "DuelAnswered", "JudgesDrawn"]
    assert events[-1].name == "DuelSettled" and "DuelAppealed" in [e.name for e in events]
    assert all(e.tx_hash.startswith("0x") and len(e.tx_hash) == 66 for e in events)

    # no answer: B's bond, lowered to its free stake (2 C), went to the reserve, the origin got its escrow back
    d2 = idx.duel(chain.duels["no answer"])
    assert d2 is not None and (d2.status, d2.cancel_reason, d2.round, d2.judges) == ("cancelled", "no_answer", 0, ())
    assert [m.kind for m in idx.stake_moves(d2.id)] == ["escrow", "slashed_no_answer", "refund_escrow"]
    free = LOW_STAKE - 2 * PARAMS.duel_bond_wei  # B's stake less the bonding duels' bonds
    units = free * 1023 // PARAMS.duel_bond_wei  # the contract keeps the bond in 1023rds, whole gwei
    assert d2.b is not None and d2.bond_wei == PARAMS.duel_bond_wei * units // 1023 // 10**9 * 10**9 <= free
    assert [m.amount_wei for m in idx.stake_moves(d2.id) if m.kind == "slashed_no_answer"] == [d2.bond_wei]
    for name in ("bonding 1", "bonding 2"):  # they bonded B's stake as their A, and lapsed
        lapsed = idx.duel(chain.duels[name])
        assert lapsed is not None and (lapsed.a, lapsed.b, lapsed.bond_wei) == (d2.b, None, PARAMS.duel_bond_wei)
        assert (lapsed.status, lapsed.cancel_reason) == ("cancelled", "no_challenger")

    # published: the request bytes are in the index, a silent seat paid its penalty
    d3 = idx.duel(chain.duels["published"])
    assert d3 is not None and d3.status == "settled"
    assert d3.request == chain.published.request  # type: ignore[attr-defined]
    assert d3.publish_deadline is not None and d3.answer_b_hash is not None
    assert "slashed_silent_judge" in {m.kind for m in idx.stake_moves(d3.id)}

    d4 = idx.duel(chain.duels["withheld"])
    assert d4 is not None and (d4.status, d4.cancel_reason, d4.request) == ("cancelled", "request_withheld", None)
    assert d4.answer_b_hash is None
    assert len(c.judges(d4.id, 1)) == PARAMS.k_judges and d4.seats(1) == ()
    assert c.judges(chain.duels["no answer"], 1) == () == c.judges(chain.duels["open"], 1)

    # the open duel: A's bond is reserved until it ends
    d5 = idx.duel(chain.duels["open"])
    assert d5 is not None and d5.status == "awaiting_answer" and d5.b is None
    assert a.bonded_wei == d5.bond_wei == c.reserved(n["a"])
    assert [d.id for d in idx.duels_awaiting_answer()] == [d5.id]

    # queries
    order = [chain.duels[k] for k in ("open", "withheld", "published", "bonding 2", "bonding 1", "no answer",
                                      "appealed")]
    assert [d.id for d in idx.duels()] == order
    assert [d.id for d in idx.duels(limit=2)] == order[:2]
    assert [d.id for d in idx.duels_opened_by(n["origin"])] == [d5.id]
    assert [d.id for d in idx.duels_opened_by(n["origin"], ("settled",))] == [d1.id, d3.id]
    assert [d.id for d in idx.duels_executed_by(n["a"])] == [d for d in order[::-1] if d not in (
        chain.duels["bonding 1"], chain.duels["bonding 2"])]
    assert [d.id for d in idx.duels_executed_by(n["a"], ("cancelled",))] == [d2.id, d4.id]
    assert d1.id in [d.id for d in idx.duels_with_challenger(d1.b, ("settled",))]
    assert idx.duels_with_challenger(d1.b) == []  # none open
    judge2 = d1.seats(2)[0].judge
    assert d1.id in [d.id for d in idx.duels_judged_by(judge2, ("settled",))]
    assert idx.duels_judged_by(judge2) == [] and idx.duel(123) is None

    table = idx.stake_table()
    assert len(table) == len(ROLES)
    stakes = [e.active_stake_wei for e in table]
    assert stakes == sorted(stakes, reverse=True)
    assert table[0].active_stake_wei == chain.contract.functions.activeStake(table[0].address).call()
    assert {e.address: e.bonded_wei for e in table}[n["a"]] == d5.bond_wei


def test_a_lowered_bond_is_replayed_when_the_challenger_is_drawn(chain: Chain, db_url: str) -> None:
    """ChallengerDrawn lowers both bonds to B's free stake: indexed up to that block, A's bond is the
    lowered one already and B's adds to what the bonding duels hold, as the contract's `reserved` read
    at that block says."""
    idx = new_indexer(chain, db_url)
    idx.sync(to_block=chain.lowered_block)
    duel = idx.duel(chain.duels["no answer"])
    assert duel is not None and duel.b is not None and 0 < duel.bond_wei < PARAMS.duel_bond_wei
    assert duel.status == "awaiting_answer"
    reserved = chain.contract.functions.reserved
    for who, bonded in ((duel.a, duel.bond_wei), (duel.b, duel.bond_wei + 2 * PARAMS.duel_bond_wei)):
        assert idx.account(who).bonded_wei == bonded == reserved(who).call(block_identifier=chain.lowered_block)


def test_judging_duels_are_found_by_their_current_seats(chain: Chain, db_url: str) -> None:
    world = chain.world
    duel: Duel = world.open_duel("judging now")
    world.answer(duel.duel_id)
    idx = new_indexer(chain, db_url)
    idx.sync()
    seats = chain.client().judges(duel.duel_id, 1)
    for judge in set(seats):
        assert [d.id for d in idx.duels_judged_by(judge)] == [duel.duel_id]
    info = idx.duel(duel.duel_id)
    assert info is not None and info.b is not None
    # seats exclude nobody: a duelist is found as a judge exactly when it holds a seat
    for duelist in (info.a, info.b):
        assert [d.id for d in idx.duels_judged_by(duelist)] == ([duel.duel_id] if duelist in seats else [])
    assert [d.id for d in idx.duels_with_challenger(info.b)] == [duel.duel_id]
    # a judge drawn twice holds two seats; its one commitment covers both
    judge = seats[0]
    jc = world.client(judge)
    commitment = jc.vote_commitment(duel.duel_id, 1, judge, Vote.A, b"\x01" * 32)
    jc.commit_vote(duel.duel_id, commitment)
    idx.sync()
    info = idx.duel(duel.duel_id)
    assert info is not None
    mine = [s for s in info.current_seats if s.judge == judge]
    assert len(mine) == seats.count(judge)
    assert all(s.commitment == "0x" + commitment.hex() for s in mine)


def test_reconcile_reports_a_tampered_balance(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url)
    idx.sync()
    target = chain.nodes[ROLES.index("c1")]
    with Session(idx.engine) as s, s.begin():
        row = s.get(AccountRow, target)
        assert row is not None
        row.credit_wei += 1
    mismatches = idx.reconcile(chain.w3)
    assert len(mismatches) == 1
    m = mismatches[0]
    assert (m.address, m.field, m.indexed - m.on_chain) == (target, "credit", 1)
    # an address never seen by the index is checked too when asked for
    stranger = list(chain.w3.eth.accounts)[len(ROLES) + 2]
    send(chain.w3, chain.contract.functions.deposit(), stranger, value=5)
    extra = idx.reconcile(ClientLike(chain.contract), extra_addresses=[stranger])
    assert {(x.address, x.field) for x in extra} == {(target, "credit"), (stranger, "credit")}
    elsewhere = chain.w3.eth.contract(address=Web3.to_checksum_address("0x" + "12" * 20), abi=chain.contract.abi)
    with pytest.raises(ValueError, match="index follows"):
        idx.reconcile(elsewhere)


def test_sync_twice_and_rereading_add_no_duplicates(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url)
    first = idx.sync()
    count = idx.event_count()
    second = idx.sync()
    assert (second.batches, second.events_applied, second.events_skipped) == (0, 0, 0)
    assert idx.event_count() == count == first.events_applied

    # Forget the cursor: the whole history is read again and every log is a no-op.
    with Session(idx.engine) as s, s.begin():
        s.query(CursorRow).delete()
    again = idx.sync()
    assert (again.events_applied, again.events_skipped) == (0, count)
    assert idx.event_count() == count
    assert idx.reconcile() == []


def test_sync_tells_its_progress_after_each_batch(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url, batch_blocks=3)
    told: list[tuple[int, int]] = []
    report = idx.sync(progress=lambda block, target: told.append((block, target)))
    assert len(told) == report.batches > 1
    assert [block for block, _ in told] == sorted({block for block, _ in told})  # rising, one call a batch
    assert told[-1] == (report.to_block, report.to_block)  # the last batch ends at the target
    cursor = idx.cursor()
    assert cursor is not None and cursor.block_number == report.to_block
    told.clear()
    idx.sync(progress=lambda block, target: told.append((block, target)))
    assert told == []  # nothing left to read, no batch


def stake_history(idx: Indexer) -> list[tuple[int, str, int]]:
    with Session(idx.engine) as s:
        rows = s.scalars(select(StakeHistoryRow).order_by(StakeHistoryRow.block_number, StakeHistoryRow.address))
        return [(r.block_number, r.address, r.active_stake_wei) for r in rows]


def expected_stake_history(idx: Indexer) -> list[tuple[int, str, int]]:
    """stake_history recomputed from the stored events: active stake moves on Staked (+), UnstakeRequested
    (-) and the active part of StakeSlashed (active first, as the contract takes it)."""
    active: dict[str, int] = {}
    at_block: dict[tuple[int, str], int] = {}
    with Session(idx.engine) as s:
        events = s.scalars(select(EventRow).order_by(EventRow.block_number, EventRow.log_index)).all()
    for e in events:
        if e.event_name not in ("Staked", "UnstakeRequested", "StakeSlashed"):
            continue
        who, amount = e.args["node"], int(e.args["amount"])
        before = active.get(who, 0)
        after = {"Staked": before + amount, "UnstakeRequested": before - amount}.get(
            e.event_name, before - min(amount, before))
        active[who] = after
        if after != before or e.event_name != "StakeSlashed":
            at_block[(e.block_number, who)] = after
    return sorted((block, who, value) for (block, who), value in at_block.items())


def test_stake_history_has_every_active_stake_change_once(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url)
    idx.sync()
    history = stake_history(idx)
    assert history == expected_stake_history(idx)
    with Session(idx.engine) as s:
        taken = {(e.block_number, e.args["node"]) for e in s.scalars(
            select(EventRow).where(EventRow.event_name.in_(("StakeSlashed", "UnstakeRequested"))))}
    assert len(taken & {(block, who) for block, who, _ in history}) >= 2  # not only the Staked rows
    with Session(idx.engine) as s:
        rows = s.scalars(select(StakeHistoryRow).order_by(StakeHistoryRow.block_number)).all()
        before: dict[str, int] = {}
        for r in rows:  # each row's previous stake is the one before it, its net change the difference
            assert r.previous_stake_wei == before.get(r.address, 0)
            assert r.gained_wei - r.lost_wei == r.active_stake_wei - r.previous_stake_wei
            assert min(r.gained_wei, r.lost_wei) == 0
            before[r.address] = r.active_stake_wei
    assert any(r.lost_wei for r in rows) and any(r.gained_wei for r in rows)
    latest = {who: value for _, who, value in history}  # the rows are in block order
    assert latest == {a.address: a.active_stake_wei for a in idx.accounts() if a.address in latest}
    assert all(a.active_stake_wei == 0 for a in idx.accounts() if a.address not in latest)

    # Re-reading the whole history (cursor forgotten) and a fresh indexer on the same database add nothing.
    with Session(idx.engine) as s, s.begin():
        s.query(CursorRow).delete()
    idx.sync()
    assert stake_history(idx) == history
    idx.close()
    again = new_indexer(chain, db_url)
    again.sync()
    assert stake_history(again) == history

    # A later stake lands as one new row under its own block.
    send(chain.w3, chain.contract.functions.deposit(), chain.nodes[0], value=MIN)
    send(chain.w3, chain.contract.functions.stake(MIN), chain.nodes[0])
    again.sync()
    grown = stake_history(again)
    block = chain.w3.eth.block_number
    assert grown[:-1] == history
    assert grown[-1] == (block, chain.nodes[0], chain.contract.functions.activeStake(chain.nodes[0]).call())
    again.close()


def test_two_stake_changes_in_one_block_leave_one_row(db_url: str) -> None:
    engine = make_engine(db_url)
    replay = EventReplay("0x" + "11" * 20, 31337)
    node = "0x" + "22" * 20
    with Session(engine) as s, s.begin():
        replay.apply(s, "CreditDeposited", LogContext(1, 7, "0x01"), {"account": node, "amount": 10 * C})
        replay.apply(s, "Staked", LogContext(2, 7, "0x01"), {"node": node, "amount": 4 * C})
        replay.apply(s, "Staked", LogContext(3, 7, "0x02"), {"node": node, "amount": 5 * C})
        replay.apply(s, "Staked", LogContext(4, 8, "0x03"), {"node": node, "amount": 1 * C})
        replay.apply(s, "UnstakeRequested", LogContext(5, 9, "0x04"), {"node": node, "amount": 3 * C,
                                                                       "unbondingEnd": 100})
        replay.apply(s, "Staked", LogContext(6, 9, "0x05"), {"node": node, "amount": 0})
    with Session(engine) as s:
        rows = [(r.block_number, r.address, r.active_stake_wei, r.previous_stake_wei, r.gained_wei, r.lost_wei)
                for r in s.scalars(select(StakeHistoryRow))]
    assert sorted(rows) == [(7, node, 9 * C, 0, 9 * C, 0), (8, node, 10 * C, 9 * C, C, 0),
                            (9, node, 7 * C, 10 * C, 0, 3 * C)]
    engine.dispose()


def test_new_indexer_resumes_from_cursor(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url)
    idx.sync()
    cursor = idx.cursor()
    assert cursor is not None and cursor.block_number == chain.w3.eth.block_number
    count = idx.event_count()
    idx.close()
    del idx

    f = chain.contract.functions
    send(chain.w3, f.deposit(), chain.nodes[0], value=123)
    send(chain.w3, f.stake(MIN), chain.nodes[0])

    idx2 = new_indexer(chain, db_url)
    report = idx2.sync()
    assert report.from_block == cursor.block_number + 1
    assert (report.events_applied, report.events_skipped) == (2, 0)
    assert idx2.event_count() == count + 2
    assert idx2.account(chain.nodes[0]).active_stake_wei == chain.contract.functions.activeStake(chain.nodes[0]).call()
    assert idx2.reconcile() == []


def test_crash_mid_batch_commits_nothing_of_that_batch(
    chain: Chain, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    head = chain.w3.eth.block_number
    total = chain.log_count
    batch_blocks = 20
    idx = new_indexer(chain, db_url, batch_blocks=batch_blocks)
    real_apply = Indexer._apply
    calls = {"n": 0}
    crash_after = total // 2

    def crashing_apply(self: Indexer, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] > crash_after:
            raise RuntimeError("simulated crash")
        real_apply(self, *args)

    monkeypatch.setattr(Indexer, "_apply", crashing_apply)
    with pytest.raises(RuntimeError, match="simulated crash"):
        idx.sync()

    # Earlier batches are committed whole; the failing batch left nothing (events or cursor).
    cursor = idx.cursor()
    assert cursor is not None
    assert (cursor.block_number + 1) % batch_blocks == 0 and cursor.block_number < head
    stored = idx.event_count()
    logs_before_cursor = len(
        chain.w3.eth.get_logs({"address": chain.contract.address, "fromBlock": 0, "toBlock": cursor.block_number})
    )
    assert stored == logs_before_cursor <= crash_after
    with Session(idx.engine) as s:
        last_stored = s.scalar(select(EventRow.block_number).order_by(EventRow.block_number.desc()).limit(1))
    assert last_stored is not None and last_stored <= cursor.block_number

    monkeypatch.setattr(Indexer, "_apply", real_apply)
    report = idx.sync()
    assert report.from_block == cursor.block_number + 1
    assert idx.event_count() == total
    assert idx.reconcile() == []


def test_crash_in_single_batch_leaves_empty_index(
    chain: Chain, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = new_indexer(chain, db_url)  # the whole chain fits one batch
    real_apply = Indexer._apply
    calls = {"n": 0}

    def crashing_apply(self: Indexer, *args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 30:
            raise RuntimeError("simulated crash")
        real_apply(self, *args)

    monkeypatch.setattr(Indexer, "_apply", crashing_apply)
    with pytest.raises(RuntimeError):
        idx.sync()
    assert idx.cursor() is None
    assert idx.event_count() == 0 and idx.accounts() == [] and idx.duels() == []

    monkeypatch.setattr(Indexer, "_apply", real_apply)
    idx.sync()
    assert idx.event_count() == chain.log_count
    assert idx.reconcile() == []


def test_reorg_below_cursor_is_detected(chain: Chain, db_url: str) -> None:
    w3 = chain.w3
    f = chain.contract.functions
    fork_point = eth_testing(w3).snapshot()
    send(w3, f.deposit(), chain.nodes[0], value=1)
    idx = new_indexer(chain, db_url)
    idx.sync()
    # replace the last block by a different one at the same height
    eth_testing(w3).revert(fork_point)
    send(w3, f.deposit(), chain.nodes[1], value=2)
    with pytest.raises(IndexerReorgError, match="reorganised"):
        idx.sync()


def test_reorg_between_batches_stops_the_catch_up(
    chain: Chain, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = new_indexer(chain, db_url, batch_blocks=20)
    real_hash = Indexer._chain_block_hash
    reads: dict[int, int] = {}

    def hash_changes_after_first_read(self: Indexer, number: int) -> str:
        reads[number] = reads.get(number, 0) + 1
        if number == 19 and reads[number] > 1:
            return "0x" + "ee" * 32  # block 19 was replaced after the first batch ended on it
        return real_hash(self, number)

    monkeypatch.setattr(Indexer, "_chain_block_hash", hash_changes_after_first_read)
    with pytest.raises(IndexerReorgError):
        idx.sync()
    cursor = idx.cursor()
    assert cursor is not None and cursor.block_number == 19  # the first batch only


def test_confirmations_and_to_block_limit_the_range(
    chain: Chain, db_url: str, fresh_index_url: Callable[[], str]
) -> None:
    head = chain.w3.eth.block_number
    idx = new_indexer(chain, db_url, confirmations=3)
    report = idx.sync()
    assert report.to_block == head - 3 and report.head_block == head
    cursor = idx.cursor()
    assert cursor is not None and cursor.block_number == head - 3

    other = new_indexer(chain, fresh_index_url(), batch_blocks=7)
    part = other.sync(to_block=20)
    assert (part.to_block, part.batches) == (20, 3)
    rest = other.sync()
    assert rest.from_block == 21 and rest.to_block == head
    assert other.event_count() == chain.log_count


def test_database_of_another_contract_is_refused(chain: Chain, db_url: str) -> None:
    new_indexer(chain, db_url).sync()
    with pytest.raises(IndexerDatabaseMismatchError):
        Indexer(chain.w3, "0x" + "12" * 20, db_url)


def test_missed_history_is_a_state_error_not_a_negative_balance(chain: Chain, db_url: str) -> None:
    logs = chain.w3.eth.get_logs({"address": chain.contract.address, "fromBlock": 0, "toBlock": "latest"})
    staked = [lg for lg in logs if Web3.to_hex(lg["topics"][0]) == chain.contract.events.Staked().topic]
    idx = new_indexer(chain, db_url, start_block=staked[0]["blockNumber"])  # skips the deposits
    with pytest.raises(IndexerStateError, match="events were missed"):
        idx.sync()
    assert idx.cursor() is None and idx.event_count() == 0


def test_run_loop_survives_rpc_errors_and_stops(
    chain: Chain, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = new_indexer(chain, db_url)
    real_get_logs = chain.w3.eth.get_logs
    failures = {"n": 0}

    def flaky_get_logs(params: Any) -> Any:
        if failures["n"] < 2:
            failures["n"] += 1
            raise ConnectionError("rpc down")
        return real_get_logs(params)

    monkeypatch.setattr(chain.w3.eth, "get_logs", flaky_get_logs)
    stop = threading.Event()
    thread = threading.Thread(target=idx.run, kwargs={"poll_interval_s": 0.05, "stop": stop})
    thread.start()
    head = chain.w3.eth.block_number
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        cursor = idx.cursor()
        if cursor is not None and cursor.block_number == head:
            break
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert failures["n"] == 2
    cursor = idx.cursor()
    assert cursor is not None and cursor.block_number == head
    assert idx.event_count() == chain.log_count


def test_run_loop_stops_on_reorg(chain: Chain, db_url: str) -> None:
    w3 = chain.w3
    fork_point = eth_testing(w3).snapshot()
    send(w3, chain.contract.functions.deposit(), chain.nodes[0], value=1)
    idx = new_indexer(chain, db_url)
    idx.sync()
    eth_testing(w3).revert(fork_point)
    send(w3, chain.contract.functions.deposit(), chain.nodes[1], value=1)
    with pytest.raises(IndexerReorgError):
        idx.run(poll_interval_s=0.01, stop=threading.Event())


# ---------------------------------------------------------------------------------------------
# storage
def test_uint256_round_trips_and_sorts(db_url: str) -> None:
    """Wei above 64 bits, up to 2**256 - 1, round-trip exactly and sort numerically (a string column on
    SQLite, NUMERIC(78, 0) on PostgreSQL)."""
    engine = make_engine(db_url)
    values = [2**256 - 1, 0, 10**30, 2**64, 2**63, 5]
    with Session(engine) as s, s.begin():
        for i, v in enumerate(values):
            s.add(AccountRow(address=f"0x{i:040x}", credit_wei=v, pending_withdrawal_wei=0, withdrawable_at=0,
                             active_stake_wei=v, unbonding_stake_wei=0, unbonding_end=0, updated_block=0))
    with Session(engine) as s:
        got = s.scalars(select(AccountRow.active_stake_wei).order_by(AccountRow.active_stake_wei.desc())).all()
    assert got == sorted(values, reverse=True)
    with pytest.raises(Exception, match="out of range"), Session(engine) as s, s.begin():
        s.add(AccountRow(address="0x" + "f" * 40, credit_wei=-1))


def test_schema_compiles_for_postgresql() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    ddl = "\n".join(str(CreateTable(t).compile(dialect=dialect)) for t in Base.metadata.sorted_tables)
    assert "NUMERIC(78, 0)" in ddl and "BIGSERIAL" in ddl
    bind = Uint256().process_bind_param(2**256 - 1, dialect)
    assert bind == Decimal(2**256 - 1)
    assert default_db_url(31337).endswith("index-31337.sqlite")


def test_default_db_url_uses_wwwserve_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WWWSERVE_HOME", str(tmp_path / "home"))
    w3 = Web3(EthereumTesterProvider())
    from eth_account import Account

    deployer = Account.from_key(w3.provider.ethereum_tester.backend.account_keys[0].to_bytes())  # type: ignore[attr-defined]
    address, _ = WWWServeClient.deploy(w3, TxSender(w3, deployer), PARAMS)
    idx = Indexer(w3, address)
    idx.sync()
    assert (tmp_path / "home" / f"index-{w3.eth.chain_id}.sqlite").exists()
    assert idx.accounts() == [] and idx.cursor() is not None


def test_a_database_of_another_schema_version_is_rebuilt(chain: Chain, db_url: str) -> None:
    url = db_url
    idx = new_indexer(chain, url)
    idx.sync()
    assert schema_version(idx.engine) == SCHEMA_VERSION
    idx.close()
    with make_engine(url).begin() as conn:
        conn.execute(text("UPDATE schema_meta SET version = :v"), {"v": SCHEMA_VERSION - 1})
    # the index is derived from the chain: an older schema is dropped and read again
    again = new_indexer(chain, url)
    assert schema_version(again.engine) == SCHEMA_VERSION
    assert again.cursor() is None and again.event_count() == 0
    again.sync()
    assert again.event_count() == chain.log_count and again.reconcile() == []


def test_drop_index_empties_the_database_for_a_fresh_read(chain: Chain, db_url: str) -> None:
    """A chain reset with the operator's own chain.index_db_url (node/managers/ledger/reset.py) empties that
    database in place and reads the new chain into it: on PostgreSQL as on SQLite."""
    idx = new_indexer(chain, db_url)
    idx.sync()
    assert idx.event_count() == chain.log_count
    idx.close()
    drop_index(db_url)
    again = new_indexer(chain, db_url)
    assert again.cursor() is None and again.event_count() == 0 and again.accounts() == []
    again.sync()
    assert again.event_count() == chain.log_count and again.reconcile() == []
    again.close()


def test_tables_from_before_schema_versions_are_rebuilt(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'v0.sqlite'}"
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE schema_meta"))
        conn.execute(text("DROP TABLE duels"))
        conn.execute(text("CREATE TABLE duels (id INTEGER PRIMARY KEY, question_hash TEXT)"))  # the old shape
    assert schema_version(engine) == 0
    engine.dispose()
    rebuilt = make_engine(url)
    assert schema_version(rebuilt) == SCHEMA_VERSION
    with rebuilt.connect() as conn:
        columns = [row[1] for row in conn.execute(text("PRAGMA table_info(duels)"))]
    assert "request_hash" in columns and "question_hash" not in columns
    assert schema_version(make_engine(f"sqlite:///{tmp_path / 'fresh.sqlite'}")) == SCHEMA_VERSION
