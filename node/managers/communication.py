"""The Communication manager: who the peers are, talking to them with signed envelopes, and bans.

Peers come from the on-chain registry through the Ledger manager (`PeerDirectory`); this module adds
what only the network can tell: whether a peer answers. Every message to a peer is sealed with this
node's ed25519 identity key (`node.envelope`), bound to its path, and every message from a peer is
verified against the sender's registered key before anything executes it.

A peer that fails (refuses the connection, times out, answers garbage or a 5xx, or sends a result whose
signature does not hold) is banned with exponential backoff: `ban_initial_s`, doubled per consecutive
failure up to `ban_max_s`; one success clears its record. Banned peers are left out of PoS sampling.

The peer API (served by `node.api.peer`):
- `POST /peer/probe`     {request_id, model, route}        → {"accept": bool}
- `POST /peer/delegate`  {request_id, kind, request, route, inspect} → the executor's answer: the OpenAI SSE
  stream (a node always asks for one, `stream: true` and `include_usage` forced, also when its user waits
  for the whole answer: T1 and T2 then bound it) or, to `stream: false`, one JSON answer; its final chunk
  (or the answer) carries the signed result (`wwwserve`) and the executor's work attestation
  (`wwwserve_work`, `ledger.work.WorkAttestation`, signed with its wallet key over the origin's
  inspection commitment)
- `POST /peer/voucher`   a signed fee voucher (`node.vouchers.SignedVoucher.to_json()`)
- features add paths of their own (`node.extensions`; the duel feature's `/peer/evidence`), reached with
  `post_sealed`
`RemoteStream` turns a delegated SSE answer back into the `StreamDelta`s the local path produces, so the
user-facing code treats local and delegated work alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any, NoReturn

import nacl.signing

from wwwserve.ledger import safejson
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.backends.openai_wire import error_from_upstream
from wwwserve.node.endpoints import EndpointError, PeerResolver, check_endpoint
from wwwserve.node.envelope import EnvelopeVerifier, seal
from wwwserve.node.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    NodeError,
)
from wwwserve.node.http import (
    AiohttpClient,
    HttpClient,
    HttpConnectError,
    HttpError,
    HttpResponse,
)
from wwwserve.node.managers.peers import (
    PATH_DELEGATE,
    PATH_HEALTH,
    PATH_PROBE,
    PATH_VOUCHER,
    BanList,
    DelegateBody,
    DirectoryPeer,
    PeerDeclinedError,
    PeerDirectory,
    PeerFailedError,
    ProbeBody,
)
from wwwserve.node.managers.remote import RemoteStream
from wwwserve.node.routing import Peer

__all__ = [
    "PATH_DELEGATE",
    "PATH_PROBE",
    "PATH_VOUCHER",
    "BanList",
    "CommunicationManager",
    "DelegateBody",
    "DirectoryPeer",
    "PeerDeclinedError",
    "PeerDirectory",
    "PeerFailedError",
    "ProbeBody",
    "RemoteStream",
]

logger = logging.getLogger(__name__)


class CommunicationManager:
    """Signed HTTP to peers, verification of what peers send, liveness probes and bans."""

    def __init__(
        self,
        *,
        my_address: str,
        chain_id: int,
        signing_key: nacl.signing.SigningKey,
        directory: PeerDirectory,
        probe_timeout_s: float = 2.0,
        delegate_timeout_s: float = 600.0,
        ban_initial_s: float = 5.0,
        ban_max_s: float = 300.0,
        liveness_interval_s: float = 10.0,
        envelope_window_s: float = 30.0,
        http: HttpClient | None = None,
        allow_private_endpoints: bool = False,
        first_output_timeout_s: float | None = None,
        stream_idle_timeout_s: float | None = None,
        voucher_attempts: int = 3,
    ) -> None:
        self.my_address = my_address
        self.voucher_attempts = voucher_attempts
        self.chain_id = chain_id
        self.directory = directory
        self.probe_timeout_s = probe_timeout_s
        self.delegate_timeout_s = delegate_timeout_s
        self.liveness_interval_s = liveness_interval_s
        # T1: a delegated stream with no output this long after it was sent is abandoned and re-dispatched;
        # T2: one silent this long after its first output is abandoned (None: only delegate_timeout_s).
        self.first_output_timeout_s = first_output_timeout_s
        self.stream_idle_timeout_s = stream_idle_timeout_s
        self.bans = BanList(ban_initial_s, ban_max_s)
        self.verifier = EnvelopeVerifier(my_address, chain_id, directory.pubkey_of, window_s=envelope_window_s)
        self._key = signing_key
        # One pooled client: keep-alive to each peer is what keeps a hop at a millisecond or two.
        # Peers' endpoints are checked before use and their names on every connection (node.endpoints).
        self.allow_private_endpoints = allow_private_endpoints
        self._refused_endpoints: set[str] = set()
        self._client: HttpClient = http or AiohttpClient(
            read_timeout_s=delegate_timeout_s, connect_timeout_s=probe_timeout_s,
            resolver=PeerResolver(allow_private=allow_private_endpoints),
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._liveness: asyncio.Task[None] | None = None

    # ---- peers -----------------------------------------------------------------------------

    def routable_peers(self, model: str | None = None) -> list[Peer]:
        """Registered peers with stake, not banned, not this node, serving `model` when given."""
        out: list[Peer] = []
        me = self.my_address.lower()
        for record in self.directory.peers():
            if record.address.lower() == me or record.stake_wei <= 0 or self.bans.is_banned(record.address):
                continue
            if model is not None and model not in record.models:
                continue
            if self.endpoint_base(record) is None:  # never routed to: it could only fail
                continue
            out.append(Peer(record.address, record.stake_wei, frozenset(record.models), record.endpoint))
        return out

    def network_models(self) -> dict[str, int]:
        """Model → how many nodes with stake serve it that a request could reach now: this node and the
        routable peers (not banned, an endpoint this node dials). A node nobody reaches (a placeholder
        endpoint, a node that is down) drops out at its first failed health check instead of being listed
        by `/v1/models` for as long as the network runs."""
        counts: dict[str, int] = {}
        me = self.my_address.lower()
        for record in self.directory.peers():
            if record.stake_wei <= 0:
                continue
            if record.address.lower() != me and (self.bans.is_banned(record.address)
                                                 or self.endpoint_base(record) is None):
                continue
            for model in record.models:
                counts[model] = counts.get(model, 0) + 1
        return counts

    # ---- outgoing --------------------------------------------------------------------------

    def _sealed(self, receiver: str, path: str, payload: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = seal(self._key, self.my_address, receiver, body, self.chain_id, path=path)
        headers["Content-Type"] = "application/json"
        return body, headers

    def endpoint_base(self, peer: DirectoryPeer | Peer) -> str | None:
        """`scheme://host:port` of `peer`'s registered endpoint, or None when this node does not connect there
        (`node.endpoints`: a path, query or credentials in it, or an address that is not public off a
        devnet); each refused endpoint is logged once."""
        try:
            return check_endpoint(peer.endpoint, allow_private=self.allow_private_endpoints).base
        except EndpointError as exc:
            if peer.endpoint not in self._refused_endpoints and len(self._refused_endpoints) < 10_000:
                self._refused_endpoints.add(peer.endpoint)
                logger.warning("peer %s: not connecting to its endpoint: %s", peer.address, exc)
            return None

    def _url(self, peer: DirectoryPeer | Peer, path: str) -> str:
        base = self.endpoint_base(peer)
        if base is None:
            raise HttpConnectError(f"endpoint {peer.endpoint[:100]!r} refused")
        return base + path

    def _failed(self, peer: DirectoryPeer | Peer, message: str, *, started: bool = False) -> PeerFailedError:
        duration = self.bans.fail(peer.address)
        logger.warning("peer %s failed (%s); banned for %.0f s", peer.address, message, duration)
        return PeerFailedError(peer.address, message, started=started)

    async def probe(self, peer: DirectoryPeer | Peer, body: ProbeBody) -> bool:
        """Ask `peer` whether it takes the request now; a failing peer answers False and is banned."""
        data, headers = self._sealed(peer.address, PATH_PROBE, body.model_dump())
        try:
            response = await self._client.request(
                "POST", self._url(peer, PATH_PROBE), content=data, headers=headers, timeout_s=self.probe_timeout_s
            )
        except HttpError as exc:
            self._failed(peer, f"probe failed: {exc}")
            return False
        if response.status != 200:
            if response.status >= 500 or response.status in (401, 403):
                self._failed(peer, f"probe answered HTTP {response.status}")
            return False
        try:
            accept = response.json().get("accept") is True
        except (ValueError, AttributeError):
            self._failed(peer, "probe answer is not JSON")
            return False
        self.bans.succeed(peer.address)
        return accept

    async def open_delegation(
        self, peer: DirectoryPeer | Peer, body: DelegateBody, request: GenerationRequest
    ) -> RemoteStream:
        """Send `request` to `peer` and read up to its first output; raises `PeerFailedError` if it fails.

        Errors the executor reports about the request itself (a 4xx in the OpenAI shape: context too
        long, model unknown) are raised as that `NodeError`, since another peer would answer the same.
        """
        data, headers = self._sealed(peer.address, PATH_DELEGATE, body.model_dump())
        # T1 bounds everything up to the first output: the answer's headers, then its first delta.
        t1 = self.first_output_timeout_s
        first_by = None if t1 is None else asyncio.get_running_loop().time() + t1  # asyncio.timeout_at's clock
        try:
            async with asyncio.timeout_at(first_by):
                response = await self._client.open_stream(
                    "POST", self._url(peer, PATH_DELEGATE), content=data, headers=headers
                )
        except HttpError as exc:
            raise self._failed(peer, f"delegation failed: {exc}") from None
        except TimeoutError:
            raise self._failed(peer, f"no answer within {self.first_output_timeout_s:g} s") from None
        if response.status != 200:
            try:
                content = await response.read()
            except HttpError:
                content = b""
            finally:
                await response.aclose()
            self._raise_refusal(peer, response.status, content)
        stream = RemoteStream(peer, request, response, idle_timeout_s=self.stream_idle_timeout_s,
                              on_failure=lambda why: self._failed(peer, why, started=True))
        try:
            async with asyncio.timeout_at(first_by):
                await stream.prime()
        except TimeoutError:
            await stream.aclose()
            raise self._failed(peer, f"no output within {self.first_output_timeout_s:g} s") from None
        except PeerFailedError as exc:
            await stream.aclose()
            raise self._failed(peer, str(exc)) from None
        except NodeError as exc:
            await stream.aclose()
            if isinstance(exc, InvalidRequestError | ModelNotFoundError):
                raise
            raise self._failed(peer, f"executor error: {exc}") from None
        except BaseException:
            await stream.aclose()
            raise
        self.bans.succeed(peer.address)
        return stream

    def _raise_refusal(self, peer: DirectoryPeer | Peer, status: int, content: bytes) -> NoReturn:
        """Raise what a non-200 answer to a delegation means (see `open_delegation`)."""
        code = None
        openai_error = False  # the answer is an OpenAI error object
        with contextlib.suppress(ValueError):
            parsed = safejson.loads(content)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                openai_error = True
                code = parsed["error"].get("code")
        if (status == 409 and code in ("probe_declined", "request_in_flight")) or (
                status == 402 and code == "payment_required"):
            # nothing ran: another peer may take it (402: this node owes that one too much; node.billing)
            raise PeerDeclinedError(peer.address)
        if status in (400, 404) and openai_error:
            # about the request itself (any other peer would say the same): the user gets the same error
            raise error_from_upstream(status, content.decode("utf-8", errors="replace"), upstream="peer")
        if status in (429, 503):
            # Busy after accepting the probe: not a fault, no ban; the caller tries elsewhere.
            raise PeerFailedError(peer.address, f"busy (HTTP {status})")
        raise self._failed(peer, f"delegation answered HTTP {status}")

    async def post_sealed(self, peer: DirectoryPeer | Peer, path: str, payload: Mapping[str, Any],
                          timeout_s: float | None = None) -> HttpResponse:
        """POST `payload` to `peer`'s `path` as a sealed envelope (a feature's peer route); the answer as it
        came. `HttpError` when the peer cannot be reached. Nothing here bans the peer: the caller decides
        what a refusal means."""
        data, headers = self._sealed(peer.address, path, payload)
        return await self._client.request("POST", self._url(peer, path), content=data, headers=headers,
                                          timeout_s=timeout_s if timeout_s is not None else self.probe_timeout_s)

    def send_voucher_soon(self, peer: DirectoryPeer | Peer, voucher_json: Mapping[str, Any]) -> None:
        """Deliver a fee voucher in the background (off the request path); failures are logged."""
        task = asyncio.get_running_loop().create_task(self._send_voucher(peer, dict(voucher_json)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_voucher(self, peer: DirectoryPeer | Peer, voucher_json: dict[str, Any]) -> None:
        data, headers = self._sealed(peer.address, PATH_VOUCHER, voucher_json)
        for attempt in range(self.voucher_attempts):
            try:
                response = await self._client.request(
                    "POST", self._url(peer, PATH_VOUCHER), content=data, headers=headers,
                    timeout_s=self.probe_timeout_s,
                )
                if response.status == 200:
                    return
                logger.warning("peer %s refused voucher: HTTP %s %s", peer.address, response.status,
                               response.text[:200])
                return
            except HttpError as exc:
                logger.info("voucher to %s failed (%s), attempt %d", peer.address, exc, attempt + 1)
                await asyncio.sleep(0.5 * 2**attempt)
                # A resend needs a fresh envelope: the receiver refuses a replayed nonce.
                data, headers = self._sealed(peer.address, PATH_VOUCHER, voucher_json)

    # ---- liveness --------------------------------------------------------------------------

    async def check_liveness(self) -> dict[str, bool]:
        """GET /health of every registered peer once; a peer that does not answer is banned. A peer whose
        endpoint this node refuses (`endpoint_base`) gets no request at all."""
        peers = [p for p in self.directory.peers()
                 if p.address.lower() != self.my_address.lower() and self.endpoint_base(p) is not None]

        async def one(peer: DirectoryPeer) -> bool:
            try:
                response = await self._client.request(
                    "GET", self._url(peer, PATH_HEALTH), timeout_s=self.probe_timeout_s
                )
            except HttpError:
                response = None
            if response is None or response.status != 200:
                if not self.bans.is_banned(peer.address):
                    self._failed(peer, "health check failed")
                return False
            self.bans.succeed(peer.address)
            return True

        results = await asyncio.gather(*(one(p) for p in peers))
        return {p.address: ok for p, ok in zip(peers, results, strict=True)}

    async def _liveness_loop(self) -> None:
        while True:
            await asyncio.sleep(self.liveness_interval_s)
            try:
                await self.check_liveness()
            except Exception:
                logger.warning("liveness round failed", exc_info=True)

    def start(self) -> None:
        """Start the periodic liveness probes."""
        if self._liveness is None:
            self._liveness = asyncio.get_running_loop().create_task(self._liveness_loop())

    async def aclose(self) -> None:
        """Stop probes, let pending voucher deliveries finish briefly, close connections."""
        if self._liveness is not None:
            self._liveness.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._liveness
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)
        await self._client.aclose()

