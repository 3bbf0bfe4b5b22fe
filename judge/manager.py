"""Duels, node side (docs/duels.md): the origin's, the executor's, the challenger's and the judge's parts.

**Origin.** Before a user's request is first delegated the dispatcher draws, blind, whether this node
will duel the answer (`should_inspect`, `policy.p_inspect`) and sends only the commitment with the
request (`node.extensions.Inspection`). The user is always served by the executor A the
dispatcher picked. When A's answer is in and checked (its work attestation included) and the draw said
duel, `open_soon` stores the evidence (the request's canonical bytes, A's answer, A's work attestation
and the inspection salt) and opens the duel on-chain (`openDuel`), in the background. The loop then does
what only the origin is asked to: draw the challenger a few blocks before the answer deadline if it did
not show up (so a no-show is punishable), publish the request on-chain if the challenger says it could
not get it, draw an appeal round's panel, and settle once nothing can change the duel.

**Executor (A).** Every delegated answer carries a work attestation signed with the wallet key (made
by the app); `keep_work` keeps the request and the answer, so A can serve its own answer to the judges
whatever the origin does (written in batches off the request path, pruned once no duel can need them).

**Challenger (B).** The contract draws B. The loop looks at duels awaiting an answer whose seed block is
mined and asks the contract who the challenger is; if it is this node, it asks the origin and A at once for
the request over the signed peer API (the first that checks against the duel's requestHash wins, so a
party that stalls costs nothing when the other serves: the window counts blocks), runs it on its
own backend as a whole answer with the request's own sampling parameters, keeps it, and commits its hash
(`answerDuel`) within the answer window. If nobody serves the request it answers the zero hash, and runs
the request once the origin publishes it on-chain.

**Judge.** `judge.runner.JudgeRunner` works through every round in which the contract gave this node
seats (it may be a party of the duel too: seats exclude nobody): the evidence comes from whoever holds each
piece, this node's own store first (`gather`), checked against the chain; votes are
committed and revealed, and the duel settled when due. **Appeals**: a duelist that lost round 1 appeals
by `judge.appeal` ("split": when round 1's revealed A/B votes were not unanimous).

**Evidence** (`/peer/evidence`, `evidence_for`): each node serves what it holds for a duel to the seat
holders of any of its rounds, and the request alone to its challenger.

Not done (docs/duels.md leaves it open): the commitment binds *whether* the origin will duel, not that
it does. An origin that commits wantsDuel = true to every request and opens only the duels it likes
after seeing the answers is not caught here; the remedy would be for the origin to send the executor
the reveal (wantsDuel, salt) after serving, and for an executor to refuse delegations for a while from
an origin whose revealed wantsDuel = true was not followed by `openDuel` within the TTL.

Decisions that wait for a model (a judge's verdict, the challenger's answer) run in lanes of their own,
so they never delay a commit, a reveal or a settlement: the chain's windows are counted in blocks and do
not wait. Everything here is off the request path and never raises into it: a failure is logged and
counted (`wwwserve_duels_total{event}`), and the next pass looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any, Literal, Protocol

from wwwserve.errors import WWWServeError
from wwwserve.judge.evidence import (
    AWAITING_ANSWER,
    AWAITING_REQUEST,
    JUDGING,
    ZERO_HASH,
    DuelState,
    EvidenceError,
    EvidenceMalformedError,
    EvidencePieces,
    checked_pieces,
)
from wwwserve.judge.journal import DuelView, JudgeStep, VoteJournal
from wwwserve.judge.runner import JUDGE_MAX_TOKENS, JudgeModel, JudgeRunner
from wwwserve.judge.store import EvidenceStore, StoredEvidence
from wwwserve.ledger.work import WorkAttestation, answer_hash, duel_id_of, request_bytes
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.extensions import Inspection
from wwwserve.node.http import HttpError
from wwwserve.node.managers.communication import CommunicationManager
from wwwserve.node.protocol import new_request_id

__all__ = ["APPEAL_POLICIES", "PATH_EVIDENCE", "DuelChain", "DuelManager", "EvidenceRefusedError", "fetch_evidence",
           "model_asker", "request_runner"]

PATH_EVIDENCE = "/peer/evidence"
"""The duel feature's peer route: {duel_id} → the pieces of that duel's evidence the node holds."""

logger = logging.getLogger(__name__)

AppealPolicy = Literal["split", "never", "always"]
APPEAL_POLICIES: tuple[AppealPolicy, ...] = ("split", "never", "always")

# Rows older than the attestation TTL plus this are pruned unless their duel is open: by then any duel
# over them was opened long enough ago for the indexer to know it.
PRUNE_GRACE_S = 120.0
PRUNE_INTERVAL_S = 60.0


class EvidenceRefusedError(WWWServeError):
    """A peer asked for evidence it may not have (no seat, not the challenger) or that this node lacks."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class DuelChain(Protocol):
    """The chain as the Duel manager sees it (`judge.chain.LedgerDuelChain` fits): reads from the indexer
    (blocking but local; `challenger_of` and `duel_onchain` are RPC calls), writes as mined transactions."""

    chain_id: int

    def block_number(self) -> int: ...

    def duel(self, duel_id: int) -> DuelState | None: ...

    def duel_onchain(self, duel_id: int) -> DuelState | None: ...

    def my_seats(self) -> Sequence[tuple[DuelState, DuelView]]: ...

    def opened_by_me(self) -> Sequence[DuelState]: ...

    def awaiting_answer(self) -> Sequence[DuelState]: ...

    def as_duelist(self) -> Sequence[DuelState]: ...

    def open_duel_ids(self) -> Collection[int]: ...

    @property
    def attestation_ttl_s(self) -> int: ...

    def challenger_of(self, duel_id: int) -> str | None: ...

    def commitment_of(self, duel_id: int, round_: int, vote: int, salt: bytes) -> bytes: ...

    async def open_duel(self, work: WorkAttestation, salt: bytes) -> tuple[int, str]: ...

    async def draw_challenger(self, duel_id: int) -> str: ...

    async def answer_duel(self, duel_id: int, answer: bytes) -> str: ...

    async def publish_request(self, duel_id: int, work: WorkAttestation, salt: bytes, request: bytes) -> str: ...

    async def draw_judges(self, duel_id: int) -> str: ...

    async def appeal(self, duel_id: int) -> str: ...

    async def commit(self, duel_id: int, commitment: bytes) -> str: ...

    async def reveal(self, duel_id: int, vote: int, salt: bytes) -> str: ...

    async def settle(self, duel_id: int) -> str: ...


