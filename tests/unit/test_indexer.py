"""Event indexer against an in-process py-evm chain (web3 EthereumTesterProvider).

One module-scoped chain runs a scenario that emits every WWWServe event (registry, credits,
withdrawals, stake, unbonding, fee vouchers paid from credit and from pending, a duel through
commit/reveal/settle with a slash spread over active and unbonding stake, a cancelled duel). Each
test snapshots the chain and reverts it afterwards, and indexes into its own SQLite file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session
from sqlalchemy.schema import CreateTable
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.types import Wei

from contracts import load_artifact
from ledger.client import sign_voucher_offline, voucher_digest
from ledger.db import (
    AccountRow,
    Base,
    CursorRow,
    EventRow,
    Uint256,
    VoucherClaimRow,
    default_db_url,
    make_engine,
)
from ledger.indexer import (
    Indexer,
    IndexerDatabaseMismatchError,
    IndexerReorgError,
    IndexerStateError,
)
from ledger.params import WEI_PER_CREDIT, DeploymentParams

C = WEI_PER_CREDIT
PARAMS = DeploymentParams(
    unbonding_period_s=0,  # exits are immediate, so the scenario needs no time travel
    withdrawal_notice_s=0,
    draw_window_blocks=5,
    commit_window_blocks=5,
    reveal_window_blocks=5,
    settle_window_blocks=2,
    gamma_bps=5_000,  # half of the loser's stake: the slash spans active and unbonding stake
)
MIN = PARAMS.min_stake_wei
VOTE_A, VOTE_B = 1, 2


@dataclass
class Chain:
    """The deployed scenario: handles plus the facts the tests check against."""

    w3: Web3
    contract: Contract
    nodes: list[str]  # n0 origin, n1 a, n2 b, n3..n5 judges, n6 leaves
    payer: str  # signs fee vouchers, is not a node
    log_count: int = 0  # logs the contract emitted in the scenario
    judges: list[str] = field(default_factory=list)
    votes: dict[str, int] = field(default_factory=dict)


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


def sign_voucher(w3: Web3, contract: Contract, key: bytes, origin: str, executor: str, amount: int) -> bytes:
    """EIP-712 Voucher signature (the client's signer), cross-checked against the contract's own digest."""
    account = Account.from_key(key)
    assert account.address == origin
    digest = voucher_digest(w3.eth.chain_id, contract.address, origin, executor, amount)
    assert digest == contract.functions.voucherDigest(origin, executor, amount).call()
    return sign_voucher_offline(account, w3.eth.chain_id, contract.address, executor, amount)


def eth_testing(w3: Web3) -> Any:
    """web3's eth-tester-only `testing` module (mine, snapshot, revert), which web3 leaves untyped."""
    return getattr(w3, "testing")  # noqa: B009


def mine_until(w3: Web3, block_number: int) -> None:
    """Mine empty blocks until the head is `block_number` (the next tx lands one above)."""
    missing = block_number - w3.eth.block_number
    if missing > 0:
        eth_testing(w3).mine(missing)


def build_scenario() -> Chain:
    w3 = Web3(EthereumTesterProvider())
    art = load_artifact()
    deployer = w3.eth.accounts[0]
    factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
    receipt = send(w3, factory.constructor(*PARAMS.constructor_args()), deployer, gas=None)
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=art.abi)
    f = contract.functions
    nodes: list[str] = list(w3.eth.accounts[1:8])
    payer_key = Account.from_key(b"\x42" * 32)
    w3.provider.ethereum_tester.add_account(payer_key.key.to_0x_hex())  # type: ignore[attr-defined]
    w3.eth.wait_for_transaction_receipt(
        w3.eth.send_transaction({"from": deployer, "to": payer_key.address, "value": Wei(10**18)})
    )
    chain = Chain(w3=w3, contract=contract, nodes=nodes, payer=payer_key.address)

    # registry + credit + stake (n2 unbonds most of its stake: the duel slash then spans both)
    stakes = [2 * MIN, 3 * MIN, 4 * MIN, 2 * MIN, 2 * MIN, 3 * MIN, 2 * MIN]
    for i, (node, amount) in enumerate(zip(nodes, stakes, strict=True)):
        send(w3, f.deposit(), node, value=10**18)
        send(w3, f.register(bytes([i + 1]) * 32, f"http://node{i}:8000", ["smollm2", f"m{i}"], f"{{'i':{i}}}"), node)
        send(w3, f.stake(amount), node)
    send(w3, f.requestUnstake(3 * MIN), nodes[2])
    send(w3, f.updateNode(b"\x99" * 32, "http://node5-moved:8000", ["smollm2"], "moved"), nodes[5])
    # withdrawals: cancelled (n3) and completed (n4)
    send(w3, f.requestWithdrawal(7 * C), nodes[3])
    send(w3, f.cancelWithdrawal(), nodes[3])
    send(w3, f.requestWithdrawal(11 * C), nodes[4])
    send(w3, f.withdraw(), nodes[4])
    # n6 unstakes everything, takes it back to credit and leaves (so it is never a judge)
    send(w3, f.requestUnstake(2 * MIN), nodes[6])
    send(w3, f.withdrawStake(), nodes[6])
    send(w3, f.leave(), nodes[6])

    # vouchers: payer has credit 3 C and pending 7 C; claims pay 5 (3 credit + 2 pending), then 3
    # (pending), then 2 of 92 owed (what is left)
    send(w3, f.deposit(), chain.payer, value=10 * C)
    send(w3, f.requestWithdrawal(7 * C), chain.payer)
    for cumulative in (5 * C, 8 * C, 100 * C):
        sig = sign_voucher(w3, contract, payer_key.key, chain.payer, nodes[1], cumulative)
        send(w3, f.claimVoucher(chain.payer, nodes[1], cumulative, sig), nodes[2])  # anyone submits

    # duel 1: n0 opens a(n1) vs b(n2); the panel is n3, n4, n5; A wins 2-1
    receipt = send(w3, f.openDuel(nodes[1], nodes[2], b"q" * 32, b"a" * 32, b"b" * 32), nodes[0])
    seed_block = receipt["blockNumber"] + PARAMS.seed_delay_blocks
    mine_until(w3, seed_block)
    send(w3, f.drawJudges(1), nodes[0])
    chain.judges = list(f.getJudges(1).call())
    assert sorted(chain.judges) == sorted(nodes[3:6])
    chain.votes = {nodes[3]: VOTE_A, nodes[4]: VOTE_A, nodes[5]: VOTE_B}
    salts = {j: bytes([7, i]) * 16 for i, j in enumerate(chain.judges)}
    for judge in chain.judges:
        commitment = f.voteCommitment(1, judge, chain.votes[judge], salts[judge]).call()
        send(w3, f.commitVote(1, commitment), judge)
    duel: Any = f.getDuel(1).call()
    commit_end = duel[4]
    mine_until(w3, commit_end)
    for judge in chain.judges:
        send(w3, f.revealVote(1, chain.votes[judge], salts[judge]), judge)
    send(w3, f.settleDuel(1), nodes[6])

    # duel 2: never drawn, cancelled after the draw window
    receipt = send(w3, f.openDuel(nodes[3], nodes[4], b"Q" * 32, b"A" * 32, b"B" * 32), nodes[0])
    mine_until(w3, receipt["blockNumber"] + PARAMS.seed_delay_blocks + PARAMS.draw_window_blocks)
    send(w3, f.cancelUndrawnDuel(2), nodes[0])
    chain.log_count = len(w3.eth.get_logs({"address": contract.address, "fromBlock": 0, "toBlock": "latest"}))
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
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'index.sqlite'}"


