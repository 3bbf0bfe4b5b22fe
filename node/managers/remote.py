"""A delegated answer read back from the executor's SSE stream (`RemoteStream`), as the `StreamDelta`s the
local path produces, so the user-facing code treats local and delegated work alike. It reads the wire
through `node.backends.openai_wire` (the reader the engine client uses too) and collects the executor's
signed result (`wwwserve`) and work attestation (`wwwserve_work`); T1 (first output) and T2 (silence once
output flows) bound it."""


from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

from wwwserve.ledger.work import WorkAttestation, WorkError
from wwwserve.node.backends.base import GenerationRequest, StreamDelta, normalize_finish_reason
from wwwserve.node.backends.openai_wire import SSEEvents, choice_text, error_from_event, parse_event
from wwwserve.node.errors import (
    InvalidRequestError,
    ModelNotFoundError,
)
from wwwserve.node.http import (
    HttpError,
    HttpStream,
)
from wwwserve.node.managers.peers import DirectoryPeer, PeerFailedError
from wwwserve.node.signing import MalformedSignedResultError, SignedResult

__all__ = ["MAX_SSE_LINE_BYTES", "RemoteStream"]

logger = logging.getLogger(__name__)

MAX_SSE_LINE_BYTES = 4 * 1024 * 1024
"""Longest SSE line accepted from a peer: a line beyond it is a broken or hostile peer, not an answer."""


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
        self.on_delta: Callable[[StreamDelta], object] | None = None  # told each delta handed out (metrics)

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
            if self.on_delta is not None:
                self.on_delta(first)
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
            if self.on_delta is not None:
                self.on_delta(delta)
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


