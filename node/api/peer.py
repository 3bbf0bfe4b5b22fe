"""The peer API, receiving side: every message a signed envelope from a registered node, checked before
anything runs, cheap checks first (Bittensor's blacklist → priority → verify: an unregistered sender or
one over its rate costs a lookup, before the body is read or a signature checked).

- `POST /peer/probe`     {request_id, model, route} → {accept}: would this node take the request now?
- `POST /peer/delegate`  {request_id, kind, request, route, accept_check, inspect} → the answer (SSE), with
  this node's (or its next hop's) work attestation; billed to the sender, refunded if unanswered.
- `POST /peer/voucher`   a signed fee voucher from an origin that owes this node.
- Features add paths of their own (`NodeFeature.peer_routes`: the duel feature's `/peer/evidence`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from wwwserve.node.api.completions import CompletionsServing
from wwwserve.node.api.io import parse_json_object, read_body, validate
from wwwserve.node.billing import PeerBilling, PeerStanding
from wwwserve.node.envelope import HEADER_SENDER, EnvelopeError
from wwwserve.node.errors import (
    BackendUnavailableError,
    InvalidRequestError,
    PaymentRequiredError,
    PeerRejectedError,
    ProbeDeclinedError,
    RateLimitError,
)
from wwwserve.node.extensions import PeerHandler
from wwwserve.node.logs import bind_request_id
from wwwserve.node.managers.communication import (
    PATH_DELEGATE,
    PATH_PROBE,
    PATH_VOUCHER,
    CommunicationManager,
    DelegateBody,
    ProbeBody,
)
from wwwserve.node.managers.policy import PolicyManager
from wwwserve.node.metrics import Metrics
from wwwserve.node.serving import PeerRateLimiter
from wwwserve.node.settings import NodeSettings

__all__ = ["PeerAPI", "PeerLedger"]

logger = logging.getLogger(__name__)

class PeerLedger(Protocol):
    """What the peer API needs of the Ledger manager: the senders' standing and their vouchers."""

    def standing(self, address: str) -> PeerStanding: ...

    def accept_voucher(self, voucher: Any) -> int: ...


