"""The challenger's duel duty (B, see judge.manager): for every duel whose drawn challenger is this node, get
the request (from the chain if published, else from the origin and A at once), run it on this node's own
backend with the request's own sampling parameters, keep the answer, and commit its hash within the answer
window; answer the zero hash when nobody serves the request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from wwwserve.judge.duties import RequestRunner
from wwwserve.judge.evidence import ZERO_HASH, EvidencePieces, checked_pieces
from wwwserve.judge.exchange import EvidenceExchange
from wwwserve.judge.store import StoredEvidence
from wwwserve.ledger.records import DuelState
from wwwserve.ledger.work import answer_hash
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.protocol import new_request_id

__all__ = ["ChallengerDuties", "request_runner"]

logger = logging.getLogger(__name__)


class ChallengerDuties(EvidenceExchange):
    """Answering the duels this node is drawn to challenge in."""

    async def _challenger_duties(self, block: int) -> None:
        """Answer, within its window, every duel whose drawn challenger is this node: all of them at once, so
        one answer's fetch and transaction overlap another's generation (answered one after another, a node
        drawn for five duels of one burst answered three in the window and lost two bonds)."""
        mine = []
        for state in self.chain.awaiting_answer():
            if not state.seed_block < block <= state.deadline or self._me in (state.origin.lower(), state.a.lower()):
                continue
            if state.b is not None:
                if state.b.lower() != self._me:
                    continue
            else:
                challenger = await asyncio.to_thread(self._challenger, state)
                if challenger is None or challenger.lower() != self._me:
                    continue
            mine.append(state)
        # Started soonest deadline first, so they reach the backend's queue in about that order.
        await asyncio.gather(*(self._answer_logged(state, block)
                               for state in sorted(mine, key=lambda s: (s.deadline, s.duel_id))))

    async def _answer_logged(self, state: DuelState, block: int) -> None:
        try:
            await self._answer(state, block)
        except Exception as exc:  # the next pass tries again while the window lasts
            logger.warning("duel %d: answering as challenger failed: %s", state.duel_id, exc)

    async def _request_for(self, state: DuelState) -> bytes | None:
        """The duel's request bytes, checked against its requestHash: from the chain if published, else the
        first that checks of what the origin and A serve (both asked at once)."""
        if state.published_request is not None:
            checked, _ = checked_pieces(state, EvidencePieces(state.duel_id, request=state.published_request))
            if checked.request is not None:
                return checked.request
        found: list[bytes] = []

        def take(party: str, result: EvidencePieces | BaseException | None) -> bool:
            if isinstance(result, BaseException):
                logger.info("duel %d: the request from %s: %s", state.duel_id, party, result)
            if not isinstance(result, EvidencePieces) or result.request is None:
                return False
            checked, problems = checked_pieces(state, EvidencePieces(state.duel_id, request=result.request), party)
            if checked.request is None:
                logger.warning("duel %d: %s served a request that is not the duel's: %s", state.duel_id, party,
                               "; ".join(problems))
                return False
            found.append(checked.request)
            return True

        await self._ask((state.origin, state.a), state.duel_id, take)
        return found[0] if found else None

    async def _answer(self, state: DuelState, block: int) -> None:
        duel_id = state.duel_id
        stored = await asyncio.to_thread(self.store.get, duel_id)
        if stored is not None and stored.role == "b" and stored.answer is not None:
            text = stored.answer  # answered before; the transaction did not make it
        else:
            request = await self._request_for(state)
            if request is None:
                if block >= state.deadline - self.answer_margin_blocks and state.published_request is None:
                    tx = await self.chain.answer_duel(duel_id, ZERO_HASH)
                    self._count("wwwserve_duels_total", event="request_missing")
                    logger.warning("duel %d: nobody served the request; said so on-chain (tx %s)", duel_id, tx)
                return
            text = await self.run_request(request)
            await asyncio.to_thread(self.store.put, StoredEvidence(duel_id, "b", request, text), replace=True)
        tx = await self.chain.answer_duel(duel_id, answer_hash(text))
        self._count("wwwserve_duels_total", event="answered")
        logger.info("duel %d: answered as challenger (tx %s)", duel_id, tx)


def request_runner(generate: Callable[[GenerationRequest], Awaitable[Any]]) -> RequestRunner:
    """A `RequestRunner` over this node's own backend: the request as its user sent it (model, prompt and
    sampling parameters), as one whole answer."""
    from wwwserve.node.managers.request import generation_request

    async def run(data: bytes) -> str:
        from wwwserve.ledger.work import parse_request_bytes

        kind, body = parse_request_bytes(data)
        greq, _ = generation_request(kind, body, new_request_id("duel"))
        result = await generate(greq)
        return str(result.text)

    return run
