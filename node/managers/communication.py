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
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, Protocol

import nacl.signing
from pydantic import BaseModel, ConfigDict, Field

from wwwserve.errors import WWWServeError
from wwwserve.ledger import safejson
from wwwserve.ledger.work import WorkAttestation, WorkError
from wwwserve.node.backends.base import GenerationRequest, StreamDelta, normalize_finish_reason
from wwwserve.node.backends.openai_wire import SSEEvents, choice_text, error_from_event, parse_event
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
    HttpStream,
)
from wwwserve.node.routing import Peer
from wwwserve.node.signing import MalformedSignedResultError, SignedResult

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

PATH_PROBE = "/peer/probe"
PATH_DELEGATE = "/peer/delegate"
PATH_VOUCHER = "/peer/voucher"
PATH_HEALTH = "/health"

MAX_SSE_LINE_BYTES = 4 * 1024 * 1024
"""Longest SSE line accepted from a peer: a line beyond it is a broken or hostile peer, not an answer."""


class PeerDeclinedError(WWWServeError):
    """A peer declined a delegation sent with `accept_check` (as it would have declined the probe)."""


class PeerFailedError(WWWServeError):
    """A peer did not do what it was asked (unreachable, timeout, bad answer, bad signature).

    `started` tells whether the peer had already streamed output when it failed: before that the request
    can be re-dispatched elsewhere, after it the user's stream must end with an error event.
    """

    def __init__(self, address: str, message: str, *, started: bool = False) -> None:
        super().__init__(f"peer {address}: {message}")
        self.address = address
        self.reason = message
        self.started = started


# ---------------------------------------------------------------------------------------------
# wire bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeBody(_Body):
    """Would you run this request now? (acceptance probe, DESIGN §2 step 3)."""

    request_id: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1, max_length=256)
    route: list[str] = Field(default_factory=list, max_length=32)


class DelegateBody(_Body):
    """Run this request and stream the answer back; `route` lists the nodes it passed, origin first.

    `inspect` is the origin's inspection commitment (`ledger.work.inspect_commitment`, hex), which the
    executor signs into its work attestation unchanged; a request without one is attested with 32 zero
    bytes (which no salt opens: such work can never be dueled)."""

    request_id: str = Field(min_length=1, max_length=256)
    kind: Literal["chat", "completion"]
    request: dict[str, Any]
    route: list[str] = Field(min_length=1, max_length=32)
    # Run it only if you would accept a probe for it now (else 409 probe_declined): the first candidate's
    # probe and the delegation in one round trip instead of two.
    accept_check: bool = False
    inspect: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{64}$")

    def inspect_bytes(self) -> bytes:
        """The commitment as 32 bytes (zero when the origin sent none)."""
        return bytes.fromhex(self.inspect[2:]) if self.inspect is not None else b"\x00" * 32


# ---------------------------------------------------------------------------------------------
# directory and bans


class DirectoryPeer(Protocol):
    """A registry entry as the Ledger manager keeps it (`node.managers.ledger.PeerRecord` fits)."""

    @property
    def address(self) -> str: ...

    @property
    def endpoint(self) -> str: ...

    @property
    def models(self) -> frozenset[str]: ...

    @property
    def stake_wei(self) -> int: ...


class PeerDirectory(Protocol):
    """The registry view the Communication manager reads (`LedgerManager` fits)."""

    def peers(self) -> Sequence[DirectoryPeer]: ...

    def peer(self, address: str) -> DirectoryPeer | None: ...

    def pubkey_of(self, address: str) -> bytes | None: ...


@dataclass
class _BanRecord:
    failures: int = 0
    until: float = 0.0