class PeerAPI:
    """The handlers of the peer API of one node (see the module docstring)."""

    def __init__(self, settings: NodeSettings, communication: CommunicationManager, serving: CompletionsServing,
                 policy: PolicyManager, ledger: PeerLedger | None, billing: PeerBilling, metrics: Metrics) -> None:
        self.settings = settings
        self.comm = communication
        self.serving = serving
        self.policy = policy
        self.ledger = ledger
        self.billing = billing
        self.metrics = metrics
        peers = settings.peers
        self.limiter = PeerRateLimiter(peers.rate_limit_per_s, 2 * peers.rate_limit_per_s)
        self.me = serving.signer.node_address.lower()

    def _count(self, path: str, outcome: str) -> None:
        self.metrics.count("wwwserve_peer_messages_total", path=path, outcome=outcome)

    async def verified(self, request: Request, path: str) -> tuple[str, dict[str, Any]]:
        """The sender and the JSON body of a peer message, once its envelope checks out."""
        claimed = request.headers.get(HEADER_SENDER, "")
        if not claimed or self.comm.directory.pubkey_of(claimed) is None:
            self._count(path, "rejected")
            raise PeerRejectedError("peer message rejected: the sender is not a registered node", 401)
        wait = self.limiter.take(claimed, request.client.host if request.client else "", time.monotonic())
        if wait is not None:
            self._count(path, "rate_limited")
            raise RateLimitError("Too many peer messages from this sender; retry later.", retry_after_s=wait)
        server = self.settings.server
        body = await read_body(request, server.max_body_bytes, server.body_timeout_s)
        try:
            sender = self.comm.verifier.verify(request.headers, body, path=path)
        except EnvelopeError as exc:
            self._count(path, "rejected")
            raise PeerRejectedError(f"peer message rejected: {exc}", exc.http_status) from None
        self._count(path, "accepted")
        return sender, parse_json_object(body)

    async def probe(self, request: Request) -> Response:
        sender, data = await self.verified(request, PATH_PROBE)
        probe = validate(ProbeBody, data)
        on_route = any(hop.lower() == self.me for hop in probe.route)
        accept = not on_route and bool(probe.route) and probe.route[-1].lower() == sender.lower()
        # A node that cannot sign work takes no delegations: its answers could never be dueled.
        accept = accept and self.serving.work_signer.ready and await self.policy.accept_probe(probe.model)
        return JSONResponse({"accept": accept})

    async def delegate(self, request: Request) -> Response:
        sender, data = await self.verified(request, PATH_DELEGATE)
        body = validate(DelegateBody, data)
        # The origin's request id, on this node's log lines about it too (node.logs).
        bind_request_id(body.request_id)
        logger.debug("delegation from %s, %d hop(s) so far", sender, len(body.route))
        max_hops = self.settings.peers.max_hops
        if body.route[-1].lower() != sender.lower():
            raise InvalidRequestError("The route must end with the sending node.", param="route")
        if any(hop.lower() == self.me for hop in body.route):
            raise InvalidRequestError("This node is already on the route (a cycle).", param="route")
        if len(body.route) > max_hops:
            raise InvalidRequestError(f"The route is longer than {max_hops} hops.", param="route")
        if not self.serving.work_signer.ready:
            raise ProbeDeclinedError("This node cannot sign work attestations (its wallet is locked); it takes "
                                     "no delegations.")
        model = body.request.get("model")
        if body.accept_check and not (isinstance(model, str) and await self.policy.accept_probe(model)):
            raise ProbeDeclinedError()
        # Peers pay or are not served: the fee is billed now and taken back if no answer comes of it.
        ledger, billing = self.ledger, self.billing
        refusal = billing.refusal(sender, ledger.standing(sender)) if ledger is not None else None
        if refusal is not None:
            self._count(PATH_DELEGATE, "payment_required")
            raise PaymentRequiredError(f"Delegation refused: {refusal}.")
        if ledger is not None:
            billing.bill(sender)
        # A stream that ends without its signed answer (the origin abandoned it: T1, a re-offer it no longer
        # needed, its user left) will not be paid for: its fee is taken back, or an honest origin would drift
        # towards the credit limit one abandoned stream at a time.
        unbill = (lambda: billing.refund(sender)) if ledger is not None else None
        try:
            return await self.serving.serve(body.kind, body.request, body.route, "node", request_id=body.request_id,
                                            inspect=body.inspect_bytes(), receive=request.receive,
                                            on_unanswered=unbill)
        except BaseException:
            if ledger is not None:
                billing.refund(sender)
            raise

    async def voucher(self, request: Request) -> Response:
        sender, data = await self.verified(request, PATH_VOUCHER)
        from wwwserve.node.vouchers import SignedVoucher, VoucherError

        if self.ledger is None:
            raise BackendUnavailableError("This node keeps no ledger; it cannot take vouchers.")
        try:
            voucher = SignedVoucher.from_json(data)
            if voucher.origin.lower() != sender.lower():
                raise InvalidRequestError("A voucher must come from its origin.", param="origin")
            earned = self.ledger.accept_voucher(voucher)
        except VoucherError as exc:
            raise InvalidRequestError(f"Voucher refused: {exc}", param="voucher") from None
        return JSONResponse({"accepted": True, "earned_wei": str(earned)})

    def feature_route(self, path: str, handler: PeerHandler) -> Callable[[Request], Awaitable[Response]]:
        """A feature's peer route, behind the same envelope checks as the others."""

        async def route(request: Request) -> Response:
            sender, data = await self.verified(request, path)
            return JSONResponse(dict(await handler(sender, data)))

        return route
