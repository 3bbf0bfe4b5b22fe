"""The origin's duel duties (see judge.manager): open a duel over a checked answer it drew to duel, then
draw a missing challenger, publish a request the challenger could not get, draw an appeal round's panel,
and settle once nothing can change the duel."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any, Literal

from wwwserve.judge.duties import DuelDuties
from wwwserve.judge.store import StoredEvidence
from wwwserve.ledger.records import DuelStatus
from wwwserve.ledger.work import WorkAttestation, duel_id_of, request_bytes
from wwwserve.node.extensions import Inspection

__all__ = ["OriginDuties"]

logger = logging.getLogger(__name__)


class OriginDuties(DuelDuties):
    """Opening duels, and the duties only the origin is asked to do."""

    def open_soon(self, inspection: Inspection, work: WorkAttestation, kind: Literal["chat", "completion"],
                  raw_request: Mapping[str, Any], text: str) -> None:
        """A's checked answer to a request this node drew to duel: open the duel in the background."""
        self._spawn(self._open(inspection, work, kind, raw_request, text))

    async def _open(self, inspection: Inspection, work: WorkAttestation, kind: Literal["chat", "completion"],
                    raw_request: Mapping[str, Any], text: str) -> None:
        """Store the evidence (first: judges may ask the moment the duel exists), then open the duel."""
        try:
            duel_id = duel_id_of(self.my_address, work.request_id)
            evidence = StoredEvidence(duel_id, "origin", request_bytes(kind, raw_request), text, work,
                                      inspection.salt)
            await asyncio.to_thread(self.store.put, evidence)
            opened, tx = await self.chain.open_duel(work, inspection.salt)
            self._count("wwwserve_duels_total", event="opened")
            logger.info("duel %d opened over %s's answer (tx %s)", opened, work.executor, tx)
        except Exception as exc:  # off the request path: log, count, and leave it
            self._count("wwwserve_duels_total", event="open_failed")
            logger.warning("a duel over %s's answer was not opened: %s", work.executor, exc)

    async def _origin_duties(self, block: int) -> None:
        """For each open duel this node opened: draw a missing challenger, publish a missing request, draw
        the appeal panel, settle when due."""
        chain = self.chain
        for state in chain.opened_by_me():
            duel_id = state.duel_id
            self._party(state, "origin")
            if state.status is DuelStatus.AWAITING_ANSWER and state.b is None \
                    and state.seed_block < block <= state.deadline \
                    and block >= state.deadline - self.draw_margin_blocks:
                await self._act(state, "draw challenger", block, functools.partial(chain.draw_challenger, duel_id),
                                "challenger_drawn")
            elif state.status is DuelStatus.AWAITING_REQUEST and block <= state.deadline:
                stored = await asyncio.to_thread(self.store.get, duel_id)
                if stored is None or stored.work is None or stored.salt is None or stored.request is None:
                    if self._first_try(duel_id, "publish (nothing stored)", state.deadline):  # said once
                        logger.warning("duel %d: the challenger lacks the request and this node has none to "
                                       "publish", duel_id)
                    continue
                publish = functools.partial(chain.publish_request, duel_id, stored.work, stored.salt, stored.request)
                await self._act(state, "publish request", block, publish, "request_published")
            elif not await self._draw_appeal_panel(state, block):
                await self._settle_if_due(state, block, 0)

