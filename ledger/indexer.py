"""Event indexer: follows one WWWServe deployment into SQL tables so reads never wait on RPC.

`Indexer.sync()` reads the contract's logs in block batches from the cursor to the head (minus
`confirmations`), decodes them with the committed ABI and applies each one to the derived tables.
A batch is one database transaction together with the cursor advance, so a crash never leaves half
a batch behind and a restart resumes from the cursor. Each raw log is stored once
(UNIQUE(tx_hash, log_index)); meeting it again is a no-op, so re-reading is idempotent.

Balances are a pure function of the events. Two events do not say which balance they drew from,
and the indexer replays the contract's own deterministic rule against its indexed state:
  * VoucherClaimed(paid): the contract pays `min(owed, credit)` from credit and the rest (capped by
    the pending withdrawal) from pending. Since `paid` is that sum, the credit part is
    `min(paid, credit)` and the pending part `paid - min(paid, credit)`.
  * StakeSlashed(amount): taken from active stake first, then from unbonding stake.
Bonded stake (`reserved`: what open duels bond of a duelist's stake) is part of the stake, not taken
out of it; the indexer replays the bonds from the duel events: DUEL_BOND at DuelOpened (A), the
equal bond at ChallengerDrawn (B, lowering A's to match), both released when the duel settles or is
cancelled (saturating at zero, like the contract). The reserve is the amount ReserveChanged reports.
This is exact only if the indexer has seen every event since deployment (start_block <= the
deployment block); a debit that would go below zero raises `IndexerStateError`.

Reorgs are detected (the stored cursor hash no longer matches the chain) but not repaired:
`IndexerReorgError` is raised and an operator re-indexes into a fresh database.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

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
from wwwserve.ledger.errors import LedgerError, LedgerValueError

log = logging.getLogger(__name__)

# Contract enums (core.vy), stored by name so the tables read on their own.
DUEL_STATUS = {1: "awaiting_answer", 2: "awaiting_request", 3: "judging", 4: "settled", 5: "cancelled"}
OPEN_STATUSES = ("awaiting_answer", "awaiting_request", "judging")
DUEL_OUTCOME = {1: "a_won", 2: "b_won", 3: "tie", 4: "voided"}
CANCEL_REASON = {1: "no_challenger", 2: "no_answer", 3: "request_withheld", 4: "no_judges"}
SLASH_KIND = {
    1: "slashed_lost_duel",
    2: "slashed_incoherent_judge",
    3: "slashed_silent_judge",
    4: "slashed_no_answer",
}
REWARD_KIND = {
    1: "reward_stake_won",
    2: "reward_reserve_bonus",
    3: "fee_duelist",
    4: "fee_judge",
    5: "refund_escrow",
    6: "refund_appeal",
}
VOTE_NAMES = {1: "A", 2: "B", 3: "abstain", 4: "no_evidence"}


# ---------------------------------------------------------------------------------------------
# errors
class IndexerError(LedgerError):
    """Root of the indexer's errors. These are not transient: `run()` stops on them."""


class IndexerReorgError(IndexerError):
    """The chain no longer contains the block the cursor points at (or a batch changed under us)."""


class IndexerStateError(IndexerError):
    """An event does not fit the indexed state (events were missed, or the ABI does not match)."""


class IndexerDatabaseMismatchError(IndexerError):
    """The database already indexes a different contract or chain."""


# ---------------------------------------------------------------------------------------------
# results (plain dataclasses: no ORM objects escape this module)
@dataclass(frozen=True)
class SyncReport:
    """What one `sync()` did. `to_block` < `from_block` means there was nothing to read."""

    from_block: int
    to_block: int
    head_block: int
    batches: int
    events_applied: int
    events_skipped: int  # already stored: re-read logs are no-ops


@dataclass(frozen=True)
class CursorInfo:
    """The last fully processed block."""

    block_number: int
    block_hash: str


@dataclass(frozen=True)
class NodeInfo:
    """A registry entry."""

    address: str
    pubkey: str
    endpoint: str
    models: tuple[str, ...]
    metadata: str
    active: bool
    leaf: int
    registered_block: int
    updated_block: int
    slot_held: bool = True  # its registration bond is in the contract (`releaseSlot` returns it)


