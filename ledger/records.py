"""What the contract client hands back: the contract's enums and frozen dataclasses of plain values.

Every value is a plain Python type (int, str, bytes, tuples), never a web3 AttributeDict or HexBytes, so
results can be compared, hashed and logged. Money is int wei, times are unix seconds, blocks are numbers.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_typing import ChecksumAddress

from wwwserve.ledger.params import verdict_weight


class Vote(enum.IntEnum):
    """A judge's vote (contract VOTE_*)."""

    NONE = 0
    A = 1
    B = 2
    ABSTAIN = 3
    NO_EVIDENCE = 4


class DuelStatus(enum.IntEnum):
    """Where a duel is in its life (contract DUEL_*)."""

    NONE = 0
    AWAITING_ANSWER = 1  # the challenger is (to be) drawn and answers
    AWAITING_REQUEST = 2  # the challenger could not get the request: anyone may publish it
    JUDGING = 3  # a panel (round 1, or the appeal round 2) commits and reveals
    SETTLED = 4
    CANCELLED = 5


class DuelOutcome(enum.IntEnum):
    """How a settled duel ended (contract OUTCOME_*); NONE until settled."""

    NONE = 0
    A_WON = 1
    B_WON = 2
    TIE = 3
    VOIDED = 4  # a majority of seats could not get the evidence


class SlashReason(enum.IntEnum):
    """`reason` of the StakeSlashed event (contract SLASH_*)."""

    LOST_DUEL = 1
    INCOHERENT_JUDGE = 2  # voted for the side that lost the final verdict
    SILENT_JUDGE = 3  # held a seat and revealed nothing
    NO_ANSWER = 4  # a drawn challenger that never answered


class RewardReason(enum.IntEnum):
    """`reason` of the DuelRewardPaid event (contract REWARD_*)."""

    STAKE_WON = 1  # the winning challenger: A's bond plus its duelist fee, one payment
    RESERVE_BONUS = 2  # not emitted today: a judge's reserve share is paid with its fee (JUDGE_FEE)
    DUELIST_FEE = 3
    JUDGE_FEE = 4  # a coherent seat: JUDGE_FEE plus its share of the reserve
    ESCROW_REFUND = 5
    APPEAL_REFUND = 6


class CancelReason(enum.IntEnum):
    """`reason` of the DuelCancelled event (contract CANCEL_*)."""

    NO_CHALLENGER = 1  # nobody serving the model could be drawn, or none was drawn in time
    NO_ANSWER = 2  # the drawn challenger never answered (its bond went to the reserve)
    REQUEST_WITHHELD = 3  # the challenger could not get the request and nobody published it
    NO_JUDGES = 4  # no eligible judge stake to draw a panel from


@dataclass(frozen=True)
class DecodedEvent:
    """One contract event from a receipt, with its arguments as plain Python values."""

    name: str
    args: Mapping[str, Any]
    log_index: int


@dataclass(frozen=True)
class TxResult:
    """What a mined state-changing call produced."""

    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[DecodedEvent, ...]
    # the duel the transaction was about (open_duel: the new duel's id, from DuelOpened)
    duel_id: int | None = None

    def events_named(self, name: str) -> tuple[DecodedEvent, ...]:
        """The events called `name`, in log order."""
        return tuple(e for e in self.events if e.name == name)

    def event(self, name: str) -> DecodedEvent:
        """The first event called `name`; LookupError when there is none."""
        for e in self.events:
            if e.name == name:
                return e
        raise LookupError(f"transaction {self.tx_hash} emitted no {name} event")


@dataclass(frozen=True)
class DeployedContracts:
    """Where `WWWServeClient.deploy_contracts` put the two contracts (users only need `address`)."""

    address: ChecksumAddress  # WWWServe: the one address users call
    extension: ChecksumAddress  # WWWServeExt, which WWWServe delegatecalls
    block_number: int  # WWWServe's deployment block (every event is emitted from it on)
    extension_block_number: int


@dataclass(frozen=True)
class NodeInfo:
    """A node's registry entry. `active` is False once it left (the entry and its leaf remain)."""

    address: str
    pubkey: bytes
    endpoint: str
    models: tuple[str, ...]
    metadata: str
    active: bool
    leaf: int


