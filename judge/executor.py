"""The executor's duel duty (A, see judge.manager): keep the request and its own answer of every delegated
request a duel may be opened over, so it can serve them to the judges whatever the origin does; written in
batches, off the request path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Literal

from wwwserve.judge.duties import DuelDuties
from wwwserve.judge.evidence import ZERO_HASH
from wwwserve.judge.store import StoredEvidence
from wwwserve.ledger.work import WorkAttestation, duel_id_of, request_bytes

__all__ = ["ExecutorDuties"]

logger = logging.getLogger(__name__)


class ExecutorDuties(DuelDuties):
    """Keeping the evidence of this node's work."""

    def keep_work(self, work: WorkAttestation, kind: Literal["chat", "completion"],
                  raw_request: Mapping[str, Any], text: str) -> None:
        """Keep the request and this node's answer for a duel over `work` (none can be opened over work
        without an inspection commitment); written in batches, off the request path."""
        if work.inspect == ZERO_HASH:
            return
        try:
            data = request_bytes(kind, raw_request)
        except Exception as exc:  # the request passed validation: only a bug gets here
            logger.warning("cannot keep the evidence of %s's work: %s", work.origin, exc)
            return
        self._pending.append(StoredEvidence(duel_id_of(work.origin, work.request_id), "a", data, text, work))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.evidence_flush_s)
        await self.flush_evidence()

    async def flush_evidence(self) -> None:
        """Write A's pending evidence now (one durable commit); on return, everything kept before the call
        is in the store, also what another flush was writing. Pieces stay in `_pending`, where `_stored`
        finds them, until their write is done."""
        async with self._flush_lock:
            batch = self._pending[:]
            if not batch:
                return
            try:
                await asyncio.to_thread(self.store.put_many, batch, replace=True)
            except Exception as exc:
                logger.warning("could not keep the evidence of %d answers: %s", len(batch), exc)
            finally:
                del self._pending[:len(batch)]  # pieces kept meanwhile stay for the next flush

