"""The node's HTTP app on the local serving path, driven with FakeBackend through TestClient."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import nacl.signing
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from wwwserve.node.app import EXECUTOR_HEADER, create_app
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.errors import OverloadedError, UpstreamTimeoutError
from wwwserve.node.managers.model import ModelManager
from wwwserve.node.managers.request import RequestManager
from wwwserve.node.settings import NodeSettings, load_settings
from wwwserve.node.signing import SignedResult, verify_result

MODEL = "fake-model"
NODE = "0x" + "ab" * 20
CHAIN_ID = 31337
KEY = nacl.signing.SigningKey(b"\x07" * 32)
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "one two three four"}]}


def make_settings(**server: Any) -> NodeSettings:
    return load_settings(overrides={"server": server, "backend": {"kind": "fake", "models": [MODEL]}})


def make_client(backend: FakeBackend | None = None, queue_limit: int | None = None, **server: Any) -> TestClient:
    backend = backend or FakeBackend([MODEL])
    app = create_app(make_settings(**server), [backend], KEY, NODE, CHAIN_ID, queue_limit=queue_limit)
    return TestClient(app)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with make_client() as c:
        yield c


def sse_payloads(text: str) -> list[Any]:
    out: list[Any] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        out.append("[DONE]" if data == "[DONE]" else json.loads(data))
    return out


def assert_signed(ext: dict[str, Any], output: str, prompt: Any) -> None:
    signed = SignedResult.from_json(ext)
    verify_result(signed, bytes(KEY.verify_key), output_text=output, prompt=prompt, expected_chain_id=CHAIN_ID)
    assert signed.executor.lower() == NODE
    assert [hop.lower() for hop in signed.route] == [NODE]


def assert_error(resp: httpx.Response, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param
    error: dict[str, Any] = body["error"]
    return error


# ---- happy paths ------------------------------------------------------------------------------


def test_chat_plain_is_signed(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200
    body = resp.json()
    assert body["object"] == "chat.completion"
    text = body["choices"][0]["message"]["content"]
    assert text == "four three two one"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert body["wwwserve"]["request_id"] == body["id"]
    assert_signed(body["wwwserve"], text, CHAT["messages"])
    assert resp.headers[EXECUTOR_HEADER].lower() == NODE


def test_signature_does_not_verify_for_other_output(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json=CHAT).json()
    with pytest.raises(Exception, match="does not match"):
        assert_signed(body["wwwserve"], "something else", CHAT["messages"])


def test_chat_stream_concatenates_and_signs(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers[EXECUTOR_HEADER].lower() == NODE
    events = sse_payloads(resp.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "four three two one"
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in last
    assert all("wwwserve" not in c for c in chunks[:-1])
    assert_signed(last["wwwserve"], text, CHAT["messages"])


def test_chat_stream_include_usage_puts_attestation_on_usage_chunk(client: TestClient) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    chunks = sse_payloads(client.post("/v1/chat/completions", json=body).text)[:-1]
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert_signed(usage_chunk["wwwserve"], text, CHAT["messages"])


def test_completions_plain_and_stream(client: TestClient) -> None:
    req = {"model": MODEL, "prompt": "a b c", "max_tokens": 2}
    body = client.post("/v1/completions", json=req).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "c b"
    assert body["choices"][0]["finish_reason"] == "length"
    assert_signed(body["wwwserve"], "c b", "a b c")

    stream_req = {**req, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_payloads(client.post("/v1/completions", json=stream_req).text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert text == "c b"
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert_signed(chunks[-1]["wwwserve"], text, "a b c")


def test_models_health_ready(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    assert [(m["id"], m["wwwserve_nodes"]) for m in models["data"]] == [(MODEL, 1)]
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200


def test_ready_503_when_backend_down_and_requests_503() -> None:
    backend = FakeBackend([MODEL])
    with make_client(backend) as client:
        backend.set_down(True)
        assert_error(client.get("/ready"), 503, "backend_unavailable")
        assert client.get("/health").status_code == 200
        assert_error(client.post("/v1/chat/completions", json=CHAT), 503, "backend_unavailable")
        assert_error(client.post("/v1/chat/completions", json={**CHAT, "stream": True}), 503, "backend_unavailable")
        backend.set_down(False)
        assert client.get("/ready").status_code == 200


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A /metrics page as {(sample name, labels): value}, read with prometheus_client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=CHAT)
    client.post("/v1/chat/completions", json={"model": "nope", "messages": CHAT["messages"]})
    client.get("/nowhere")
    page = client.get("/metrics")
    assert page.headers["content-type"] == CONTENT_TYPE_LATEST
    got = scraped(page.text)
    chat = "/v1/chat/completions"
    for route, method, status in ((chat, "POST", "200"), (chat, "POST", "404"), ("other", "GET", "404")):
        labels = frozenset({("route", route), ("method", method), ("status", status)})
        assert got[("wwwserve_http_requests_total", labels)] == 1, labels
    assert got[("wwwserve_http_requests_in_flight", frozenset())] == 1  # the /metrics request itself
    assert got[("wwwserve_http_request_duration_seconds_count", frozenset({("route", chat)}))] == 2
    inf_bucket = ("wwwserve_http_request_duration_seconds_bucket", frozenset({("route", chat), ("le", "+Inf")}))
    assert got[inf_bucket] == 2


# ---- bad input --------------------------------------------------------------------------------


def test_malformed_json(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", content=b'{"model": ', headers={"content-type": "application/json"})
    assert_error(resp, 400, "invalid_json")
    assert_error(client.post("/v1/chat/completions", content=b"[1]"), 400, "invalid_type")
    assert_error(client.post("/v1/chat/completions", content=b'{"model": NaN}'), 400, "invalid_json")


@pytest.mark.parametrize("stream", [False, True])
def test_bodies_that_would_crash_or_poison_a_node_are_400(client: TestClient, stream: bool) -> None:
    """Issue 13, findings 1 and 5: a 400,000-deep body (200,000 overflowed the C stack: eth_keyfile raises the
    recursion limit to 100,000), a number too large for a float, a lone UTF-16 surrogate in the prompt:
    each is a 400 in the OpenAI error shape, for plain and streamed requests alike, and the node serves
    the next request."""
    deep = b"[" * 400_000 + b"]" * 400_000  # 800 KB, under the 1 MiB body limit
    head = b'{"model": "' + MODEL.encode() + b'", "stream": ' + (b"true" if stream else b"false") + b', '
    bodies = {
        "nested more than 64 deep": head + b'"messages": ' + deep + b"}",
        "too large": head + b'"temperature": 1e400, "messages": [{"role": "user", "content": "hi"}]}',
        "lone UTF-16 surrogate": head + b'"messages": [{"role": "user", "content": "a\\ud800b"}]}',
    }
    for words, body in bodies.items():
        err = assert_error(client.post("/v1/chat/completions", content=body), 400, "invalid_json")
        assert words in err["message"], err
    resp = client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert resp.status_code == 200


def test_curl_style_form_content_type_is_parsed(client: TestClient) -> None:
    resp = client.post(
        "/v1/chat/completions",
        content=json.dumps(CHAT).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 200


def test_wrong_types_name_the_param(client: TestClient) -> None:
    err = assert_error(client.post("/v1/chat/completions", json={**CHAT, "temperature": "0.5"}), 400, "invalid_type")
    assert err["param"] == "temperature"
    err = assert_error(
        client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": 3}]}),
        400,
        "invalid_type",
    )
    assert err["param"] == "messages[0].content"


def test_empty_messages(client: TestClient) -> None:
    err = assert_error(client.post("/v1/chat/completions", json={"model": MODEL, "messages": []}), 400, "invalid_value")
    assert err["param"] == "messages"
    assert err["type"] == "invalid_request_error"


def test_unknown_model(client: TestClient) -> None:
    assert_error(client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"}), 404, "model_not_found", "model")
    assert_error(client.post("/v1/completions", json={"model": "gpt-9", "prompt": "x", "stream": True}), 404,
                 "model_not_found")


def test_context_too_long() -> None:
    with make_client(FakeBackend([MODEL], max_context_tokens=3)) as client:
        assert_error(client.post("/v1/chat/completions", json=CHAT), 400, "context_length_exceeded")
        assert_error(client.post("/v1/chat/completions", json={**CHAT, "stream": True}), 400,
                     "context_length_exceeded")


def test_body_over_limit_is_413() -> None:
    with make_client(max_body_bytes=1024) as client:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 2000}]}
        assert_error(client.post("/v1/chat/completions", json=big), 413, "request_too_large")

        # Chunked (no Content-Length): counted while reading.
        def chunks() -> Iterator[bytes]:
            yield b'{"model": "fake-model", "messages": [{"role": "user", "content": "'
            for _ in range(30):
                yield b"y" * 100
            yield b'"}]}'

        assert_error(client.post("/v1/chat/completions", content=chunks()), 413, "request_too_large")
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_api_keys() -> None:
    with make_client(api_keys=["secret-key-1", "secret-key-2"]) as client:
        assert_error(client.post("/v1/chat/completions", json=CHAT), 401, "invalid_api_key")
        bad = {"authorization": "Bearer wrong"}
        assert_error(client.post("/v1/chat/completions", json=CHAT, headers=bad), 401, "invalid_api_key")
        assert_error(client.get("/v1/models", headers={"authorization": "Basic secret-key-1"}), 401, "invalid_api_key")
        ok = {"authorization": "Bearer secret-key-2"}
        assert client.post("/v1/chat/completions", json=CHAT, headers=ok).status_code == 200
        assert client.get("/v1/models", headers=ok).status_code == 200
        assert client.get("/health").status_code == 200


def test_overload_is_503_with_retry_after() -> None:
    backend = FakeBackend([MODEL], latency_s=0.5)
    with make_client(backend, queue_limit=0, max_concurrent_requests=1) as client:
        results: list[httpx.Response] = []
        started = threading.Event()

        def slow() -> None:
            started.set()
            results.append(client.post("/v1/chat/completions", json=CHAT))

        thread = threading.Thread(target=slow)
        thread.start()
        started.wait()
        for _ in range(100):  # wait until the first request holds the slot
            if backend.running:
                break
            threading.Event().wait(0.01)
        assert backend.running == 1
        resp = client.post("/v1/chat/completions", json=CHAT)
        assert_error(resp, 503, "overloaded")
        assert resp.headers["retry-after"] == "1"
        thread.join()
        assert results[0].status_code == 200
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200  # slot came back


def test_hundred_invalid_requests_then_valid(client: TestClient) -> None:
    bad_bodies: list[Any] = [b"{", b"[]", {"model": MODEL}, {"model": MODEL, "messages": []}, {**CHAT, "n": 2}]
    for i in range(100):
        body = bad_bodies[i % len(bad_bodies)]
        resp = (
            client.post("/v1/chat/completions", content=body)
            if isinstance(body, bytes)
            else client.post("/v1/chat/completions", json=body)
        )
        assert resp.status_code == 400
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    assert client.get("/health").status_code == 200


def test_stream_failing_midway_ends_with_error_event_and_done() -> None:
    with make_client(FakeBackend([MODEL], fail_after_words=2)) as client:
        resp = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert resp.status_code == 200
        events = sse_payloads(resp.text)
        assert events[-1] == "[DONE]"
        assert events[-2]["error"]["code"] == "backend_unavailable"
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
        assert text == "four three"
        # The slot was released: the next request is served.
        assert client.post("/v1/completions", json={"model": MODEL, "prompt": "x"}).status_code == 200


# ---- Request manager --------------------------------------------------------------------------


def gen_req(request_id: str, prompt: str = "a b c d e f") -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model=MODEL, prompt=prompt)


def test_request_manager_hands_slots_over_in_order() -> None:
    async def main() -> list[str]:
        backend = FakeBackend([MODEL], latency_s=0.05)
        manager = RequestManager(ModelManager([backend]), max_concurrent=1, queue_limit=2)
        order: list[str] = []

        async def run(name: str) -> None:
            await manager.generate(gen_req(name))
            order.append(name)

        tasks = [asyncio.create_task(run(f"r{i}")) for i in range(3)]
        await asyncio.sleep(0.01)
        assert manager.running == 1 and manager.waiting == 2
        with pytest.raises(OverloadedError) as info:
            await manager.generate(gen_req("r3"))
        assert info.value.retry_after_s == 1
        await asyncio.gather(*tasks)
        assert manager.running == 0 and manager.waiting == 0
        return order

    assert asyncio.run(main()) == ["r0", "r1", "r2"]


def test_request_manager_queue_timeout() -> None:
    async def main() -> None:
        backend = FakeBackend([MODEL], latency_s=0.5)
        manager = RequestManager(ModelManager([backend]), max_concurrent=1, queue_limit=1, request_timeout_s=0.05)
        first = asyncio.create_task(manager.generate(gen_req("a")))
        await asyncio.sleep(0.01)
        with pytest.raises(UpstreamTimeoutError):
            await manager.generate(gen_req("b"))
        with pytest.raises(UpstreamTimeoutError):  # the running one hits the end-to-end deadline too
            await first
        assert manager.running == 0 and manager.waiting == 0

    asyncio.run(main())


class _AbortSpy(FakeBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aborted: list[str] = []

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)
        await super().abort(request_id)


def test_request_manager_stream_close_aborts_backend() -> None:
    async def main() -> None:
        backend = _AbortSpy([MODEL], tokens_per_s=50)
        manager = RequestManager(ModelManager([backend]), max_concurrent=1, queue_limit=0)
        stream = await manager.open_stream(gen_req("s1"))
        got = []
        async for delta in stream:
            got.append(delta.text)
            if len(got) == 2:
                break
        assert backend.running == 1
        await stream.aclose()  # what the app does when the client disconnects
        assert backend.aborted == ["s1"]
        assert manager.running == 0
        assert backend.running == 0  # the backend freed its slot at once, not at garbage collection
        await stream.aclose()  # idempotent: the slot is not released twice
        assert manager.running == 0
        stream2 = await manager.open_stream(gen_req("s2", "x y"))
        texts = [d.text async for d in stream2]
        await stream2.aclose()
        assert "".join(texts) == "y x"
        assert backend.aborted == ["s1"]  # a stream that reached its end is not aborted

    asyncio.run(main())


def test_request_manager_cancelled_generate_aborts() -> None:
    async def main() -> None:
        backend = FakeBackend([MODEL], latency_s=5)
        manager = RequestManager(ModelManager([backend]), max_concurrent=1, queue_limit=0)
        task = asyncio.create_task(manager.generate(gen_req("g")))
        await asyncio.sleep(0.01)
        assert backend.running == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert manager.running == 0
        await asyncio.sleep(0)
        assert backend.running == 0

    asyncio.run(main())


@pytest.mark.component
def test_a_whole_answer_stops_when_its_client_hangs_up() -> None:
    """Issue 13, finding 11: a streamed answer stopped when its client left, a whole one kept the engine busy
    to the end. Over a real socket (uvicorn), a client asks for a long whole answer and hangs up once it
    runs: the backend's request stops, long before the answer would have finished."""
    from live_server import LiveServer

    backend = FakeBackend([MODEL], tokens_per_s=5.0, words=300)  # a minute of answer
    with LiveServer(create_app(make_settings(), [backend], KEY, NODE, CHAIN_ID), log_level="warning") as server:
        done = threading.Event()

        def ask() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=2.0)
            done.set()

        threading.Thread(target=ask, daemon=True).start()
        assert _until(lambda: backend.running == 1, 10)
        assert done.wait(10)  # the client gave up after 2 s and closed its connection
        assert _until(lambda: backend.running == 0, 10), "the engine kept generating for nobody"
        # the node still serves
        assert httpx.get(f"{server.url}/health", timeout=5.0).status_code == 200


