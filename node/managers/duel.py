"""Duels, node side (DESIGN.md §4): the origin's part and the judge's part, driven by one loop.

Origin: a user's request that this node delegates becomes a duel with probability `policy.p_inspect`
(`DuelRace`): when the first delegation leaves, a second executor, drawn by PoS from the peers serving
the model (never the first candidate, never this node), gets the same request at once. The user gets
whichever verified answer arrives first (for a streamed request: whichever stream starts first), and the
other is kept for judging (the served answer is A; a stream not served is read to its end in the
background). A user who disconnects before the end cancels both. Both answers are signed results. The
origin then opens the duel on-chain with the question and answer hashes (`judge.evidence.duel_hashes`;
the contract escrows the duel's fees from its credit), stores the evidence (`judge.store.EvidenceStore`)
and serves it to the duel's drawn judges only (`/peer/evidence`). Its loop draws the judges once the seed
block is mined and settles the duel after the reveal window.

Judge: `judge.runner.JudgeRunner` works through the duels this node was drawn for, asking the node's own
model (`judge.model`, default the first one it serves) or, with `judge.base_url`, a separate
OpenAI-compatible endpoint (a stronger model than the one served). Its decisions (which wait for that
model, on a busy node behind user requests) run in a loop of their own, so they never delay a commit or a
reveal of another duel: the chain's windows are counted in blocks and do not wait.

Everything here is off the request path and never raises into it: a failure is logged and counted
(`wwwserve_duels_total{event}`) and the duel is simply not opened, or left to the chain's windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from judge.chain import LedgerJudgeChain
from judge.evidence import DuelRecord, Evidence, EvidenceError, duel_hashes
from judge.journal import JudgeStep, VoteJournal
from judge.runner import JUDGE_MAX_TOKENS, JudgeModel, JudgeRunner
from judge.store import EvidenceStore
from node.backends.base import GenerationRequest
from node.managers.communication import (
    CommunicationManager,
    DelegateBody,
    PeerDeclinedError,
    PeerFailedError,
    RemoteAnswer,
    RemoteStream,
)
from node.managers.dispatch import streamed_request, whole_request
from node.protocol import new_request_id
from node.routing import candidates_for_delegation, selection_seed
from node.signing import SignedResult

__all__ = ["DuelManager", "EvidenceRefusedError"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class EvidenceRefusedError(Exception):
    """A peer asked for evidence it may not have (not a judge of that duel) or that this node lacks."""

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class DuelManager:
    """Opens duels as an origin and judges the duels this node was drawn for (see the module docstring)."""

    def __init__(
        self,
        *,
        my_address: str,
        chain_id: int,
        ledger: Any,
        communication: CommunicationManager,
        should_inspect: Callable[[], bool],
        store: EvidenceStore,
        journal: VoteJournal,
        ask_model: JudgeModel,
        verify: Callable[[RemoteAnswer | RemoteStream, str, Sequence[Mapping[str, Any]] | str], SignedResult],
        k_exec: int = 1,
        poll_interval_s: float = 1.0,
        settle_grace_blocks: int = 2,
        judge_max_tokens: int = JUDGE_MAX_TOKENS,
        second_attempts: int = 10,
        second_retry_s: float = 1.0,
        count: Callable[..., None] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.my_address = my_address
        self.chain_id = chain_id
        self.ledger = ledger
        self.communication = communication
        self.should_inspect = should_inspect
        self.store = store
        self.journal = journal
        self.ask_model = ask_model
        self.verify = verify  # Dispatcher.verify_remote
        self.k_exec = k_exec
        self.poll_interval_s = poll_interval_s
        self.settle_grace_blocks = settle_grace_blocks
        self.judge_max_tokens = judge_max_tokens
        self.second_attempts = second_attempts  # rounds of asking for a second executor (all busy: wait, retry)
        self.second_retry_s = second_retry_s
        self._on_close = on_close  # e.g. closes a judge backend of its own
        self._count = count or (lambda *_a, **_k: None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._runner: JudgeRunner | None = None

    # ---- origin: opening duels ----------------------------------------------------------------

    async def _open(
        self,
        greq: GenerationRequest,
        prompt: Sequence[Mapping[str, Any]] | str,
        served: tuple[str, SignedResult],
        other: tuple[str, SignedResult],
    ) -> None:
        """Open the duel on-chain (the answer the user got as A) and store its evidence; never raises."""
        (first_text, first), (second_text, second_result) = served, other
        try:
            question, answer_a, answer_b = duel_hashes(first, second_result)
            client = self.ledger.client
            opened = await self.ledger.run_tx(
                lambda: client.open_duel(first.executor, second_result.executor, question, answer_a, answer_b)
            )
            evidence = Evidence(opened.duel_id, prompt, greq.max_tokens, first_text, second_text, first, second_result)
            await asyncio.to_thread(self.store.put, evidence)
            self._count("wwwserve_duels_total", event="opened")
            logger.info("duel %d opened: %s vs %s (tx %s)", opened.duel_id, first.executor, second_result.executor,
                        opened.tx_hash)
        except Exception as exc:  # off the request path: log, count, and leave it
            self._count("wwwserve_duels_total", event="open_failed")
            logger.warning("a duel for %s was not opened: %s", greq.request_id, exc)

    async def _second_answer(
        self,
        greq: GenerationRequest,
        kind: str,
        raw_request: Mapping[str, Any],
        prompt: Sequence[Mapping[str, Any]] | str,
        exclude: Collection[str],
        asked: set[str] | None = None,
        streamed: bool = False,
        round_declined: asyncio.Event | None = None,
    ) -> RemoteAnswer | RemoteStream | None:
        """An answer from an executor drawn by PoS among the peers not in `exclude`, or None: a verified
        whole answer (its `attestation` checked), or with `streamed` a primed stream (checked when it
        ends). Every peer asked is added (lower case) to `asked`; `round_declined` is set once a whole
        round of candidates declined (from then on, this is a wait for a free peer)."""
        comm = self.communication
        request = streamed_request(raw_request) if streamed else whole_request(raw_request)
        failed: set[str] = set()
        # Busy peers decline; like the reference (which re-queues the request when no B is found), try
        # again a few times: the user is not waiting on this.
        for attempt in range(self.second_attempts):
            if attempt:
                await asyncio.sleep(self.second_retry_s)
            # Read every round: a race adds the served answer's executor to `exclude` once it is known.
            skip = {address.lower() for address in exclude} | failed
            peers = [p for p in comm.routable_peers(greq.model) if p.address.lower() not in skip]
            seed = selection_seed(greq.request_id, self.ledger.recent_block_hash(), 1 + attempt)
            candidates = candidates_for_delegation(peers, self.my_address, list(exclude), seed, self.k_exec,
                                                   greq.model)
            for peer in candidates:
                if asked is not None:
                    asked.add(peer.address.lower())
                body = DelegateBody(request_id=greq.request_id, kind=kind, request=request,  # type: ignore[arg-type]
                                    route=[self.my_address], accept_check=True)
                try:
                    if streamed:
                        return await comm.open_delegation(peer, body, greq)
                    answer = await comm.delegate_whole(peer, body, greq)
                except PeerDeclinedError:
                    continue
                except PeerFailedError as exc:
                    logger.info("duel: %s failed the second copy of %s: %s", peer.address, greq.request_id, exc)
                    failed.add(peer.address.lower())
                    continue
                try:
                    # The same check as any delegated answer (no fee voucher: the contract pays duelists).
                    self.verify(answer, answer.result.text, prompt)  # checks answer.attestation
                except PeerFailedError as exc:
                    logger.warning("duel: %s sent an unverifiable second answer: %s", peer.address, exc)
                    failed.add(peer.address.lower())
                    continue
                return answer
            if round_declined is not None:
                round_declined.set()
        logger.info("duel: no second executor took %s", greq.request_id)
        return None

    async def _whole(
        self, answer: RemoteAnswer | RemoteStream, prompt: Sequence[Mapping[str, Any]] | str, checked: bool
    ) -> tuple[str, SignedResult] | None:
        """The text and checked attestation of a duel's other answer, or None if it fails or does not
        verify. A stream is read to its end (and closed); `checked`: a whole answer was verified already."""
        try:
            if isinstance(answer, RemoteStream):
                try:
                    text = "".join([delta.text async for delta in answer])
                finally:
                    await answer.aclose()
            else:
                text = answer.result.text
            if isinstance(answer, RemoteAnswer) and checked:
                return text, answer.attestation
            return text, self.verify(answer, text, prompt)
        except Exception as exc:  # off the request path: no duel then
            logger.warning("duel: the other answer of %s is unusable: %s", answer.request.request_id, exc)
            return None

    def race(
        self,
        greq: GenerationRequest,
        kind: str,
        raw_request: Mapping[str, Any],
        prompt: Sequence[Mapping[str, Any]] | str,
    ) -> DuelRace:
        """A race for one user request (see `DuelRace`); it becomes a duel only if it is offloaded and the
        policy's `should_inspect` draw says so."""
        return DuelRace(self, greq, kind, raw_request, prompt)

    # ---- origin: serving evidence ---------------------------------------------------------------

    def evidence_for(self, duel_id: int, requester: str) -> Evidence:
        """The evidence of a duel this node opened, for one of its drawn judges only (blocking: reads the
        indexer, and the contract when the indexer has not seen the draw yet)."""
        me, who = self.my_address.lower(), requester.lower()
        duel = self.ledger.indexer.duel(duel_id)
        judges = [seat.judge for seat in duel.judges] if duel is not None else []
        origin = duel.origin if duel is not None else None
        if who not in (j.lower() for j in judges):
            # A judge may have seen the draw before this node's indexer did: ask the contract.
            try:
                onchain = self.ledger.client.duel(duel_id)
            except Exception as exc:
                raise EvidenceRefusedError(f"duel {duel_id} is unknown here: {exc}", 404) from None
            origin, judges = onchain.origin, list(onchain.judges)
        if origin is None or origin.lower() != me:
            raise EvidenceRefusedError(f"duel {duel_id} was not opened by this node", 404)
        if who not in (j.lower() for j in judges):
            raise EvidenceRefusedError(f"{requester} is not a judge of duel {duel_id}", 403)
        evidence = self.store.get(duel_id)
        if evidence is None:
            raise EvidenceRefusedError(f"this node has no evidence for duel {duel_id}", 404)
        return evidence

    async def _fetch_evidence(self, record: DuelRecord) -> Evidence | None:
        peer = self.ledger.peer(record.origin)
        if peer is None:
            return None
        try:
            return await self.communication.fetch_evidence(peer, record.duel_id)
        except EvidenceError as exc:
            logger.info("duel %d: the origin's evidence is malformed: %s", record.duel_id, exc)
            return None

    # ---- the loop -------------------------------------------------------------------------------

    async def _origin_duties(self, block: int) -> None:
        """Draw the judges of my duels once their seed block is mined; settle them after the reveal window."""
        client = self.ledger.client
        for duel in self.ledger.indexer.duels_opened_by(self.my_address):
            try:
                if duel.status == "awaiting_judges" and block > duel.seed_block:
                    await self.ledger.run_tx(lambda d=duel.id: client.draw_judges(d))
                    self._count("wwwserve_duels_total", event="judges_drawn")
                elif duel.status == "voting" and duel.reveal_end is not None and (
                    block > duel.reveal_end or all(seat.vote is not None for seat in duel.judges)
                ):
                    await self.ledger.run_tx(lambda d=duel.id: client.settle_duel(d))
                    self._count("wwwserve_duels_total", event="settled")
            except Exception as exc:  # e.g. someone else settled first: the indexer will say so
                logger.info("duel %d: %s", duel.id, exc)

    def _judge_runner(self) -> JudgeRunner:
        if self._runner is None:  # built on first use: the ledger's indexer and client exist once it started
            chain = LedgerJudgeChain(self.ledger.indexer, self.ledger.client, self.my_address, self.ledger.run_tx)
            self._runner = JudgeRunner(chain, self.journal, self._fetch_evidence, self.ask_model,
                                       settle_grace_blocks=self.settle_grace_blocks,
                                       max_tokens=self.judge_max_tokens)
        return self._runner

    async def run_once(self, judge_steps: Collection[JudgeStep] | None = None, origin: bool = True) -> None:
        """One round of origin duties (with `origin`) and judging (only `judge_steps`, when given)."""
        runner = self._judge_runner()
        if origin:
            await self._origin_duties(runner.chain.block_number())
        for action in await runner.run_once(judge_steps):
            self._count("wwwserve_judge_steps_total", step=action.step.value)
            logger.info("judging duel %d: %s %s", action.duel_id, action.step.value, action.detail)

    async def _loop(self, judge_steps: Collection[JudgeStep], origin: bool) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.run_once(judge_steps, origin)
            except Exception:
                logger.warning("duel round failed", exc_info=True)

    def start(self) -> None:
        """Start the loops: origin duties with the judge's transactions, and the judge's decisions apart (a
        decision waits for the judge model, maybe behind user requests; commits and reveals must not)."""
        if not self._loop_tasks:
            loop = asyncio.get_running_loop()
            chain_steps = [step for step in JudgeStep if step is not JudgeStep.DECIDE]
            self._loop_tasks = [loop.create_task(self._loop(chain_steps, origin=True)),
                                loop.create_task(self._loop([JudgeStep.DECIDE], origin=False))]

    async def aclose(self) -> None:
        """Stop the loop; duels being opened get a moment to finish, then the stores close."""
        for task in self._loop_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        self.store.close()
        self.journal.close()
        if self._on_close is not None:
            await self._on_close()


