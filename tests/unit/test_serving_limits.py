"""Slowloris (issue 13, finding 7): a node's server closes connections that never finish their headers,
refuses connections from one address beyond a cap, and answers 408 to a body that does not arrive; a real
uvicorn server with the node's protocol (`node.serving`) on a loopback socket."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import nacl.signing
import pytest
from live_server import LiveServer

from wwwserve.node.app import create_app
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.serving import ConnectionLimits, protocol_class
from wwwserve.node.settings import load_settings

pytestmark = pytest.mark.component  # a real uvicorn server on a loopback socket

MODEL = "fake-model"


class Server(LiveServer):
    """A node's app behind the node's protocol, started at once (`stop()` ends it)."""

    def __init__(self, limits: ConnectionLimits, **server: Any) -> None:
        settings = load_settings(overrides={"backend": {"kind": "fake", "models": [MODEL]}, "server": server})
        app = create_app(settings, [FakeBackend([MODEL])], nacl.signing.SigningKey(b"\x05" * 32), "0x" + "ab" * 20,
                         31337)
        self.limits = limits
        super().__init__(app, http=protocol_class(limits))
        self.__enter__()

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def health(self) -> int:
        return httpx.get(f"{self.url}/health", timeout=5.0).status_code

    def stop(self) -> None:
        self.__exit__()


@pytest.fixture
def slow_headers() -> Iterator[Server]:
    server = Server(ConnectionLimits(header_timeout_s=0.5, max_connections_per_client=1000), body_timeout_s=0.5)
    yield server
    server.stop()


def closed_by_server(s: socket.socket) -> bool:
    """Read until the server closes (True) or 10 s pass (False); what was read is ignored."""
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_connections_that_do_not_finish_their_headers_are_closed(slow_headers: Server) -> None:
    idle = slow_headers.connect()
    partial = slow_headers.connect()
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never the blank line
    assert closed_by_server(idle) and closed_by_server(partial)  # before, both stayed open for good
    # a kept-alive connection gets the same deadline for its next request
    kept = slow_headers.connect()
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.recv(65536).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /health HTTP/1.1\r\nHo")
    assert closed_by_server(kept)
    assert slow_headers.limits.timed_out == 3
    assert slow_headers.health() == 200
    for s in (idle, partial, kept):
        s.close()


def test_a_body_that_does_not_arrive_is_a_408(slow_headers: Server) -> None:
    s = slow_headers.connect()
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 100\r\n\r\n{\"model\": ")
    answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"code":"request_timeout"' in answer
    s.close()
    assert slow_headers.health() == 200


def test_connections_from_one_address_beyond_the_cap_are_closed() -> None:
    """Loopback is exempt in a node (local peers share it); here the exemption is off to test the cap."""
    server = Server(ConnectionLimits(header_timeout_s=30, max_connections_per_client=3, exempt_loopback=False))
    try:
        held = [server.connect() for _ in range(3)]
        extra = server.connect()
        assert closed_by_server(extra)
        assert server.limits.refused == 1
        held.pop().close()  # a slot frees when a connection closes
        deadline = time.monotonic() + 10
        while server.limits.open.get("127.0.0.1", 0) > 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert server.health() == 200
        for s in held:
            s.close()
    finally:
        server.stop()


def test_loopback_is_exempt_from_the_cap() -> None:
    server = Server(ConnectionLimits(header_timeout_s=30, max_connections_per_client=2))
    try:
        held = [server.connect() for _ in range(5)]
        assert server.health() == 200
        assert server.limits.refused == 0
        for s in held:
            s.close()
    finally:
        server.stop()


def test_the_peer_rate_limiter_refills_and_keys_by_sender_and_address() -> None:
    from wwwserve.node.serving import PeerRateLimiter

    limiter = PeerRateLimiter(rate_per_s=10, burst=3)
    assert [limiter.take("0xA", "1.2.3.4", 0.0) for _ in range(3)] == [None, None, None]
    wait = limiter.take("0xa", "1.2.3.4", 0.0)  # the same sender, any case: its burst is spent
    assert wait is not None and abs(wait - 0.1) < 1e-9
    assert limiter.take("0xA", "5.6.7.8", 0.0) is None  # a spoofer elsewhere has its own bucket
    assert limiter.take("0xB", "1.2.3.4", 0.0) is None
    assert limiter.take("0xA", "1.2.3.4", 0.1) is None  # one token back after 1/rate s
    assert limiter.take("0xA", "1.2.3.4", 0.1) is not None
