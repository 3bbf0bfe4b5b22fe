"""The node's outbound HTTP client: one small interface, one aiohttp implementation.

Every call a node makes on the request path (to its OpenAI-compatible backend, to peers) goes through
`HttpClient`. aiohttp costs about a third of httpx's CPU per call (0.4 ms against 1.4 ms on the 2-core
reference machine, measured with bench/serving.py's fake backend), and a delegation hop makes one such
call on each node it crosses, so this is most of what a hop costs. The interface is small so that tests
can route calls to in-process apps (tests/unit/test_delegation.py) without a network.

Errors: a call that gets no HTTP answer raises `HttpError` (`HttpConnectError` when the connection was
never made, `HttpTimeoutError` when a wait ran out); any HTTP status, 4xx/5xx included, is an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import aiohttp.abc

from wwwserve.errors import WWWServeError
from wwwserve.ledger import safejson

# Longest line `HttpStream.lines()` accepts: an SSE event bigger than this is a broken or hostile server.
MAX_LINE_BYTES = 4 * 1024 * 1024


class HttpError(WWWServeError):
    """No HTTP answer: the connection failed, broke, or a wait timed out."""


class HttpConnectError(HttpError):
    """The connection could not be made (refused, unreachable, name not resolved)."""


class HttpTimeoutError(HttpError):
    """A wait ran out; `connect` says whether it was the wait for the connection."""

    def __init__(self, message: str, *, connect: bool = False) -> None:
        super().__init__(message)
        self.connect = connect


class LineTooLongError(HttpError):
    """A streamed line exceeded `MAX_LINE_BYTES`."""


@dataclass(frozen=True)
class HttpResponse:
    """A whole HTTP answer."""

    status: int
    headers: Mapping[str, str]
    content: bytes

    @property
    def text(self) -> str:
        """The body as text (UTF-8; undecodable bytes replaced)."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not JSON)."""
        return safejson.loads(self.content)


class HttpStream(Protocol):
    """An HTTP answer whose body is read as it arrives. Close it (`aclose`) when done."""

    status: int
    headers: Mapping[str, str]

    async def read(self) -> bytes:
        """The rest of the body."""
        ...

    def lines(self) -> AsyncIterator[str]:
        """The body line by line, without line endings."""
        ...

    async def aclose(self) -> None:
        """Release the connection: back to the pool when the body was read to its end, else closed."""
        ...


class HttpClient(Protocol):
    """What the node needs from an HTTP client. `timeout_s` bounds each wait, not the whole call."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        """Send a request and read the whole answer."""
        ...

    async def open_stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpStream:
        """Send a request and return once the answer's status and headers arrived."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


def _map_error(exc: BaseException, url: str) -> HttpError:
    """The `HttpError` an aiohttp (or timeout) exception stands for."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return HttpTimeoutError(f"connecting to {url} timed out", connect=True)
    if isinstance(exc, TimeoutError):
        return HttpTimeoutError(f"{url} did not answer in time")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return HttpConnectError(f"cannot connect to {url}: {exc.os_error or exc}")
    return HttpError(f"{type(exc).__name__} talking to {url}: {exc}")


class AiohttpStream:
    """`HttpStream` over an aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse, url: str) -> None:
        self._response = response
        self._url = url
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers

    async def read(self) -> bytes:
        """The rest of the body."""
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, self._url) from exc

    async def lines(self) -> AsyncIterator[str]:
        """The body line by line (split at LF, a trailing CR dropped), decoded as UTF-8."""
        buffer = b""
        try:
            async for chunk in self._response.content.iter_any():
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", start)) >= 0:
                    yield buffer[start:end].rstrip(b"\r").decode("utf-8", errors="replace")
                    start = end + 1
                buffer = buffer[start:]
                if len(buffer) > MAX_LINE_BYTES:
                    raise LineTooLongError(f"{self._url} sent a line over {MAX_LINE_BYTES} bytes")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, self._url) from exc
        if buffer:
            yield buffer.rstrip(b"\r").decode("utf-8", errors="replace")

    async def aclose(self) -> None:
        """Release the connection (aiohttp closes it when the body was not read to its end)."""
        self._response.release()


class AiohttpClient:
    """`HttpClient` on one pooled aiohttp session, created on first use (it must live in the event loop).

    `connect_timeout_s` bounds waiting for a connection; each call's `timeout_s` (default
    `read_timeout_s`) bounds every wait for bytes after that. Proxies from the environment are not
    used: a node talks to its engine and its peers directly.
    """

    def __init__(
        self,
        *,
        read_timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 1024,
        keepalive_s: float = 4.0,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        if read_timeout_s <= 0 or connect_timeout_s <= 0 or max_connections < 1:
            raise ValueError("timeouts must be > 0 and max_connections >= 1")
        self.read_timeout_s = read_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._max_connections = max_connections
        # Below uvicorn's 5 s keep-alive, so a pooled connection is dropped here before the server
        # closes it (a request on a connection the server is closing fails for nothing).
        self._keepalive_s = keepalive_s
        self._resolver = resolver  # None: aiohttp's own (peers get node.endpoints.PeerResolver)
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=self._keepalive_s, ttl_dns_cache=60,
                resolver=self._resolver,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=True, read_bufsize=2**16
            )
        return self._session

    def _timeout(self, timeout_s: float | None) -> aiohttp.ClientTimeout:
        read = self.read_timeout_s if timeout_s is None else timeout_s
        cached = self._timeouts.get(read)
        if cached is None:
            connect = min(read, self.connect_timeout_s)
            cached = aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=read)
            if len(self._timeouts) < 64:
                self._timeouts[read] = cached
        return cached

    async def _send(
        self, method: str, url: str, content: bytes | None, headers: Mapping[str, str] | None, timeout_s: float | None
    ) -> aiohttp.ClientResponse:
        try:
            return await self._get_session().request(
                method, url, data=content, headers=headers, timeout=self._timeout(timeout_s), allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, url) from exc
        except ValueError as exc:  # a malformed URL
            raise HttpConnectError(f"cannot connect to {url}: {exc}") from exc

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        """Send a request and read the whole answer."""
        response = await self._send(method, url, content, headers, timeout_s)
        try:
            body = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, url) from exc
        finally:
            response.release()
        return HttpResponse(response.status, response.headers, body)

    async def open_stream(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> HttpStream:
        """Send a request and return once the answer's status and headers arrived."""
        return AiohttpStream(await self._send(method, url, content, headers, timeout_s), url)

    async def aclose(self) -> None:
        """Close the session and every pooled connection."""
        if self._session is not None:
            session, self._session = self._session, None
            with contextlib.suppress(Exception):
                await session.close()
            await asyncio.sleep(0)  # let the transports' close callbacks run


async def drain_lines(lines: AsyncIterator[str], timeout_s: float = 1.0) -> None:
    """Read what is left of a streamed body after its last event (e.g. after `data: [DONE]`).

    A stream released before its end closes the connection, and the next call would pay for a new
    one; reading the few bytes that follow the last event keeps it pooled. Never raises.
    """
    try:
        async with asyncio.timeout(timeout_s):
            async for _ in lines:
                pass
    except (TimeoutError, HttpError):
        pass
