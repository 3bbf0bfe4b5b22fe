"""Duel evidence: what the chain records of a duel, what each party serves, and how a judge checks it.

Only hashes are on-chain (docs/duels.md): the request's (`requestHash`, keccak256 of the request's
canonical bytes, `ledger.work.request_bytes`) and A's answer's (`answerAHash`) from `DuelOpened`, B's
answer's (`answerBHash`) from `DuelAnswered`. The pieces themselves travel over the signed peer API
(`/peer/evidence`), each from whoever holds it:

- the request bytes: the origin, A and B (and the chain, once published);
- A's answer: the origin and A;
- B's answer: B.

A piece counts only if it hashes to what the chain recorded (`checked_pieces`); a piece nobody can
produce decides the vote by itself (`evidence_vote`): no request → no evidence; A's answer missing → B;
B's answer missing → A; both missing → no evidence. So no single party can void a duel or tax a judge by
withholding, and a duelist that withholds its own answer loses.

What the chain records of a duel is `ledger.records.DuelState` (from the indexer or the contract), the
one description of a duel's state the judge, the challenger and the origin all read.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_utils.crypto import keccak

from wwwserve.errors import WWWServeError
from wwwserve.ledger.records import DuelState, Vote
from wwwserve.ledger.work import answer_hash

__all__ = [
    "ZERO_HASH",
    "EvidenceError",
    "EvidenceMalformedError",
    "EvidencePieces",
    "checked_pieces",
    "evidence_vote",
    "pieces_held_by",
]

ZERO_HASH = b"\x00" * 32


class EvidenceError(WWWServeError):
    """Duel evidence that does not hold; a judge must not use it."""


class EvidenceMalformedError(EvidenceError, ValueError):
    """The evidence is not well formed (missing fields, wrong types)."""


@dataclass(frozen=True)
class EvidencePieces:
    """What one party serves for a duel (any piece may be missing). `request` is the request's canonical
    bytes (`ledger.work.request_bytes`), the answers are UTF-8 texts."""

    duel_id: int
    request: bytes | None = None
    answer_a: str | None = None
    answer_b: str | None = None
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)  # piece -> who served it

    def to_json(self) -> dict[str, Any]:
        """Wire form: the request base64-encoded (its bytes are what is hashed), answers as strings."""
        return {
            "duel_id": self.duel_id,
            "request": None if self.request is None else base64.b64encode(self.request).decode("ascii"),
            "answer_a": self.answer_a,
            "answer_b": self.answer_b,
        }

    @classmethod
    def from_json(cls, data: object) -> EvidencePieces:
        """Parse the wire form; `EvidenceMalformedError` says what is wrong."""
        if not isinstance(data, Mapping):
            raise EvidenceMalformedError("evidence must be a JSON object")
        duel_id = data.get("duel_id")
        if not isinstance(duel_id, int) or isinstance(duel_id, bool) or duel_id < 1:
            raise EvidenceMalformedError(f"duel_id must be a positive integer, got {duel_id!r}")
        raw = data.get("request")
        request = None
        if raw is not None:
            if not isinstance(raw, str):
                raise EvidenceMalformedError("request must be a base64 string or null")
            try:
                request = base64.b64decode(raw, validate=True)
            except ValueError:
                raise EvidenceMalformedError("request is not valid base64") from None
        answers = {}
        for key in ("answer_a", "answer_b"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise EvidenceMalformedError(f"{key} must be a string or null")
            answers[key] = value
        return cls(duel_id, request, answers["answer_a"], answers["answer_b"])

    def merged(self, other: EvidencePieces) -> EvidencePieces:
        """These pieces, with the ones missing here taken from `other` (same duel)."""
        sources = dict(other.sources)
        sources.update(self.sources)
        return EvidencePieces(
            self.duel_id,
            self.request if self.request is not None else other.request,
            self.answer_a if self.answer_a is not None else other.answer_a,
            self.answer_b if self.answer_b is not None else other.answer_b,
            sources,
        )

    @property
    def complete(self) -> bool:
        """Every piece is here."""
        return self.request is not None and self.answer_a is not None and self.answer_b is not None


def pieces_held_by(state: DuelState, party: str) -> tuple[str, ...]:
    """Which pieces `party` may serve for the duel: ("request", "answer_a") for the origin and A,
    ("request", "answer_b") for B, () for anyone else."""
    who = party.lower()
    if who in (state.origin.lower(), state.a.lower()):
        return ("request", "answer_a")
    if state.b is not None and who == state.b.lower():
        return ("request", "answer_b")
    return ()


def checked_pieces(state: DuelState, pieces: EvidencePieces, source: str = "") -> tuple[EvidencePieces, list[str]]:
    """The pieces of `pieces` that hash to what the chain recorded for `state`, and one line per piece
    refused. `source` names who served them (kept in `sources`). A hash `state` does not carry (a state
    read from the contract's storage alone) matches no piece."""
    problems = []
    if pieces.duel_id != state.duel_id:
        return EvidencePieces(state.duel_id), [f"evidence is for duel {pieces.duel_id}, not {state.duel_id}"]
    request, answer_a, answer_b = pieces.request, pieces.answer_a, pieces.answer_b
    if request is not None and bytes(keccak(request)) != state.request_hash:
        problems.append("the request does not hash to the duel's requestHash")
        request = None
    if answer_a is not None and answer_hash(answer_a) != state.answer_a_hash:
        problems.append("answer A does not hash to the duel's answerAHash")
        answer_a = None
    if answer_b is not None and (state.answer_b_hash is None or answer_hash(answer_b) != state.answer_b_hash):
        problems.append("answer B does not hash to the duel's answerBHash")
        answer_b = None
    sources = {name: source for name, value in (("request", request), ("answer_a", answer_a),
                                                ("answer_b", answer_b)) if value is not None}
    return EvidencePieces(state.duel_id, request, answer_a, answer_b, sources), problems


def evidence_vote(pieces: EvidencePieces) -> tuple[Vote, str] | None:
    """The vote missing evidence decides by itself, and why; None when every piece is here and the
    judge model must compare the answers (docs/duels.md, "Evidence")."""
    if pieces.request is None:
        return Vote.NO_EVIDENCE, "nobody served the request"
    if pieces.answer_a is None and pieces.answer_b is None:
        return Vote.NO_EVIDENCE, "nobody served either answer"
    if pieces.answer_a is None:
        return Vote.B, "nobody served A's answer"
    if pieces.answer_b is None:
        return Vote.A, "B did not serve its answer"
    return None
