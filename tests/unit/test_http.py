"""The node's outbound HTTP client (`node.http.AiohttpClient`) against a real server on loopback.

The server is a raw asyncio one, so each test can answer exactly as it needs: whole bodies, SSE split at
awkward places, a server that stalls, one that hangs up mid-body.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from wwwserve.devnet.ports import free_port
from wwwserve.node.http import (
    MAX_LINE_BYTES,
    AiohttpClient,
    HttpConnectError,
    HttpError,
    HttpTimeoutError,
    LineTooLongError,
    drain_lines,
)

Handler = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


pytestmark = pytest.mark.component  # a real server on loopback in every test but one


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that reads each request's head and body and hands the body to `handler`.

    Yields its base URL and a list counting accepted connections; closed on exit.
    """
    connections: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length) if length else b""
                await handler(body, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", connections
    finally:
        server.close()


@contextlib.asynccontextmanager
async def http_client(**settings: Any) -> AsyncIterator[AiohttpClient]:
    """An `AiohttpClient`, closed on exit."""
    client = AiohttpClient(**settings)
    try:
        yield client
    finally:
        await client.aclose()


def _response(body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{headers}\r\n"
            ).encode() + body


def _chunked_head() -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_request_returns_status_headers_body_and_reuses_the_connection() -> None:
    async def handler(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response(b'{"echo": ' + body + b"}", headers="retry-after: 3\r\n"))

    async def go() -> None:
        async with serving(handler) as (url, connections), http_client() as client:
            for _ in range(3):
                resp = await client.request("POST", url + "/x", content=b'"hi"',
                                            headers={"Content-Type": "application/json"})
                assert resp.status == 200
                assert resp.json() == {"echo": "hi"}
                assert resp.headers["Retry-After"] == "3"  # case-insensitive
                assert resp.text == '{"echo": "hi"}'
            assert len(connections) == 1  # keep-alive: one connection for three calls

    asyncio.run(go())


def test_error_statuses_are_answers_not_exceptions() -> None:
    async def handler(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_response(b'{"error": {"message": "nope"}}', status="503 Service Unavailable"))

    async def go() -> None:
        async with serving(handler) as (url, _), http_client() as client:
            resp = await client.request("GET", url + "/health")
            assert resp.status == 503
            assert resp.json()["error"]["message"] == "nope"

    asyncio.run(go())


def test_refused_connection_is_a_connect_error() -> None:
    async def go() -> None:
        async with http_client(connect_timeout_s=2.0) as client:
            with pytest.raises(HttpConnectError):
                await client.request("GET", f"http://127.0.0.1:{free_port()}/health")
            with pytest.raises(HttpConnectError):
                await client.open_stream("POST", f"http://127.0.0.1:{free_port()}/v1/x", content=b"{}")

    asyncio.run(go())


def test_a_stalled_server_times_out_and_a_slow_but_steady_stream_does_not() -> None:
    async def stall(body: bytes, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def steady(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_chunked_head())
        for i in range(6):  # 0.6 s in all, 0.1 s between bytes: a tenth of the read timeout
            writer.write(_chunk(f"data: {i}\n\n".encode()))
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.write(b"0\r\n\r\n")

    async def go() -> None:
        async with serving(stall) as (stalled_url, _), serving(steady) as (flowing_url, _), \
                http_client(read_timeout_s=1.0) as client:  # far from the gaps, even on a loaded machine
            with pytest.raises(HttpTimeoutError) as info:
                await client.request("GET", stalled_url + "/x")
            assert not info.value.connect
            stream = await client.open_stream("POST", flowing_url + "/x", content=b"{}")
            lines = [line async for line in stream.lines() if line]
            await stream.aclose()
            assert lines == [f"data: {i}" for i in range(6)]

    asyncio.run(go())


def test_stream_lines_are_split_across_chunks_and_crlf() -> None:
    pieces = [b"data: {\"a\"", b": 1}\r\n", b"\r\ndata: \xc3", b"\xa9t\xc3\xa9\n\ndata: [DONE]\n\n", b"tail"]

    async def handler(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_chunked_head())
        for piece in pieces:
            writer.write(_chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")

    async def go() -> None:
        async with serving(handler) as (url, _), http_client() as client:
            stream = await client.open_stream("POST", url + "/x", content=b"{}")
            assert stream.status == 200
            lines = [line async for line in stream.lines()]
            await stream.aclose()
            # A multi-byte UTF-8 character split between chunks arrives whole; a last line without LF too.
            assert lines == ['data: {"a": 1}', "", "data: été", "", "data: [DONE]", "", "tail"]

    asyncio.run(go())


def test_an_endless_line_is_refused() -> None:
    async def handler(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(_chunked_head())
        block = b"x" * 65536
        for _ in range(MAX_LINE_BYTES // len(block) + 2):
            writer.write(_chunk(block))
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async def go() -> None:
        async with serving(handler) as (url, _), http_client() as client:
            stream = await client.open_stream("POST", url + "/x", content=b"{}")
            with pytest.raises(LineTooLongError):
                async for _ in stream.lines():
                    pass
            await stream.aclose()

    asyncio.run(go())


def test_a_body_cut_short_is_an_http_error() -> None:
    async def handler(body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def go() -> None:
        async with serving(handler) as (url, _), http_client() as client:
            with pytest.raises(HttpError):
                await client.request("GET", url + "/x")

    asyncio.run(go())


def test_closing_an_unfinished_stream_hangs_up_and_a_drained_one_keeps_the_connection() -> None:
    async def go() -> None:
        gone = asyncio.Event()

        async def endless(body: bytes, writer: asyncio.StreamWriter) -> None:
            writer.write(_chunked_head())
            if body == b"short":
                writer.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
                return
            try:
                while True:
                    writer.write(_chunk(b"data: more\n\n"))
                    await writer.drain()
                    await asyncio.sleep(0.01)
            except ConnectionError:
                gone.set()

        async with serving(endless) as (url, connections), http_client() as client:
            for _ in range(2):  # read to [DONE], drain the rest: the connection goes back to the pool
                stream = await client.open_stream("POST", url + "/x", content=b"short")
                lines = stream.lines()
                async for line in lines:
                    if line == "data: [DONE]":
                        break
                await drain_lines(lines)
                await stream.aclose()
            assert len(connections) == 1
            stream = await client.open_stream("POST", url + "/x", content=b"long")
            async for line in stream.lines():
                if line:
                    break
            await stream.aclose()  # the server sees the hang-up (what makes an engine abort its work)
            await asyncio.wait_for(gone.wait(), timeout=5)

    asyncio.run(go())


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        AiohttpClient(read_timeout_s=0)
    with pytest.raises(ValueError):
        AiohttpClient(max_connections=0)
