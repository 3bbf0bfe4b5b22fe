"""Replaying WWWServe events onto the indexer's derived tables: one handler per event, mirroring WWWServe.vy.

Balances are a pure function of the events. Two events do not say which balance they drew from,
and the replay applies the contract's own deterministic rule against the indexed state:
  * VoucherClaimed(paid): the contract pays `min(owed, credit)` from credit and the rest (capped by
    the pending withdrawal) from pending. Since `paid` is that sum, the credit part is
    `min(paid, credit)` and the pending part `paid - min(paid, credit)`.
  * StakeSlashed(amount): taken from active stake first, then from unbonding stake.
Bonded stake (`reserved`: what open duels bond of a duelist's stake) is part of the stake, not taken
out of it; the replay follows the bonds from the duel events: DUEL_BOND at DuelOpened (A), the
equal bond at ChallengerDrawn (B, lowering A's to match), both released when the duel settles or is
cancelled (saturating at zero, like the contract). The reserve is the amount ReserveChanged reports.
This is exact only if the indexer has seen every event since deployment (start_block <= the
deployment block); a debit that would go below zero raises `IndexerStateError`.

Every change of an address's active stake also writes its new value to `stake_history` under the
event's block (one row per block and address: a later change in the same block updates it), with the
stake before that block and the block's net change as a gain or a loss.

Each handler runs inside the batch transaction of `Indexer.sync()`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from wwwserve.ledger.db import (
    AccountRow,
    ContractStateRow,
    DuelJudgeRow,
    DuelRow,
    NodeRow,
    StakeHistoryRow,
    StakeMoveRow,
    VoucherClaimRow,
)
from wwwserve.ledger.indexer.errors import IndexerStateError
from wwwserve.ledger.indexer.results import CANCEL_REASON, DUEL_OUTCOME, DUEL_STATUS, REWARD_KIND, SLASH_KIND
from wwwserve.ledger.records import DuelStatus


@dataclass(frozen=True)
class LogContext:
    """Where the event being applied came from: its stored row, block and transaction."""

    event_id: int
    block_number: int
    tx_hash: str


Handler = Callable[[Session, LogContext, Mapping[str, Any]], None]


def to_hex(value: bytes | bytearray) -> str:
    """Bytes as 0x-hex, the way every hash is stored."""
    return "0x" + bytes(value).hex()


def jsonable(value: Any) -> Any:
    """Decoded ABI values -> JSON: bytes to 0x-hex, sequences to lists; ints stay exact."""
    if isinstance(value, bytes | bytearray):
        return to_hex(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class EventReplay:
    """Applies decoded events of one deployment to the derived tables (see the module docstring)."""

    def __init__(self, contract_address: str, chain_id: int) -> None:
        """`contract_address` and `chain_id` key the contract-wide state (the reserve)."""
        self.contract_address = contract_address
        self.chain_id = chain_id
        self.handlers: dict[str, Handler] = {
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

    def apply(self, session: Session, name: str, ctx: LogContext, args: Mapping[str, Any]) -> None:
        """Apply the event `name` with its decoded `args` inside `session`."""
        self.handlers[name](session, ctx, args)

    # -----------------------------------------------------------------------------------------
    # lookups shared by the handlers
    @staticmethod
    def _account(session: Session, address: str, ctx: LogContext) -> AccountRow:
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
    def _debit(row: AccountRow, field: str, amount: int, ctx: LogContext) -> None:
        current: int = getattr(row, field)
        if current < amount:
            raise IndexerStateError(
                f"tx {ctx.tx_hash} (block {ctx.block_number}) takes {amount} wei from {field} of "
                f"{row.address}, which the index has at {current}: events were missed "
                "(was start_block after the deployment block?)"
            )
        setattr(row, field, current - amount)

    @staticmethod
    def _stake_changed(session: Session, row: AccountRow, before: int, ctx: LogContext) -> None:
        """Record `row`'s active stake as of this event's block in `stake_history` (`before`: the stake
        before this event; the row keeps the stake before the block, and the block's net change)."""
        entry = session.get(StakeHistoryRow, (ctx.block_number, row.address))
        if entry is None:
            entry = StakeHistoryRow(block_number=ctx.block_number, address=row.address, previous_stake_wei=before)
            session.add(entry)
        new, previous = row.active_stake_wei, entry.previous_stake_wei
        entry.active_stake_wei = new
        entry.gained_wei = max(new - previous, 0)
        entry.lost_wei = max(previous - new, 0)
        session.flush()  # a second change in this block finds the row

    @staticmethod
    def _duel(session: Session, duel_id: int, ctx: LogContext) -> DuelRow:
        row = session.get(DuelRow, duel_id)
        if row is None:
            raise IndexerStateError(f"tx {ctx.tx_hash} refers to duel {duel_id}, which was never opened")
        return row

    @staticmethod
    def _seats(session: Session, duel: DuelRow, judge: str, ctx: LogContext) -> list[DuelJudgeRow]:
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

    # -----------------------------------------------------------------------------------------
    # the handlers, one per event
    def _on_node_registered(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        address = args["node"]
        row = session.get(NodeRow, address)
        if row is None:
            row = NodeRow(address=address)
            session.add(row)
        row.pubkey = to_hex(args["pubkey"])
        row.endpoint = args["endpoint"]
        row.models = list(args["models"])
        row.node_metadata = args["metadata"]
        row.active = True
        row.leaf = int(args["leaf"])
        row.slot_held = True
        row.registered_block = ctx.block_number
        row.updated_block = ctx.block_number
        self._account(session, address, ctx)  # so the stake table lists nodes without balances

    def _node(self, session: Session, address: str, ctx: LogContext) -> NodeRow:
        row = session.get(NodeRow, address)
        if row is None:
            raise IndexerStateError(f"tx {ctx.tx_hash} changes node {address}, which never registered")
        return row

    def _on_node_updated(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._node(session, args["node"], ctx)
        row.pubkey = to_hex(args["pubkey"])
        row.endpoint = args["endpoint"]
        row.models = list(args["models"])
        row.node_metadata = args["metadata"]
        row.updated_block = ctx.block_number

    def _on_node_left(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._node(session, args["node"], ctx)
        row.active = False
        row.updated_block = ctx.block_number

    def _on_slot_released(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._node(session, args["node"], ctx)
        row.leaf = 0
        row.slot_held = False
        row.updated_block = ctx.block_number
        account = self._account(session, args["node"], ctx)
        account.credit_wei += int(args["bond"])
        account.bonded_wei = 0  # releaseSlot clears the stake word: no duel can take from this node any more

    def _on_credit_deposited(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        row.credit_wei += int(args["amount"])

    def _on_withdrawal_requested(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        amount = int(args["amount"])
        self._debit(row, "credit_wei", amount, ctx)
        row.pending_withdrawal_wei += amount
        row.withdrawable_at = int(args["availableAt"])

    def _on_withdrawal_cancelled(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        amount = int(args["amount"])
        self._debit(row, "pending_withdrawal_wei", amount, ctx)
        row.credit_wei += amount

    def _on_credit_withdrawn(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["account"], ctx)
        self._debit(row, "pending_withdrawal_wei", int(args["amount"]), ctx)

    def _on_staked(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        self._debit(row, "credit_wei", amount, ctx)
        row.active_stake_wei += amount
        self._stake_changed(session, row, row.active_stake_wei - amount, ctx)

    def _on_unstake_requested(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        self._debit(row, "active_stake_wei", amount, ctx)
        row.unbonding_stake_wei += amount
        row.unbonding_end = int(args["unbondingEnd"])
        row.unbonding_block = ctx.block_number
        self._stake_changed(session, row, row.active_stake_wei + amount, ctx)

    def _on_stake_withdrawn(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        self._debit(row, "unbonding_stake_wei", amount, ctx)
        row.credit_wei += amount

    def _on_voucher_claimed(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
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

    def _bond(self, session: Session, node: str, amount: int, ctx: LogContext) -> None:
        self._account(session, node, ctx).bonded_wei += amount

    def _release(self, session: Session, node: str, amount: int, ctx: LogContext) -> None:
        # the contract's _unbond: bonded - min(bonded, amount)
        row = self._account(session, node, ctx)
        row.bonded_wei -= min(row.bonded_wei, amount)

    def _on_duel_opened(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
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
                request_id=to_hex(args["requestId"]),
                request_hash=to_hex(args["requestHash"]),
                model_hash=to_hex(args["modelHash"]),
                answer_a_hash=to_hex(args["answerAHash"]),
                bond_wei=bond,
                escrow_wei=escrow,
                seed_block=int(args["seedBlock"]),
                answer_deadline=int(args["answerDeadline"]),
                round=0,
                status=DUEL_STATUS[DuelStatus.AWAITING_ANSWER],
                opened_block=ctx.block_number,
                opened_event_id=ctx.event_id,
            )
        )
        self._move(session, ctx, duel_id, args["origin"], escrow, "escrow")

    def _on_challenger_drawn(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        bond = int(args["bond"])
        # equal bonds: B cannot lose more than it holds, so A's bond drops to B's
        self._release(session, duel.a, duel.bond_wei - bond, ctx)
        self._bond(session, args["b"], bond, ctx)
        duel.b = args["b"]
        duel.bond_wei = bond

    def _on_duel_answered(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[DuelStatus.JUDGING]
        duel.round = 1
        duel.answer_b_hash = to_hex(args["answerBHash"])
        duel.commit_end_r1 = int(args["commitEnd"])
        duel.answered_block = ctx.block_number

    def _on_request_missing(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[DuelStatus.AWAITING_REQUEST]
        duel.publish_deadline = int(args["publishDeadline"])

    def _on_request_published(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[DuelStatus.AWAITING_ANSWER]
        duel.request = bytes(args["request"])
        duel.seed_block = int(args["seedBlock"])
        duel.answer_deadline = int(args["answerDeadline"])

    def _on_judges_drawn(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
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

    def _on_vote_committed(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        for seat in self._seats(session, duel, args["judge"], ctx):
            seat.commitment = to_hex(args["commitment"])
            seat.committed_block = ctx.block_number

    def _on_vote_revealed(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        for seat in self._seats(session, duel, args["judge"], ctx):
            seat.vote = int(args["vote"])
            seat.revealed_block = ctx.block_number

    def _on_duel_appealed(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
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

    def _on_stake_slashed(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = self._account(session, args["node"], ctx)
        amount = int(args["amount"])
        # The contract's rule (_take_stake): active stake first, then unbonding stake.
        from_active = min(amount, row.active_stake_wei)
        self._debit(row, "active_stake_wei", from_active, ctx)
        self._debit(row, "unbonding_stake_wei", amount - from_active, ctx)
        if from_active:
            self._stake_changed(session, row, row.active_stake_wei + from_active, ctx)
        kind = SLASH_KIND.get(int(args["reason"]), f"slashed_{int(args['reason'])}")
        self._move(session, ctx, int(args["duelId"]), args["node"], amount, kind)

    def _on_duel_reward_paid(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        amount = int(args["amount"])
        self._account(session, args["account"], ctx).credit_wei += amount
        kind = REWARD_KIND.get(int(args["reason"]), f"reward_{int(args['reason'])}")
        self._move(session, ctx, int(args["duelId"]), args["account"], amount, kind)

    def _on_reserve_changed(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        row = session.get(ContractStateRow, (self.contract_address, self.chain_id))
        if row is None:
            row = ContractStateRow(contract_address=self.contract_address, chain_id=self.chain_id)
            session.add(row)
        row.reserve_wei = int(args["amount"])
        row.updated_block = ctx.block_number

    def _end_duel(self, session: Session, duel: DuelRow, ctx: LogContext) -> None:
        """Release both duelists' bonds (settled or cancelled: the contract releases them alike)."""
        self._release(session, duel.a, duel.bond_wei, ctx)
        if duel.b is not None:
            self._release(session, duel.b, duel.bond_wei, ctx)
        duel.settled_block = ctx.block_number

    def _on_duel_settled(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[DuelStatus.SETTLED]
        duel.outcome = DUEL_OUTCOME.get(int(args["outcome"]), str(int(args["outcome"])))
        duel.final_round = int(args["round"])
        duel.votes_a = int(args["votesA"])
        duel.votes_b = int(args["votesB"])
        duel.stake_moved_wei = int(args["stakeMoved"])
        self._end_duel(session, duel, ctx)

    def _on_duel_cancelled(self, session: Session, ctx: LogContext, args: Mapping[str, Any]) -> None:
        duel = self._duel(session, int(args["duelId"]), ctx)
        duel.status = DUEL_STATUS[DuelStatus.CANCELLED]
        duel.cancel_reason = CANCEL_REASON.get(int(args["reason"]), str(int(args["reason"])))
        self._end_duel(session, duel, ctx)

    @staticmethod
    def _move(session: Session, ctx: LogContext, duel_id: int, node: str, amount: int, kind: str) -> None:
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