class BanList:
    """Exponential-backoff bans: the n-th consecutive failure bans for `initial_s * 2**(n-1)`, capped."""

    def __init__(self, initial_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._clock = clock
        self._records: dict[str, _BanRecord] = {}

    def fail(self, address: str) -> float:
        """Record a failure of `address`; returns the length of the ban it now serves (seconds)."""
        record = self._records.setdefault(address.lower(), _BanRecord())
        record.failures += 1
        # min() before the power: 2**failures must not overflow a float after a very long outage.
        duration = float(min(self.max_s, self.initial_s * 2 ** min(record.failures - 1, 60)))
        record.until = self._clock() + duration
        return duration

    def succeed(self, address: str) -> None:
        """A success clears the peer's record (its next failure bans for `initial_s` again)."""
        self._records.pop(address.lower(), None)

    def is_banned(self, address: str) -> bool:
        """Whether `address` is serving a ban now."""
        record = self._records.get(address.lower())
        return record is not None and record.until > self._clock()

    def failures(self, address: str) -> int:
        """Consecutive failures recorded for `address`."""
        record = self._records.get(address.lower())
        return 0 if record is None else record.failures

    def banned(self) -> dict[str, float]:
        """Address (lower-case) → seconds of ban left, for peers banned now."""
        now = self._clock()
        return {a: r.until - now for a, r in self._records.items() if r.until > now}


# ---------------------------------------------------------------------------------------------
# delegated streams


class RemoteStream:
    """A delegated request's answer, read back from the executor's SSE stream as `StreamDelta`s.

    `attestation` holds the executor's signed result once the final chunk arrived, `work` its work
    attestation (None if it sent none: the delegating node then treats it as failed). Iterate it like a
    `LocalStream`; `aclose()` closes the HTTP stream (the executor then aborts its backend's work).
    `terms` is set by the dispatcher: what the work attestation must say.
    """

    def __init__(
        self,
        peer: DirectoryPeer,
        request: GenerationRequest,
        response: HttpStream,
        idle_timeout_s: float | None = None,
        on_failure: Callable[[str], object] | None = None,
    ) -> None:
        self.peer = peer
        self.idle_timeout_s = idle_timeout_s  # T2: longest silence once output flows (None: no bound)
        # Told why, when the peer fails after its first output (the manager bans it; before that output,
        # the failure goes to whoever primed the stream, which can still re-dispatch).
        self._on_failure = on_failure
        self.request = request
        self.attestation: SignedResult | None = None
        self.work: WorkAttestation | None = None
        self.terms: Any = None  # node.attestation.WorkTerms
        self._response = response
        self._lines = response.lines()
        self._first: StreamDelta | None = None
        self._started = False  # text was handed to the consumer: no re-dispatch after this
        self._finished = False
        self._closed = False
        self._agen: AsyncGenerator[StreamDelta, None] = self._read()

    @property
    def executor(self) -> str:
        """The executor's address (from the attestation once known, else the peer asked)."""
        return self.attestation.executor if self.attestation is not None else self.peer.address

    @property
    def started(self) -> bool:
        """Whether output already reached the consumer."""
        return self._started

    def _fail(self, message: str) -> PeerFailedError:
        return PeerFailedError(self.peer.address, message, started=self._started)

    async def _events(self) -> AsyncIterator[dict[str, Any]]:
        events = SSEEvents(self._lines, max_line_bytes=MAX_SSE_LINE_BYTES)
        try:
            async for data in events:
                try:
                    yield parse_event(data)
                except ValueError:
                    raise self._fail("sent a malformed SSE event") from None
        except ValueError:  # the reader's: an oversized line
            raise self._fail("sent an oversized SSE line") from None

    async def _read(self) -> AsyncGenerator[StreamDelta, None]:
        """Parse chunks into deltas; the final delta is held until the attestation has arrived."""
        final: StreamDelta | None = None
        try:
            async for event in self._events():
                if "error" in event:
                    error = error_from_event(event, upstream="peer")
                    if isinstance(error, InvalidRequestError | ModelNotFoundError):
                        raise error  # about the request itself: any other peer would say the same
                    raise self._fail(f"executor error: {error.message}")
                if "wwwserve" in event and event["wwwserve"] is not None:
                    try:
                        self.attestation = SignedResult.from_json(event["wwwserve"])
                    except MalformedSignedResultError as exc:
                        raise self._fail(f"sent a malformed attestation: {exc}") from None
                if event.get("wwwserve_work") is not None:
                    try:
                        self.work = WorkAttestation.from_json(event["wwwserve_work"])
                    except WorkError as exc:
                        raise self._fail(f"sent a malformed work attestation: {exc}") from None
                usage = event.get("usage")
                choices = event.get("choices") or []
                for choice in choices:
                    if not isinstance(choice, Mapping):
                        raise self._fail("sent a malformed choice")
                    text = choice_text(choice)
                    if text:
                        yield StreamDelta(text=text)
                    reason = choice.get("finish_reason")
                    if reason is not None:
                        final = StreamDelta(finish_reason=normalize_finish_reason(reason))
                if isinstance(usage, Mapping) and final is not None:
                    final = StreamDelta(
                        finish_reason=final.finish_reason,
                        prompt_tokens=int(usage.get("prompt_tokens") or 0),
                        completion_tokens=int(usage.get("completion_tokens") or 0),
                    )
        except HttpError as exc:
            raise self._fail(f"stream broke: {exc}") from None
        if final is None:
            raise self._fail("stream ended without a final chunk")
        if self.attestation is None:
            raise self._fail("stream ended without the signed attestation")
        yield final

    async def prime(self) -> None:
        """Read up to the first delta, so a peer failing before any output can be replaced."""
        try:
            self._first = await self._agen.__anext__()
        except StopAsyncIteration:
            raise self._fail("stream ended before any output") from None

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        """The deltas: text pieces, then one final delta with the finish reason and usage."""
        if self._first is not None:
            first, self._first = self._first, None
            self._started = True
            if first.is_final:
                self._finished = True
            yield first
        while not self._finished and not self._closed:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    delta = await self._agen.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                failure = self._fail(f"sent nothing for {self.idle_timeout_s:g} s")
                if self._on_failure is not None:
                    self._on_failure(failure.reason)
                raise failure from None
            except PeerFailedError as exc:
                if self._on_failure is not None:
                    self._on_failure(exc.reason)
                raise
            self._started = True
            if delta.is_final:
                self._finished = True
            yield delta

    async def aclose(self) -> None:
        """Close the HTTP stream (idempotent); an unfinished one makes the executor abort its work."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._agen.aclose()
        with contextlib.suppress(Exception):
            await self._response.aclose()


# ---------------------------------------------------------------------------------------------
# the manager


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
    ) -> None:
        self.my_address = my_address
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
        """Model → how many registered nodes with stake serve it (this node included), bans ignored."""
        counts: dict[str, int] = {}
        for record in self.directory.peers():
            if record.stake_wei <= 0:
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
        error: NodeError | None = None
        code = None
        with contextlib.suppress(ValueError):
            parsed = safejson.loads(content)
            if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
                error = error_from_event(parsed, upstream="peer")
                code = parsed["error"].get("code")
        if (status == 409 and code in ("probe_declined", "request_in_flight")) or (
                status == 402 and code == "payment_required"):
            # nothing ran: another peer may take it (402: this node owes that one too much; node.billing)
            raise PeerDeclinedError(peer.address)
        if status in (400, 404) and error is not None:
            raise error
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
        for attempt in range(3):
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

