"""The Request manager: admission, local dispatch and cancellation of user requests.

Dispatch is event-driven (DESIGN.md §2; the reference implementation polls on a 0.5 s tick): a request
runs the moment it is admitted, and a finishing request hands its slot straight to the oldest waiter,
so there is no tick and no idle gap. At most `max_concurrent` requests run; up to `queue_limit` more
wait in FIFO order; beyond that a request is refused at once with `OverloadedError` (503 + Retry-After),
because a client retrying elsewhere beats one stuck in an unbounded queue. A request that waits or runs
longer than `request_timeout_s` fails with `UpstreamTimeoutError` (504).

Streams are opened with `open_stream`, which admits the request and pulls the first delta before it
returns: errors the backend raises up front (unknown model, context too long, backend down) then
become ordinary JSON error answers instead of a stream that starts and immediately fails. Closing a
`LocalStream` before its end (the client went away) aborts the backend's work and frees the slot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from wwwserve.node.backends.base import (
    Backend,
    GenerationAbortedError,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
)
from wwwserve.node.errors import OverloadedError, UpstreamTimeoutError, from_validation_error
from wwwserve.node.managers.model import ModelManager
from wwwserve.node.protocol import ChatCompletionRequest, CompletionRequest

__all__ = ["LocalStream", "RequestManager", "generation_request"]

logger = logging.getLogger(__name__)

OVERLOAD_RETRY_AFTER_S = 1.0
"""The Retry-After hint of an overload refusal: slots free up within about a request's duration."""