@pytest.mark.component
def test_a_stream_waiting_for_a_busy_engine_leaves_when_its_client_hangs_up() -> None:
    """A stream waits for its first output, in the engine's queue behind a long answer. Its client gives up:
    it leaves the queue at once (before, it held its place until the engine reached it, then failed to
    write), so the engine never runs it."""
    from live_server import LiveServer

    backend = FakeBackend([MODEL], capacity=1, tokens_per_s=5.0, words=300)  # one at a time, a minute each
    with LiveServer(create_app(make_settings(), [backend], KEY, NODE, CHAIN_ID), log_level="warning") as server:

        def ask(body: dict[str, Any], timeout_s: float) -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=timeout_s)

        first = threading.Thread(target=ask, args=(CHAT, 30.0), daemon=True)
        first.start()
        assert _until(lambda: backend.running == 1, 10)
        gone = threading.Thread(target=ask, args=({**CHAT, "stream": True}, 1.0), daemon=True)
        gone.start()
        assert _until(lambda: backend.waiting == 1, 10)
        gone.join(10)  # the streaming client gave up after 1 s and closed its connection
        assert _until(lambda: backend.waiting == 0, 2), "the stream kept its place in the engine's queue"
        assert backend.requests_seen == 2 and backend.running == 1  # the first answer goes on
        backend.set_down(True)  # ends it (the server stops only once its requests have)
        first.join(10)


def _until(condition: Any, timeout_s: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passes (False)."""
    import time as time_module

    deadline = time_module.monotonic() + timeout_s
    while not condition():
        if time_module.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)
    return True


def test_client_hanging_up_is_no_error_and_counts_499(caplog: pytest.LogCaptureFixture) -> None:
    """A user who gives up waiting (a client timeout) is not a node error: no traceback, no 500 logged or
    counted (the demo's timed-out users filled node logs with 'unexpected error answered as 500')."""
    backend = FakeBackend([MODEL], latency_s=30)
    app = create_app(make_settings(), [backend], KEY, NODE, CHAIN_ID)
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "headers": [(b"content-type", b"application/json")], "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 9101), "client": ("127.0.0.1", 50000), "root_path": ""}
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        started = asyncio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            started.set()
            while backend.running == 0:  # hang up once the backend works on the request
                await asyncio.sleep(0.01)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async with app.router.lifespan_context(app):
            await asyncio.wait_for(app(scope, receive, send), timeout=20)

    with caplog.at_level("INFO"):
        asyncio.run(main())
    assert backend.running == 0  # the abandoned generation was stopped, not left to burn the CPU
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
    assert any("hung up" in r.getMessage() for r in caplog.records)