@dataclass(frozen=True)
class Balances:
    """Everything an account holds in the contract. Money in wei, times in unix seconds."""

    credit_wei: int
    pending_withdrawal_wei: int
    withdrawable_at_s: int
    active_stake_wei: int
    unbonding_stake_wei: int
    unbonding_end_s: int
    # block of the last unstake request: unbonding stake also waits DUEL_SPAN_BLOCKS blocks after it
    unbonding_block: int
    # stake bonded by open duels in which the node is a duelist: part of the stake above (nothing
    # leaves the stake when bonded), slashable, and not withdrawable until those duels end
    bonded_wei: int

    @property
    def stake_wei(self) -> int:
        """Active plus unbonding stake (both are slashable; bonded stake is part of it)."""
        return self.active_stake_wei + self.unbonding_stake_wei

    @property
    def free_stake_wei(self) -> int:
        """Stake no open duel bonds (what could be bonded by a new duel)."""
        return max(0, self.stake_wei - self.bonded_wei)

    @property
    def total_wei(self) -> int:
        """Credit, pending withdrawal and stake together."""
        return self.credit_wei + self.pending_withdrawal_wei + self.stake_wei


@dataclass(frozen=True)
class DuelRound:
    """One round's panel: its seats in seat order (a judge drawn twice holds two seats) and each
    seat's revealed vote (Vote.NONE = not revealed). Empty until the round's seats are drawn."""

    round: int
    judges: tuple[str, ...]
    votes: tuple[Vote, ...]


@dataclass(frozen=True)
class DuelInfo:
    """A duel as the contract stores it (hashes live in the events: see `duel_hashes`).

    `deadline` means what the status says: the answer deadline (awaiting answer), the publish
    deadline (awaiting request) or the current round's commit end (judging); the derived block
    fields below spell it out and are None when they do not apply. `judges`/`votes` are the CURRENT
    round's; `rounds` holds every round reached (round 1, and round 2 after an appeal), in order.
    """

    duel_id: int
    origin: str
    a: str
    b: str | None  # None until the challenger is drawn
    seed_block: int  # the block whose hash seeds the current step's draws
    deadline: int
    bond_wei: int  # what each duelist has at risk (equal for both)
    round: int  # 0 before B answered, then 1, or 2 after an appeal
    status: DuelStatus
    outcome: DuelOutcome
    judges: tuple[str, ...]
    votes: tuple[Vote, ...]
    rounds: tuple[DuelRound, ...] = ()
    answer_deadline_block: int | None = None  # awaiting answer: last block B may answer in
    publish_deadline_block: int | None = None  # awaiting request: last block to publish the request
    commit_end_block: int | None = None  # judging: last block of the current round's commits
    reveal_end_block: int | None = None  # judging: last block of its reveals
    appeal_end_block: int | None = None  # judging round 1: last block the loser may appeal in

    def judges_of(self, round: int) -> tuple[str, ...]:
        """The seats of `round` (empty when not drawn or not reached)."""
        return next((r.judges for r in self.rounds if r.round == round), ())

    def votes_of(self, round: int) -> tuple[Vote, ...]:
        """The revealed votes of `round`, per seat (empty when not drawn or not reached)."""
        return next((r.votes for r in self.rounds if r.round == round), ())

    @property
    def is_open(self) -> bool:
        """Not settled nor cancelled yet."""
        return self.status in (DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST, DuelStatus.JUDGING)


@dataclass(frozen=True)
class DuelHashes:
    """What a duel is about, from its events: the request, A's answer and B's (None until B answered)."""

    request_hash: bytes
    answer_a_hash: bytes
    answer_b_hash: bytes | None

    def __iter__(self) -> Any:
        # unpacks like the tuple it replaces: request, answer_a, answer_b = client.duel_hashes(id)
        return iter((self.request_hash, self.answer_a_hash, self.answer_b_hash))


@dataclass(frozen=True)
class DuelSettlement:
    """What settling a duel decided, from its DuelSettled event."""

    outcome: DuelOutcome
    round: int  # the round whose verdict is final
    votes_a: int  # seats of that round for A
    votes_b: int
    stake_moved_wei: int  # the loser's bond taken (0 on a tie or a void)
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class VerdictCounts:
    """Decided verdicts so far (the contract's `verdicts`): how many A won and how many B won, both
    halved whenever they reach VERDICT_DECAY_AT (1024) together. Ties and voids are not counted."""

    a_won: int
    b_won: int

    def pay_scale(self, outcome: DuelOutcome) -> tuple[int, int]:
        """(numerator, denominator) by which the next settlement scales the JUDGE_FEE, reserve share and
        JUDGE_PENALTY of a seat whose recount (the final verdict without its own judge's seats) is
        `outcome`: 1 / (2p), p the smoothed share (+1 each side) of past verdicts like it, within
        [1/4, 4]; (1, 1) for an even recount or a void (the contract's `_weight`)."""
        if outcome == DuelOutcome.A_WON:
            return verdict_weight(self.a_won, self.b_won)
        if outcome == DuelOutcome.B_WON:
            return verdict_weight(self.b_won, self.a_won)
        return 1, 1