class RequestManager:
    """Bounded admission plus local execution on the Model manager's backends."""

    def __init__(
        self,
        model_manager: ModelManager,
        max_concurrent: int,
        queue_limit: int,
        request_timeout_s: float = 600.0,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        if queue_limit < 0:
            raise ValueError(f"queue_limit must be >= 0, got {queue_limit}")
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        self.model_manager = model_manager
        self.max_concurrent = max_concurrent
        self.queue_limit = queue_limit
        self.request_timeout_s = request_timeout_s
        self._running = 0
        # Futures of waiting requests, oldest first; a released slot is handed to the first live one.
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        # The two queues of DESIGN §2 share one FIFO of slots; these count who waits, for the policy.
        self._waiting_by_source: dict[str, int] = {"user": 0, "node": 0}
        # Requests admitted per model and not finished (running or waiting here or inside the backend).
        self._active_by_model: dict[str, int] = {}

    # ---- admission --------------------------------------------------------------------------

    @property
    def running(self) -> int:
        """Requests holding a slot now."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests queued for a slot now."""
        return sum(1 for fut in self._waiters if not fut.done())

    def active(self, model: str) -> int:
        """Requests for `model` admitted here and not finished yet."""
        return self._active_by_model.get(model, 0)

    def _enter(self, model: str) -> None:
        self._active_by_model[model] = self._active_by_model.get(model, 0) + 1

    def _leave(self, model: str) -> None:
        self._active_by_model[model] -= 1

    def waiting_from(self, source: str) -> int:
        """Requests from `source` ("user" or "node", a peer) waiting at this node before its engine: for a
        slot, or for dispatch (a RETRY's delay, `retrying`). This is `LoadSnapshot.user_queue`/`node_queue`;
        the simulator counts the same (it has no slots: its RETRY waits)."""
        return self._waiting_by_source.get(source, 0)

    @contextlib.contextmanager
    def retrying(self, source: str) -> Iterator[None]:
        """Count a request from `source` as waiting for dispatch while the block runs (a RETRY's delay)."""
        self._waiting_by_source[source] = self._waiting_by_source.get(source, 0) + 1
        try:
            yield
        finally:
            self._waiting_by_source[source] -= 1

    @property
    def occupancy(self) -> float:
        """Share of slots in use, 0..1: the load of a backend that cannot report its own."""
        return min(1.0, self._running / self.max_concurrent)

    async def acquire(self, timeout_s: float | None = None, source: str = "user") -> None:
        """Take a slot, waiting in the queue up to `timeout_s` (default: the request timeout).

        Raises `OverloadedError` at once when the queue is full, `UpstreamTimeoutError` on timeout.
        `source` says which queue the request counts in while it waits ("user" or "node").
        """
        self._waiting_by_source[source] = self._waiting_by_source.get(source, 0) + 1
        try:
            await self._acquire(timeout_s)
        finally:
            self._waiting_by_source[source] -= 1

    async def _acquire(self, timeout_s: float | None) -> None:
        if self._running < self.max_concurrent and not self.waiting:
            self._running += 1
            return
        if self.waiting >= self.queue_limit:
            raise OverloadedError(
                "This node is at capacity and its queue is full. Please retry shortly.",
                retry_after_s=OVERLOAD_RETRY_AFTER_S,
            )
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=timeout_s or self.request_timeout_s)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                # The slot was handed to us just as we gave up: pass it on, or it would leak.
                self.release()
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeoutError(
                    "The request waited too long for a free slot on this node. Please retry."
                ) from None
            raise

    def release(self) -> None:
        """Give a slot back: straight to the oldest waiter if there is one (the count stays), else free it."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._running -= 1

    # ---- execution --------------------------------------------------------------------------

    async def generate(self, req: GenerationRequest, source: str = "user") -> GenerationResult:
        """Admit `req`, run it on its model's backend and return the whole answer.

        If the caller is cancelled (its client went away) the backend's work is aborted.
        """
        backend = self.model_manager.backend_for(req.model)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout_s
        self._enter(req.model)
        try:
            await self.acquire(source=source)
        except BaseException:
            self._leave(req.model)
            raise
        try:
            async with asyncio.timeout_at(deadline):
                return await backend.generate(req)
        except TimeoutError:
            await _abort_quietly(backend, req.request_id)
            raise UpstreamTimeoutError() from None
        except asyncio.CancelledError:
            await _abort_quietly(backend, req.request_id)
            raise
        except GenerationAbortedError:
            # Only an abort we did not ask for gets here (e.g. the backend shutting down).
            raise UpstreamTimeoutError("The generation was aborted by the backend. Please retry.") from None
        finally:
            self._leave(req.model)
            self.release()

    async def open_stream(self, req: GenerationRequest, source: str = "user") -> LocalStream:
        """Admit `req`, start its stream and pull the first delta; errors up to there are raised here."""
        backend = self.model_manager.backend_for(req.model)
        deadline = asyncio.get_running_loop().time() + self.request_timeout_s
        self._enter(req.model)
        try:
            await self.acquire(source=source)
        except BaseException:
            self._leave(req.model)
            raise
        stream = LocalStream(self, backend, req, deadline)
        try:
            await stream.prime()
        except BaseException:
            await stream.aclose()
            raise
        return stream


class LocalStream:
    """One admitted stream on a local backend: iterate it for deltas, `aclose()` it when done or gone."""

    def __init__(self, manager: RequestManager, backend: Backend, req: GenerationRequest, deadline: float) -> None:
        self._manager = manager
        self._backend = backend
        self.request = req
        self._deadline = deadline
        self._agen: AsyncGenerator[StreamDelta, None] = backend.stream(req)
        self._first: StreamDelta | None = None
        self.attestation = None  # a local stream is signed by this node itself (see RemoteStream)
        self._finished = False  # the final delta was seen (nothing left to abort)
        self._closed = False
        self.on_delta: Callable[[StreamDelta], object] | None = None  # told each delta handed out (metrics)

    async def _next(self) -> StreamDelta:
        try:
            async with asyncio.timeout_at(self._deadline):
                delta = await self._agen.__anext__()
        except TimeoutError:
            raise UpstreamTimeoutError() from None
        if delta.is_final:
            self._finished = True
        return delta

    async def prime(self) -> None:
        """Pull the first delta, so errors the backend raises up front surface before any byte is sent."""
        try:
            self._first = await self._next()
        except StopAsyncIteration:
            self._first = None
            self._finished = True

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        """The deltas: text pieces, then one final delta (a stream ending without one ends early)."""
        if self._first is not None:
            first, self._first = self._first, None
            if self.on_delta is not None:
                self.on_delta(first)
            yield first
        while not self._finished and not self._closed:
            try:
                delta = await self._next()
            except StopAsyncIteration:
                return
            if self.on_delta is not None:
                self.on_delta(delta)
            yield delta

    async def aclose(self) -> None:
        """Release the slot; abort the backend's work first if the stream did not reach its end. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._finished:
                await _abort_quietly(self._backend, self.request.request_id)
            await self._agen.aclose()
        except Exception:
            logger.warning("closing stream %s failed", self.request.request_id, exc_info=True)
        finally:
            self._manager._leave(self.request.model)
            self._manager.release()


async def _abort_quietly(backend: Backend, request_id: str) -> None:
    # Abort runs on the way out of a failure or a disconnect: its own error must not mask the first one.
    try:
        await backend.abort(request_id)
    except Exception:
        logger.warning("abort of %s on backend %s failed", request_id, backend.name, exc_info=True)


def generation_request(
    kind: str, raw_request: Mapping[str, Any], request_id: str
) -> tuple[GenerationRequest, Sequence[Mapping[str, Any]] | str]:
    """The `GenerationRequest` of a raw chat or completion request (validated as the user API does;
    `InvalidRequestError` says what is wrong) and the prompt its result is signed over (chat messages
    exactly as sent, or the prompt text)."""
    try:
        if kind == "chat":
            chat = ChatCompletionRequest.model_validate(raw_request)
            return GenerationRequest.from_chat(chat, request_id), raw_request["messages"]
        completion = CompletionRequest.model_validate(raw_request)
        return GenerationRequest.from_completion(completion, request_id), completion.prompt_text
    except ValidationError as exc:
        raise from_validation_error(exc) from None
