"""Fuzz tier (issue 13): generated requests against a node's user API, alone and through a delegation hop,
and a corpus of hostile bodies and raw HTTP framing against a live server. Whatever comes in, the node
answers: never a 5xx, never a hang, never a crash, always the OpenAI error shape for a 4xx, and /health
200 afterwards. The counts are printed (run with `-s` to see them)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import Counter

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import LiveServer
from test_delegation import DISPATCHER, EXECUTOR, Net

from wwwserve.node.app import create_app
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.settings import load_settings

MODEL = "fake-model"
KEY_SEED = b"\x07" * 32
FUZZ_EXAMPLES = 1_000  # per target: a node alone, and an origin delegating every request

# ---- what to send ---------------------------------------------------------------------------------------

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
content = st.text(max_size=200) | st.lists(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "x"]), "text": st.text(max_size=50)}),
    max_size=3) | junk
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "nobody"]), "content": content},
    optional={"name": st.text(max_size=10), "extra": junk})
sampling = {
    "stream": st.booleans() | junk,
    "max_tokens": st.integers(min_value=-5, max_value=10**9) | junk,
    "temperature": st.floats(min_value=-3, max_value=5, allow_nan=False) | junk,
    "top_p": st.floats(min_value=-1, max_value=2, allow_nan=False) | junk,
    "n": st.integers(min_value=-1, max_value=5),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=6) | junk,
    "seed": st.integers(min_value=-(2**65), max_value=2**65),
    "logit_bias": st.dictionaries(st.text(max_size=6), st.integers(-200, 200), max_size=3) | junk,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | junk}) | junk,
    "user": st.text(max_size=20),
    "presence_penalty": st.floats(min_value=-3, max_value=3, allow_nan=False),
    "unknown_field": junk,
}
chat = st.fixed_dictionaries(
    {"model": st.sampled_from([MODEL, "other-model", ""]) | junk, "messages": st.lists(message, max_size=4) | junk},
    optional=sampling)
completion = st.fixed_dictionaries(
    {"model": st.sampled_from([MODEL, "nope"]) | junk,
     "prompt": st.text(max_size=200) | st.lists(st.text(max_size=20), max_size=3) | junk},
    optional=sampling)


@st.composite
def raw_bodies(draw: st.DrawFn) -> bytes:
    """Bytes that are not quite JSON: cut short, bytes flipped, escapes of every kind, BOMs, deep brackets."""
    base = json.dumps(draw(chat), ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    kind = draw(st.sampled_from(["cut", "flip", "escape", "bom", "deep", "bytes", "number"]))
    if kind == "cut":
        return base[: draw(st.integers(0, max(0, len(base) - 1)))]
    if kind == "flip":
        i = draw(st.integers(0, max(0, len(base) - 1)))
        return base[:i] + bytes([draw(st.integers(0, 255))]) + base[i + 1:]
    if kind == "escape":
        esc = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\u0000", b"\\uZZZZ", b"\\x41", b"\\",
                                    b"\\ud83d\\ude00"]))
        return b'{"model": "fake-model", "messages": [{"role": "user", "content": "a' + esc + b'b"}]}'
    if kind == "bom":
        return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + base
    if kind == "deep":
        n = draw(st.integers(60, 70_000))
        return b'{"model": "fake-model", "messages": ' + b"[" * n + b"]" * n + b"}"
    if kind == "number":
        number = draw(st.sampled_from([b"1e400", b"-1e400", b"NaN", b"Infinity", b"1" + b"0" * 5000, b"-0", b"1e-400"]))
        return b'{"model": "fake-model", "max_tokens": ' + number + b', "messages": []}'
    return draw(st.binary(max_size=300))


valid_chat = st.fixed_dictionaries(
    {"model": st.just(MODEL), "messages": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant"]), "content": st.text(max_size=100)}),
        min_size=1, max_size=3)},
    optional={"stream": st.booleans(), "max_tokens": st.integers(1, 64), "temperature": st.floats(0, 2),
              "top_p": st.floats(0.01, 1), "stop": st.lists(st.text(min_size=1, max_size=4), max_size=4),
              "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}), "seed": st.integers(0, 2**31),
              "user": st.text(max_size=20)})
valid_completion = st.fixed_dictionaries(
    {"model": st.just(MODEL), "prompt": st.text(max_size=200)},
    optional={"stream": st.booleans(), "max_tokens": st.integers(1, 64), "temperature": st.floats(0, 2)})

requests = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), valid_chat.map(lambda d: json.dumps(d).encode())),
    st.tuples(st.just("/v1/completions"), valid_completion.map(lambda d: json.dumps(d).encode())),
    st.tuples(st.just("/v1/chat/completions"), chat.map(lambda d: json.dumps(d).encode())),
    st.tuples(st.just("/v1/completions"), completion.map(lambda d: json.dumps(d).encode())),
    st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), raw_bodies()),
)

# ---- checking what comes back ---------------------------------------------------------------------------


def check(status: int, body: bytes, counts: Counter[str]) -> None:
    counts[f"{status // 100}xx"] += 1
    assert status < 500, (status, body[:300])
    if status >= 400:
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return
    text = body.decode("utf-8")
    if text.startswith("data:") or "\n\ndata:" in text:  # a stream: every event is JSON or [DONE]
        events = [block.removeprefix("data: ") for block in text.split("\n\n") if block.strip()]
        assert events[-1] == "[DONE]", events[-3:]
        for event in events[:-1]:
            parsed = json.loads(event)
            assert "error" not in parsed, parsed  # the fake backend never fails mid-stream
    else:
        assert json.loads(text)["choices"], text[:300]


def report(name: str, counts: Counter[str]) -> None:
    total = sum(counts.values())
    print(f"\nfuzz {name}: {total} requests, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert counts["5xx"] == 0


FUZZ_SETTINGS = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much])


def test_fuzz_a_node_alone() -> None:
    import nacl.signing

    backend = FakeBackend([MODEL], words=8)
    app = create_app(load_settings(overrides={"backend": {"kind": "fake", "models": [MODEL]}}), [backend],
                     nacl.signing.SigningKey(KEY_SEED), "0x" + "ab" * 20, 31337)
    counts: Counter[str] = Counter()
    with TestClient(app) as client:

        @FUZZ_SETTINGS
        @given(requests)
        def one(case: tuple[str, bytes]) -> None:
            path, body = case
            resp = client.post(path, content=body, headers={"content-type": "application/json"})
            check(resp.status_code, resp.content, counts)

        one()
        assert client.get("/health").status_code == 200
        assert backend.running == 0
    report("node", counts)
    assert counts["2xx"] > 50 and counts["4xx"] > 200  # the generator reaches both sides


def test_fuzz_through_a_delegation_hop() -> None:
    """The origin delegates every request it takes; what reaches the executor is what the origin relays."""
    net = Net()
    a = net.add("a", policy=DISPATCHER)
    net.add("b", backends=[FakeBackend([MODEL], words=8)], policy=EXECUTOR)
    counts: Counter[str] = Counter()

    async def send(path: str, body: bytes) -> tuple[int, bytes]:
        async with net.client("a") as client:
            resp = await client.post(path, content=body, headers={"content-type": "application/json"})
            return resp.status_code, resp.content

    @FUZZ_SETTINGS
    @given(requests)
    def one(case: tuple[str, bytes]) -> None:
        status, body = asyncio.run(send(*case))
        check(status, body, counts)

    one()
    report("delegation hop", counts)
    assert a.comm.bans.banned() == {}  # no request got the healthy executor banned
    assert counts["2xx"] > 50


# ---- hostile corpus on a live server ---------------------------------------------------------------------


class LiveNode(LiveServer):
    def __init__(self, max_body_bytes: int) -> None:
        import nacl.signing

        self.backend = FakeBackend([MODEL], words=8)
        app = create_app(load_settings(overrides={"backend": {"kind": "fake", "models": [MODEL]},
                                                  "server": {"max_body_bytes": max_body_bytes}}),
                         [self.backend], nacl.signing.SigningKey(KEY_SEED), "0x" + "ab" * 20, 31337)
        super().__init__(app, timeout_keep_alive=2)

    def raw(self, data: bytes, timeout_s: float = 5.0) -> bytes:
        """Send raw bytes, half-close, read what comes back until the server closes (or the timeout)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            try:
                while chunk := s.recv(65536):
                    chunks.append(chunk)
            except TimeoutError:
                pass
            return b"".join(chunks)


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


