"""Offering a request to peers (DESIGN §3), the live half of the planner's `Offer` step, and the re-offer
race of a request queued on this node's busy engine.

An offer goes to the drawn candidates in order: the first gets the request with its probe folded in (it
runs it only if it would have accepted the probe), saving a round trip in the common case; if it
declines, the others are probed in parallel and the first acceptor in candidate order gets the request
over the signed peer API. A queued request waits for this node's engine without giving up on the
network: every `reoffer_interval_s` until its first output the policy is asked again and, on OFFLOAD,
the request is offered exactly as above; whichever produces output first serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from wwwserve.node import planner
from wwwserve.node.attestation import WorkTerms
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.errors import NodeError
from wwwserve.node.managers.communication import (
    CommunicationManager,
    DelegateBody,
    PeerDeclinedError,
    PeerFailedError,
    ProbeBody,
    RemoteStream,
)
from wwwserve.node.managers.policy import PolicyManager
from wwwserve.node.managers.request import LocalStream, RequestManager
from wwwserve.node.planner import DispatchLimits
from wwwserve.node.policy import Action
from wwwserve.node.routing import Peer, candidates_for_delegation

__all__ = ["Delegation", "LivePeers", "NoPeers", "Offers", "PeerKeys", "Source", "streamed_request"]

logger = logging.getLogger(__name__)

Source = Literal["user", "node"]


class PeerKeys(Protocol):
    """What offering needs of the Ledger manager: the recent block hash PoS draws are seeded from."""

    def recent_block_hash(self) -> bytes: ...


class LivePeers:
    """The planner's `PeerView` of a live node: its registry (`routable_peers`: staked, not banned, not
    itself, a usable endpoint) and the chain's recent block hash."""

    def __init__(self, comm: CommunicationManager, ledger: PeerKeys | None, my_address: str) -> None:
        self._comm = comm
        self._ledger = ledger
        self._me = my_address
        self._seen: dict[str, Peer] = {}

    def _routable(self, model: str, exclude: frozenset[str]) -> list[Peer]:
        return [p for p in self._comm.routable_peers(model) if p.address.lower() not in exclude]

    def any_routable(self, model: str, exclude: frozenset[str]) -> bool:
        return bool(self._routable(model, exclude))

    def draw(self, model: str, route: Sequence[str], seed: bytes, k: int, exclude: frozenset[str]) -> list[str]:
        drawn = candidates_for_delegation(self._routable(model, exclude), self._me, route, seed, k, model)
        self._seen.update((peer.address, peer) for peer in drawn)
        return [peer.address for peer in drawn]

    def peers(self, addresses: Sequence[str]) -> list[Peer]:
        """The drawn peers behind `addresses` (endpoints included)."""
        return [self._seen[address] for address in addresses]

    def block_hash(self) -> bytes:
        return self._ledger.recent_block_hash() if self._ledger is not None else b""


class NoPeers:
    """The `PeerView` of a node without peers (the planner never offers there)."""

    def any_routable(self, model: str, exclude: frozenset[str]) -> bool:
        return False

    def draw(self, model: str, route: Sequence[str], seed: bytes, k: int, exclude: frozenset[str]) -> list[str]:
        return []

    def block_hash(self) -> bytes:
        return b""


_NO_PEERS = NoPeers()


@dataclass
class Delegation:
    """One request as this node may hand it on: what it is, where it came from, what its executor must
    attest (`terms`), who sent it here (`source`), and the peers that failed it so far (`avoid`)."""

    greq: GenerationRequest
    kind: Literal["chat", "completion"]
    raw_request: Mapping[str, Any]
    route: Sequence[str]
    terms: WorkTerms
    source: Source = "user"
    avoid: set[str] = field(default_factory=set)


