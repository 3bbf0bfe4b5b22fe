"""A judge's vote journal and schedule (judge/journal.py): a decision per duel and round survives a
restart unchanged, a second round is a decision of its own, the next step follows the chain's windows
(commit, reveal, settle) without sending anything twice, and a file of the one-round protocol is left
alone beside the new table."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from wwwserve.judge.journal import DuelView, JournalEntry, JudgeStep, VoteJournal, VoteJournalError, next_step
from wwwserve.ledger.client import vote_commitment

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
JUDGE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def commitment_for(duel_id: int, round_: int = 1):  # type: ignore[no-untyped-def]
    return lambda vote, salt: vote_commitment(31337, CONTRACT, duel_id, round_, JUDGE, vote, salt)


def test_a_decision_survives_a_restart_and_is_never_changed(tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    journal = VoteJournal(path, contract_address=CONTRACT)
    first = journal.decide(5, 1, 2, commitment_for(5))
    assert first.state == "decided" and len(first.salt) == 32 and first.round == 1
    assert first.commitment == vote_commitment(31337, CONTRACT, 5, 1, JUDGE, 2, first.salt)
    # A second look that would vote otherwise gets the first decision back.
    assert journal.decide(5, 1, 1, commitment_for(5)) == first
    journal.close()

    reopened = VoteJournal(path, contract_address=CONTRACT)  # the node restarted
    assert reopened.get(5, 1) == first
    assert reopened.pending() == [first]
    committed = reopened.mark(5, 1, "committed", "0xabc")
    assert committed.state == "committed" and committed.commit_tx == "0xabc"
    # Never backwards, and a repeated mark keeps the first tx hash.
    assert reopened.mark(5, 1, "committed").commit_tx == "0xabc"
    revealed = reopened.mark(5, 1, "revealed", "0xdef")
    assert revealed.state == "revealed" and reopened.pending() == []
    assert reopened.mark(5, 1, "committed").state == "revealed"
    reopened.close()


def test_each_round_of_a_duel_is_a_decision_of_its_own(tmp_path: Path) -> None:
    journal = VoteJournal(tmp_path / "judge.sqlite", contract_address=CONTRACT)
    first = journal.decide(7, 1, 1, commitment_for(7, 1))
    journal.mark(7, 1, "revealed", "0x1")
    assert journal.get(7, 2) is None  # the appeal round has not been decided
    second = journal.decide(7, 2, 2, commitment_for(7, 2))  # may differ: a new panel, a new commitment
    assert (second.round, second.vote, second.state) == (2, 2, "decided")
    assert second.salt != first.salt and second.commitment != first.commitment
    assert second.commitment == vote_commitment(31337, CONTRACT, 7, 2, JUDGE, 2, second.salt)
    assert journal.decide(7, 2, 1, commitment_for(7, 2)) == second  # still never changed within a round
    assert journal.pending() == [second] and journal.get(7, 1).state == "revealed"  # type: ignore[union-attr]
    with pytest.raises(VoteJournalError):
        journal.decide(7, 3, 1, commitment_for(7, 3))  # a duel has two rounds at most
    with pytest.raises(VoteJournalError):
        journal.mark(7, 3, "committed")


def test_journals_of_two_contracts_do_not_mix(tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    one = VoteJournal(path, contract_address=CONTRACT)
    other = VoteJournal(path, contract_address="0x" + "11" * 20)
    one.decide(1, 1, 1, commitment_for(1))
    assert other.get(1, 1) is None and other.pending() == []


def test_a_file_of_the_one_round_protocol_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE judge_votes (contract VARCHAR(42), duel_id BIGINT, vote INTEGER, salt VARCHAR(66), "
                "commitment VARCHAR(66), state VARCHAR(16), commit_tx VARCHAR(66), reveal_tx VARCHAR(66), "
                "updated_ms BIGINT, PRIMARY KEY (contract, duel_id))")
    old.execute("INSERT INTO judge_votes VALUES (?, 1, 2, ?, ?, 'committed', NULL, NULL, 0)",
                (CONTRACT.lower(), "0x" + "01" * 32, "0x" + "02" * 32))
    old.commit()
    old.close()
    journal = VoteJournal(path, contract_address=CONTRACT)
    assert journal.get(1, 1) is None and journal.pending() == []  # the old protocol's vote is not this one's
    journal.decide(1, 1, 1, commitment_for(1))
    journal.close()
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM judge_votes").fetchone() == (1,)  # untouched


def test_bad_votes_and_unknown_duels_are_refused(tmp_path: Path) -> None:
    journal = VoteJournal(tmp_path / "j.sqlite", contract_address=CONTRACT)
    with pytest.raises(VoteJournalError):
        journal.decide(1, 1, 0, commitment_for(1))  # NONE is not a vote
    with pytest.raises(VoteJournalError):
        journal.decide(1, 1, 5, commitment_for(1))
    with pytest.raises(VoteJournalError):
        journal.mark(9, 1, "committed")
    journal.decide(1, 1, 3, commitment_for(1))
    with pytest.raises(VoteJournalError):
        journal.mark(1, 1, "decided")
    with pytest.raises(VoteJournalError):
        journal.decide(2, 1, 1, lambda vote, salt: b"short")


def view(is_open: bool = True, committed: bool = False, revealed: int | None = None,
         settle_after: int | None = 120) -> DuelView:
    return DuelView(duel_id=1, round=1, open=is_open, commit_end=100, reveal_end=110, committed=committed,
                    revealed_vote=revealed, settle_after=settle_after)


ENTRY = JournalEntry(1, 1, 2, b"\x01" * 32, b"\x02" * 32, "decided")


@pytest.mark.parametrize(
    ("duel", "entry", "block", "step"),
    [
        (view(is_open=False), ENTRY, 50, JudgeStep.DONE),
        (view(is_open=False), None, 50, JudgeStep.DONE),
        # Commit window (blocks <= 100): decide, then commit what was decided.
        (view(), None, 90, JudgeStep.DECIDE),
        (view(), ENTRY, 100, JudgeStep.COMMIT),
        (view(), None, 101, JudgeStep.DONE),  # too late to commit
        (view(), ENTRY, 101, JudgeStep.DONE),
        # Committed (maybe before a crash that left the journal at "decided"): wait, then reveal.
        (view(committed=True), ENTRY, 100, JudgeStep.WAIT),
        (view(committed=True), ENTRY, 101, JudgeStep.REVEAL),
        (view(committed=True), ENTRY, 110, JudgeStep.REVEAL),
        (view(committed=True), ENTRY, 115, JudgeStep.WAIT),  # missed the reveal: settle when due
        (view(committed=True), ENTRY, 121, JudgeStep.SETTLE),
        (view(committed=True), None, 105, JudgeStep.DONE),  # committed elsewhere: no salt here
        # The journal says committed but the chain does not (tx dropped): commit again in the window.
        (view(), JournalEntry(1, 1, 2, b"\x01" * 32, b"\x02" * 32, "committed"), 99, JudgeStep.COMMIT),
        # Revealed: settle once the duel can be settled (after the appeal window, or at once).
        (view(committed=True, revealed=2), ENTRY, 115, JudgeStep.WAIT),
        (view(committed=True, revealed=2, settle_after=-1), ENTRY, 105, JudgeStep.SETTLE),
        (view(committed=True, revealed=2), ENTRY, 121, JudgeStep.SETTLE),
        (view(committed=True, revealed=2, settle_after=None), ENTRY, 500, JudgeStep.WAIT),
    ],
)
def test_next_step_follows_the_windows(duel: DuelView, entry: JournalEntry | None, block: int,
                                       step: JudgeStep) -> None:
    assert next_step(duel, entry, block) is step


def test_settling_waits_a_grace_period_for_the_origin() -> None:
    done = view(committed=True, revealed=1)
    assert next_step(done, ENTRY, 121, settle_grace_blocks=5) is JudgeStep.WAIT
    assert next_step(done, ENTRY, 126, settle_grace_blocks=5) is JudgeStep.SETTLE