@pytest.mark.component
def test_a_hostile_corpus_on_a_live_node() -> None:
    """1,000,000 nested arrays (a 4 MiB body limit lets it reach the parser), raw framing a client library
    would never send, and huge headers: every answer is an HTTP status below 500 or a closed connection,
    and the node still serves."""
    deep = b"[" * 1_000_000 + b"]" * 1_000_000
    chat_path = "/v1/chat/completions"
    corpus = {
        "1,000,000 deep": _post(chat_path, b'{"model": "fake-model", "messages": ' + deep + b"}"),
        "deep top level": _post(chat_path, deep),
        "content-length lies short": _post(chat_path, b'{"model": "fake-model"}')[:-5],
        "content-length negative": (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n{}"),
        "content-length not a number": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ab\r\n\r\n",
        "two content-lengths": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                               b"Content-Length: 3\r\n\r\n{}",
        "chunked, bad sizes": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"zz\r\n{}\r\n0\r\n\r\n",
        "chunked, deep": b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                         + f"{2 * 300_000:x}".encode() + b"\r\n" + b"[" * 300_000 + b"]" * 300_000 + b"\r\n0\r\n\r\n",
        "garbage request line": b"\x00\xff GARBAGE\r\n\r\n",
        "header without colon": b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
        "100 KB header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        "10,000 headers": b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 10_000 + b"\r\n",
        "HTTP/0.9": b"GET /health\r\n",
        "unknown method": b"BREW /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
        "bad UTF-8 body": _post(chat_path, b'{"model": "\xff\xfe"}'),
        "utf-16 body": _post(chat_path, json.dumps({"model": MODEL, "messages": []}).encode("utf-16")),
    }
    with LiveNode(max_body_bytes=4 * 1024 * 1024) as node:
        for name, data in corpus.items():
            answer = node.raw(data)
            if answer:
                status = int(answer.split(b" ", 2)[1])
                assert status < 500, (name, answer[:300])
            assert node.thread.is_alive(), name
            health = httpx.get(f"http://127.0.0.1:{node.port}/health", timeout=5.0)
            assert health.status_code == 200, name
        ok = httpx.post(f"http://127.0.0.1:{node.port}{chat_path}", timeout=10.0,
                        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200
        assert node.backend.running == 0