RequestRunner = Callable[[bytes], Awaitable[str]]
"""Run a request (its canonical bytes) on this node's backend as a whole answer; returns the text."""


class DuelManager:
    """Every duel duty of one node (see the module docstring)."""

    def __init__(
        self,
        *,
        my_address: str,
        ledger: Any,
        communication: CommunicationManager,
        should_inspect: Callable[[], bool],
        store: EvidenceStore,
        journal: VoteJournal,
        ask_model: JudgeModel,
        run_request: RequestRunner,
        chain: DuelChain | None = None,
        poll_interval_s: float = 1.0,
        settle_grace_blocks: int = 2,
        judge_max_tokens: int = JUDGE_MAX_TOKENS,
        appeal: AppealPolicy = "split",
        draw_margin_blocks: int = 3,
        answer_margin_blocks: int = 2,
        attestation_ttl_s: float | None = None,  # default: the contract's ATTESTATION_TTL
        evidence_flush_s: float = 0.2,
        count: Callable[..., None] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if appeal not in APPEAL_POLICIES:
            raise ValueError(f"appeal must be one of {APPEAL_POLICIES}, got {appeal!r}")
        self.my_address = my_address
        self.ledger = ledger
        self.communication = communication
        self.should_inspect = should_inspect
        self.store = store
        self.journal = journal
        self.ask_model = ask_model
        self.run_request = run_request
        self.poll_interval_s = poll_interval_s
        self.settle_grace_blocks = settle_grace_blocks
        self.judge_max_tokens = judge_max_tokens
        self.appeal_policy = appeal
        self.draw_margin_blocks = draw_margin_blocks
        self.answer_margin_blocks = answer_margin_blocks
        self.attestation_ttl_s = attestation_ttl_s
        self.evidence_flush_s = evidence_flush_s
        self._chain = chain
        self._chain_built = False  # True when `chain` built the adapter from the ledger (not given)
        self._on_close = on_close  # e.g. closes a judge backend of its own
        self._count = count or (lambda *_a, **_k: None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._runner: JudgeRunner | None = None
        self._me = my_address.lower()
        self._pending: list[StoredEvidence] = []  # A's evidence not written yet (or being written)
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._gathered: dict[int, EvidencePieces] = {}  # judge: verified pieces so far, per duel
        self._challengers: dict[tuple[int, int], str] = {}  # (duel, seed block) -> challenger
        self._tried: dict[tuple[int, str], int] = {}  # (duel, action) -> block of the last attempt
        self._appealed: set[int] = set()
        self._done: set[tuple[int, str, int, int]] = set()  # (duel, action, deadline, round) mined
        self._last_prune = 0.0

    # ---- the chain ----------------------------------------------------------------------------

    @property
    def chain(self) -> DuelChain:
        """The chain adapter (built on first use: the ledger's indexer and client exist once it started; built
        again when the ledger re-opened them, after a chain reset)."""
        stale = self._chain_built and getattr(self._chain, "indexer", None) is not self.ledger.indexer
        if self._chain is None or stale:
            from wwwserve.judge.chain import LedgerDuelChain

            self._chain = LedgerDuelChain(self.ledger.indexer, self.ledger.client, self.my_address,
                                          self.ledger.run_tx)
            self._chain_built = True
        return self._chain

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- origin: opening duels ----------------------------------------------------------------

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

    # ---- executor: keeping the evidence of its work --------------------------------------------

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

    def _stored(self, duel_id: int) -> StoredEvidence | None:
        for pending in reversed(self._pending):  # not flushed yet
            if pending.duel_id == duel_id:
                return pending
        return self.store.get(duel_id)

    # ---- serving evidence -----------------------------------------------------------------------

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
            if challenger is None and state.status == AWAITING_ANSWER:
                challenger = self._challenger(state)
            if challenger is not None and challenger.lower() == who:
                return EvidencePieces(duel_id, request=stored.request)
        if not seen:
            raise EvidenceRefusedError(f"duel {duel_id} is unknown", 404)
        raise EvidenceRefusedError(f"{requester} holds no seat in duel {duel_id} and is not its challenger", 403)

    def _challenger(self, state: DuelState) -> str | None:
        """The duel's challenger for its current answer window (an RPC call, cached per seed block)."""
        key = (state.duel_id, state.seed_block)
        found = self._challengers.get(key)
        if found is None:
            found = self.chain.challenger_of(state.duel_id)
            if found is not None:
                self._challengers[key] = found
        return found

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
                    and missing & set(state.holds(party)):
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

    # ---- challenger -----------------------------------------------------------------------------

    async def _challenger_duties(self, block: int) -> None:
        """Answer, within its window, every duel whose drawn challenger is this node."""
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

    # ---- origin and duelists --------------------------------------------------------------------

    def _first_try(self, duel_id: int, action: str, block: int) -> bool:
        """At most one attempt per duel, action and block: a revert is not retried within the same block."""
        key = (duel_id, action)
        if self._tried.get(key) == block:
            return False
        self._tried[key] = block
        return True

    async def _act(self, state: DuelState, action: str, block: int, send: Callable[[], Awaitable[str]],
                   event: str | None = None) -> None:
        """Send one duty's transaction: once per block while it fails, never again once mined for this step
        of the duel (the indexer may show the old state for a block or two)."""
        step = (state.duel_id, action, state.deadline, state.round)
        if step in self._done or not self._first_try(state.duel_id, action, block):
            return
        try:
            tx = await send()
        except Exception as exc:  # e.g. someone else settled first: the indexer will say so
            logger.info("duel %d: %s: %s", state.duel_id, action, exc)
            return
        self._done.add(step)
        if event is not None:
            self._count("wwwserve_duels_total", event=event)
        logger.info("duel %d: %s (tx %s)", state.duel_id, action, tx)

    async def _settle_if_due(self, state: DuelState, block: int, grace: int) -> bool:
        after = state.settle_after()
        if after is None or block <= after + grace:
            return False
        await self._act(state, "settle", block, functools.partial(self.chain.settle, state.duel_id), "settled")
        return True

    async def _draw_appeal_panel(self, state: DuelState, block: int) -> bool:
        """Draw round 2's seats once its seed block is mined (the first commit would too, but a judge only
        knows it holds a seat once they are drawn)."""
        second = state.round_state(2)
        if state.status != JUDGING or second is None or second.seats:
            return False
        if state.seed_block < block <= second.commit_end:
            await self._act(state, "draw appeal judges", block, functools.partial(self.chain.draw_judges,
                                                                                  state.duel_id), "judges_drawn")
            return True
        return False

    async def _origin_duties(self, block: int) -> None:
        """For each open duel this node opened: draw a missing challenger, publish a missing request, draw
        the appeal panel, settle when due."""
        chain = self.chain
        for state in chain.opened_by_me():
            duel_id = state.duel_id
            if state.status == AWAITING_ANSWER and state.b is None \
                    and state.seed_block < block <= state.deadline \
                    and block >= state.deadline - self.draw_margin_blocks:
                await self._act(state, "draw challenger", block, functools.partial(chain.draw_challenger, duel_id),
                                "challenger_drawn")
            elif state.status == AWAITING_REQUEST and block <= state.deadline:
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

    def _should_appeal(self, state: DuelState, block: int) -> bool:
        first = state.round_state(1)
        if state.status != JUDGING or state.round != 1 or first is None or state.duel_id in self._appealed:
            return False
        if not first.reveal_end < block <= first.reveal_end + state.appeal_window_blocks:
            return False
        votes_a, votes_b = first.tally()
        no_evidence = sum(1 for v in first.votes if v == 4)
        if no_evidence * 2 > len(first.seats) or votes_a == votes_b:
            return False  # void or tie: nothing to appeal
        loser = state.a if votes_b > votes_a else state.b
        if loser is None or loser.lower() != self._me or self.appeal_policy == "never":
            return False
        return self.appeal_policy == "always" or (votes_a > 0 and votes_b > 0)

    async def _duelist_duties(self, block: int) -> None:
        """For each open duel this node is a duelist of: appeal a lost first round (by `appeal`), draw the
        appeal panel, and settle if the origin has not (a duelist's bond stays reserved until then)."""
        for state in self.chain.as_duelist():
            if self._should_appeal(state, block):
                self._appealed.add(state.duel_id)
                await self._act(state, "appeal", block, functools.partial(self.chain.appeal, state.duel_id),
                                "appealed")
            elif not await self._draw_appeal_panel(state, block):
                await self._settle_if_due(state, block, self.settle_grace_blocks)

    async def _prune(self) -> None:
        """Forget evidence no duel can need any more (see PRUNE_GRACE_S) and the judge's cached pieces."""
        now = time.monotonic()
        if now - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = now
        ttl_s = self.attestation_ttl_s
        if ttl_s is None:
            ttl_s = float(await asyncio.to_thread(lambda: self.chain.attestation_ttl_s))
        keep = set(await asyncio.to_thread(self.chain.open_duel_ids))
        cutoff_ms = int((time.time() - ttl_s - PRUNE_GRACE_S) * 1000)
        gone = await asyncio.to_thread(self.store.prune, cutoff_ms, keep)
        if gone:
            logger.info("pruned the evidence of %d answers no duel can need any more", gone)
        seated = {state.duel_id for state, _ in self.chain.my_seats()}
        for duel_id in [d for d in self._gathered if d not in seated]:
            del self._gathered[duel_id]
        # What the duties remember of duels that are over (or never were this node's) goes too.
        live = keep | seated | {state.duel_id for state in self.chain.awaiting_answer()}
        self._tried = {k: v for k, v in self._tried.items() if k[0] in live}
        self._done = {k for k in self._done if k[0] in live}
        self._challengers = {k: v for k, v in self._challengers.items() if k[0] in live}
        self._appealed &= live

    # ---- the loop -------------------------------------------------------------------------------

    def _judge_runner(self) -> JudgeRunner:
        if self._runner is None:
            # A piece nobody serves is asked for again until a third of the commit window is left (at
            # least 2 blocks): a judge then decides with what it has and still has time to commit; a
            # fixed 2-block margin left judges silent, and fined, on fast blocks or behind a busy model.
            window = getattr(self.chain.params, "commit_window_blocks", 6) if hasattr(self.chain, "params") else 6
            self._runner = JudgeRunner(self.chain, self.journal, self.gather, self.ask_model,
                                       settle_grace_blocks=self.settle_grace_blocks, max_tokens=self.judge_max_tokens,
                                       commit_margin_blocks=max(2, int(window) // 3), held=self.held)
        return self._runner

    async def run_once(self, lane: Literal["chain", "decide", "answer"] = "chain") -> None:
        """One pass of one lane: "chain" (origin and duelist duties, commits, reveals, settlements),
        "decide" (the judge's verdicts) or "answer" (the challenger's answers)."""
        runner = self._judge_runner()
        block = self.chain.block_number()
        if block < 0:
            return
        if lane == "answer":
            await self._challenger_duties(block)
            return
        if lane == "chain":
            await self._origin_duties(block)
            await self._duelist_duties(block)
            await self._prune()
        steps = [JudgeStep.DECIDE] if lane == "decide" else [s for s in JudgeStep if s is not JudgeStep.DECIDE]
        for action in await runner.run_once(steps):
            self._count("wwwserve_judge_steps_total", step=action.step.value)
            logger.info("judging duel %d round %d: %s %s", action.duel_id, action.round, action.step.value,
                        action.detail)

    async def _loop(self, lane: Literal["chain", "decide", "answer"]) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.run_once(lane)
            except Exception:
                logger.warning("duel round (%s) failed", lane, exc_info=True)

    def start(self) -> None:
        """Start the lanes: chain duties, the judge's decisions and the challenger's answers apart (those
        wait for a model, maybe behind user requests; commits, reveals and settlements must not)."""
        if not self._loop_tasks:
            loop = asyncio.get_running_loop()
            self._loop_tasks = [loop.create_task(self._loop(lane)) for lane in ("chain", "decide", "answer")]

    async def aclose(self) -> None:
        """Stop the loops; duels being opened get a moment to finish, A's evidence is written, the stores
        close."""
        for task in self._loop_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_evidence()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        self.store.close()
        self.journal.close()
        if self._on_close is not None:
            await self._on_close()


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


def model_asker(generate: Callable[[GenerationRequest], Awaitable[Any]], model: str) -> JudgeModel:
    """A `JudgeModel` over this node's own backend: greedy, one user message, a short answer."""

    async def ask(prompt: str, max_tokens: int | None) -> str:
        req = GenerationRequest(request_id=new_request_id("judge"), model=model,
                                messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0)
        result = await generate(req)
        return str(result.text)

    return ask


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