@dataclass(frozen=True)
class AccountInfo:
    """Indexed balances of one address (all zero for an address never seen)."""

    address: str
    credit_wei: int
    pending_withdrawal_wei: int
    withdrawable_at: int
    active_stake_wei: int
    unbonding_stake_wei: int
    unbonding_end: int
    unbonding_block: int = 0  # block of the last unstake request
    bonded_wei: int = 0  # part of the stake above that open duels bond (the contract's `reserved`)

    @property
    def stake_wei(self) -> int:
        """Active plus unbonding stake (bonded stake included)."""
        return self.active_stake_wei + self.unbonding_stake_wei

    @property
    def total_wei(self) -> int:
        """Everything the contract holds for this address (excluding open duel escrow)."""
        return (
            self.credit_wei + self.pending_withdrawal_wei + self.active_stake_wei + self.unbonding_stake_wei
        )


@dataclass(frozen=True)
class StakeEntry:
    """One row of the stake table: a node with its stake and credit."""

    address: str
    active: bool
    endpoint: str
    active_stake_wei: int
    unbonding_stake_wei: int
    credit_wei: int
    pending_withdrawal_wei: int
    bonded_wei: int = 0  # part of the stake bonded by open duels


@dataclass(frozen=True)
class JudgeSeat:
    """One seat of a round's panel; a judge drawn twice holds two seats (same commitment and vote).
    `vote` is None until revealed."""

    round: int
    position: int
    judge: str
    commitment: str | None
    vote: int | None
    committed_block: int | None
    revealed_block: int | None


@dataclass(frozen=True)
class DuelInfo:
    """A duel as indexed, with the seats of every round. Hashes are 0x-hex; block numbers are None
    until the step that sets them happened. `commit_end`/`reveal_end` are the current round's."""

    id: int
    origin: str
    a: str
    b: str | None
    request_id: str
    request_hash: str
    model_hash: str
    answer_a_hash: str
    answer_b_hash: str | None
    bond_wei: int
    escrow_wei: int
    seed_block: int
    answer_deadline: int
    publish_deadline: int | None
    round: int
    commit_end: int | None
    reveal_end: int | None
    commit_end_r1: int | None
    reveal_end_r1: int | None
    commit_end_r2: int | None
    reveal_end_r2: int | None
    status: str  # awaiting_answer | awaiting_request | judging | settled | cancelled
    outcome: str | None  # a_won | b_won | tie | voided
    cancel_reason: str | None  # no_challenger | no_answer | request_withheld | no_judges
    final_round: int | None
    votes_a: int | None
    votes_b: int | None
    stake_moved_wei: int | None
    appellant: str | None
    appeal_deposit_wei: int | None
    request: bytes | None  # the request bytes, if they were published on-chain
    opened_block: int
    answered_block: int | None
    settled_block: int | None  # settled or cancelled
    judges: tuple[JudgeSeat, ...]  # every round's seats, round by round

    def seats(self, round: int) -> tuple[JudgeSeat, ...]:
        """The seats of `round`, in seat order."""
        return tuple(s for s in self.judges if s.round == round)

    @property
    def current_seats(self) -> tuple[JudgeSeat, ...]:
        """The seats of the current round."""
        return self.seats(self.round)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class StakeMove:
    """A value movement caused by a duel (see `ledger.db.StakeMoveRow.kind`)."""

    duel_id: int
    node: str
    amount_wei: int
    kind: str
    block_number: int


@dataclass(frozen=True)
class DuelEvent:
    """One event about a duel, with the transaction that emitted it."""

    name: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, Any]  # as stored: bytes as 0x-hex, integers exact


@dataclass(frozen=True)
class BalanceMismatch:
    """An indexed value that differs from the contract's view."""

    address: str
    field: str  # the contract getter, e.g. "credit" or "claimed[<executor>]"
    indexed: int
    on_chain: int


class HasContract(Protocol):
    """Anything carrying a web3 contract object (e.g. the ledger's chain client)."""

    @property
    def contract(self) -> Contract: ...


@dataclass(frozen=True)
class _LogContext:
    event_id: int
    block_number: int
    tx_hash: str


def _hex(value: bytes | bytearray) -> str:
    return "0x" + bytes(value).hex()


