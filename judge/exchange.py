"""Duel evidence between nodes (see judge.manager): serving what this node holds (`/peer/evidence`,
`evidence_for`) to the seat holders of any of a duel's rounds, and the request alone to its challenger;
fetching it from the parties (`fetch_evidence`), and gathering a duel's evidence as a judge (`gather`),
every piece checked against the chain's hashes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from wwwserve.errors import WWWServeError
from wwwserve.judge.duties import DuelDuties
from wwwserve.judge.evidence import (
    EvidenceError,
    EvidenceMalformedError,
    EvidencePieces,
    checked_pieces,
    pieces_held_by,
)
from wwwserve.ledger.records import DuelState, DuelStatus
from wwwserve.node.http import HttpError
from wwwserve.node.managers.communication import CommunicationManager

__all__ = ["PATH_EVIDENCE", "EvidenceExchange", "EvidenceRefusedError", "fetch_evidence"]

PATH_EVIDENCE = "/peer/evidence"
"""The duel feature's peer route: {duel_id} → the pieces of that duel's evidence the node holds."""

logger = logging.getLogger(__name__)


class EvidenceRefusedError(WWWServeError):
    """A peer asked for evidence it may not have (no seat, not the challenger) or that this node lacks."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class EvidenceExchange(DuelDuties):
    """Serving this node's evidence, and asking the parties for theirs."""

    def evidence_for(self, duel_id: int, requester: str) -> EvidencePieces:
        """What this node holds for a duel: all of it to a seat holder of any round, the request alone to
        the duel's challenger (blocking: reads the store, the indexer, and the contract when the indexer
        has not seen the draw yet)."""
        stored = self._stored(duel_id)
        if stored is None:
            raise EvidenceRefusedError(f"this node holds no evidence for duel {duel_id}", 404)
        who = requester.lower()
        chain = self.chain
        seen: list[DuelState] = []
        # The indexer may lag behind a draw the requester saw, so the contract is read too before a seat is
        # ruled out: a challenger that also holds a seat (seats exclude nobody) is first seen by a lagging
        # index as the challenger alone, and given the request alone it would wait for A's answer elsewhere.
        for read in (chain.duel, chain.duel_onchain):
            try:
                state = read(duel_id)
            except Exception as exc:
                logger.info("duel %d: %s", duel_id, exc)
                state = None
            if state is None:
                continue
            if any(rnd.seats_of(requester) for rnd in state.rounds):
                return stored.pieces()
            seen.append(state)
        for state in seen:
            challenger = state.b
            if challenger is None and state.status is DuelStatus.AWAITING_ANSWER:
                challenger = self._challenger(state)
            if challenger is not None and challenger.lower() == who:
                return EvidencePieces(duel_id, request=stored.request)
        if not seen:
            raise EvidenceRefusedError(f"duel {duel_id} is unknown", 404)
        raise EvidenceRefusedError(f"{requester} holds no seat in duel {duel_id} and is not its challenger", 403)

    async def _fetch(self, party: str, duel_id: int) -> EvidencePieces | None:
        contact = self.ledger.contact(party)
        if contact is None:
            return None
        try:
            return await fetch_evidence(self.communication, contact, duel_id)
        except EvidenceError as exc:
            logger.info("duel %d: %s served malformed evidence: %s", duel_id, party, exc)
            return None

    async def _ask(self, parties: Sequence[str], duel_id: int,
                   take: Callable[[str, EvidencePieces | BaseException | None], bool]) -> None:
        """Ask every party at once and hand each answer to `take` as it comes (in `parties` order when several
        come together); stop waiting, cancelling the rest, once `take` says it has all it needs. A party that
        withholds by stalling (accepting the request and never answering) then costs nothing when another
        party serves: waiting out its timeout could use up a window counted in blocks."""
        tasks = {asyncio.ensure_future(self._fetch(party, duel_id)): party for party in parties}
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in tasks if t in done]:
                    result = task.exception() or task.result()
                    if take(tasks[task], result):
                        return
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def gather(self, state: DuelState) -> EvidencePieces:
        """The duel's evidence obtainable now: pieces verified before are kept; the missing ones are asked
        of every party that may hold them, at once (and the request read from the chain if it was
        published); it returns as soon as every piece is in hand."""
        have = self._gathered.get(state.duel_id, EvidencePieces(state.duel_id))
        if not have.complete:
            # Seats exclude nobody (the contract draws them from all stake), so a judge may be the origin, A or
            # B of the duel: what it holds itself is never asked of anyone.
            own = await asyncio.to_thread(self._stored, state.duel_id)
            if own is not None:
                have = have.merged(checked_pieces(state, own.pieces(), "this node")[0])
        if have.request is None and state.published_request is not None:
            published, _ = checked_pieces(state, EvidencePieces(state.duel_id, request=state.published_request),
                                          "chain")
            have = have.merged(published)
        self._gathered[state.duel_id] = have
        missing = {name for name, value in (("request", have.request), ("answer_a", have.answer_a),
                                            ("answer_b", have.answer_b)) if value is None}
        parties = []
        for party in (state.origin, state.a, state.b):
            if party is not None and party.lower() != self._me and party not in parties \
                    and missing & set(pieces_held_by(state, party)):
                parties.append(party)

        def take(party: str, result: EvidencePieces | BaseException | None) -> bool:
            nonlocal have
            if isinstance(result, EvidencePieces):
                checked, problems = checked_pieces(state, result, party)
                for problem in problems:
                    logger.warning("duel %d: %s served evidence that fails the chain's hashes: %s",
                                   state.duel_id, party, problem)
                have = have.merged(checked)
                self._gathered[state.duel_id] = have  # kept if the judge stops waiting (`held`)
            elif isinstance(result, BaseException):
                logger.info("duel %d: evidence from %s: %s", state.duel_id, party, result)
            return have.complete

        await self._ask(parties, state.duel_id, take)  # `take` keeps every verified piece in _gathered
        return have

    def held(self, state: DuelState) -> EvidencePieces:
        """The duel's evidence in hand without asking anyone: what `gather` has verified so far (the
        judge's last chance uses it when a party stalls)."""
        return self._gathered.get(state.duel_id, EvidencePieces(state.duel_id))


async def fetch_evidence(comm: CommunicationManager, peer: Any, duel_id: int) -> EvidencePieces | None:
    """The pieces of a duel's evidence `peer` holds (this node must hold a seat in the duel, or be its
    challenger, which gets the request only), over the signed peer API (`PATH_EVIDENCE`).

    None when the peer does not serve them (refuses, has none, is down); `EvidenceMalformedError` when what
    it serves is malformed. The caller checks every piece against the chain's hashes. A peer is not banned
    for this: withheld evidence is what the judges' vote rules are for.
    """
    try:
        response = await comm.post_sealed(peer, PATH_EVIDENCE, {"duel_id": duel_id}, timeout_s=comm.probe_timeout_s * 5)
    except HttpError as exc:
        logger.info("evidence of duel %d from %s: %s", duel_id, peer.address, exc)
        return None
    if response.status != 200:
        logger.info("evidence of duel %d from %s: HTTP %s %s", duel_id, peer.address, response.status,
                    response.text[:200])
        return None
    try:
        payload = response.json()
    except ValueError:
        raise EvidenceMalformedError("the evidence is not JSON") from None
    pieces = EvidencePieces.from_json(payload)
    if pieces.duel_id != duel_id:
        raise EvidenceMalformedError(f"asked for duel {duel_id}, got evidence of duel {pieces.duel_id}")
    return pieces
