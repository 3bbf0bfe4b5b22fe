"""What the indexer answers with: the contract's enums by name, and plain frozen dataclasses.

No ORM object escapes the indexer: every query turns its rows into these (`node_info`, `account_info`,
`indexed_duel`) inside the session that read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from wwwserve.ledger.db import AccountRow, DuelJudgeRow, DuelRow, NodeRow
from wwwserve.ledger.records import (
    CancelReason,
    DuelOutcome,
    DuelRound,
    DuelState,
    DuelStatus,
    RewardReason,
    SlashReason,
    Vote,
)

# The contract's enums (ledger.records), stored by name so the tables read on their own. The names are
# spelled out, not derived from the enum members, because they are what the database holds.
DUEL_STATUS: dict[int, str] = {
    DuelStatus.AWAITING_ANSWER: "awaiting_answer",
    DuelStatus.AWAITING_REQUEST: "awaiting_request",
    DuelStatus.JUDGING: "judging",
    DuelStatus.SETTLED: "settled",
    DuelStatus.CANCELLED: "cancelled",
}
OPEN_STATUSES = tuple(DUEL_STATUS[s] for s in (DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST,
                                               DuelStatus.JUDGING))
DUEL_OUTCOME: dict[int, str] = {
    DuelOutcome.A_WON: "a_won",
    DuelOutcome.B_WON: "b_won",
    DuelOutcome.TIE: "tie",
    DuelOutcome.VOIDED: "voided",
}
CANCEL_REASON: dict[int, str] = {
    CancelReason.NO_CHALLENGER: "no_challenger",
    CancelReason.NO_ANSWER: "no_answer",
    CancelReason.REQUEST_WITHHELD: "request_withheld",
    CancelReason.NO_JUDGES: "no_judges",
}
SLASH_KIND: dict[int, str] = {
    SlashReason.LOST_DUEL: "slashed_lost_duel",
    SlashReason.INCOHERENT_JUDGE: "slashed_incoherent_judge",
    SlashReason.SILENT_JUDGE: "slashed_silent_judge",
    SlashReason.NO_ANSWER: "slashed_no_answer",
}
REWARD_KIND: dict[int, str] = {
    RewardReason.STAKE_WON: "reward_stake_won",
    RewardReason.RESERVE_BONUS: "reward_reserve_bonus",
    RewardReason.DUELIST_FEE: "fee_duelist",
    RewardReason.JUDGE_FEE: "fee_judge",
    RewardReason.ESCROW_REFUND: "refund_escrow",
    RewardReason.APPEAL_REFUND: "refund_appeal",
}


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
    vote: Vote | None
    committed_block: int | None
    revealed_block: int | None


@dataclass(frozen=True)
class IndexedDuel:
    """A duel as indexed: its history, not only its state. Beside what the chain holds now it keeps what
    the events told: escrow, settlement, appeal, the block of every step and of every seat's commit and
    reveal. `state()` gives its on-chain state as the reader and the judge describe a duel
    (`ledger.records.DuelState`). Hashes are 0x-hex here; block numbers are None until the step that
    sets them happened. `commit_end`/`reveal_end` are the current round's. Statuses, outcomes and
    cancel reasons are the indexer's names (`DUEL_STATUS`, ...), as stored."""

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

    def state(self, *, reveal_window_blocks: int, appeal_window_blocks: int) -> DuelState:
        """This duel's on-chain state (the deployment's windows fill in a round's reveal end the index
        has not seen yet, and the appeal window). A round's window not known yet reads -1 (over)."""
        rounds = []
        for number in range(1, self.round + 1):
            seats = self.seats(number)
            commit_end = {1: self.commit_end_r1, 2: self.commit_end_r2}[number]
            reveal_end = {1: self.reveal_end_r1, 2: self.reveal_end_r2}[number]
            if commit_end is None:
                commit_end = -1
            if reveal_end is None:
                reveal_end = commit_end + reveal_window_blocks if commit_end >= 0 else -1
            rounds.append(DuelRound(
                round=number,
                seats=tuple(s.judge for s in seats),
                votes=tuple(s.vote or Vote.NONE for s in seats),
                commit_end=commit_end,
                reveal_end=reveal_end,
                committed=frozenset(s.judge.lower() for s in seats
                                    if s.commitment is not None or s.vote is not None),
            ))
        status = _STATUS_OF[self.status]
        deadline = self.answer_deadline if status is DuelStatus.AWAITING_ANSWER else (
            self.publish_deadline if status is DuelStatus.AWAITING_REQUEST else (
                rounds[-1].commit_end if rounds else -1))
        return DuelState(
            duel_id=self.id,
            origin=self.origin,
            a=self.a,
            b=self.b,
            status=status,
            seed_block=self.seed_block,
            deadline=deadline if deadline is not None else -1,
            outcome=DuelOutcome.NONE if self.outcome is None else _OUTCOME_OF[self.outcome],
            bond_wei=self.bond_wei,
            rounds=tuple(rounds),
            appeal_window_blocks=appeal_window_blocks,
            request_hash=_bytes32(self.request_hash),
            answer_a_hash=_bytes32(self.answer_a_hash),
            answer_b_hash=_bytes32(self.answer_b_hash),
            request_id=_bytes32(self.request_id),
            model_hash=_bytes32(self.model_hash),
            published_request=self.request,
        )


_STATUS_OF = {name: DuelStatus(value) for value, name in DUEL_STATUS.items()}
_OUTCOME_OF = {name: DuelOutcome(value) for value, name in DUEL_OUTCOME.items()}


def _bytes32(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value.removeprefix("0x"))


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


# ---------------------------------------------------------------------------------------------
# rows -> results
def node_info(row: NodeRow) -> NodeInfo:
    """The registry entry a `NodeRow` holds."""
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


def account_info(row: AccountRow) -> AccountInfo:
    """The balances an `AccountRow` holds."""
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


def indexed_duel(session: Session, row: DuelRow) -> IndexedDuel:
    """A `DuelRow` with the seats of every round (read in `session`)."""
    seats = session.scalars(
        select(DuelJudgeRow)
        .where(DuelJudgeRow.duel_id == row.id)
        .order_by(DuelJudgeRow.round, DuelJudgeRow.position)
    )
    commit_end, reveal_end = {1: (row.commit_end_r1, row.reveal_end_r1),
                              2: (row.commit_end_r2, row.reveal_end_r2)}.get(row.round, (None, None))
    return IndexedDuel(
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
            JudgeSeat(s.round, s.position, s.judge, s.commitment, None if s.vote is None else Vote(s.vote),
                      s.committed_block, s.revealed_block)
            for s in seats
        ),
    )