def _jsonable(value: Any) -> Any:
    """Decoded ABI values -> JSON: bytes to 0x-hex, sequences to lists; ints stay exact."""
    if isinstance(value, bytes | bytearray):
        return _hex(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
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
        self._handlers: dict[str, Callable[[Session, _LogContext, Mapping[str, Any]], None]] = {
            "NodeRegistered": self._on_node_registered,
            "NodeUpdated": self._on_node_updated,
            "NodeLeft": self._on_node_left,
            "SlotReleased": self._on_slot_released,
            "CreditDeposited": self._on_credit_deposited,
            "WithdrawalRequested": self._on_withdrawal_requested,
            "WithdrawalCancelled": self._on_withdrawal_cancelled,
            "CreditWithdrawn": self._on_credit_withdrawn,
            "Staked": self._on_staked,
            "UnstakeRequested": self._on_unstake_requested,
            "StakeWithdrawn": self._on_stake_withdrawn,
            "VoucherClaimed": self._on_voucher_claimed,
            "DuelOpened": self._on_duel_opened,
            "ChallengerDrawn": self._on_challenger_drawn,
            "DuelAnswered": self._on_duel_answered,
            "RequestMissing": self._on_request_missing,
            "RequestPublished": self._on_request_published,
            "JudgesDrawn": self._on_judges_drawn,
            "VoteCommitted": self._on_vote_committed,
            "VoteRevealed": self._on_vote_revealed,
            "DuelAppealed": self._on_duel_appealed,
            "StakeSlashed": self._on_stake_slashed,
            "DuelRewardPaid": self._on_duel_reward_paid,
            "ReserveChanged": self._on_reserve_changed,
            "DuelSettled": self._on_duel_settled,
            "DuelCancelled": self._on_duel_cancelled,
        }
        abi_events = {item["name"] for item in self._abi if item.get("type") == "event"}
        missing = abi_events - set(self._handlers)
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
        return _hex(block["hash"])

    def _verify_cursor(self, cur: CursorInfo) -> None:
        chain_hash = self._chain_block_hash(cur.block_number)
        if chain_hash != cur.block_hash:
            raise IndexerReorgError(
                f"block {cur.block_number} is now {chain_hash}, the index has {cur.block_hash}: "
                "the chain reorganised below the cursor; re-index into a fresh database"
            )

    def sync(self, to_block: int | None = None) -> SyncReport:
        """Index every log up to min(to_block, head - confirmations), one transaction per batch.

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
            if lg["blockNumber"] == to_block and _hex(lg["blockHash"]) != end_hash:
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
        tx_hash = _hex(lg["transactionHash"])
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
            block_hash=_hex(lg["blockHash"]),
            tx_hash=tx_hash,
            log_index=log_index,
            event_name=name,
            duel_id=int(args["duelId"]) if "duelId" in args else None,
            args=_jsonable(dict(args)),
        )
        session.add(row)
        session.flush()  # assigns row.id for the derived rows that point at it
        self._apply(session, name, _LogContext(row.id, row.block_number, tx_hash), args)
        return True

    def _apply(self, session: Session, name: str, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        self._handlers[name](session, ctx, args)

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
    # event handlers (mirror WWWServe.vy; each runs inside the batch transaction)
    @staticmethod
    def _account(session: Session, address: str, ctx: _LogContext) -> AccountRow:
        row = session.get(AccountRow, address)
        if row is None:
            row = AccountRow(
                address=address,
                credit_wei=0,
                pending_withdrawal_wei=0,
                withdrawable_at=0,
                active_stake_wei=0,
                unbonding_stake_wei=0,
                unbonding_end=0,
                unbonding_block=0,
                bonded_wei=0,
            )
            session.add(row)
            session.flush()  # visible to the next lookup in this event (origin == executor)
        row.updated_block = ctx.block_number
        return row

    @staticmethod
    def _debit(row: AccountRow, field: str, amount: int, ctx: _LogContext) -> None:
        current: int = getattr(row, field)
        if current < amount:
            raise IndexerStateError(
                f"tx {ctx.tx_hash} (block {ctx.block_number}) takes {amount} wei from {field} of "
                f"{row.address}, which the index has at {current}: events were missed "
                "(was start_block after the deployment block?)"
            )
        setattr(row, field, current - amount)

    @staticmethod
    def _duel(session: Session, duel_id: int, ctx: _LogContext) -> DuelRow:
        row = session.get(DuelRow, duel_id)
        if row is None:
            raise IndexerStateError(f"tx {ctx.tx_hash} refers to duel {duel_id}, which was never opened")
        return row

    @staticmethod
    def _seats(session: Session, duel: DuelRow, judge: str, ctx: _LogContext) -> list[DuelJudgeRow]:
        """The seats `judge` holds in the duel's current round (one commitment and one vote for all)."""
        seats = list(session.scalars(
            select(DuelJudgeRow)
            .where(DuelJudgeRow.duel_id == duel.id, DuelJudgeRow.round == duel.round, DuelJudgeRow.judge == judge)
            .order_by(DuelJudgeRow.position)
        ))
        if not seats:
            raise IndexerStateError(
                f"tx {ctx.tx_hash}: {judge} holds no seat in round {duel.round} of duel {duel.id}")
        return seats

    def _on_node_registered(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        address = args["node"]
        row = session.get(NodeRow, address)
        if row is None:
            row = NodeRow(address=address)
            session.add(row)
        row.pubkey = _hex(args["pubkey"])
        row.endpoint = args["endpoint"]
        row.models = list(args["models"])
        row.node_metadata = args["metadata"]
        row.active = True
        row.leaf = int(args["leaf"])
        row.slot_held = True
        row.registered_block = ctx.block_number
        row.updated_block = ctx.block_number
        self._account(session, address, ctx)  # so the stake table lists nodes without balances

    def _node(self, session: Session, address: str, ctx: _LogContext) -> NodeRow:
        row = session.get(NodeRow, address)
        if row is None:
            raise IndexerStateError(f"tx {ctx.tx_hash} changes node {address}, which never registered")
        return row

    def _on_node_updated(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._node(session, args["node"], ctx)
        row.pubkey = _hex(args["pubkey"])
        row.endpoint = args["endpoint"]
        row.models = list(args["models"])
        row.node_metadata = args["metadata"]
        row.updated_block = ctx.block_number

    def _on_node_left(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._node(session, args["node"], ctx)
        row.active = False
        row.updated_block = ctx.block_number

    def _on_slot_released(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._node(session, args["node"], ctx)
        row.leaf = 0
        row.slot_held = False
        row.updated_block = ctx.block_number
        account = self._account(session, args["node"], ctx)
        account.credit_wei += int(args["bond"])
        account.bonded_wei = 0  # releaseSlot clears the stake word: no duel can take from this node any more

    def _on_credit_deposited(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        row.credit_wei += int(args["amount"])

    def _on_withdrawal_requested(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        amount = int(args["amount"])
        self._debit(row, "credit_wei", amount, ctx)
        row.pending_withdrawal_wei += amount
        row.withdrawable_at = int(args["availableAt"])

    def _on_withdrawal_cancelled(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        amount = int(args["amount"])
        self._debit(row, "pending_withdrawal_wei", amount, ctx)
        row.credit_wei += amount

    def _on_credit_withdrawn(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        self._debit(row, "pending_withdrawal_wei", int(args["amount"]), ctx)

    def _on_staked(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        self._debit(row, "credit_wei", amount, ctx)
        row.active_stake_wei += amount

    def _on_unstake_requested(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        self._debit(row, "active_stake_wei", amount, ctx)
        row.unbonding_stake_wei += amount
        row.unbonding_end = int(args["unbondingEnd"])
        row.unbonding_block = ctx.block_number

    def _on_stake_withdrawn(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        self._debit(row, "unbonding_stake_wei", amount, ctx)
        row.credit_wei += amount

    def _on_voucher_claimed(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        origin = self._account(session, args["origin"], ctx)
        paid = int(args["paid"])
        # The contract's rule (claimVoucher): credit first, then the pending withdrawal.
        from_credit = min(paid, origin.credit_wei)
        from_pending = paid - from_credit
        self._debit(origin, "credit_wei", from_credit, ctx)
        self._debit(origin, "pending_withdrawal_wei", from_pending, ctx)
        executor = self._account(session, args["executor"], ctx)
        executor.credit_wei += paid
        session.add(
            VoucherClaimRow(
                event_id=ctx.event_id,
                origin=args["origin"],
                executor=args["executor"],
                cumulative_amount_wei=int(args["cumulativeAmount"]),
                paid_wei=paid,
                from_credit_wei=from_credit,
                from_pending_wei=from_pending,
                block_number=ctx.block_number,
                tx_hash=ctx.tx_hash,
            )
        )

    def _bond(self, session: Session, node: str, amount: int, ctx: _LogContext) -> None:
        self._account(session, node, ctx).bonded_wei += amount

    def _release(self, session: Session, node: str, amount: int, ctx: _LogContext) -> None:
        # the contract's _unbond: bonded - min(bonded, amount)
        row = self._account(session, node, ctx)
        row.bonded_wei -= min(row.bonded_wei, amount)

    def _on_duel_opened(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel_id = int(args["duelId"])
        escrow = int(args["escrow"])
        bond = int(args["bond"])
        origin = self._account(session, args["origin"], ctx)
        self._debit(origin, "credit_wei", escrow, ctx)
        self._bond(session, args["a"], bond, ctx)
        session.add(
            DuelRow(
                id=duel_id,
                origin=args["origin"],
                a=args["a"],
                request_id=_hex(args["requestId"]),
                request_hash=_hex(args["requestHash"]),
                model_hash=_hex(args["modelHash"]),
                answer_a_hash=_hex(args["answerAHash"]),
                bond_wei=bond,
                escrow_wei=escrow,
                seed_block=int(args["seedBlock"]),
                answer_deadline=int(args["answerDeadline"]),
                round=0,
                status=DUEL_STATUS[1],
                opened_block=ctx.block_number,
                opened_event_id=ctx.event_id,
            )
        )
        self._move(session, ctx, duel_id, args["origin"], escrow, "escrow")

    def _on_challenger_drawn(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        bond = int(args["bond"])
        # equal bonds: B cannot lose more than it holds, so A's bond drops to B's
        self._release(session, duel.a, duel.bond_wei - bond, ctx)
        self._bond(session, args["b"], bond, ctx)
        duel.b = args["b"]
        duel.bond_wei = bond

    def _on_duel_answered(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[3]
        duel.round = 1
        duel.answer_b_hash = _hex(args["answerBHash"])
        duel.commit_end_r1 = int(args["commitEnd"])
        duel.answered_block = ctx.block_number

    def _on_request_missing(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[2]
        duel.publish_deadline = int(args["publishDeadline"])

    def _on_request_published(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[1]
        duel.request = bytes(args["request"])
        duel.seed_block = int(args["seedBlock"])
        duel.answer_deadline = int(args["answerDeadline"])

    def _on_judges_drawn(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel_id = int(args["duelId"])
        duel = self._duel(session, duel_id, ctx)
        round_ = int(args["round"])
        if round_ == 1:
            duel.commit_end_r1, duel.reveal_end_r1 = int(args["commitEnd"]), int(args["revealEnd"])
        else:
            duel.commit_end_r2, duel.reveal_end_r2 = int(args["commitEnd"]), int(args["revealEnd"])
        for position, judge in enumerate(args["seats"]):
            session.add(DuelJudgeRow(duel_id=duel_id, round=round_, position=position, judge=judge))
        session.flush()  # a commit in the same transaction finds the seats

    def _on_vote_committed(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        for seat in self._seats(session, duel, args["judge"], ctx):
            seat.commitment = _hex(args["commitment"])
            seat.committed_block = ctx.block_number

    def _on_vote_revealed(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        for seat in self._seats(session, duel, args["judge"], ctx):
            seat.vote = int(args["vote"])
            seat.revealed_block = ctx.block_number

    def _on_duel_appealed(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        deposit = int(args["deposit"])
        self._debit(self._account(session, args["appellant"], ctx), "credit_wei", deposit, ctx)
        duel.round = 2
        duel.appellant = args["appellant"]
        duel.appeal_deposit_wei = deposit
        duel.seed_block = int(args["seedBlock"])
        duel.commit_end_r2 = int(args["commitEnd"])
        if duel.commit_end_r1 is not None and duel.reveal_end_r1 is not None:
            # every round reveals for REVEAL_WINDOW blocks after its commit end
            duel.reveal_end_r2 = duel.commit_end_r2 + duel.reveal_end_r1 - duel.commit_end_r1
        self._move(session, ctx, duel.id, args["appellant"], deposit, "appeal_deposit")

    def _on_stake_slashed(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        # The contract's rule (_take_stake): active stake first, then unbonding stake.
        from_active = min(amount, row.active_stake_wei)
        self._debit(row, "active_stake_wei", from_active, ctx)
        self._debit(row, "unbonding_stake_wei", amount - from_active, ctx)
        kind = SLASH_KIND.get(int(args["reason"]), f"slashed_{int(args['reason'])}")
        self._move(session, ctx, int(args["duelId"]), args["node"], amount, kind)

    def _on_duel_reward_paid(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        amount = int(args["amount"])
        self._account(session, args["account"], ctx).credit_wei += amount
        kind = REWARD_KIND.get(int(args["reason"]), f"reward_{int(args['reason'])}")
        self._move(session, ctx, int(args["duelId"]), args["account"], amount, kind)

    def _on_reserve_changed(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        row = session.get(ContractStateRow, (self.contract_address, self.chain_id))
        if row is None:
            row = ContractStateRow(contract_address=self.contract_address, chain_id=self.chain_id)
            session.add(row)
        row.reserve_wei = int(args["amount"])
        row.updated_block = ctx.block_number

    def _end_duel(self, session: Session, duel: DuelRow, ctx: _LogContext) -> None:
        """Release both duelists' bonds (settled or cancelled: the contract releases them alike)."""
        self._release(session, duel.a, duel.bond_wei, ctx)
        if duel.b is not None:
            self._release(session, duel.b, duel.bond_wei, ctx)
        duel.settled_block = ctx.block_number

    def _on_duel_settled(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[4]
        duel.outcome = DUEL_OUTCOME.get(int(args["outcome"]), str(int(args["outcome"])))
        duel.final_round = int(args["round"])
        duel.votes_a = int(args["votesA"])
        duel.votes_b = int(args["votesB"])
        duel.stake_moved_wei = int(args["stakeMoved"])
        self._end_duel(session, duel, ctx)

    def _on_duel_cancelled(self, session: Session, ctx: _LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[5]
        duel.cancel_reason = CANCEL_REASON.get(int(args["reason"]), str(int(args["reason"])))
        self._end_duel(session, duel, ctx)

    @staticmethod
    def _move(session: Session, ctx: _LogContext, duel_id: int, node: str, amount: int, kind: str) -> None:
        session.add(
            StakeMoveRow(
                event_id=ctx.event_id,
                duel_id=duel_id,
                node=node,
                amount_wei=amount,
                kind=kind,
                block_number=ctx.block_number,
            )
        )

    # -----------------------------------------------------------------------------------------
    # queries
    def nodes(self, active_only: bool = True) -> list[NodeInfo]:
        """Registered nodes, by address."""
        stmt = select(NodeRow).order_by(NodeRow.address)
        if active_only:
            stmt = stmt.where(NodeRow.active.is_(True))
        with self._sessions() as session:
            return [_node_info(row) for row in session.scalars(stmt)]

    def node(self, address: str) -> NodeInfo | None:
        """One registry entry, or None if the address never registered."""
        with self._sessions() as session:
            row = session.get(NodeRow, to_checksum_address(address))
            return None if row is None else _node_info(row)

    def account(self, address: str) -> AccountInfo:
        """Indexed balances of `address` (zeros if it never appeared, like the contract's mappings)."""
        address = to_checksum_address(address)
        with self._sessions() as session:
            row = session.get(AccountRow, address)
            if row is None:
                return AccountInfo(address, 0, 0, 0, 0, 0, 0, 0, 0)
            return _account_info(row)

    def accounts(self) -> list[AccountInfo]:
        """Every address the index has balances for, by address."""
        with self._sessions() as session:
            return [_account_info(r) for r in session.scalars(select(AccountRow).order_by(AccountRow.address))]

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

    def duel(self, duel_id: int) -> DuelInfo | None:
        """One duel with the seats of every round, or None if it was never opened."""
        with self._sessions() as session:
            row = session.get(DuelRow, duel_id)
            return None if row is None else _duel_info(session, row)

    def duels(self, limit: int | None = 50) -> list[DuelInfo]:
        """The most recently opened duels (all of them with `limit=None`), newest first (duel ids are
        hashes, not a counter)."""
        stmt = select(DuelRow).order_by(DuelRow.opened_block.desc(), DuelRow.opened_event_id.desc())
        return self._duel_list(stmt if limit is None else stmt.limit(limit))

    def _duel_list(self, stmt: Any) -> list[DuelInfo]:
        with self._sessions() as session:
            return [_duel_info(session, row) for row in session.scalars(stmt).all()]

    @staticmethod
    def _oldest_first(stmt: Any) -> Any:
        return stmt.order_by(DuelRow.opened_block, DuelRow.opened_event_id)

    def duels_judged_by(
        self, judge: str, statuses: tuple[str, ...] = ("judging",), *, current_round_only: bool = True
    ) -> list[DuelInfo]:
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

    def duels_opened_by(self, origin: str, statuses: tuple[str, ...] = OPEN_STATUSES) -> list[DuelInfo]:
        """Duels `origin` opened, in one of `statuses` (default: still open), oldest first."""
        address = to_checksum_address(origin)
        return self._duel_list(self._oldest_first(
            select(DuelRow).where(DuelRow.origin == address, DuelRow.status.in_(statuses))))

    def duels_with_challenger(self, address: str, statuses: tuple[str, ...] = OPEN_STATUSES) -> list[DuelInfo]:
        """Duels whose recorded challenger B is `address`, in one of `statuses` (default: still open),
        oldest first. A challenger a draw would pick but nobody recorded yet is not here: ask the
        contract (`challengerOf`) about `duels_awaiting_answer()`."""
        who = to_checksum_address(address)
        return self._duel_list(self._oldest_first(
            select(DuelRow).where(DuelRow.b == who, DuelRow.status.in_(statuses))))

    def duels_awaiting_answer(self) -> list[DuelInfo]:
        """Every duel awaiting its challenger's answer, oldest first (a candidate challenger checks
        each with `challengerOf`)."""
        return self._duel_list(self._oldest_first(select(DuelRow).where(DuelRow.status == DUEL_STATUS[1])))

    def duels_executed_by(self, address: str, statuses: tuple[str, ...] | None = None) -> list[DuelInfo]:
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
        views = self._views_contract(client_or_w3)
        mismatches: list[BalanceMismatch] = []
        accounts = {a.address: a for a in self.accounts()}
        for extra in extra_addresses:
            extra_address: str = to_checksum_address(extra)
            accounts.setdefault(extra_address, AccountInfo(extra_address, 0, 0, 0, 0, 0, 0, 0, 0))
        fields = (
            ("credit", "credit_wei"),
            ("pendingWithdrawal", "pending_withdrawal_wei"),
            ("withdrawableAt", "withdrawable_at"),
            ("activeStake", "active_stake_wei"),
            ("unbondingStake", "unbonding_stake_wei"),
            ("unbondingEnd", "unbonding_end"),
            ("unbondingBlock", "unbonding_block"),
            ("reserved", "bonded_wei"),
        )
        for address, acct in sorted(accounts.items()):
            for getter, attr in fields:
                on_chain = int(views.functions[getter](address).call())
                indexed: int = getattr(acct, attr)
                if on_chain != indexed:
                    mismatches.append(BalanceMismatch(address, getter, indexed, on_chain))
        with self._sessions() as session:
            paid: dict[tuple[str, str], int] = {}
            for claim in session.scalars(select(VoucherClaimRow)):
                key = (claim.origin, claim.executor)
                paid[key] = paid.get(key, 0) + claim.paid_wei
        for (origin, executor), total in sorted(paid.items()):
            on_chain = int(views.functions.claimed(origin, executor).call())
            if on_chain != total:
                mismatches.append(BalanceMismatch(origin, f"claimed[{executor}]", total, on_chain))
        for node in self.nodes(active_only=False):
            entry = views.functions.nodes(node.address).call()
            # Node struct order: pubkey, endpoint, models, metadata, active, leaf
            if bool(entry[4]) != node.active:
                mismatches.append(BalanceMismatch(node.address, "nodes.active", int(node.active), int(entry[4])))
            if int(entry[5]) != node.leaf:
                mismatches.append(BalanceMismatch(node.address, "nodes.leaf", node.leaf, int(entry[5])))
            held = bool(views.functions.registeredOnce(node.address).call())
            if held != node.slot_held:
                mismatches.append(BalanceMismatch(node.address, "registeredOnce", int(node.slot_held), int(held)))
        on_chain_reserve = int(views.functions.reserve().call())
        if on_chain_reserve != self.reserve():
            mismatches.append(BalanceMismatch(self.contract_address, "reserve", self.reserve(), on_chain_reserve))
        return mismatches

    def _views_contract(self, source: Web3 | Contract | HasContract | None) -> Contract:
        if source is None:
            return self.contract
        if isinstance(source, Web3):
            return source.eth.contract(address=self.contract_address, abi=self._abi)
        contract = source if isinstance(source, Contract) else getattr(source, "contract", None)
        if not isinstance(contract, Contract):
            raise TypeError(f"reconcile() needs a Web3, a Contract or an object with .contract, got {source!r}")
        if to_checksum_address(contract.address) != self.contract_address:
            raise ValueError(f"that client talks to {contract.address}, the index follows {self.contract_address}")
        return contract


def _node_info(row: NodeRow) -> NodeInfo:
    return NodeInfo(
        address=row.address,
        pubkey=row.pubkey,
        endpoint=row.endpoint,
        models=tuple(row.models),
        metadata=row.node_metadata,
        active=row.active,
        leaf=row.leaf,
        registered_block=row.registered_block,
        updated_block=row.updated_block,
        slot_held=row.slot_held,
    )


def _account_info(row: AccountRow) -> AccountInfo:
    return AccountInfo(
        address=row.address,
        credit_wei=row.credit_wei,
        pending_withdrawal_wei=row.pending_withdrawal_wei,
        withdrawable_at=row.withdrawable_at,
        active_stake_wei=row.active_stake_wei,
        unbonding_stake_wei=row.unbonding_stake_wei,
        unbonding_end=row.unbonding_end,
        unbonding_block=row.unbonding_block,
        bonded_wei=row.bonded_wei,
    )


def _duel_info(session: Session, row: DuelRow) -> DuelInfo:
    seats = session.scalars(
        select(DuelJudgeRow)
        .where(DuelJudgeRow.duel_id == row.id)
        .order_by(DuelJudgeRow.round, DuelJudgeRow.position)
    )
    commit_end, reveal_end = {1: (row.commit_end_r1, row.reveal_end_r1),
                              2: (row.commit_end_r2, row.reveal_end_r2)}.get(row.round, (None, None))
    return DuelInfo(
        id=row.id,
        origin=row.origin,
        a=row.a,
        b=row.b,
        request_id=row.request_id,
        request_hash=row.request_hash,
        model_hash=row.model_hash,
        answer_a_hash=row.answer_a_hash,
        answer_b_hash=row.answer_b_hash,
        bond_wei=row.bond_wei,
        escrow_wei=row.escrow_wei,
        seed_block=row.seed_block,
        answer_deadline=row.answer_deadline,
        publish_deadline=row.publish_deadline,
        round=row.round,
        commit_end=commit_end,
        reveal_end=reveal_end,
        commit_end_r1=row.commit_end_r1,
        reveal_end_r1=row.reveal_end_r1,
        commit_end_r2=row.commit_end_r2,
        reveal_end_r2=row.reveal_end_r2,
        status=row.status,
        outcome=row.outcome,
        cancel_reason=row.cancel_reason,
        final_round=row.final_round,
        votes_a=row.votes_a,
        votes_b=row.votes_b,
        stake_moved_wei=row.stake_moved_wei,
        appellant=row.appellant,
        appeal_deposit_wei=row.appeal_deposit_wei,
        request=row.request,
        opened_block=row.opened_block,
        answered_block=row.answered_block,
        settled_block=row.settled_block,
        judges=tuple(
            JudgeSeat(s.round, s.position, s.judge, s.commitment, s.vote, s.committed_block, s.revealed_block)
            for s in seats
        ),
    )
