"""Dispatch, the decision half of the Request manager: run here, or delegate to a peer chosen by stake.

For each request (a user's, or a peer's delegated one) `Dispatcher.plan` asks the policy (DESIGN §2):
LOCAL or QUEUE → the caller runs it on this node's Request manager; OFFLOAD → `k_exec + 2` candidates are
drawn by PoS from the registry (never this node, never a node already on the route, never a banned
peer); the first gets the request with its probe folded in (it runs it only if it would accept the
probe), and if it declines the others are probed in parallel and the first acceptor in candidate order
gets the request over the signed peer API; no acceptor → the policy's fallback (QUEUE or RETRY after
`retry_delay_s`). A request for a model this node does not serve is always offloaded. A route of
`max_hops` delegations must run where it is.

Nothing here polls: a decision is made the moment a request arrives, and a RETRY waits only
`retry_delay_s` (paced, not ticked). A delegated answer streams back as a `RemoteStream`; `finish_remote`
checks the executor's signature against its registered key and the hashes of what was actually relayed,
then owes the fee to the peer the request was handed to (it pays its own next hop in turn); fees owed
are paid by one cumulative voucher per peer every `fee_flush_interval_s`.

Failure: a peer that fails before its first output is banned and the request re-dispatched; for a
non-streaming request nothing has reached the user yet, so any failure is re-dispatched
(`Dispatcher.generate`, which also asks the peer for one whole JSON answer instead of a stream); a
streaming request that already sent text ends with an OpenAI error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

from node.backends.base import GenerationRequest, GenerationResult
from node.errors import ModelNotFoundError, OverloadedError, UpstreamTimeoutError
from node.managers.communication import (
    CommunicationManager,
    DelegateBody,
    PeerDeclinedError,
    PeerFailedError,
    ProbeBody,
    RemoteAnswer,
    RemoteStream,
)
from node.managers.policy import PolicyManager
from node.managers.request import LocalStream, RequestManager
from node.metrics import Metrics
from node.policy import Action
from node.routing import Peer, candidates_for_delegation, selection_seed
from node.signing import SignedResult, SigningError, verify_result

if TYPE_CHECKING:  # duel.py imports this module
    from node.managers.duel import DuelRace

__all__ = ["Dispatcher", "FeeLedger", "Source"]

logger = logging.getLogger(__name__)

Source = Literal["user", "node"]

NO_PEER_WAIT_S = 30.0
"""Longest a request for a model served only elsewhere waits for a peer to accept, before a 503."""

MAX_REDISPATCHES = 8
"""Peers one request may try after failures before the user gets the error."""


class FeeLedger(Protocol):
    """What dispatch needs from the Ledger manager (`node.managers.ledger.LedgerManager` fits)."""

    def pubkey_of(self, address: str) -> bytes | None: ...

    def recent_block_hash(self) -> bytes: ...

    def record_fee(self, executor: str, fee_wei: int) -> Any: ...


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
        fee_wei: int = 0,
        max_hops: int = 3,
        k_exec: int = 1,
        retry_delay_s: float = 0.1,
        metrics: Metrics | None = None,
        fee_flush_interval_s: float = 0.5,
    ) -> None:
        self.my_address = my_address
        self.chain_id = chain_id
        self.requests = requests
        self.policy = policy
        self.communication = communication
        self.ledger = ledger
        self.fee_wei = fee_wei
        self.max_hops = max_hops
        self.k_exec = k_exec
        self.retry_delay_s = retry_delay_s
        self._fee_warned = False
        self.metrics = metrics
        self.fee_flush_interval_s = fee_flush_interval_s
        self._dues: dict[str, tuple[Any, int]] = {}  # peer address (lower) -> (peer, wei owed, no voucher yet)
        # Set by the app when the node takes part in duels (node.managers.duel.DuelManager).
        self.duels: Any = None
        self._flusher: asyncio.Task[None] | None = None

    def _count(self, name: str, **labels: str) -> None:
        if self.metrics is not None:
            self.metrics.count(name, **labels)

    # ---- planning ----------------------------------------------------------------------------

    def _serves(self, model: str) -> bool:
        return model in self.requests.model_manager.models()

    async def plan(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        route: Sequence[str] = (),
        avoid: set[str] | None = None,
        streamed: bool = True,
        race: DuelRace | None = None,
    ) -> RemoteStream | RemoteAnswer | None:
        """None: run `greq` here (LOCAL/QUEUE). Otherwise the peer's answer: its primed stream, or (with
        `streamed=False`) its whole answer.

        `route` lists the nodes the request already passed (empty for a user's request); `avoid` collects
        peers that failed this request, so a re-dispatch goes elsewhere. With a `race` (a user's whole
        request that may become a duel), the first delegation races a second executor's (`DuelRace`).
        """
        model = greq.model
        local = self._serves(model)
        comm = self.communication
        if comm is None or len(route) >= self.max_hops:
            if not local:
                raise ModelNotFoundError(model)
            return None
        if not local and model not in comm.network_models():
            raise ModelNotFoundError(model)
        loop = asyncio.get_running_loop()
        wait_s = self.requests.request_timeout_s if local else min(NO_PEER_WAIT_S, self.requests.request_timeout_s)
        deadline = loop.time() + wait_s
        avoid = set() if avoid is None else avoid
        while True:
            action = Action.OFFLOAD if not local else (await self.policy.decide(model)).action
            peers = comm.routable_peers(model) if action == Action.OFFLOAD else []
            if action == Action.OFFLOAD and local and not peers:
                # Nobody else serves this model (or every such peer is banned): waiting for one is only
                # delay, so the request queues here.
                action = Action.QUEUE
            self._count("wwwserve_dispatch_decisions_total", action=action.value)
            if action in (Action.LOCAL, Action.QUEUE):
                return None
            if action == Action.OFFLOAD:
                remote = await self._offload(greq, kind, raw_request, route, peers, avoid, streamed, race)
                if remote is not None:
                    return remote
                if local:
                    action = (await self.policy.fallback(model)).action
                    self._count("wwwserve_dispatch_decisions_total", action=action.value)
                    if action == Action.QUEUE:
                        return None
            if loop.time() + self.retry_delay_s > deadline:
                if local:
                    return None  # waited long enough for the network: take it on the local queue
                raise OverloadedError(
                    f"No node of the network can take a request for model {model!r} now. Please retry shortly.",
                    retry_after_s=1.0,
                )
            await asyncio.sleep(self.retry_delay_s)

    async def _offload(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        route: Sequence[str],
        routable: Sequence[Peer],
        avoid: set[str],
        streamed: bool,
        race: DuelRace | None = None,
    ) -> RemoteStream | RemoteAnswer | None:
        comm = self.communication
        assert comm is not None  # plan() checked
        # Never a peer a duel's rival asked: it would get this request id a second time.
        peers = [p for p in routable if p.address.lower() not in avoid and (race is None or
                                                                             p.address.lower() not in race.asked)]
        if not peers:
            return None
        block_hash = self.ledger.recent_block_hash() if self.ledger is not None else b""
        seed = selection_seed(greq.request_id, block_hash, len(route))
        candidates = candidates_for_delegation(peers, self.my_address, route, seed, self.k_exec, greq.model)
        if not candidates:
            return None
        onward = [*route, self.my_address]
        request = streamed_request(raw_request) if streamed else whole_request(raw_request)

        async def delegate(peer: Peer, accept_check: bool) -> RemoteStream | RemoteAnswer | None:
            body = DelegateBody(request_id=greq.request_id, kind=kind, request=request, route=onward,
                                accept_check=accept_check)
            try:
                if streamed:
                    return await comm.open_delegation(peer, body, greq)
                return await comm.delegate_whole(peer, body, greq)
            except PeerDeclinedError:
                return None
            except PeerFailedError as exc:
                self._count("wwwserve_delegations_total", outcome="failed")
                logger.info("delegation of %s to %s failed: %s", greq.request_id, peer.address, exc)
                avoid.add(peer.address.lower())
                return None

        # The first candidate's probe travels with the request itself (it runs it only if it would have
        # accepted the probe), saving a round trip in the common case; the others are then probed in
        # parallel and the first acceptor in candidate order executes (DESIGN §3).
        if race is not None:
            # A possible duel: a second executor (never this first candidate) starts now, and the user
            # gets whichever answer arrives first (whole and verified, or a stream's first output).
            race.start(exclude=[*route, candidates[0].address], streamed=streamed)
            remote = await race.first_of(asyncio.ensure_future(delegate(candidates[0], accept_check=True)))
        else:
            remote = await delegate(candidates[0], accept_check=True)
        if remote is not None:
            return remote
        # A peer running this request's duel copy must not get the same request id a second time.
        rest = [p for p in candidates[1:] if race is None or p.address.lower() not in race.asked]
        probe = ProbeBody(request_id=greq.request_id, model=greq.model, route=onward)
        probes = [asyncio.ensure_future(comm.probe(peer, probe)) for peer in rest]
        try:
            for peer, answer in zip(rest, probes, strict=True):
                if await answer:
                    remote = await delegate(peer, accept_check=False)
                    if remote is not None:
                        return remote
            return None
        finally:
            for task in probes:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*probes, return_exceptions=True)

    # ---- results -------------------------------------------------------------------------------

    def finish_remote(
        self, stream: RemoteStream | RemoteAnswer, output_text: str, prompt: Sequence[Mapping[str, Any]] | str
    ) -> SignedResult:
        """Check a delegated result (`verify_remote`) and pay for it; returns the attestation to pass on."""
        att = self.verify_remote(stream, output_text, prompt)
        self._count("wwwserve_delegations_total", outcome="ok")
        self._pay(stream.peer.address, stream.peer)
        return att

    def verify_remote(
        self, stream: RemoteStream | RemoteAnswer, output_text: str, prompt: Sequence[Mapping[str, Any]] | str
    ) -> SignedResult:
        """The executor's attestation of a delegated result, checked.

        It must be for this request and model, signed by the key the executor registered on-chain, over
        exactly `output_text` and `prompt` (the executor may be further down a multi-hop route than the
        peer asked). A peer that fails this is banned and the failure raised as `PeerFailedError` (the
        output is never passed on as signed).
        """
        att = stream.attestation
        peer = stream.peer
        comm = self.communication
        try:
            if att is None:
                raise SigningError("no attestation")
            if att.request_id != stream.request.request_id or att.claim.model != stream.request.model:
                raise SigningError("attestation is for another request or model")
            key = self.ledger.pubkey_of(att.executor) if self.ledger is not None else None
            if key is None and comm is not None:
                key = comm.directory.pubkey_of(att.executor)
            if key is None:
                raise SigningError(f"executor {att.executor} has no registered key")
            verify_result(att, key, output_text, prompt, expected_chain_id=self.chain_id)
        except SigningError as exc:
            self._count("wwwserve_delegations_total", outcome="unverified")
            if comm is not None:
                comm.bans.fail(peer.address)
            raise PeerFailedError(peer.address, f"result does not verify: {exc}", started=stream.started) from None
        return att

    def _pay(self, address: str, peer: Any) -> None:
        """Owe `peer` one fee; a voucher covering every fee owed to it leaves within `fee_flush_interval_s`.

        Batched because a voucher costs an EIP-712 signature, a durable write and an HTTP call: per
        request that was most of a hop's cost. The voucher is cumulative, so one per interval per peer
        pays everything; the fees owed meanwhile count against the credit the policy sees.
        """
        if self.ledger is None or self.fee_wei <= 0:
            return
        key = address.lower()
        owed = self._dues.get(key)
        self._dues[key] = (peer, (owed[1] if owed is not None else 0) + self.fee_wei)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def pending_fees_wei(self) -> int:
        """Fees owed to peers that no voucher covers yet."""
        return sum(amount for _, amount in self._dues.values())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.fee_flush_interval_s)
        await self.flush_fees()

    async def flush_fees(self) -> None:
        """Record (durably, then signed) and send one voucher per peer for the fees owed so far."""
        dues, self._dues = self._dues, {}
        if self.ledger is None:
            return
        for peer, amount in dues.values():
            try:
                # Off the event loop: the store's durable commit and the signature take milliseconds.
                voucher = await asyncio.to_thread(self.ledger.record_fee, peer.address, amount)
            except Exception as exc:
                if not self._fee_warned:
                    logger.warning("cannot pay peers (fee voucher not recorded): %s", exc)
                    self._fee_warned = True
                continue
            if self.communication is not None:
                self.communication.send_voucher_soon(peer, voucher.to_json())

    async def aclose(self) -> None:
        """Pay what is owed before the node stops."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_fees()

    def _race(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        prompt: Sequence[Mapping[str, Any]] | str,
        route: Sequence[str],
        source: Source,
    ) -> DuelRace | None:
        """A duel race for a user's request when this node takes part in duels (a delegated one never)."""
        if self.duels is None or source != "user" or route:
            return None
        race: DuelRace = self.duels.race(greq, kind, raw_request, prompt)
        return race

    async def generate(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        prompt: Sequence[Mapping[str, Any]] | str,
        route: Sequence[str] = (),
        source: Source = "user",
    ) -> tuple[GenerationResult, SignedResult | None]:
        """The whole answer, from here or a peer; None as attestation means "sign it yourself".

        Nothing is sent before the end, so a peer failing at any point is replaced (re-dispatch).
        """
        avoid: set[str] = set()
        race = self._race(greq, kind, raw_request, prompt, route, source)
        try:
            for _ in range(MAX_REDISPATCHES):
                remote = await self.plan(greq, kind, raw_request, route, avoid, streamed=False, race=race)
                if remote is None:
                    if race is not None:
                        race.cancel()
                        race = None
                    return await self.requests.generate(greq, source=source), None
                assert isinstance(remote, RemoteAnswer)  # plan(streamed=False) never returns a stream
                try:
                    attestation = self.finish_remote(remote, remote.result.text, prompt)
                except PeerFailedError as exc:
                    logger.info("re-dispatching %s after %s", greq.request_id, exc)
                    avoid.add(exc.address.lower())
                    continue
                if race is not None:
                    race.served(remote.result.text, attestation)
                    race = None
                return remote.result, attestation
            raise UpstreamTimeoutError("Every peer tried for this request failed. Please retry.")
        finally:
            if race is not None:  # failed, cancelled, or ran here: no duel
                race.cancel()

    async def open_stream(
        self,
        greq: GenerationRequest,
        kind: Literal["chat", "completion"],
        raw_request: Mapping[str, Any],
        prompt: Sequence[Mapping[str, Any]] | str,
        route: Sequence[str] = (),
        source: Source = "user",
    ) -> tuple[LocalStream | RemoteStream, DuelRace | None]:
        """A primed stream from here or a peer (failures before the first output were re-dispatched), and
        its duel race, if one was drawn: the caller reports the served answer to it once the stream ended
        (`DuelRace.served`, after `finish_remote`) and always cancels it when the stream closes."""
        race = self._race(greq, kind, raw_request, prompt, route, source)
        try:
            remote = await self.plan(greq, kind, raw_request, route, set(), race=race)
            if remote is None:
                if race is not None:
                    race.cancel()
                return await self.requests.open_stream(greq, source=source), None
        except BaseException:
            if race is not None:
                race.cancel()
            raise
        assert isinstance(remote, RemoteStream)
        return remote, race if race is not None and race.rival is not None else None


def whole_request(raw_request: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the executor gets it when the user waits for the whole answer: not streamed."""
    body = dict(raw_request)
    body["stream"] = False
    body.pop("stream_options", None)
    return body


def streamed_request(raw_request: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the executor gets it: always streamed, usage always reported (for the fee record)."""
    body = dict(raw_request)
    body["stream"] = True
    options = body.get("stream_options")
    body["stream_options"] = {**(options if isinstance(options, Mapping) else {}), "include_usage": True}
    return body
