"""Dispatch, the decision half of the Request manager: run here, or delegate to a peer chosen by stake.

The decisions are the planner's (`node.planner`, shared with the simulator); `Dispatcher.plan` steps it
on asyncio, offers go out through `node.managers.offers`, and what comes back is checked here
(`finish_remote`, with `node.attestation`) and paid (`node.managers.fees`). In short, for each request
(a user's, or a peer's delegated one) the policy is asked (DESIGN §2):
LOCAL or QUEUE → the caller runs it on this node's Request manager; OFFLOAD → `k_exec + 2` candidates are
drawn by PoS from the registry (never this node, never a node already on the route, never a banned
peer); the first gets the request with its probe folded in (it runs it only if it would accept the
probe), and if it declines the others are probed in parallel and the first acceptor in candidate order
gets the request over the signed peer API; no acceptor → the policy's fallback (QUEUE or RETRY after
`retry_delay_s`). A request for a model this node does not serve is always offloaded. A route of
`max_hops` delegations must run where it is.

A QUEUE'd request waits for this node's busy engine (a slot, then the engine's own queue) without
giving up on the network: every `reoffer_interval_s` until its first output, the policy is asked again
and, if it says OFFLOAD, the request is offered to peers exactly as above (same draw, probes, bans,
fees, signatures), as a stream. It keeps its place here meanwhile. Whichever produces output first
serves it: a peer's first output takes it out of the local queue (the engine never runs it); local
output first cancels an offer still under way (that peer has sent nothing, is not paid, and takes its
fee back). So a peer that accepts and then stalls costs the request nothing: it was never out of the
queue (T1 ends the offer and bans the peer).

Nothing here polls: a decision is made the moment a request arrives, and a RETRY waits only
`retry_delay_s` (paced, not ticked). A delegated answer streams back as a `RemoteStream`; `finish_remote`
checks the executor's signature against its registered key and the hashes of what was actually relayed,
and its work attestation (`ledger.work`, signed with its wallet: every field as this node sent or
relayed the request, the answer hash of the exact text relayed, issued within `WORK_CLOCK_SKEW_S` of
now), then owes the fee to the peer the request was handed to (it pays its own next hop in turn) in its fee
book (`node.managers.fees.FeeBook`: batched cumulative vouchers).

Duels (docs/duels.md). Before a user's request is first delegated, the origin draws whether it will duel
the answer (`Inspection`: `policy.p_inspect`, a random salt) and sends only the commitment with the
request (`DelegateBody.inspect`); every hop relays it unchanged. The user is always served by the
executor the dispatcher picked; once its answer is in and checked, a drawn duel is opened in the
background by the Duel manager (`duels.open_soon`), never on the request path.

Failure: a peer that fails before its first output is banned and the request re-dispatched; so is one
with no output within T1 (`first_output_timeout_s`), and, once output flows, one silent for T2
(`stream_idle_timeout_s`). A peer's answer always comes as a stream, also when the user waits for the
whole answer (`Dispatcher.generate` collects it), so T1 and T2 bound both; for a non-streaming request
nothing has reached the user before the end, so any failure is re-dispatched, T2 and a missing or wrong
work attestation included; a streaming request that already sent text ends with an OpenAI error event
if it fails or its result signature does, and keeps its text if only its work attestation fails (the
peer is banned and unpaid, and that answer cannot be dueled).

Observability (node.metrics, node.logs). Each request dispatched here binds its id to the log lines written
while it is served (a peer's request keeps its origin's id). A user's answered request is timed from dispatch
to its last token, and a stream to its first content chunk too (`_Answered`, fed by the streams' `on_delta`);
a peer's answered request is counted as executed here or relayed. The gauges read at scrape time (queues,
engine KV cache, the Ledger manager's stake, credit and transactions) are registered here, where every part
they read is at hand (`Dispatcher._watch`); nothing is read on the request path for them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from wwwserve.ledger.work import (
    WorkAttestation,
    WorkError,
)
from wwwserve.node import planner
from wwwserve.node.attestation import WorkTerms, check_result
from wwwserve.node.backends.base import GenerationRequest, GenerationResult, StreamDelta
from wwwserve.node.errors import (
    BackendUnavailableError,
    ModelNotFoundError,
    OverloadedError,
    UpstreamTimeoutError,
)
from wwwserve.node.extensions import DuelHooks, Inspection
from wwwserve.node.logs import bind_request_id
from wwwserve.node.managers.communication import (
    CommunicationManager,
    PeerFailedError,
    RemoteStream,
)
from wwwserve.node.managers.fees import FeeBook
from wwwserve.node.managers.offers import Delegation, LivePeers, Offers, Source
from wwwserve.node.managers.policy import PolicyManager
from wwwserve.node.managers.request import LocalStream, RequestManager
from wwwserve.node.metrics import GENERATION_DURATION, TIME_TO_FIRST_TOKEN, Metrics
from wwwserve.node.planner import DispatchLimits, PlanRequest
from wwwserve.node.policy import Action
from wwwserve.node.signing import SignedResult, SigningError, TokenUsage

__all__ = ["Dispatcher", "FeeLedger", "Inspection", "Source", "WorkTerms", "collect"]

logger = logging.getLogger(__name__)



ZERO32 = b"\x00" * 32


class FeeLedger(Protocol):
    """What dispatch needs from the Ledger manager (`node.managers.ledger.LedgerManager` fits): the peers'
    keys, the recent block hash routing seeds from, and the contract work is attested for."""

    contract_address: str

    def pubkey_of(self, address: str) -> bytes | None: ...

    def recent_block_hash(self) -> bytes: ...


class Dispatcher:
    """Decides where each request runs and drives delegations; see the module docstring."""

    def __init__(
        self,
        *,
        my_address: str,
        chain_id: int,
        requests: RequestManager,
        policy: PolicyManager,
        communication: CommunicationManager | None = None,
        ledger: FeeLedger | None = None,
        max_hops: int = 3,
        k_exec: int = 1,
        retry_delay_s: float = 0.1,
        metrics: Metrics | None = None,
        fees: FeeBook | None = None,
        reoffer_interval_s: float = 0.0,
        no_peer_wait_s: float = 30.0,
        max_redispatches: int = 8,
    ) -> None:
        self.my_address = my_address
        self.chain_id = chain_id
        self.requests = requests
        self.policy = policy
        self.communication = communication
        self.ledger = ledger
        # Every routing knob of the planner (node.planner), shared with the simulator.
        self.limits = DispatchLimits(max_hops=max_hops, k_exec=k_exec, retry_delay_s=retry_delay_s,
                                     request_timeout_s=requests.request_timeout_s, no_peer_wait_s=no_peer_wait_s,
                                     max_redispatches=max_redispatches)
        # Offering requests to peers, and re-offering queued ones (node.managers.offers).
        self.offers = Offers(my_address=my_address, requests=requests, policy=policy, communication=communication,
                             ledger=ledger, limits=self.limits, reoffer_interval_s=reoffer_interval_s,
                             count=self._count)
        self.metrics = metrics
        # What this node owes its peers (node.managers.fees): one fee per checked delegated answer.
        self.fees = fees if fees is not None else FeeBook(None, 0)
        # Set by the app when the node takes part in duels (the duel feature, node.extensions.DuelHooks).
        self.duels: DuelHooks | None = None
        if metrics is not None:
            self._watch(metrics)

    def _count(self, name: str, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, **labels)

    def _watch(self, metrics: Metrics) -> None:
        """The gauges read at scrape time from what the dispatcher holds (built once per node, it is handed
        every part they read): the Request manager's queues, the engines' KV caches and the Ledger manager's
        stake, credit and transactions (`LedgerManager.watch`)."""
        requests = self.requests
        metrics.sample("wwwserve_requests_running", lambda: requests.running)
        metrics.sample("wwwserve_requests_waiting",
                       lambda: {(source,): requests.waiting_from(source) for source in ("user", "node")})
        models = requests.model_manager
        metrics.sample("wwwserve_engine_kv_cache_usage_ratio",
                       lambda: {(name,): usage for name, usage in models.engine_kv_usage().items()} or None)
        watch = getattr(self.ledger, "watch", None)
        if watch is not None:
            watch(metrics)

    def _timed(self, greq: GenerationRequest, kind: str, source: Source, stream: bool) -> _Answered:
        """What observes `greq`'s answer for the metrics (and binds its id to the log lines from here on)."""
        bind_request_id(greq.request_id)
        return _Answered(self.metrics, kind, source, stream)

    # ---- planning ----------------------------------------------------------------------------

    def _serves(self, model: str) -> bool:
        return model in self.requests.model_manager.models()

    async def plan(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        route: Sequence[str] = (),
        source: Source = "user",
    ) -> RemoteStream | Literal[Action.LOCAL, Action.QUEUE]:
        """Where `greq` runs (see `_plan`), for a request not yet tried anywhere."""
        job = Delegation(greq, kind, raw_request, route, self.work_terms(greq, kind, raw_request, route), source)
        return await self._plan(job)

    async def _plan(self, job: Delegation, attempt: int = 0) -> RemoteStream | Literal[Action.LOCAL, Action.QUEUE]:
        """Where the job's request runs: `Action.LOCAL` (here, now: the engine is idle, or the request cannot
        leave), `Action.QUEUE` (here, on the busy engine: the caller offers it to peers again while it
        waits), or a peer: its stream, primed (its first output read), with the job's terms (what its work
        attestation must say) attached.

        The decisions are `node.planner.plan`'s (the simulator steps the same generator); this drives it
        on asyncio. `job.route` lists the nodes the request already passed (empty for a user's request);
        `job.avoid` collects peers that failed it, so a re-dispatch goes elsewhere; `attempt` counts the
        re-dispatches so far.
        """
        model = job.greq.model
        comm = self.communication
        request = PlanRequest(
            request_id=job.greq.request_id, model=model, route=tuple(job.route), serves=self._serves(model),
            network_serves=comm is not None and model in comm.network_models(), networked=comm is not None,
            attempt=attempt)
        loop = asyncio.get_running_loop()
        view = self.offers.view()

        def record(action: Action) -> None:
            self._count("wwwserve_dispatch_decisions_total", action=action.value)

        steps = planner.plan(request, view, self.limits, loop.time(), job.avoid, record)
        answer: object = None
        remote: RemoteStream | None = None
        while True:
            try:
                step = steps.send(answer)
            except StopIteration as stop:
                outcome: planner.Outcome = stop.value
                break
            if isinstance(step, planner.AskPolicy):
                answer = await (self.policy.fallback(model) if step.fallback else self.policy.decide(model))
            elif isinstance(step, planner.Offer):
                assert isinstance(view, LivePeers)
                remote = await self.offers.offer(job, view.peers(step.candidates))
                answer = planner.OfferResult(None if remote is None else remote.peer.address, now_s=loop.time())
            else:
                with self.requests.retrying(job.source):
                    await asyncio.sleep(max(0.0, step.until_s - loop.time()))
                answer = loop.time()
        if isinstance(outcome, planner.RunHere):
            return Action.QUEUE if outcome.queued else Action.LOCAL
        if isinstance(outcome, planner.Delegated):
            assert remote is not None
            logger.debug("delegated to %s", remote.peer.address)
            return remote
        if outcome.reason == "model_not_found":
            raise ModelNotFoundError(model)
        if outcome.reason == "overloaded":
            raise OverloadedError(
                f"No node of the network can take a request for model {model!r} now. Please retry shortly.",
                retry_after_s=1.0,
            )
        raise UpstreamTimeoutError("Every peer tried for this request failed. Please retry.")

    def work_terms(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        route: Sequence[str] = (),
        inspect: bytes | None = None,
    ) -> WorkTerms:
        """The terms of `greq`'s work: on a user's request (empty route) this node is the origin and draws
        its inspection (with the Duel manager's `should_inspect`, if it takes part in duels); a relaying
        hop passes on the origin's (`inspect`, 32 zero bytes if it sent none)."""
        if route:
            return WorkTerms(kind=kind, raw_request=raw_request, request_id=greq.request_id, model=greq.model,
                             origin=route[0], inspect=inspect if inspect is not None else ZERO32)
        draw = self.duels.should_inspect if self.duels is not None else None
        return WorkTerms(kind=kind, raw_request=raw_request, request_id=greq.request_id, model=greq.model,
                         origin=self.my_address, draw=draw)

    # ---- results -------------------------------------------------------------------------------

    def finish_remote(
        self,
        remote: RemoteStream,
        output_text: str,
        prompt: Sequence[Mapping[str, Any]] | str,
        usage: TokenUsage,
        *,
        strict_work: bool = True,
    ) -> tuple[SignedResult, WorkAttestation | None]:
        """Check a delegated result (`verify_remote`) and its work (`verify_work`), pay for it, and (at the
        origin) open the duel drawn for it; returns the attestations to pass on.

        A result that does not verify raises `PeerFailedError`. So does a work attestation that does not,
        with `strict_work`; without it (a stream whose text reached the user already) the peer is banned
        and not paid, and None is returned in place of the work: that answer cannot be dueled.
        """
        att = self.verify_remote(remote, output_text, prompt, usage)
        try:
            work = self.verify_work(remote, att, output_text)
        except PeerFailedError:
            if strict_work:
                raise
            logger.warning("%s: the user kept a streamed answer whose work attestation failed; no duel is "
                           "possible over it", remote.request.request_id)
            terms = remote.terms
            if isinstance(terms, WorkTerms) and terms.inspection is not None and terms.inspection.wants_duel:
                self._count("wwwserve_duels_total", event="unduelable")
            return att, None
        self._count("wwwserve_delegations_total", outcome="ok")
        self.fees.owe(remote.peer)
        terms = remote.terms
        if isinstance(terms, WorkTerms) and self.duels is not None:
            inspection = terms.inspection
            if inspection is not None and inspection.wants_duel:
                self.duels.open_soon(inspection, work, terms.kind, terms.raw_request, output_text)
        return att, work

    def verify_remote(
        self, stream: RemoteStream, output_text: str, prompt: Sequence[Mapping[str, Any]] | str, usage: TokenUsage
    ) -> SignedResult:
        """The executor's attestation of a delegated result, checked.

        It must be for this request and model, signed by the key the executor registered on-chain, over
        exactly `output_text`, `prompt` and `usage` (the executor may be further down a multi-hop route than
        the peer asked). A peer that fails this is banned and the failure raised as `PeerFailedError` (the
        output is never passed on as signed).
        """
        att = stream.attestation
        peer = stream.peer
        comm = self.communication

        def key_of(executor: str) -> bytes | None:
            key = self.ledger.pubkey_of(executor) if self.ledger is not None else None
            if key is None and comm is not None:
                key = comm.directory.pubkey_of(executor)
            return key

        try:
            check_result(att, stream.request.request_id, stream.request.model, key_of, output_text, prompt,
                         usage, chain_id=self.chain_id)
        except SigningError as exc:
            self._count("wwwserve_delegations_total", outcome="unverified")
            if comm is not None:
                comm.bans.fail(peer.address)
            raise PeerFailedError(peer.address, f"result does not verify: {exc}", started=stream.started) from None
        assert att is not None
        return att

    def verify_work(self, remote: RemoteStream, att: SignedResult, output_text: str) -> WorkAttestation:
        """The executor's work attestation of a delegated result, checked against what this node sent
        (`remote.terms`) and relayed (`output_text`); a peer that fails it is banned and the failure raised
        as `PeerFailedError`."""
        terms = remote.terms
        try:
            if not isinstance(terms, WorkTerms):
                raise WorkError("the terms of this delegation are unknown")
            contract = self.ledger.contract_address if self.ledger is not None else None
            if contract is None:
                raise WorkError("no contract to check work attestations against")
            return terms.check(remote.work, att.executor, output_text, chain_id=self.chain_id, contract=contract)
        except WorkError as exc:
            self._count("wwwserve_delegations_total", outcome="work_invalid")
            if self.communication is not None:
                self.communication.bans.fail(remote.peer.address)
            raise PeerFailedError(remote.peer.address, f"work attestation refused: {exc}",
                                  started=remote.started) from None

    async def generate(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        prompt: Sequence[Mapping[str, Any]] | str,
        route: Sequence[str] = (),
        source: Source = "user",
        inspect: bytes | None = None,
    ) -> tuple[GenerationResult, SignedResult | None, WorkAttestation | None]:
        """The whole answer, from here or a peer, with the executor's attestations (None, None: ran here,
        "sign it yourself"). `inspect`: the origin's commitment, on a delegated request.

        Nothing is sent before the end, so a peer failing at any point is replaced (re-dispatch).
        """
        answered = self._timed(greq, kind, source, stream=False)
        job = Delegation(greq, kind, raw_request, route, self.work_terms(greq, kind, raw_request, route, inspect),
                         source)
        for attempt in itertools.count():  # the planner refuses after `limits.max_redispatches` failures
            planned = await self._plan(job, attempt)
            if planned is Action.LOCAL:
                local = await self.requests.generate(greq, source=source)
                answered.done("local")
                return local, None, None
            try:
                if planned is Action.QUEUE:
                    # Run as a stream here, so its first output says when it left the engine's queue.
                    served = await self.offers.run_queued(job)
                    if isinstance(served, LocalStream):
                        queued = await collect(served)
                        answered.done("local")
                        return queued, None, None
                else:
                    assert isinstance(planned, RemoteStream)
                    served = planned
                # A peer's answer comes as a stream, so T1 and T2 bound it as any stream; the user has seen
                # nothing yet, so a peer failing at any point (silent past T2 included) is replaced.
                result = await collect(served)
                attestation, work = self.finish_remote(
                    served, result.text, prompt, TokenUsage(result.prompt_tokens, result.completion_tokens))
            except PeerFailedError as exc:
                logger.info("re-dispatching %s after %s", greq.request_id, exc)
                job.avoid.add(exc.address.lower())
                continue
            answered.done("peer")
            return result, attestation, work
        raise AssertionError("unreachable")  # pragma: no cover

    async def open_stream(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        prompt: Sequence[Mapping[str, Any]] | str,
        route: Sequence[str] = (),
        source: Source = "user",
        inspect: bytes | None = None,
    ) -> LocalStream | RemoteStream:
        """A primed stream from here or a peer (failures before the first output were re-dispatched); the
        caller checks a remote one with `finish_remote(strict_work=False)` when it ends."""
        answered = self._timed(greq, kind, source, stream=True)
        job = Delegation(greq, kind, raw_request, route, self.work_terms(greq, kind, raw_request, route, inspect),
                         source)
        planned = await self._plan(job)
        stream: LocalStream | RemoteStream
        if planned is Action.LOCAL:
            stream = await self.requests.open_stream(greq, source=source)
        elif planned is Action.QUEUE:
            stream = await self.offers.run_queued(job)
        else:
            assert isinstance(planned, RemoteStream)
            stream = planned
        answered.watch(stream)
        return stream


