"""Duel evidence (judge/evidence.py, judge/store.py): pieces survive the wire byte for byte, a piece that
does not hash to what the chain recorded is dropped, missing pieces decide the vote as docs/duels.md
says, who holds which piece, when a duel can be settled, and each node's durable store of what it serves."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from wwwserve.judge.evidence import (
    EvidenceMalformedError,
    EvidencePieces,
    checked_pieces,
    evidence_vote,
    pieces_held_by,
)
from wwwserve.judge.store import EvidenceStore, StoredEvidence
from wwwserve.ledger.records import DuelRound, DuelState, DuelStatus, Vote
from wwwserve.ledger.work import WorkAttestation, answer_hash, request_bytes, request_hash, sign_work

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
A = to_checksum_address("0x" + "aa" * 20)
B = to_checksum_address("0x" + "bb" * 20)
ORIGIN = to_checksum_address("0x" + "01" * 20)
JUDGE = to_checksum_address("0x" + "0c" * 20)
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Capitale de la France ? ☃"}], "max_tokens": 8}
DATA = request_bytes("chat", REQUEST)


def duel(**changes: object) -> DuelState:
    base = DuelState(duel_id=7, origin=ORIGIN, a=A, b=B, status=DuelStatus.JUDGING, seed_block=64, deadline=100,
                     request_hash=request_hash("chat", REQUEST), answer_a_hash=answer_hash("Lyon."),
                     answer_b_hash=answer_hash("Paris."),
                     rounds=(DuelRound(1, (JUDGE, JUDGE, A), (0, 0, 0), 100, 110),), appeal_window_blocks=10)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_pieces_survive_the_wire_byte_for_byte() -> None:
    pieces = EvidencePieces(7, DATA, "Lyon. ☃", None)
    again = EvidencePieces.from_json(pieces.to_json())
    assert again == pieces and again.request == DATA
    assert EvidencePieces.from_json({"duel_id": 7}) == EvidencePieces(7)


@pytest.mark.parametrize("data", [
    [], {"duel_id": 0}, {"duel_id": True}, {"duel_id": 7, "request": 5}, {"duel_id": 7, "request": "not base64!"},
    {"duel_id": 7, "answer_a": 3}, {"duel_id": 7, "answer_b": ["x"]},
])
def test_malformed_pieces_are_a_typed_error(data: object) -> None:
    with pytest.raises(EvidenceMalformedError):
        EvidencePieces.from_json(data)


def test_only_pieces_that_hash_to_the_chains_record_are_kept() -> None:
    state = duel()
    good, problems = checked_pieces(state, EvidencePieces(7, DATA, "Lyon.", "Paris."), "someone")
    assert good == EvidencePieces(7, DATA, "Lyon.", "Paris.") and problems == []
    assert good.sources == {"request": "someone", "answer_a": "someone", "answer_b": "someone"}
    # Another max_tokens is another request; answers swapped between slots match neither hash.
    other = request_bytes("chat", {**REQUEST, "max_tokens": 1})
    bad, problems = checked_pieces(state, EvidencePieces(7, other, "Paris.", "Lyon."))
    assert bad == EvidencePieces(7) and len(problems) == 3
    # B's answer before B answered on-chain, or pieces of another duel, count for nothing.
    assert checked_pieces(duel(answer_b_hash=None), EvidencePieces(7, None, None, "Paris."))[0].answer_b is None
    assert checked_pieces(state, EvidencePieces(8, DATA, "Lyon.", "Paris."))[0] == EvidencePieces(7)


def test_merging_keeps_what_is_known_and_fills_the_gaps() -> None:
    first = EvidencePieces(7, DATA, None, None, {"request": "origin"})
    merged = first.merged(EvidencePieces(7, b"other", "Lyon.", None, {"request": "a", "answer_a": "a"}))
    assert merged == EvidencePieces(7, DATA, "Lyon.", None)
    assert merged.sources == {"request": "origin", "answer_a": "a"}
    assert not merged.complete and merged.merged(EvidencePieces(7, None, None, "Paris.")).complete


@pytest.mark.parametrize(("pieces", "vote"), [
    (EvidencePieces(7, None, "Lyon.", "Paris."), Vote.NO_EVIDENCE),  # no request: nothing to judge
    (EvidencePieces(7, DATA, None, "Paris."), Vote.B),  # A's answer from nobody: B
    (EvidencePieces(7, DATA, "Lyon.", None), Vote.A),  # B's answer from nobody: A
    (EvidencePieces(7, DATA, None, None), Vote.NO_EVIDENCE),  # neither
    (EvidencePieces(7, DATA, "Lyon.", "Paris."), None),  # everything: the model decides
])
def test_missing_pieces_decide_the_vote(pieces: EvidencePieces, vote: int | None) -> None:
    ruled = evidence_vote(pieces)
    assert (ruled[0] if ruled else None) == vote


def test_who_holds_what_and_when_a_duel_settles() -> None:
    state = duel()
    assert pieces_held_by(state, ORIGIN) == pieces_held_by(state, A.lower()) == ("request", "answer_a")
    assert pieces_held_by(state, B) == ("request", "answer_b") and pieces_held_by(state, JUDGE) == ()
    assert pieces_held_by(duel(b=None), B) == ()
    first = state.rounds[0]
    assert first.seats_of(JUDGE) == 2 and first.seats_of(B) == 0 and first.vote_of(JUDGE) is None
    # Round 1: after its reveal window and the appeal window.
    assert state.settle_after() == 120
    assert duel(status=DuelStatus.AWAITING_ANSWER).settle_after() == 100  # unanswered: after the answer window
    assert duel(status=DuelStatus.AWAITING_REQUEST).settle_after() == 100  # unpublished: after the publish window
    assert duel(status=DuelStatus.SETTLED).settle_after() is None
    second = DuelRound(2, (), (), 150, 160)
    assert duel(rounds=(first, second)).settle_after() == 150  # appeal panel never drawn: after its commits
    drawn = DuelRound(2, (JUDGE, A, B, A, B), (1, 2, 0, 0, 0), 150, 160)
    assert duel(rounds=(first, drawn)).settle_after() == 160
    revealed = replace(drawn, votes=(1, 2, 2, 4, 3))
    assert revealed.all_revealed and revealed.tally() == (1, 2)
    assert duel(rounds=(first, revealed)).settle_after() == -1  # every appeal seat revealed: at once


def work(executor: Account, origin: str = ORIGIN) -> WorkAttestation:  # type: ignore[valid-type]
    return sign_work(executor, 31337, CONTRACT, WorkAttestation(
        origin=origin, executor=executor.address, request_id=b"\x01" * 32, request_hash=request_hash("chat", REQUEST),
        model_hash=b"\x02" * 32, answer_hash=answer_hash("Lyon."), inspect=b"\x03" * 32, issued_at=int(time.time())))


def test_the_store_keeps_each_roles_pieces_durably(tmp_path: Path) -> None:
    path = tmp_path / "evidence.db"
    store = EvidenceStore(path, contract_address=CONTRACT)
    executor = Account.create()
    attested = work(executor)
    store.put(StoredEvidence(1, "origin", DATA, "Lyon.", attested, b"\x09" * 32))
    store.put(StoredEvidence(1, "origin", b"other", "Rome."))  # a second put keeps the first
    store.put_many([StoredEvidence(2, "a", DATA, "first"), StoredEvidence(3, "b", DATA, "Paris.")])
    store.put(StoredEvidence(2, "a", DATA, "second"), replace=True)  # asked twice: the latest answer
    store.close()
    again = EvidenceStore(path, contract_address=CONTRACT)
    origin = again.get(1)
    assert origin is not None and origin.work == attested and origin.salt == b"\x09" * 32
    assert origin.pieces() == EvidencePieces(1, DATA, "Lyon.", None)
    assert again.get(2).pieces() == EvidencePieces(2, DATA, "second", None)  # type: ignore[union-attr]
    assert again.get(3).pieces() == EvidencePieces(3, DATA, None, "Paris.")  # type: ignore[union-attr]
    assert again.get(4) is None and again.duel_ids() == [1, 2, 3]
    assert EvidenceStore(path, contract_address="0x" + "22" * 20).duel_ids() == []  # per contract


def test_the_store_prunes_what_no_open_duel_needs(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path / "evidence.db", contract_address=CONTRACT)
    now_ms = int(time.time() * 1000)
    store.put_many([StoredEvidence(1, "a", DATA, "x", stored_ms=now_ms - 10_000),
                    StoredEvidence(2, "a", DATA, "y", stored_ms=now_ms - 10_000),
                    StoredEvidence(3, "a", DATA, "z", stored_ms=now_ms)])
    assert store.prune(now_ms - 5_000, keep={2}) == 1  # old and not open: gone; open or recent: kept
    assert store.duel_ids() == [2, 3]


def test_a_file_of_the_earlier_protocol_keeps_its_table(tmp_path: Path) -> None:
    path = tmp_path / "evidence.db"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE duel_evidence (contract VARCHAR(42), duel_id BIGINT, evidence TEXT, "
                    "stored_ms BIGINT, PRIMARY KEY (contract, duel_id))")
        old.execute("INSERT INTO duel_evidence VALUES (?, 1, '{}', 0)", (CONTRACT.lower(),))
    store = EvidenceStore(path, contract_address=CONTRACT)
    assert store.get(1) is None
    store.put(StoredEvidence(1, "b", DATA, "Paris."))
    assert store.get(1).answer == "Paris."  # type: ignore[union-attr]