def new_indexer(chain: Chain, db_url: str, **kwargs: Any) -> Indexer:
    return Indexer(chain.w3, chain.contract.address, db_url, **kwargs)


def open_escrow_wei(idx: Indexer) -> int:
    return sum(d.escrow_wei for d in idx.duels(limit=1000) if d.status in ("awaiting_judges", "voting"))


# ---------------------------------------------------------------------------------------------
def test_scenario_indexes_every_balance_exactly(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url)
    report = idx.sync()
    n = chain.nodes

    assert report.from_block == 0
    assert report.to_block == chain.w3.eth.block_number
    assert report.events_applied == chain.log_count == idx.event_count()
    with Session(idx.engine) as s:
        names = set(s.scalars(select(EventRow.event_name).distinct()))
    assert names == {e["name"] for e in load_artifact().abi if e["type"] == "event"}  # all 19 covered
    assert idx.reconcile() == []
    # conservation: the contract's ETH equals the indexed balances plus open duel escrow
    total = sum(a.total_wei for a in idx.accounts()) + open_escrow_wei(idx)
    assert total == chain.w3.eth.get_balance(chain.contract.address)

    # registry
    assert [x.address for x in idx.nodes()] == sorted(n[:6])
    assert len(idx.nodes(active_only=False)) == 7
    left = idx.node(n[6])
    assert left is not None and left.active is False
    moved = idx.node(n[5])
    assert moved is not None
    assert (moved.endpoint, moved.models, moved.metadata) == ("http://node5-moved:8000", ("smollm2",), "moved")
    assert moved.pubkey == "0x" + "99" * 32 and moved.updated_block > moved.registered_block

    # vouchers: credit first, then pending; the last claim was only partly payable
    with Session(idx.engine) as s:
        claims = s.scalars(select(VoucherClaimRow).order_by(VoucherClaimRow.id)).all()
        split = [(c.paid_wei, c.from_credit_wei, c.from_pending_wei) for c in claims]
    assert split == [(5 * C, 3 * C, 2 * C), (3 * C, 0, 3 * C), (2 * C, 0, 2 * C)]
    payer = idx.account(chain.payer)
    assert (payer.credit_wei, payer.pending_withdrawal_wei) == (0, 0)

    # duel 1 settled for A; b lost half its stake: all of its active MIN, then MIN of unbonding
    d1 = idx.duel(1)
    assert d1 is not None
    assert (d1.status, d1.outcome, d1.votes_a, d1.votes_b) == ("settled", "a_won", 2, 1)
    assert d1.stake_moved_wei == 2 * MIN
    assert d1.judge_pool_wei == 3 * MIN * PARAMS.minority_slash_bps // 10_000
    assert [(j.judge, j.vote) for j in d1.judges] == [(j, chain.votes[j]) for j in chain.judges]
    assert all(j.commitment is not None and j.revealed_block is not None for j in d1.judges)
    b = idx.account(n[2])
    assert (b.active_stake_wei, b.unbonding_stake_wei) == (0, 2 * MIN)
    kinds = sorted(m.kind for m in idx.stake_moves(1))
    assert kinds == sorted(
        ["escrow", "slashed_lost_duel", "reward_stake_won", "slashed_minority_judge"]
        + ["reward_judge_pool"] * 2
        + ["fee_duelist"] * 2
        + ["fee_judge"] * 3
    )
    # duel 2 cancelled: duelists keep their fee, the judges' part goes back to the origin
    d2 = idx.duel(2)
    assert d2 is not None and (d2.status, d2.cancel_reason, d2.judges) == ("cancelled", "not_drawn", ())
    assert [d.id for d in idx.duels()] == [2, 1]

    table = idx.stake_table()
    assert len(table) == 7
    stakes = [e.active_stake_wei for e in table]
    assert stakes == sorted(stakes, reverse=True)
    assert table[0].active_stake_wei == chain.contract.functions.activeStake(table[0].address).call()


