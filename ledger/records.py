"""What the contract client hands back: the contract's enums and frozen dataclasses of plain values.

The enums are the one encoding of the contract's constants (VOTE_*, DUEL_*, OUTCOME_*, ...) on the
Python side: the indexer, the judge and the reference model use them too. `DuelState` is the one
description of a duel's on-chain state, shared by the reader, the indexer and the judge.

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
    """A judge's vote (contract VOTE_*; NONE = not revealed). A judge model's textual verdict becomes one
    through `judge.prompt.Choice.vote`."""

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
    """One judging round of a duel: its seats in seat order (a judge drawn twice holds two seats; empty
    until the round's panel is drawn), each seat's revealed vote (Vote.NONE = not revealed), the round's
    windows (blocks, inclusive ends; -1 = not known, read as over) and the judges whose commitment is
    on-chain (lower-case addresses; only the indexer knows them, the contract's views do not say)."""

    round: int
    seats: tuple[str, ...]
    votes: tuple[Vote, ...]
    commit_end: int = -1
    reveal_end: int = -1
    committed: frozenset[str] = frozenset()

    def seats_of(self, judge: str) -> int:
        """How many seats `judge` holds in this round."""
        me = judge.lower()
        return sum(1 for seat in self.seats if seat.lower() == me)

    def vote_of(self, judge: str) -> Vote | None:
        """The vote `judge` revealed in this round (None if it did not, or holds no seat)."""
        me = judge.lower()
        for seat, vote in zip(self.seats, self.votes, strict=False):
            if seat.lower() == me and vote:
                return vote
        return None

    @property
    def all_revealed(self) -> bool:
        """Every seat revealed."""
        return bool(self.seats) and all(self.votes) and len(self.votes) == len(self.seats)

    def tally(self) -> tuple[int, int]:
        """Seats for A, seats for B."""
        return sum(1 for v in self.votes if v == Vote.A), sum(1 for v in self.votes if v == Vote.B)


_OPEN = (DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST, DuelStatus.JUDGING)


@dataclass(frozen=True)
class DuelState:
    """A duel's on-chain state: the one description of a duel that the contract reader
    (`WWWServeClient.duel`, `duel_with_hashes`), the indexer (`IndexedDuel.state`) and the node's duel
    duties (origin, duelists, challenger, judges) share. Addresses checksummed, hashes 32 bytes.

    Its relatives, which are other things: `ledger.indexer.IndexedDuel` is a duel's indexed history (its
    state plus escrow, settlement, appeal and the block of every step), `ledger.model.DuelStorage` the
    reference model's copy of the contract's storage (leaves, not addresses), `judge.journal.DuelView`
    one judge's seat in one round.

    The contract stores the parties, status, outcome, bond, seed block, deadline and every round's seats
    and votes; what the duel is about lives in its events: the request and answer hashes, the request id
    and model hash, and a request published on-chain. `WWWServeClient.duel` reads storage only and
    leaves those None; `duel_with_hashes` and the indexer fill them in.

    `deadline` means what the status says: the answer deadline (awaiting answer), the publish deadline
    (awaiting request) or the current round's commit end (judging); the `*_block` properties spell it
    out and are None when they do not apply. `rounds` holds every round reached (round 1, and round 2
    after an appeal, whose seats are empty until drawn); `judges`/`votes` are the current round's.
    `appeal_window_blocks` is the deployment's (what `settle_after` and `appeal_end_block` add).
    """

    duel_id: int
    origin: str
    a: str
    b: str | None  # None until the challenger is drawn
    status: DuelStatus
    seed_block: int  # the block whose hash seeds the current step's draws
    deadline: int
    outcome: DuelOutcome = DuelOutcome.NONE
    bond_wei: int = 0  # what each duelist has at risk (equal for both)
    rounds: tuple[DuelRound, ...] = ()
    appeal_window_blocks: int = 0
    request_hash: bytes | None = None
    answer_a_hash: bytes | None = None
    answer_b_hash: bytes | None = None  # also None until B answered
    request_id: bytes | None = None
    model_hash: bytes | None = None
    published_request: bytes | None = None

    @property
    def round(self) -> int:
        """The current round: 0 before B answered, then 1, or 2 after an appeal."""
        return len(self.rounds)

    def round_state(self, number: int) -> DuelRound | None:
        """Round `number` (1 or 2), if it started."""
        return self.rounds[number - 1] if 1 <= number <= len(self.rounds) else None

    @property
    def judges(self) -> tuple[str, ...]:
        """The current round's seats (empty before the first panel)."""
        return self.rounds[-1].seats if self.rounds else ()

    @property
    def votes(self) -> tuple[Vote, ...]:
        """The current round's revealed votes, per seat."""
        return self.rounds[-1].votes if self.rounds else ()

    def judges_of(self, round: int) -> tuple[str, ...]:
        """The seats of `round` (empty when not drawn or not reached)."""
        found = self.round_state(round)
        return () if found is None else found.seats

    def votes_of(self, round: int) -> tuple[Vote, ...]:
        """The revealed votes of `round`, per seat (empty when not drawn or not reached)."""
        found = self.round_state(round)
        return () if found is None else found.votes

    @property
    def is_open(self) -> bool:
        """Not settled nor cancelled yet."""
        return self.status in _OPEN

    @property
    def answer_deadline_block(self) -> int | None:
        """Awaiting answer: the last block B may answer in."""
        return self.deadline if self.status is DuelStatus.AWAITING_ANSWER else None

    @property
    def publish_deadline_block(self) -> int | None:
        """Awaiting request: the last block to publish the request in."""
        return self.deadline if self.status is DuelStatus.AWAITING_REQUEST else None

    @property
    def commit_end_block(self) -> int | None:
        """Judging: the last block of the current round's commits."""
        return self.deadline if self.status is DuelStatus.JUDGING else None

    @property
    def reveal_end_block(self) -> int | None:
        """Judging: the last block of the current round's reveals."""
        return self.rounds[-1].reveal_end if self.status is DuelStatus.JUDGING and self.rounds else None

    @property
    def appeal_end_block(self) -> int | None:
        """Judging round 1: the last block the loser may appeal in."""
        if self.status is not DuelStatus.JUDGING or self.round != 1:
            return None
        return self.rounds[0].reveal_end + self.appeal_window_blocks

    def settle_after(self) -> int | None:
        """The last block before `settleDuel` succeeds (it may be sent from the next one on); None while
        the duel is not judging (an unanswered or unpublished duel settles after its `deadline`)."""
        if self.status in (DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST):
            return self.deadline
        if self.status is not DuelStatus.JUDGING or not self.rounds:
            return None
        last = self.rounds[-1]
        if len(self.rounds) == 1:
            return last.reveal_end + self.appeal_window_blocks
        if not last.seats:
            return last.commit_end  # nobody drew the appeal panel: round 1 stands after its commit window
        return -1 if last.all_revealed else last.reveal_end


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