class DuelRace:
    """Two executors answer one user request at once; the user gets whichever verified answer comes first.

    The dispatcher calls `start` when it delegates the request (the duel draw happens there, so a request
    run locally never becomes a duel), then `first_of` with its own delegation to the first candidate: it
    returns the first of the two answers (whole answers, or primed streams: the first to produce output),
    and the slower one keeps running for the duel. `served` says which answer the user got, once it is
    whole and checked; the duel opens in the background once the other is in (A = the served answer).
    `cancel` drops the race unless `served` came first (the request ran locally, failed, or the user went
    away mid-stream): what still runs is cancelled and an unread stream closed, so the executor stops.
    """

    def __init__(self, manager: DuelManager, greq: GenerationRequest, kind: str, raw_request: Mapping[str, Any],
                 prompt: Sequence[Mapping[str, Any]] | str) -> None:
        self.manager = manager
        self.greq = greq
        self.kind = kind
        self.raw_request = raw_request
        self.prompt = prompt
        self.drawn = False
        self.streamed = False
        self.rival: asyncio.Task[RemoteAnswer | RemoteStream | None] | None = None
        self.contender: asyncio.Future[Any] | None = None  # the first candidate's delegation, if the rival won
        self.rival_won = False
        self.is_served = False
        self.asked: set[str] = set()  # peers the rival asked (lower case): the dispatcher must not ask them too
        self.excluded: set[str] = set()  # peers the rival must not ask: the first candidate, the served executor
        self.rival_waits = asyncio.Event()  # set once every peer the rival asked in a round declined

    def start(self, exclude: Sequence[str], streamed: bool = False) -> None:
        """Draw whether this request is a duel (once) and, if so, start the rival, avoiding `exclude`."""
        if self.drawn:
            return
        self.drawn = True
        if not self.manager.should_inspect():
            return
        self.streamed = streamed
        self.excluded.update(address.lower() for address in exclude)
        self.rival = asyncio.get_running_loop().create_task(self._rival())

    async def _rival(self) -> RemoteAnswer | RemoteStream | None:
        try:
            return await self.manager._second_answer(self.greq, self.kind, self.raw_request, self.prompt,
                                                     self.excluded, self.asked, streamed=self.streamed,
                                                     round_declined=self.rival_waits)
        except Exception as exc:  # off the request path
            logger.warning("duel: the second copy of %s failed: %s", self.greq.request_id, exc)
            return None

    async def first_of(self, first: asyncio.Future[T]) -> T | RemoteAnswer | RemoteStream:
        """The first answer in: `first`'s (the dispatcher's delegation) or the rival's, when the rival's
        arrives first and `first` has not answered yet."""
        rival = self.rival
        if rival is None or self.rival_won:
            return await first
        both: set[asyncio.Future[Any]] = {first, rival}
        try:
            done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            first.cancel()
            raise
        if first in done:
            result = first.result()
            if result is not None:
                return result
            # The first candidate declined or failed: the rival, at work on this request, answers the user
            # (there is no duel then). Not a rival that is only waiting for a free peer (a round of its
            # candidates declined): then the dispatcher asks its other candidates now (never the peers the
            # rival asked, which have seen this request id) and the rival goes on looking for the duel.
            hunting = asyncio.ensure_future(self.rival_waits.wait())
            try:
                await asyncio.wait({rival, hunting}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                hunting.cancel()
            served = rival.result() if rival.done() and not rival.cancelled() else None
            if served is None:
                return result
            self.rival_won = True
            return served
        answer = rival.result()
        if answer is None:
            return await first
        self.rival_won, self.contender = True, first
        self.manager._count("wwwserve_duels_total", event="second_answered_first")
        return answer

    def served(self, text: str, attestation: SignedResult) -> None:
        """The user got the whole answer `text` (checked: `attestation`); open the duel against the other."""
        if self.rival is None or self.is_served:
            return
        self.is_served = True
        self.excluded.add(attestation.executor.lower())  # a rival still looking must find someone else
        task = asyncio.get_running_loop().create_task(self._duel_after(text, attestation))
        self.manager._tasks.add(task)
        task.add_done_callback(self.manager._tasks.discard)

    async def _duel_after(self, text: str, attestation: SignedResult) -> None:
        manager = self.manager
        pending = self.contender if self.rival_won else self.rival
        try:
            other = await pending if pending is not None else None
        except Exception:  # the contender's delegation failed (the rival's never raises)
            other = None
        # The rival's whole answer was checked when it came in; the contender's and any stream were not.
        whole = await manager._whole(other, self.prompt, checked=not self.rival_won) if other is not None else None
        if whole is None:
            manager._count("wwwserve_duels_total", event="no_second_executor")
            return
        await manager._open(self.greq, self.prompt, (text, attestation), whole)

    def cancel(self) -> None:
        """No duel after all (unless the user was served already): stop what still runs, close unread streams."""
        if self.is_served:
            return
        for task in (self.rival, self.contender):
            if task is None:
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None \
                    and isinstance(stream := task.result(), RemoteStream):
                # Closing is idempotent: the stream the user read, if it is this one, is closed already.
                closing = asyncio.get_running_loop().create_task(stream.aclose())
                self.manager._tasks.add(closing)
                closing.add_done_callback(self.manager._tasks.discard)


def model_asker(generate: Callable[[GenerationRequest], Awaitable[Any]], model: str) -> JudgeModel:
    """A `JudgeModel` over this node's own backend: greedy, one user message, a short answer."""

    async def ask(prompt: str, max_tokens: int | None) -> str:
        req = GenerationRequest(request_id=new_request_id("judge"), model=model,
                                messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0)
        result = await generate(req)
        return str(result.text)

    return ask
