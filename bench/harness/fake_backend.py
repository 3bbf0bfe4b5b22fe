"""The instant fake OpenAI-compatible backend: raw asyncio HTTP/1.1, keep-alive, SSE via chunked encoding.

Every path a serving benchmark measures ends at this one process, answering a fixed chat completion
(plain or SSE) at once, so the figures measure the layers in front of it. It runs as
`bench/serving.py --serve-fake-backend PORT` (`fake_backend_command`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

from harness.common import BENCH_DIR, HOST, MODEL

ANSWER_WORDS = ["Hello", " from", " the", " bench", "."]


def http_response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    """A whole keep-alive HTTP/1.1 response with `body`."""
    return (f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            "connection: keep-alive\r\n\r\n").encode() + body


def chat_answer(model: str) -> bytes:
    """The body of the fixed chat completion."""
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(ANSWER_WORDS)},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": len(ANSWER_WORDS),
                  "total_tokens": 6 + len(ANSWER_WORDS)},
    }).encode()


def completion_answer(model: str) -> bytes:
    """The body of the fixed (legacy) text completion."""
    return json.dumps({
        "id": "cmpl-bench", "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "text": "".join(ANSWER_WORDS), "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 6, "completion_tokens": len(ANSWER_WORDS), "total_tokens": 6 + len(ANSWER_WORDS)},
    }).encode()


def chat_stream(model: str, include_usage: bool) -> bytes:
    """The fixed chat completion as a whole SSE response (chunked encoding), usage chunk optional."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": word}) for word in ANSWER_WORDS]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": model, "choices": [],
                       "usage": {"prompt_tokens": 6, "completion_tokens": len(ANSWER_WORDS),
                                 "total_tokens": 6 + len(ANSWER_WORDS)}})
    out = b""
    for data in [*(json.dumps(e).encode() for e in events), b"[DONE]"]:
        payload = b"data: " + data + b"\n\n"
        out += f"{len(payload):x}\r\n".encode() + payload + b"\r\n"
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            b"connection: keep-alive\r\n\r\n")
    return head + out + b"0\r\n\r\n"


# Connections accepted and requests answered by this fake backend process (GET /bench/stats), so the
# benchmark can tell whether a proxy in front reuses its upstream connections.
FAKE_STATS = {"connections": 0, "requests": 0}


class FakeOpenAIProtocol(asyncio.Protocol):
    """One connection of the fake backend: parses requests as they arrive and answers each at once."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        FAKE_STATS["connections"] += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, target = head[0].split(" ")[:2]
            FAKE_STATS["requests"] += 1
            assert self.transport is not None
            self.transport.write(answer_request(method, target.split("?")[0], body))


def answer_request(method: str, path: str, body: bytes) -> bytes:
    """The fake backend's whole HTTP response to one request."""
    if method == "GET" and path in ("/v1/models", "/models"):
        return http_response("200 OK", json.dumps(
            {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench",
                                         "max_model_len": 4096}]}).encode())
    if method == "GET" and path == "/bench/stats":
        return http_response("200 OK", json.dumps(FAKE_STATS).encode())
    if method == "GET" and path in ("/health", "/"):
        return http_response("200 OK", b"{}")
    if method == "POST" and path.endswith("/completions"):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return http_response("400 Bad Request", b'{"error":{"message":"bad json","type":"invalid_request_error"}}')
        model = str(req.get("model") or MODEL)
        if req.get("stream"):
            include = bool((req.get("stream_options") or {}).get("include_usage"))
            return chat_stream(model, include)
        is_chat = path.endswith("/chat/completions")
        return http_response("200 OK", chat_answer(model) if is_chat else completion_answer(model))
    return http_response("404 Not Found", b'{"error":{"message":"not found","type":"not_found"}}')


def serve_fake_backend(port: int) -> None:
    """Run the fake backend on HOST:port until SIGTERM/SIGINT (the `--serve-fake-backend` mode)."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(FakeOpenAIProtocol, HOST, port, backlog=1024)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())


def fake_backend_command(port: int) -> list[str]:
    """The command line that runs the fake backend on HOST:port."""
    return [sys.executable, str(BENCH_DIR / "serving.py"), "--serve-fake-backend", str(port)]


def backend_stats(port: int) -> dict[str, int]:
    """Connections accepted and requests answered so far by the fake backend."""
    import httpx

    stats: dict[str, int] = httpx.get(f"http://{HOST}:{port}/bench/stats", timeout=5.0).json()
    return stats
