"""The origin's store of duel evidence: what it serves to the judges of each duel it opened.

Written once per duel, right after the duel is opened on-chain (keyed by contract and duel id), read by
the peer API when a drawn judge asks. SQLite with a durable commit: evidence that is lost leaves the
judges nothing to judge, and they vote NO_EVIDENCE (the duel is voided and the origin pays the fees).
"""

from __future__ import annotations

import json
import time

from sqlalchemy import BigInteger, String, Text, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from judge.evidence import Evidence
from ledger.db import DurableRecords

__all__ = ["EvidenceStore"]


class _Base(DeclarativeBase):
    pass


class _EvidenceRow(_Base):
    __tablename__ = "duel_evidence"

    contract: Mapped[str] = mapped_column(String(42), primary_key=True)
    duel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    evidence: Mapped[str] = mapped_column(Text)
    stored_ms: Mapped[int] = mapped_column(BigInteger)


class EvidenceStore(DurableRecords):
    """Evidence of the duels one origin opened, for one contract."""

    metadata = _Base.metadata

    def put(self, evidence: Evidence) -> None:
        """Store a duel's evidence (once: a second put for the same duel keeps the first)."""
        with self._lock, Session(self.engine) as session, session.begin():
            if session.get(_EvidenceRow, (self.contract, evidence.duel_id)) is None:
                session.add(_EvidenceRow(contract=self.contract, duel_id=evidence.duel_id,
                                         evidence=json.dumps(evidence.to_json(), separators=(",", ":")),
                                         stored_ms=int(time.time() * 1000)))

    def get(self, duel_id: int) -> Evidence | None:
        """A duel's evidence, or None if this origin has none for it."""
        with Session(self.engine) as session:
            row = session.get(_EvidenceRow, (self.contract, duel_id))
            return None if row is None else Evidence.from_json(json.loads(row.evidence))

    def duel_ids(self) -> list[int]:
        """Every duel this store holds evidence for, in id order."""
        with Session(self.engine) as session:
            return list(session.scalars(select(_EvidenceRow.duel_id).where(_EvidenceRow.contract == self.contract)
                                        .order_by(_EvidenceRow.duel_id)))
