"""A judge's vote journal and what it must do next for a seat: never a lost vote, never a double vote.

Commit-then-reveal spans minutes and two transactions; a node can crash or restart in between. The
journal (SQLite) records a judge's decision **before** its commitment is sent: the vote, the random
salt and the commitment, per duel **and round** (a duel that is appealed has a second panel, on which
the same judge may sit again: one commitment and one reveal per judge per round, however many seats it
holds). After a restart the same (vote, salt) is used, so the reveal always matches what was
committed, and a judge never decides twice for one round (a second, different decision would need a
second commitment, which the contract refuses anyway).

`next_step` is the whole schedule as a pure function of the chain's state (`DuelView`, from the indexer
or the contract), the journal entry and the current block: decide, commit, reveal, settle, wait or done.
What the chain says wins over the journal: a commitment already on-chain is not re-sent, a vote already
revealed is not revealed again (the journal is then only brought up to date).

The table is `judge_votes_v2` (keyed by contract, duel and round); a file of the one-round protocol
keeps its `judge_votes` table untouched beside it (those duels ended with that contract).
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from wwwserve.errors import WWWServeError
from wwwserve.ledger.db import DurableRecords
from wwwserve.ledger.records import Vote

__all__ = ["DuelView", "JournalEntry", "JudgeStep", "VoteJournal", "VoteJournalError", "next_step"]

# What a judge may reveal: every vote but NONE (which stands for "not revealed").
VALID_VOTES = frozenset(Vote) - {Vote.NONE}


class VoteJournalError(WWWServeError):
    """A journal operation that would lose or change a vote (e.g. deciding twice differently)."""


class JudgeStep(enum.Enum):
    """What a judge does next for one seat (duel and round)."""

    DECIDE = "decide"  # gather the evidence, ask the model, record the vote (then commit)
    COMMIT = "commit"  # send the recorded commitment
    REVEAL = "reveal"  # send the recorded vote and salt
    SETTLE = "settle"  # nothing can change the duel any more and nobody settled it yet
    WAIT = "wait"  # nothing to do before a later block
    DONE = "done"  # settled, cancelled, or too late for this judge


@dataclass(frozen=True)
class DuelView:
    """One judge's seat in one round of a duel: what `next_step` needs of the duel's state
    (`ledger.records.DuelState`, projected by `judge.chain.duel_view`)."""

    duel_id: int
    round: int
    open: bool  # the duel is not settled or cancelled
    commit_end: int  # this round's windows (blocks, inclusive ends)
    reveal_end: int
    committed: bool  # this judge's commitment for this round is on-chain (or its vote already revealed)
    revealed_vote: Vote | None  # this judge's revealed vote in this round, None if not revealed
    settle_after: int | None = None  # settleDuel succeeds after this block (None: not known yet)


@dataclass(frozen=True)
class JournalEntry:
    """One recorded decision (one judge, one duel, one round)."""

    duel_id: int
    round: int
    vote: Vote
    salt: bytes
    commitment: bytes
    state: str  # decided | committed | revealed
    commit_tx: str | None = None
    reveal_tx: str | None = None


def next_step(view: DuelView, entry: JournalEntry | None, block: int, *, settle_grace_blocks: int = 0) -> JudgeStep:
    """The judge's next step for this seat at `block` (see the module docstring).

    `settle_grace_blocks`: how long after settlement becomes possible a judge waits for someone else (by
    default the origin) to settle before settling itself.
    """
    if not view.open:
        return JudgeStep.DONE

    def settle_or_wait() -> JudgeStep:
        if view.settle_after is not None and block > view.settle_after + settle_grace_blocks:
            return JudgeStep.SETTLE
        return JudgeStep.WAIT

    if view.revealed_vote is not None or (entry is not None and entry.state == "revealed"):
        return settle_or_wait()
    if not view.committed:
        if block > view.commit_end:
            return JudgeStep.DONE  # too late: the contract counts this seat as silent
        return JudgeStep.DECIDE if entry is None else JudgeStep.COMMIT
    # Committed on-chain, not revealed yet.
    if entry is None:
        return JudgeStep.DONE  # committed by another installation of this wallet: its journal holds the salt
    if block <= view.commit_end:
        return JudgeStep.WAIT
    if block <= view.reveal_end:
        return JudgeStep.REVEAL
    return settle_or_wait()


class _Base(DeclarativeBase):
    pass


class _VoteRow(_Base):
    __tablename__ = "judge_votes_v2"

    contract: Mapped[str] = mapped_column(String(42), primary_key=True)
    duel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    round: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    vote: Mapped[int] = mapped_column(Integer)
    salt: Mapped[str] = mapped_column(String(66))
    commitment: Mapped[str] = mapped_column(String(66))
    state: Mapped[str] = mapped_column(String(16))
    commit_tx: Mapped[str | None] = mapped_column(String(66))
    reveal_tx: Mapped[str | None] = mapped_column(String(66))
    updated_ms: Mapped[int] = mapped_column(BigInteger)


def _entry(row: _VoteRow) -> JournalEntry:
    return JournalEntry(row.duel_id, row.round, Vote(row.vote), bytes.fromhex(row.salt[2:]),
                        bytes.fromhex(row.commitment[2:]), row.state, row.commit_tx, row.reveal_tx)


def _check_round(round_: int) -> None:
    if round_ not in (1, 2):
        raise VoteJournalError(f"a duel has rounds 1 and 2, not {round_!r}")


class VoteJournal(DurableRecords):
    """Durable record of one judge's decisions for one contract, per duel and round."""

    metadata = _Base.metadata

    def get(self, duel_id: int, round_: int) -> JournalEntry | None:
        """The recorded decision for a duel's round, or None."""
        with Session(self.engine) as session:
            row = session.get(_VoteRow, (self.contract, duel_id, round_))
            return None if row is None else _entry(row)

    def pending(self) -> list[JournalEntry]:
        """Decisions not revealed yet (what a restarted judge must carry on with), oldest duel first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(_VoteRow).where(_VoteRow.contract == self.contract,
                                                          _VoteRow.state != "revealed")
                                   .order_by(_VoteRow.duel_id, _VoteRow.round))
            return [_entry(r) for r in rows]

    def decide(self, duel_id: int, round_: int, vote: Vote | int, commitment_of: Any,
               salt: bytes | None = None) -> JournalEntry:
        """Record the decision for round `round_` of `duel_id` (durably) and return it; the commitment is
        `commitment_of(vote, salt)`. Deciding again returns the first decision unchanged: a judge never
        changes its vote in a round, whatever a second look at the evidence would say."""
        _check_round(round_)
        if vote not in VALID_VOTES:
            raise VoteJournalError(f"vote must be one of {sorted(int(v) for v in VALID_VOTES)}, got {vote!r}")
        with self._lock, Session(self.engine) as session, session.begin():
            row = session.get(_VoteRow, (self.contract, duel_id, round_))
            if row is not None:
                return _entry(row)
            salt = os.urandom(32) if salt is None else salt
            commitment = bytes(commitment_of(vote, salt))
            if len(salt) != 32 or len(commitment) != 32:
                raise VoteJournalError("salt and commitment must be 32 bytes")
            row = _VoteRow(contract=self.contract, duel_id=duel_id, round=round_, vote=int(vote),
                           salt="0x" + salt.hex(), commitment="0x" + commitment.hex(), state="decided",
                           updated_ms=int(time.time() * 1000))
            session.add(row)
            session.flush()
            return _entry(row)

    def mark(self, duel_id: int, round_: int, state: str, tx_hash: str | None = None) -> JournalEntry:
        """Advance a decision to `committed` or `revealed` (never backwards); returns the entry."""
        order = {"decided": 0, "committed": 1, "revealed": 2}
        if state not in ("committed", "revealed"):
            raise VoteJournalError(f"a decision can only be marked committed or revealed, not {state!r}")
        with self._lock, Session(self.engine) as session, session.begin():
            row = session.get(_VoteRow, (self.contract, duel_id, round_))
            if row is None:
                raise VoteJournalError(f"no decision recorded for round {round_} of duel {duel_id}")
            if order[state] > order[row.state]:
                row.state = state
                if state == "committed":
                    row.commit_tx = tx_hash or row.commit_tx
                else:
                    row.reveal_tx = tx_hash or row.reveal_tx
                row.updated_ms = int(time.time() * 1000)
            return _entry(row)
