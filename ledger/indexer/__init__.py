"""Event indexer: follows one WWWServe deployment into SQL tables so reads never wait on RPC.

`Indexer.sync()` reads the contract's logs in block batches from the cursor to the head (minus
`confirmations`), decodes them with the committed ABI and applies each one to the derived tables.
A batch is one database transaction together with the cursor advance, so a crash never leaves half
a batch behind and a restart resumes from the cursor. Each raw log is stored once
(UNIQUE(tx_hash, log_index)); meeting it again is a no-op, so re-reading is idempotent.

Balances are a pure function of the events, replayed with the contract's own rules
(`indexer.replay`); queries answer with plain dataclasses (`indexer.results`); `reconcile()` checks
the index against the contract's getters (`indexer.reconcile`). The tables are `ledger.db`'s.

Reorgs are detected (the stored cursor hash no longer matches the chain) but not repaired:
`IndexerReorgError` is raised and an operator re-indexes into a fresh database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from eth_typing import ABIEvent
from eth_utils.abi import event_abi_to_log_topic
from eth_utils.address import to_checksum_address
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.contract import Contract
from web3.types import FilterParams, LogReceipt

from wwwserve.contracts import load_artifact
from wwwserve.ledger.db import (
    AccountRow,
    ContractStateRow,
    CursorRow,
    DuelJudgeRow,
    DuelRow,
    EventRow,
    NodeRow,
    StakeMoveRow,
    VoucherClaimRow,
    default_db_url,
    make_engine,
)
from wwwserve.ledger.errors import LedgerValueError
from wwwserve.ledger.indexer.errors import (
    IndexerDatabaseMismatchError,
    IndexerError,
    IndexerReorgError,
    IndexerStateError,
)
from wwwserve.ledger.indexer.reconcile import HasContract, reconcile, views_contract
from wwwserve.ledger.indexer.replay import EventReplay, LogContext, jsonable, to_hex
from wwwserve.ledger.indexer.results import (
    CANCEL_REASON,
    DUEL_OUTCOME,
    DUEL_STATUS,
    OPEN_STATUSES,
    REWARD_KIND,
    SLASH_KIND,
    AccountInfo,
    BalanceMismatch,
    CursorInfo,
    DuelEvent,
    IndexedDuel,
    JudgeSeat,
    NodeInfo,
    StakeEntry,
    StakeMove,
    SyncReport,
    account_info,
    indexed_duel,
    node_info,
)
from wwwserve.ledger.records import DuelStatus

__all__ = [
    "CANCEL_REASON",
    "DUEL_OUTCOME",
    "DUEL_STATUS",
    "OPEN_STATUSES",
    "REWARD_KIND",
    "SLASH_KIND",
    "AccountInfo",
    "BalanceMismatch",
    "CursorInfo",
    "DuelEvent",
    "HasContract",
    "IndexedDuel",
    "Indexer",
    "IndexerDatabaseMismatchError",
    "IndexerError",
    "IndexerReorgError",
    "IndexerStateError",
    "JudgeSeat",
    "NodeInfo",
    "StakeEntry",
    "StakeMove",
    "SyncReport",
]

log = logging.getLogger(__name__)


class Indexer:
    """Follows one WWWServe deployment into SQL tables (see the module docstring)."""

    def __init__(
        self,
        w3: Web3,
        contract_address: str,
        db_url: str | None = None,
        start_block: int = 0,
        confirmations: int = 0,
        batch_blocks: int = 2000,
    ) -> None:
        """Open (or create) the index at `db_url` for the contract at `contract_address`.

        `db_url` defaults to `sqlite:///<WWWSERVE_HOME>/index-<chain_id>.sqlite`. `start_block` is
        where a fresh index starts reading (at most the deployment block, or balances cannot be
        derived); `confirmations` keeps that many newest blocks out of the index; `batch_blocks`
        bounds each eth_getLogs range and each database transaction.
        """
        if start_block < 0 or confirmations < 0 or batch_blocks < 1:
            raise LedgerValueError("start_block and confirmations must be >= 0, batch_blocks >= 1")
        self.w3 = w3
        self.contract_address = to_checksum_address(contract_address)
        self.chain_id = int(w3.eth.chain_id)
        self.start_block = start_block
        self.confirmations = confirmations
        self.batch_blocks = batch_blocks
        self.db_url = db_url or default_db_url(self.chain_id)
        self.engine: Engine = make_engine(self.db_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._sync_lock = threading.Lock()
        self._abi = load_artifact().abi
        self.contract: Contract = w3.eth.contract(address=self.contract_address, abi=self._abi)
        self._events: dict[bytes, Any] = {}
        for item in self._abi:
            if item.get("type") == "event":
                self._events[event_abi_to_log_topic(cast(ABIEvent, item))] = self.contract.events[item["name"]]()
        self._replay = EventReplay(self.contract_address, self.chain_id)
        abi_events = {item["name"] for item in self._abi if item.get("type") == "event"}
        missing = abi_events - set(self._replay.handlers)
        if missing:
            # A contract change that adds events must come with handlers, not silent gaps.
            raise IndexerStateError(f"no indexer handler for events {sorted(missing)}")
        self._check_database()

    # -----------------------------------------------------------------------------------------
    # sync
    def _check_database(self) -> None:
        with self._sessions() as session:
            others = session.scalars(
                select(CursorRow).where(
                    (CursorRow.contract_address != self.contract_address)
                    | (CursorRow.chain_id != self.chain_id)
                )
            ).all()
        if others:
            other = others[0]
            raise IndexerDatabaseMismatchError(
                f"{self.db_url} indexes {other.contract_address} on chain {other.chain_id}, "
                f"not {self.contract_address} on chain {self.chain_id}: use another database"
            )

    def close(self) -> None:
        """Release the database connections (the index stays on disk)."""
        self.engine.dispose()

    def cursor(self) -> CursorInfo | None:
        """The last fully processed block, or None before the first batch."""
        with self._sessions() as session:
            row = session.get(CursorRow, (self.contract_address, self.chain_id))
            return None if row is None else CursorInfo(row.block_number, row.block_hash)

    def _chain_block_hash(self, number: int) -> str:
        block = self.w3.eth.get_block(number)
        return to_hex(block["hash"])

    def _verify_cursor(self, cur: CursorInfo) -> None:
        chain_hash = self._chain_block_hash(cur.block_number)
        if chain_hash != cur.block_hash:
            raise IndexerReorgError(
                f"block {cur.block_number} is now {chain_hash}, the index has {cur.block_hash}: "
                "the chain reorganised below the cursor; re-index into a fresh database"
            )

    def sync(self, to_block: int | None = None, progress: Callable[[int, int], None] | None = None) -> SyncReport:
        """Index every log up to min(to_block, head - confirmations), one transaction per batch;
        `progress(last block indexed, target block)` is told after each batch (a catch-up's progress display).

        Raises `IndexerReorgError` if a block already indexed is no longer on the chain (checked
        before the first batch and between batches). Safe to call from several threads: calls
        are serialised.
        """
        with self._sync_lock:
            head = int(self.w3.eth.block_number)
            target = head - self.confirmations
            if to_block is not None:
                target = min(target, to_block)
            cur = self.cursor()
            if cur is not None:
                self._verify_cursor(cur)
            from_block = cur.block_number + 1 if cur is not None else self.start_block
            applied = skipped = batches = 0
            start = from_block
            while start <= target:
                end = min(start + self.batch_blocks - 1, target)
                batch_applied, batch_skipped, end_hash = self._sync_batch(start, end)
                applied += batch_applied
                skipped += batch_skipped
                batches += 1
                start = end + 1
                if progress is not None:
                    progress(end, target)
                if start <= target:
                    # a reorg during a long catch-up must not splice two chains together
                    self._verify_cursor(CursorInfo(end, end_hash))
            return SyncReport(
                from_block=from_block,
                to_block=max(target, from_block - 1),
                head_block=head,
                batches=batches,
                events_applied=applied,
                events_skipped=skipped,
            )

    def _sync_batch(self, from_block: int, to_block: int) -> tuple[int, int, str]:
        params: FilterParams = {
            "address": self.contract_address,
            "fromBlock": from_block,
            "toBlock": to_block,
        }
        logs = sorted(self.w3.eth.get_logs(params), key=lambda lg: (lg["blockNumber"], lg["logIndex"]))
        end_hash = self._chain_block_hash(to_block)
        for lg in logs:
            if lg["blockNumber"] == to_block and to_hex(lg["blockHash"]) != end_hash:
                raise IndexerReorgError(f"block {to_block} changed while batch {from_block}-{to_block} was read")
        applied = skipped = 0
        # One transaction: the batch's events, the derived rows and the cursor commit together.
        with self._sessions.begin() as session:
            for lg in logs:
                if self._ingest(session, lg):
                    applied += 1
                else:
                    skipped += 1
            row = session.get(CursorRow, (self.contract_address, self.chain_id))
            if row is None:
                row = CursorRow(contract_address=self.contract_address, chain_id=self.chain_id)
                session.add(row)
            row.block_number = to_block
            row.block_hash = end_hash
        if logs:
            log.debug("indexed blocks %d-%d: %d new, %d known logs", from_block, to_block, applied, skipped)
        return applied, skipped, end_hash

    def _ingest(self, session: Session, lg: LogReceipt) -> bool:
        """Store and apply one log; False if it was already stored."""
        if lg.get("removed"):
            return False
        tx_hash = to_hex(lg["transactionHash"])
        log_index = int(lg["logIndex"])
        known = session.scalar(
            select(EventRow.id).where(EventRow.tx_hash == tx_hash, EventRow.log_index == log_index)
        )
        if known is not None:
            return False
        topics = lg["topics"]
        event = self._events.get(bytes(topics[0])) if topics else None
        if event is None:
            raise IndexerStateError(f"log {tx_hash}:{log_index} matches no WWWServe event in the ABI")
        decoded = event.process_log(lg)
        name: str = decoded["event"]
        args: Mapping[str, Any] = decoded["args"]
        row = EventRow(
            block_number=int(lg["blockNumber"]),
            block_hash=to_hex(lg["blockHash"]),
            tx_hash=tx_hash,
            log_index=log_index,
            event_name=name,
            duel_id=int(args["duelId"]) if "duelId" in args else None,
            args=jsonable(dict(args)),
        )
        session.add(row)
        session.flush()  # assigns row.id for the derived rows that point at it
        self._apply(session, name, LogContext(row.id, row.block_number, tx_hash), args)
        return True

    def _apply(self, session: Session, name: str, ctx: LogContext, args: Mapping[str, Any]) -> None:
        self._replay.apply(session, name, ctx, args)

    def run(self, poll_interval_s: float = 2.0, stop: threading.Event | None = None) -> None:
        """Sync every `poll_interval_s` until `stop` is set.

        RPC and database hiccups are logged and retried on the next tick; `IndexerError`s are not
        transient (reorg, inconsistent state) and propagate.
        """
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                self.sync()
            except IndexerError:
                raise
            except Exception:
                log.warning("indexer sync failed; retrying in %.1f s", poll_interval_s, exc_info=True)
            stop.wait(poll_interval_s)

    # -----------------------------------------------------------------------------------------
    # queries
    def nodes(self, active_only: bool = True) -> list[NodeInfo]:
        """Registered nodes, by address."""
        stmt = select(NodeRow).order_by(NodeRow.address)
        if active_only:
            stmt = stmt.where(NodeRow.active.is_(True))
        with self._sessions() as session:
            return [node_info(row) for row in session.scalars(stmt)]

    def node(self, address: str) -> NodeInfo | None:
        """One registry entry, or None if the address never registered."""
        with self._sessions() as session:
            row = session.get(NodeRow, to_checksum_address(address))
            return None if row is None else node_info(row)

    def account(self, address: str) -> AccountInfo:
        """Indexed balances of `address` (zeros if it never appeared, like the contract's mappings)."""
        address = to_checksum_address(address)
        with self._sessions() as session:
            row = session.get(AccountRow, address)
            if row is None:
                return AccountInfo(address, 0, 0, 0, 0, 0, 0, 0, 0)
            return account_info(row)

    def accounts(self) -> list[AccountInfo]:
        """Every address the index has balances for, by address."""
        with self._sessions() as session:
            return [account_info(r) for r in session.scalars(select(AccountRow).order_by(AccountRow.address))]

    def stake_table(self) -> list[StakeEntry]:
        """All registered nodes (active or not) with stake and credit, largest active stake first."""
        stmt = (
            select(NodeRow, AccountRow)
            .join(AccountRow, AccountRow.address == NodeRow.address)
            .order_by(AccountRow.active_stake_wei.desc(), NodeRow.address)
        )
        with self._sessions() as session:
            return [
                StakeEntry(
                    address=node.address,
                    active=node.active,
                    endpoint=node.endpoint,
                    active_stake_wei=acct.active_stake_wei,
                    unbonding_stake_wei=acct.unbonding_stake_wei,
                    credit_wei=acct.credit_wei,
                    pending_withdrawal_wei=acct.pending_withdrawal_wei,
                    bonded_wei=acct.bonded_wei,
                )
                for node, acct in session.execute(stmt)
            ]

    def reserve(self) -> int:
        """The duel reserve (wei) as of the cursor: lost bonds and judge penalties not paid out yet."""
        with self._sessions() as session:
            row = session.get(ContractStateRow, (self.contract_address, self.chain_id))
            return 0 if row is None else row.reserve_wei

    def duel(self, duel_id: int) -> IndexedDuel | None:
        """One duel with the seats of every round, or None if it was never opened."""
        with self._sessions() as session:
            row = session.get(DuelRow, duel_id)
            return None if row is None else indexed_duel(session, row)

    def duels(self, limit: int | None = 50) -> list[IndexedDuel]:
        """The most recently opened duels (all of them with `limit=None`), newest first (duel ids are
        hashes, not a counter)."""
        stmt = select(DuelRow).order_by(DuelRow.opened_block.desc(), DuelRow.opened_event_id.desc())
        return self._duel_list(stmt if limit is None else stmt.limit(limit))

    def _duel_list(self, stmt: Any) -> list[IndexedDuel]:
        with self._sessions() as session:
            return [indexed_duel(session, row) for row in session.scalars(stmt).all()]

    @staticmethod
    def _oldest_first(stmt: Any) -> Any:
        return stmt.order_by(DuelRow.opened_block, DuelRow.opened_event_id)

    def duels_judged_by(
        self, judge: str, statuses: tuple[str, ...] = ("judging",), *, current_round_only: bool = True
    ) -> list[IndexedDuel]:
        """Duels in one of `statuses` (default: judging) where `judge` holds a seat of the current
        round (with `current_round_only=False`: of any round), oldest first."""
        address = to_checksum_address(judge)
        seats = select(DuelJudgeRow.duel_id).where(DuelJudgeRow.judge == address)
        if current_round_only:
            seats = seats.where(DuelJudgeRow.duel_id == DuelRow.id, DuelJudgeRow.round == DuelRow.round)
            where = select(DuelRow).where(seats.exists(), DuelRow.status.in_(statuses))
        else:
            where = select(DuelRow).where(DuelRow.id.in_(seats), DuelRow.status.in_(statuses))
        return self._duel_list(self._oldest_first(where))

    def duels_opened_by(self, origin: str, statuses: tuple[str, ...] = OPEN_STATUSES) -> list[IndexedDuel]:
        """Duels `origin` opened, in one of `statuses` (default: still open), oldest first."""
        address = to_checksum_address(origin)
        return self._duel_list(self._oldest_first(
            select(DuelRow).where(DuelRow.origin == address, DuelRow.status.in_(statuses))))

    def duels_with_challenger(self, address: str, statuses: tuple[str, ...] = OPEN_STATUSES) -> list[IndexedDuel]:
        """Duels whose recorded challenger B is `address`, in one of `statuses` (default: still open),
        oldest first. A challenger a draw would pick but nobody recorded yet is not here: ask the
        contract (`challengerOf`) about `duels_awaiting_answer()`."""
        who = to_checksum_address(address)
        return self._duel_list(self._oldest_first(
            select(DuelRow).where(DuelRow.b == who, DuelRow.status.in_(statuses))))

    def duels_awaiting_answer(self) -> list[IndexedDuel]:
        """Every duel awaiting its challenger's answer, oldest first (a candidate challenger checks
        each with `challengerOf`)."""
        awaiting = DuelRow.status == DUEL_STATUS[DuelStatus.AWAITING_ANSWER]
        return self._duel_list(self._oldest_first(select(DuelRow).where(awaiting)))

    def duels_executed_by(self, address: str, statuses: tuple[str, ...] | None = None) -> list[IndexedDuel]:
        """Duels over work `address` executed (it is A), in one of `statuses` (default: all), oldest first."""
        who = to_checksum_address(address)
        stmt = select(DuelRow).where(DuelRow.a == who)
        if statuses is not None:
            stmt = stmt.where(DuelRow.status.in_(statuses))
        return self._duel_list(self._oldest_first(stmt))

    def duel_events(self, duel_id: int) -> list[DuelEvent]:
        """Every event about one duel, with its transaction, in chain order."""
        stmt = select(EventRow).where(EventRow.duel_id == duel_id).order_by(EventRow.block_number, EventRow.log_index)
        with self._sessions() as session:
            return [DuelEvent(r.event_name, r.block_number, r.tx_hash, r.log_index, dict(r.args))
                    for r in session.scalars(stmt)]

    def stake_moves(self, duel_id: int | None = None, node: str | None = None) -> list[StakeMove]:
        """Value movements caused by duels (of one duel and/or one node, or all), in chain order."""
        stmt = select(StakeMoveRow).order_by(StakeMoveRow.event_id, StakeMoveRow.id)
        if duel_id is not None:
            stmt = stmt.where(StakeMoveRow.duel_id == duel_id)
        if node is not None:
            stmt = stmt.where(StakeMoveRow.node == to_checksum_address(node))
        with self._sessions() as session:
            return [
                StakeMove(r.duel_id, r.node, r.amount_wei, r.kind, r.block_number)
                for r in session.scalars(stmt)
            ]

    def claimed_totals(self) -> dict[tuple[str, str], int]:
        """Fee-voucher value paid so far per (origin, executor) pair: what the contract's `claimed` says."""
        with self._sessions() as session:
            paid: dict[tuple[str, str], int] = {}
            for claim in session.scalars(select(VoucherClaimRow)):
                key = (claim.origin, claim.executor)
                paid[key] = paid.get(key, 0) + claim.paid_wei
        return paid

    def event_count(self) -> int:
        """How many raw logs are stored."""
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(EventRow)) or 0)

    def reconcile(
        self,
        client_or_w3: Web3 | Contract | HasContract | None = None,
        extra_addresses: Sequence[str] = (),
    ) -> list[BalanceMismatch]:
        """Compare indexed balances with the contract's public getters at the latest block.

        Checks credit, pendingWithdrawal, withdrawableAt, activeStake, unbondingStake, unbondingEnd,
        unbondingBlock and reserved (bonded stake) of every indexed account (plus `extra_addresses`),
        the `claimed` amount of every voucher pair, each node's active flag and leaf, and the
        reserve (reported with the contract's address). Sync to the head first: the
        getters read the latest state (historical state may be pruned, e.g. anvil --prune-history).
        """
        return reconcile(self, views_contract(self, client_or_w3), extra_addresses)
