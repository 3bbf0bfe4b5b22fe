"""A judge's vote journal and schedule (judge/journal.py): a decision survives a restart unchanged, and
the next step follows the chain's windows (commit, reveal, settle) without sending anything twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from judge.journal import DuelView, JournalEntry, JudgeStep, VoteJournal, VoteJournalError, next_step
from ledger.client import vote_commitment

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
JUDGE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def commitment_for(duel_id: int):  # type: ignore[no-untyped-def]
    return lambda vote, salt: vote_commitment(31337, CONTRACT, duel_id, JUDGE, vote, salt)


def test_a_decision_survives_a_restart_and_is_never_changed(tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    journal = VoteJournal(path, contract_address=CONTRACT)
    first = journal.decide(5, 2, commitment_for(5))
    assert first.state == "decided" and len(first.salt) == 32
    assert first.commitment == vote_commitment(31337, CONTRACT, 5, JUDGE, 2, first.salt)
    # A second look that would vote otherwise gets the first decision back.
    assert journal.decide(5, 1, commitment_for(5)) == first
    journal.close()

    reopened = VoteJournal(path, contract_address=CONTRACT)  # the node restarted
    assert reopened.get(5) == first
    assert reopened.pending() == [first]
    committed = reopened.mark(5, "committed", "0xabc")
    assert committed.state == "committed" and committed.commit_tx == "0xabc"
    # Never backwards, and a repeated mark keeps the first tx hash.
    assert reopened.mark(5, "committed").commit_tx == "0xabc"
    revealed = reopened.mark(5, "revealed", "0xdef")
    assert revealed.state == "revealed" and reopened.pending() == []
    assert reopened.mark(5, "committed").state == "revealed"
    reopened.close()


def test_journals_of_two_contracts_do_not_mix(tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    one = VoteJournal(path, contract_address=CONTRACT)
    other = VoteJournal(path, contract_address="0x" + "11" * 20)
    one.decide(1, 1, commitment_for(1))
    assert other.get(1) is None and other.pending() == []


def test_bad_votes_and_unknown_duels_are_refused(tmp_path: Path) -> None:
    journal = VoteJournal(tmp_path / "j.sqlite", contract_address=CONTRACT)
    with pytest.raises(VoteJournalError):
        journal.decide(1, 0, commitment_for(1))  # NONE is not a vote
    with pytest.raises(VoteJournalError):
        journal.decide(1, 5, commitment_for(1))
    with pytest.raises(VoteJournalError):
        journal.mark(9, "committed")
    journal.decide(1, 3, commitment_for(1))
    with pytest.raises(VoteJournalError):
        journal.mark(1, "decided")
    with pytest.raises(VoteJournalError):
        journal.decide(2, 1, lambda vote, salt: b"short")


def view(status: str = "voting", committed: bool = False, revealed: int | None = None,
         all_revealed: bool = False) -> DuelView:
    return DuelView(duel_id=1, status=status, commit_end=100, reveal_end=110, committed=committed,
                    revealed_vote=revealed, all_revealed=all_revealed)


ENTRY = JournalEntry(1, 2, b"\x01" * 32, b"\x02" * 32, "decided")


@pytest.mark.parametrize(
    ("duel", "entry", "block", "step"),
    [
        (view("awaiting_judges"), None, 50, JudgeStep.WAIT),
        (view("settled"), ENTRY, 50, JudgeStep.DONE),
        (view("cancelled"), None, 50, JudgeStep.DONE),
        # Commit window (blocks <= 100): decide, then commit what was decided.
        (view(), None, 90, JudgeStep.DECIDE),
        (view(), ENTRY, 100, JudgeStep.COMMIT),
        (view(), None, 101, JudgeStep.DONE),  # too late to commit
        (view(), ENTRY, 101, JudgeStep.DONE),
        # Committed (maybe before a crash that left the journal at "decided"): wait, then reveal.
        (view(committed=True), ENTRY, 100, JudgeStep.WAIT),
        (view(committed=True), ENTRY, 101, JudgeStep.REVEAL),
        (view(committed=True), ENTRY, 110, JudgeStep.REVEAL),
        (view(committed=True), ENTRY, 111, JudgeStep.SETTLE),  # missed the reveal: settle at least
        (view(committed=True), None, 105, JudgeStep.DONE),  # committed elsewhere: no salt here
        # The journal says committed but the chain does not (tx dropped): commit again in the window.
        (view(), JournalEntry(1, 2, b"\x01" * 32, b"\x02" * 32, "committed"), 99, JudgeStep.COMMIT),
        # Revealed: settle once the window is over, or at once when every judge revealed.
        (view(committed=True, revealed=2), ENTRY, 105, JudgeStep.WAIT),
        (view(committed=True, revealed=2, all_revealed=True), ENTRY, 105, JudgeStep.SETTLE),
        (view(committed=True, revealed=2), ENTRY, 111, JudgeStep.SETTLE),
    ],
)
def test_next_step_follows_the_windows(duel: DuelView, entry: JournalEntry | None, block: int,
                                       step: JudgeStep) -> None:
    assert next_step(duel, entry, block) is step


def test_settling_waits_a_grace_period_for_the_origin() -> None:
    done = view(committed=True, revealed=1)
    assert next_step(done, ENTRY, 111, settle_grace_blocks=5) is JudgeStep.WAIT
    assert next_step(done, ENTRY, 116, settle_grace_blocks=5) is JudgeStep.SETTLE
