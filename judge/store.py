"""A node's store of duel evidence: the pieces it serves to a duel's judges and challenger.

Each node keeps what it will have to serve (docs/duels.md, "Evidence"), keyed by contract and duel id
(`ledger.work.duel_id_of(origin, requestId)`, known before any duel exists):

- as **A** (an executor): the request bytes and its answer, for every delegated request it answered
  with an inspection commitment, written when it answers. A serving its own answer is what stops an
  origin from voiding a duel by withholding evidence;
- as **origin**: the request bytes, A's answer, A's work attestation and the inspection salt (what
  `publishRequest` needs if the challenger says it could not get the request), written before the duel
  is opened;
- as **B** (the challenger): the request bytes and its own answer, written before it commits the
  answer's hash on-chain.

SQLite with a durable commit. Rows are kept while their work can still be dueled or their duel is
open, then pruned (`prune`). The table is `duel_evidence_v2`: files of the earlier protocol keep their
old table untouched beside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import BigInteger, LargeBinary, String, Text, delete, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from wwwserve.judge.evidence import EvidencePieces
from wwwserve.ledger.db import DurableRecords
from wwwserve.ledger.work import WorkAttestation

__all__ = ["EvidenceStore", "Role", "StoredEvidence"]

Role = Literal["origin", "a", "b"]


class _Base(DeclarativeBase):
    pass


class _EvidenceRow(_Base):
    __tablename__ = "duel_evidence_v2"

    contract: Mapped[str] = mapped_column(String(42), primary_key=True)
    duel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    role: Mapped[str] = mapped_column(String(8))
    request: Mapped[bytes | None] = mapped_column(LargeBinary)
    answer: Mapped[str | None] = mapped_column(Text)
    work: Mapped[str | None] = mapped_column(Text)
    salt: Mapped[str | None] = mapped_column(String(66))
    stored_ms: Mapped[int] = mapped_column(BigInteger, index=True)


@dataclass(frozen=True)
class StoredEvidence:
    """What this node holds for one duel, in its role there."""

    duel_id: int
    role: Role
    request: bytes | None
    answer: str | None
    work: WorkAttestation | None = None
    salt: bytes | None = None
    stored_ms: int = 0

    def pieces(self) -> EvidencePieces:
        """The pieces this node serves: the request, and its answer in its slot (A's for origin and A)."""
        if self.role == "b":
            return EvidencePieces(self.duel_id, self.request, None, self.answer)
        return EvidencePieces(self.duel_id, self.request, self.answer, None)


def _stored(row: _EvidenceRow) -> StoredEvidence:
    role: Role = "origin" if row.role == "origin" else "a" if row.role == "a" else "b"
    return StoredEvidence(
        row.duel_id, role, row.request, row.answer,
        None if row.work is None else WorkAttestation.from_json(json.loads(row.work)),
        None if row.salt is None else bytes.fromhex(row.salt.removeprefix("0x")),
        row.stored_ms,
    )


class EvidenceStore(DurableRecords):
    """Duel evidence this node holds, for one contract (see the module docstring)."""

    metadata = _Base.metadata

    def put(self, evidence: StoredEvidence, *, replace: bool = False) -> None:
        """Store one duel's evidence. A second put for the same duel keeps the first, unless `replace`
        (an executor asked twice for the same work keeps its latest answer: the one the origin got)."""
        self.put_many([evidence], replace=replace)

    def put_many(self, records: Iterable[StoredEvidence], *, replace: bool = False) -> None:
        """`put` for several duels in one durable commit."""
        now = int(time.time() * 1000)
        with self._lock, Session(self.engine) as session, session.begin():
            for ev in records:
                row = session.get(_EvidenceRow, (self.contract, ev.duel_id))
                if row is not None and not replace:
                    continue
                if row is None:
                    row = _EvidenceRow(contract=self.contract, duel_id=ev.duel_id)
                    session.add(row)
                row.role = ev.role
                row.request = ev.request
                row.answer = ev.answer
                row.work = None if ev.work is None else json.dumps(ev.work.to_json(), separators=(",", ":"))
                row.salt = None if ev.salt is None else "0x" + ev.salt.hex()
                row.stored_ms = ev.stored_ms or now

    def get(self, duel_id: int) -> StoredEvidence | None:
        """What this node holds for a duel, or None."""
        with Session(self.engine) as session:
            row = session.get(_EvidenceRow, (self.contract, duel_id))
            return None if row is None else _stored(row)

    def duel_ids(self) -> list[int]:
        """Every duel this store holds evidence for, in id order."""
        with Session(self.engine) as session:
            return list(session.scalars(select(_EvidenceRow.duel_id).where(_EvidenceRow.contract == self.contract)
                                        .order_by(_EvidenceRow.duel_id)))

    def prune(self, stored_before_ms: int, keep: Collection[int] = ()) -> int:
        """Forget evidence stored before `stored_before_ms`, except for the duels in `keep` (those still
        open); returns how many rows went."""
        with self._lock, Session(self.engine) as session, session.begin():
            old = list(session.scalars(select(_EvidenceRow.duel_id).where(
                _EvidenceRow.contract == self.contract, _EvidenceRow.stored_ms < stored_before_ms)))
            gone = [duel_id for duel_id in old if duel_id not in keep]
            for start in range(0, len(gone), 500):
                session.execute(delete(_EvidenceRow).where(_EvidenceRow.contract == self.contract,
                                                           _EvidenceRow.duel_id.in_(gone[start:start + 500])))
            return len(gone)