def test_reconcile_reports_a_tampered_balance(chain: Chain, db_url: str) -> None:
    idx = new_indexer(chain, db_url)
    idx.sync()
    target = chain.nodes[1]
    with Session(idx.engine) as s, s.begin():
        row = s.get(AccountRow, target)
        assert row is not None
        row.credit_wei += 1
    mismatches = idx.reconcile(chain.w3)
    assert len(mismatches) == 1
    m = mismatches[0]
    assert (m.address, m.field, m.indexed - m.on_chain) == (target, "credit", 1)
    # an address never seen by the index is checked too when asked for
    stranger = list(chain.w3.eth.accounts)[9]
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
    assert idx2.account(chain.nodes[0]).active_stake_wei == 3 * MIN
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


def test_confirmations_and_to_block_limit_the_range(chain: Chain, db_url: str) -> None:
    head = chain.w3.eth.block_number
    idx = new_indexer(chain, db_url, confirmations=3)
    report = idx.sync()
    assert report.to_block == head - 3 and report.head_block == head
    cursor = idx.cursor()
    assert cursor is not None and cursor.block_number == head - 3

    other = new_indexer(chain, f"{db_url}-2", batch_blocks=7)
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
def test_uint256_round_trips_and_sorts_on_sqlite(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'u.sqlite'}")
    values = [2**256 - 1, 0, 10**30, 2**64, 5]
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
    art = load_artifact()
    receipt = send(
        w3, w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor(*PARAMS.constructor_args()),
        w3.eth.accounts[0],
        gas=None,
    )
    idx = Indexer(w3, receipt["contractAddress"])
    idx.sync()
    assert (tmp_path / "home" / f"index-{w3.eth.chain_id}.sqlite").exists()
    assert idx.accounts() == [] and idx.cursor() is not None