class _Answered:
    """Observes one request's answer for the metrics: a user's request in the generation histograms (from
    dispatch to its first content chunk, streams only, and to its last token), a peer's in
    `wwwserve_delegations_received_total` (executed here, or relayed to a further peer). Only answered
    requests are observed: a failure is in the HTTP counters by its status."""

    __slots__ = ("_first_seen", "kind", "metrics", "source", "started", "stream")

    def __init__(self, metrics: Metrics | None, kind: str, source: Source, stream: bool) -> None:
        self.metrics = metrics
        self.kind = kind
        self.source = source
        self.stream = stream
        self.started = time.perf_counter()
        self._first_seen = False

    def watch(self, served: LocalStream | RemoteStream) -> None:
        """Observe a stream's deltas as it hands them to the client."""
        if self.metrics is None:
            return
        executor = "peer" if isinstance(served, RemoteStream) else "local"

        def on_delta(delta: StreamDelta) -> None:
            if delta.text and not self._first_seen:
                self._first_seen = True
                if self.source == "user" and self.metrics is not None:
                    self.metrics.record(TIME_TO_FIRST_TOKEN, time.perf_counter() - self.started, kind=self.kind,
                                        executor=executor)
            if delta.is_final:
                self.done(executor)

        served.on_delta = on_delta

    def done(self, executor: str) -> None:
        """The answer is complete; `executor` is "local" (this node's engine) or "peer"."""
        if self.metrics is None:
            return
        if self.source == "user":
            self.metrics.record(GENERATION_DURATION, time.perf_counter() - self.started, kind=self.kind,
                                stream="true" if self.stream else "false", executor=executor)
        else:
            self.metrics.count("wwwserve_delegations_received_total",
                               outcome="executed" if executor == "local" else "relayed")


async def collect(stream: LocalStream | RemoteStream) -> GenerationResult:
    """A stream's whole answer (it is closed in any case). A peer failing on the way raises
    `PeerFailedError` (nothing reached the user: the caller can re-dispatch)."""
    pieces: list[str] = []
    final: StreamDelta | None = None
    try:
        async for delta in stream:
            pieces.append(delta.text)
            if delta.is_final:
                final = delta
    finally:
        await stream.aclose()
    if final is None or final.finish_reason is None:
        raise BackendUnavailableError("The model backend ended the answer unexpectedly. Please retry.")
    return GenerationResult(text="".join(pieces), finish_reason=final.finish_reason,
                            prompt_tokens=final.prompt_tokens or 0, completion_tokens=final.completion_tokens or 0)
