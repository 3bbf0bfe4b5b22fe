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

`DuelState` and `RoundState` are the node's view of one duel, as the chain says (from the indexer or
the contract): the judge, the challenger and the origin all read it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_utils.crypto import keccak

from wwwserve.errors import WWWServeError
from wwwserve.ledger.work import answer_hash

__all__ = [
    "ACTIVE_STATUSES",
    "ZERO_HASH",
    "DuelState",
    "EvidenceError",
    "EvidenceMalformedError",
    "EvidencePieces",
    "RoundState",
    "checked_pieces",
    "evidence_vote",
]

ZERO_HASH = b"\x00" * 32

# Vote values of the contract (`ledger.client.Vote`).
VOTE_A, VOTE_B, VOTE_ABSTAIN, VOTE_NO_EVIDENCE = 1, 2, 3, 4

# Duel statuses, by the indexer's names.
AWAITING_ANSWER = "awaiting_answer"
AWAITING_REQUEST = "awaiting_request"
JUDGING = "judging"
SETTLED = "settled"
CANCELLED = "cancelled"
ACTIVE_STATUSES = (AWAITING_ANSWER, AWAITING_REQUEST, JUDGING)


class EvidenceError(WWWServeError):
    """Duel evidence that does not hold; a judge must not use it."""


class EvidenceMalformedError(EvidenceError, ValueError):
    """The evidence is not well formed (missing fields, wrong types)."""


@dataclass(frozen=True)
class RoundState:
    """One judging round: its seats (a judge drawn twice appears twice), their revealed votes (0 = not
    revealed), its windows (blocks, inclusive ends) and the judges whose commitment is on-chain."""

    round: int
    seats: tuple[str, ...]
    votes: tuple[int, ...]
    commit_end: int
    reveal_end: int
    committed: frozenset[str] = frozenset()  # lower-case addresses

    def seats_of(self, judge: str) -> int:
        """How many seats `judge` holds in this round."""
        me = judge.lower()
        return sum(1 for seat in self.seats if seat.lower() == me)

    def vote_of(self, judge: str) -> int | None:
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
        return sum(1 for v in self.votes if v == VOTE_A), sum(1 for v in self.votes if v == VOTE_B)


@dataclass(frozen=True)
class DuelState:
    """A duel as the chain has it (see the module docstring). Addresses checksummed, hashes 32 bytes.

    `deadline` is the answer deadline while awaiting an answer, the publish deadline while awaiting the
    request; `rounds` holds the judging rounds started so far (round 2's seats are empty until drawn)."""

    duel_id: int
    origin: str
    a: str
    b: str | None
    status: str
    seed_block: int
    deadline: int
    request_hash: bytes
    answer_a_hash: bytes
    answer_b_hash: bytes | None = None
    request_id: bytes = ZERO_HASH
    model_hash: bytes = ZERO_HASH
    rounds: tuple[RoundState, ...] = ()
    published_request: bytes | None = None
    appeal_window_blocks: int = 0

    @property
    def round(self) -> int:
        """The current round (0 before the first panel)."""
        return len(self.rounds)

    def round_state(self, number: int) -> RoundState | None:
        """Round `number` (1 or 2), if it started."""
        return self.rounds[number - 1] if 1 <= number <= len(self.rounds) else None

    @property
    def is_open(self) -> bool:
        """Not settled or cancelled."""
        return self.status in ACTIVE_STATUSES

    def settle_after(self) -> int | None:
        """The last block before `settleDuel` succeeds (it may be sent from the next one on); None while
        the duel is not judging (an unanswered or unpublished duel settles after its `deadline`)."""
        if self.status in (AWAITING_ANSWER, AWAITING_REQUEST):
            return self.deadline
        if self.status != JUDGING or not self.rounds:
            return None
        last = self.rounds[-1]
        if len(self.rounds) == 1:
            return last.reveal_end + self.appeal_window_blocks
        if not last.seats:
            return last.commit_end  # nobody drew the appeal panel: round 1 stands after its commit window
        return -1 if last.all_revealed else last.reveal_end

    def holds(self, party: str) -> tuple[str, ...]:
        """Which pieces `party` may serve: ("request", "answer_a") for the origin and A, ("request",
        "answer_b") for B, () for anyone else."""
        who = party.lower()
        if who in (self.origin.lower(), self.a.lower()):
            return ("request", "answer_a")
        if self.b is not None and who == self.b.lower():
            return ("request", "answer_b")
        return ()


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


def checked_pieces(state: DuelState, pieces: EvidencePieces, source: str = "") -> tuple[EvidencePieces, list[str]]:
    """The pieces of `pieces` that hash to what the chain recorded for `state`, and one line per piece
    refused. `source` names who served them (kept in `sources`)."""
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


def evidence_vote(pieces: EvidencePieces) -> tuple[int, str] | None:
    """The vote missing evidence decides by itself, and why; None when every piece is here and the
    judge model must compare the answers (docs/duels.md, "Evidence")."""
    if pieces.request is None:
        return VOTE_NO_EVIDENCE, "nobody served the request"
    if pieces.answer_a is None and pieces.answer_b is None:
        return VOTE_NO_EVIDENCE, "nobody served either answer"
    if pieces.answer_a is None:
        return VOTE_B, "nobody served A's answer"
    if pieces.answer_b is None:
        return VOTE_A, "B did not serve its answer"
    return None
