"""What every route does with HTTP before and after the node's work: read a body within its size and time
limits, parse it as JSON safely (`ledger.safejson`), validate it against a `node.protocol` model (errors in
the OpenAI shape), notice a client that hung up, and stream an answer whose backend work always stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from wwwserve.ledger import safejson
from wwwserve.node.errors import (
    InvalidRequestError,
    RequestTimeoutError,
    RequestTooLargeError,
    from_validation_error,
)

__all__ = ["SSE_HEADERS", "ClosingStreamingResponse", "parse_json_object", "read_body", "unless_disconnected",
           "validate"]

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_body(request: Request, limit_bytes: int, timeout_s: float | None = None) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit_bytes` (header or bytes read),
    and with 408 when it has not all arrived `timeout_s` after the headers (a slow-body client)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body_bytes(request, limit_bytes)
    except TimeoutError:
        raise RequestTimeoutError(timeout_s or 0.0) from None


async def _read_body_bytes(request: Request, limit_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit_bytes:
                raise RequestTooLargeError(limit_bytes)
        except ValueError:
            raise InvalidRequestError("The Content-Length header is not a number.") from None
    chunks: list[bytes] = []
    size = 0
    # Straight from the ASGI messages (Starlette's `stream()` costs more than the rest of reading);
    # counted as they come, since a chunked body has no Content-Length to trust.
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit_bytes:
            raise RequestTooLargeError(limit_bytes)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _until_disconnected(receive: Receive) -> None:
    """Return once the client has gone: after the body, the ASGI server's next message is `http.disconnect`,
    sent when the connection closes (or once the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """`work`'s result, or `ClientDisconnect` as soon as the client hangs up first, `work` cancelled: a whole
    answer nobody will read stops using the engine (a stream stops on its own: its writes fail)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnected(receive))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        watch.cancel()
        raise
    if task.done():
        watch.cancel()
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise ClientDisconnect()


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequestError("The request needs a JSON body.", code="missing_body")
    try:
        # Depth, non-finite numbers and lone surrogates are refused before they reach the parser's C stack,
        # the prompt hash or a backend (ledger.safejson); NaN/Infinity are not JSON.
        data = safejson.loads(body)
    except safejson.UnsafeJSONError as exc:
        raise InvalidRequestError(
            f"We could not use the JSON body of your request: {exc}.", code="invalid_json"
        ) from None
    except ValueError:  # UnicodeDecodeError included
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid JSON.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    return data


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always runs `on_close`, even when the client disconnects mid-stream.

    Starlette neither closes the body iterator nor runs background tasks on a disconnect, so without
    this the backend would keep generating for nobody.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Shielded: under a cancelled scope every await would be cancelled again at once.
            with anyio.CancelScope(shield=True):
                await self._on_close()