class Offers:
    """Offers requests to peers for one node (see the module docstring)."""

    def __init__(self, *, my_address: str, requests: RequestManager, policy: PolicyManager,
                 communication: CommunicationManager | None, ledger: PeerKeys | None, limits: DispatchLimits,
                 reoffer_interval_s: float = 0.0, count: Callable[..., None] | None = None) -> None:
        self.my_address = my_address
        self.requests = requests
        self.policy = policy
        self.communication = communication
        self.ledger = ledger
        self.limits = limits
        # How often a QUEUE'd request still waiting for its first output here is offered to peers again (0: never).
        self.reoffer_interval_s = reoffer_interval_s
        self._count = count or (lambda *_a, **_k: None)

    def view(self) -> LivePeers | NoPeers:
        """The planner's view of the peers now."""
        comm = self.communication
        return LivePeers(comm, self.ledger, self.my_address) if comm is not None else _NO_PEERS

    async def offer_drawn(self, job: Delegation) -> RemoteStream | None:
        """One offer outside the planner (a queued request offered again): the planner's draw, then `offer`."""
        comm = self.communication
        assert comm is not None
        view = LivePeers(comm, self.ledger, self.my_address)
        drawn, _ = planner.draw(view, job.greq.request_id, job.greq.model, job.route, self.limits, job.avoid)
        if not drawn:
            return None
        return await self.offer(job, view.peers(drawn))

    async def offer(self, job: Delegation, candidates: Sequence[Peer]) -> RemoteStream | None:
        """`candidates` in order: the first gets the request with its probe folded in, then the others are
        probed in parallel and the first acceptor in candidate order gets it. A peer that fails is added to
        `job.avoid`. Returns the taker's primed stream (the job's terms attached), or None."""
        comm = self.communication
        assert comm is not None and candidates
        greq, kind, avoid = job.greq, job.kind, job.avoid
        onward = [*job.route, self.my_address]
        request = streamed_request(job.raw_request)
        inspect = "0x" + job.terms.inspect.hex()  # the origin's draw happens here, before any answer exists

        async def delegate(peer: Peer, accept_check: bool) -> RemoteStream | None:
            body = DelegateBody(request_id=greq.request_id, kind=kind, request=request, route=onward,
                                accept_check=accept_check, inspect=inspect)
            try:
                return await comm.open_delegation(peer, body, greq)
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
        remote = await delegate(candidates[0], accept_check=True)
        if remote is not None:
            remote.terms = job.terms
            return remote
        rest = candidates[1:]
        probe = ProbeBody(request_id=greq.request_id, model=greq.model, route=onward)
        probes = [asyncio.ensure_future(comm.probe(peer, probe)) for peer in rest]
        try:
            for peer, answer in zip(rest, probes, strict=True):
                if await answer:
                    remote = await delegate(peer, accept_check=False)
                    if remote is not None:
                        remote.terms = job.terms
                        return remote
            return None
        finally:
            for task in probes:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*probes, return_exceptions=True)

    # ---- a queued request, re-offered while it waits -------------------------------------------

    async def run_queued(self, job: Delegation) -> LocalStream | RemoteStream:
        """The job's request on this node's busy engine, primed (its first output read), unless a peer's output comes
        first: then the peer's primed stream (its `terms` attached), and the request has left the local
        queue. Every `reoffer_interval_s` while it waits, the policy is asked again and on OFFLOAD the
        request is offered to the peers `plan` would draw (`job.avoid`: those that failed it).

        The local request keeps its place (the slot FIFO, then the engine's queue) through every offer; an
        offer under way when local output comes first is cancelled (the peer aborts, unpaid). Errors of the
        local run are raised as before; a peer refusing the request itself only ends the offers.
        """
        comm = self.communication
        interval = self.reoffer_interval_s
        greq, source = job.greq, job.source
        if comm is None or interval <= 0 or len(job.route) >= self.limits.max_hops:
            return await self.requests.open_stream(greq, source=source)
        loop = asyncio.get_running_loop()
        local = asyncio.ensure_future(self.requests.open_stream(greq, source=source))
        offer: asyncio.Future[RemoteStream | None] | None = None
        served: LocalStream | RemoteStream | None = None
        next_offer_s = loop.time() + interval
        try:
            while True:
                pending: set[asyncio.Future[Any]] = {local} if offer is None else {local, offer}
                timeout = None if offer is not None else max(0.0, next_offer_s - loop.time())
                await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if local.done():  # local output first (or the local run failed: its error is the answer)
                    served = local.result()
                    return served
                if offer is not None:  # the offer ended (wait had no timeout)
                    remote = self._offer_result(offer, greq)
                    offer = None
                    if remote is False:
                        interval = math.inf  # a peer refused the request itself: the engine here decides
                    self._count("wwwserve_reoffers_total", outcome="taken" if remote else "none")
                    if remote:
                        served = remote
                        return served
                    next_offer_s = loop.time() + interval
                    continue
                peers = await self._reoffer_peers(greq.model, job.avoid)
                if peers:
                    offer = asyncio.ensure_future(self.offer_drawn(job))
                else:
                    next_offer_s = loop.time() + interval
        finally:
            # Whatever did not serve the request is stopped and its stream closed (the client may have left:
            # then both). Shielded: a cancellation arriving meanwhile must not leave a slot or a peer held.
            await asyncio.shield(_abandon([w for w in (local, offer) if w is not None], keep=served))

    def _offer_result(
        self, offer: asyncio.Future[RemoteStream | None], greq: GenerationRequest
    ) -> RemoteStream | Literal[False] | None:
        """An ended offer's stream; None when no peer took it; False when a peer refused the request itself
        (an OpenAI 4xx about it, e.g. too long for that peer's model)."""
        try:
            return offer.result()
        except NodeError as exc:
            logger.info("re-offering %s stopped: a peer refused it: %s", greq.request_id, exc)
            return False

    async def _reoffer_peers(self, model: str, avoid: set[str]) -> list[Peer]:
        """The peers to offer a queued request to now: none unless the policy says OFFLOAD again (it also
        says LOCAL when the engine here has room, and needs credit to pay a peer)."""
        comm = self.communication
        if comm is None or (await self.policy.decide(model)).action != Action.OFFLOAD:
            return []
        return [p for p in comm.routable_peers(model) if p.address.lower() not in avoid]


async def _abandon(works: Sequence[asyncio.Future[Any]], keep: object) -> None:
    """Stop `works` (cancelled, each closes what it opened) and close any stream one of them produced, but
    `keep`. A failure of one is logged unless it is a `NodeError` (those were seen or are moot)."""
    if not works:
        return
    for work in works:
        if not work.done():
            work.cancel()
    await asyncio.wait(works)
    for work in works:
        if work.cancelled():
            continue
        error = work.exception()
        if error is not None:
            if not isinstance(error, NodeError | PeerFailedError):
                logger.warning("abandoned work failed", exc_info=error)
            continue
        result = work.result()
        if result is not None and result is not keep:
            with contextlib.suppress(Exception):
                await result.aclose()


def streamed_request(raw_request: Mapping[str, Any]) -> dict[str, Any]:
    """The request as the executor gets it: always streamed, usage always reported (for the fee record)."""
    body = dict(raw_request)
    body["stream"] = True
    options = body.get("stream_options")
    body["stream_options"] = {**(options if isinstance(options, Mapping) else {}), "include_usage": True}
    return body
