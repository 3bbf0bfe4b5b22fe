"""The Model manager's backends: the deterministic FakeBackend, and OpenAIBackend driven against a
real tiny OpenAI-compatible server (FastAPI + uvicorn on loopback, in a thread) that streams SSE,
notices client disconnects and serves a vLLM-style /metrics page. Plus the pure parts: the Prometheus
parser, the SSE decoder and the upstream error mapping."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from wwwserve.devnet.ports import bound_socket, free_port
from wwwserve.node.backends import (
    Backend,
    BackendLoad,
    FakeBackend,
    GenerationAbortedError,
    GenerationRequest,
    OpenAIBackend,
    StreamDelta,
)
from wwwserve.node.backends.openai_compat import (
    MetricsLoad,
    SSEDecoder,
    error_from_upstream,
    load_from_metrics,
    parse_prometheus_text,
)
from wwwserve.node.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    UpstreamTimeoutError,
)
from wwwserve.node.protocol import ChatCompletionRequest, CompletionRequest

# A guard against a hang: far above what a test takes on a loaded machine, far below what the failure it
# guards against would take (forever, or minutes).
HANG_S = 30.0


def req(prompt: str = "one two three four", request_id: str = "r1", model: str = "m", **kw: Any) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model=model, prompt=prompt, **kw)


def chat(content: str, request_id: str = "r1", model: str = "m", **kw: Any) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model=model, messages=[{"role": "user", "content": content}], **kw)


async def collect(stream: AsyncIterator[StreamDelta]) -> list[StreamDelta]:
    return [delta async for delta in stream]


# ---------------------------------------------------------------------------------------------
# GenerationRequest


def test_from_chat_flattens_parts_and_prefers_max_completion_tokens() -> None:
    wire = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}]},
            ],
            "max_tokens": 5,
            "max_completion_tokens": 7,
            "stop": "END",
            "seed": 3,
            "temperature": 0.5,
        }
    )
    gen = GenerationRequest.from_chat(wire, "chatcmpl-x")
    assert gen.is_chat and gen.request_id == "chatcmpl-x"
    assert gen.messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    assert (gen.max_tokens, gen.stop, gen.seed, gen.temperature, gen.top_p) == (7, ["END"], 3, 0.5, None)
    assert gen.prompt_text == "be brief\nhi there"


def test_from_completion() -> None:
    wire = CompletionRequest.model_validate({"model": "m", "prompt": ["say it"], "max_tokens": 4, "stop": ["a", "b"]})
    gen = GenerationRequest.from_completion(wire, "cmpl-1")
    assert not gen.is_chat
    assert (gen.prompt, gen.max_tokens, gen.stop, gen.messages) == ("say it", 4, ["a", "b"], None)


def test_generation_request_needs_exactly_one_of_messages_and_prompt() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest(request_id="r", model="m")
    with pytest.raises(ValueError, match="exactly one"):
        GenerationRequest(request_id="r", model="m", prompt="x", messages=[])


def test_backend_load_rejects_nan_and_out_of_range() -> None:
    for bad in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError):
            BackendLoad(kv_usage=bad)
    with pytest.raises(ValueError):
        BackendLoad(kv_usage=0.5, running=-1)


def test_both_backends_satisfy_the_protocol() -> None:
    assert isinstance(FakeBackend(["m"]), Backend)
    assert isinstance(OpenAIBackend("http://127.0.0.1:1", models=["m"]), Backend)


# ---------------------------------------------------------------------------------------------
# FakeBackend


def test_fake_is_deterministic_and_stream_matches_generate() -> None:
    async def go() -> None:
        fake = FakeBackend(["m"])
        first = await fake.generate(req("alpha beta gamma delta", seed=1))
        again = await fake.generate(req("alpha beta gamma delta", seed=1))
        other_seed = await fake.generate(req("alpha beta gamma delta", seed=2))
        assert first == again
        assert first.text == "gamma beta alpha delta"  # reversed, rotated by the seed
        assert other_seed.text == "beta alpha delta gamma"
        assert (first.finish_reason, first.prompt_tokens, first.completion_tokens) == ("stop", 4, 4)
        deltas = await collect(fake.stream(req("alpha beta gamma delta", seed=1)))
        assert [d.text for d in deltas[:-1]] == ["gamma", " beta", " alpha", " delta"]
        assert "".join(d.text for d in deltas) == first.text
        assert deltas[-1].is_final and not any(d.is_final for d in deltas[:-1])
        assert (deltas[-1].finish_reason, deltas[-1].prompt_tokens, deltas[-1].completion_tokens) == ("stop", 4, 4)
        chat_result = await fake.generate(chat("x y"))
        assert chat_result.text == "y x"
        assert fake.requests_seen == 5

    asyncio.run(go())


def test_fake_max_tokens_stop_and_words() -> None:
    async def go() -> None:
        fake = FakeBackend(["m"])
        capped = await fake.generate(req("a b c d e", max_tokens=2))
        assert (capped.text, capped.finish_reason, capped.completion_tokens) == ("e d", "length", 2)
        stopped = await fake.generate(req("a b c d e", stop=["c"]))
        assert (stopped.text, stopped.finish_reason) == ("e d ", "stop")
        streamed = await collect(fake.stream(req("a b c d e", stop=["c"])))
        assert "".join(d.text for d in streamed) == "e d "
        long = await FakeBackend(["m"], words=7).generate(req("a b c"))
        assert long.text == "c b a c b a c" and long.completion_tokens == 7
        empty = await fake.generate(req(""))
        assert empty.text == "ok" and empty.prompt_tokens == 0

    asyncio.run(go())


def test_fake_random_responder_is_nonsense_reproducible_per_request() -> None:
    fake = FakeBackend(["m"], random_words=True)
    one = fake.answer(req("one two three four", request_id="a", max_tokens=20))[0]
    assert one == fake.answer(req("other words entirely", request_id="a", max_tokens=20))[0]  # not the prompt's
    assert one != fake.answer(req("one two three four", request_id="b", max_tokens=20))[0]
    assert len(one.split()) == 20 and not {"one", "two", "three", "four"} & set(one.split())


def test_fake_load_accounting_with_capacity() -> None:
    async def go() -> None:
        # each request takes 0.54 s: a loaded machine that stalls this loop for a while still sees them busy
        fake = FakeBackend(["m"], latency_s=0.5, tokens_per_s=100, capacity=2, max_context_tokens=100)
        assert await fake.load() == BackendLoad(kv_usage=0.0, running=0, waiting=0, max_context_tokens=100,
                                                max_running=2)
        tasks = [asyncio.create_task(fake.generate(req("a b c d", request_id=f"r{i}"))) for i in range(3)]
        await asyncio.sleep(0)  # one turn of the loop: each task takes a slot or queues
        busy = await fake.load()
        assert (busy.kv_usage, busy.running, busy.waiting) == (1.0, 2, 1)
        results = await asyncio.gather(*tasks)
        assert {r.text for r in results} == {"d c b a"}
        assert await fake.load() == BackendLoad(kv_usage=0.0, running=0, waiting=0, max_context_tokens=100,
                                                max_running=2)

    asyncio.run(go())


def test_fake_abort_stops_a_stream_early_and_fails_a_generate() -> None:
    async def go() -> None:
        fake = FakeBackend(["m"], tokens_per_s=200, words=100_000, capacity=1)
        got: list[StreamDelta] = []
        async with asyncio.timeout(HANG_S):  # the words left would take 500 s
            async for delta in fake.stream(req(request_id="s")):
                got.append(delta)
                if len(got) == 3:
                    await fake.abort("s")
        assert len(got) == 3 and not any(d.is_final for d in got)
        assert (await fake.load()).running == 0

        slow = asyncio.create_task(fake.generate(req(request_id="g")))
        queued = asyncio.create_task(fake.generate(req(request_id="q")))
        await asyncio.sleep(0.02)
        assert (fake.running, fake.waiting) == (1, 1)
        await fake.abort("q")  # aborted while it waits for the single slot
        await fake.abort("g")
        for task in (slow, queued):
            with pytest.raises(GenerationAbortedError):
                await task
        assert (fake.running, fake.waiting) == (0, 0)
        await fake.abort("unknown")  # no-op
        assert (await fake.generate(req("a b", request_id="g", max_tokens=2))).text == "b a"  # the id is free again

    asyncio.run(go())


def test_fake_down_and_failing() -> None:
    async def go() -> None:
        fake = FakeBackend(["m"])
        fake.set_down(True)
        assert await fake.health() is False
        with pytest.raises(BackendUnavailableError):
            await fake.generate(req())
        with pytest.raises(BackendUnavailableError):
            await collect(fake.stream(req()))
        fake.set_down(False)
        assert await fake.health() is True
        assert (await fake.generate(req("a b"))).text == "b a"

        # Going down mid-stream kills the stream like a crashed engine.
        paced = FakeBackend(["m"], tokens_per_s=500, words=50)
        got: list[StreamDelta] = []
        with pytest.raises(BackendUnavailableError):
            async for delta in paced.stream(req()):
                got.append(delta)
                if len(got) == 2:
                    paced.set_down(True)
        assert len(got) == 2 and paced.running == 0

        failing = FakeBackend(["m"], fail=True)
        assert await failing.health() is True  # looks alive, errors anyway
        with pytest.raises(BackendUnavailableError):
            await failing.generate(req())

        midway = FakeBackend(["m"], fail_after_words=2)
        got = []
        with pytest.raises(BackendUnavailableError, match="mid-stream"):
            async for delta in midway.stream(req("a b c d e")):
                got.append(delta)
        assert [d.text for d in got] == ["e", " d"]

        with pytest.raises(ModelNotFoundError):
            await fake.generate(req(model="other"))
        await fake.aclose()
        assert await fake.health() is False

    asyncio.run(go())


def test_fake_context_limit_counts_prompt_words_plus_max_tokens() -> None:
    async def go() -> None:
        fake = FakeBackend(["m"], max_context_tokens=5)
        assert (await fake.generate(req("a b c", max_tokens=2))).text == "c b"
        with pytest.raises(ContextLengthExceededError) as info:
            await fake.generate(req("a b c d", max_tokens=2))
        assert info.value.max_context_tokens == 5 and info.value.http_status == 400
        with pytest.raises(ContextLengthExceededError):
            await collect(fake.stream(chat("one two three four five six")))
        assert fake.requests_seen == 1  # rejected requests never occupied a slot

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# a real tiny OpenAI-compatible server

VLLM_V1_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny"} 3.0
vllm:num_requests_running{engine="1",model_name="tiny"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny"} 1.0
vllm:num_requests_waiting{engine="1",model_name="tiny"} 0.0
# HELP vllm:kv_cache_usage_perc KV-Cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="tiny"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="tiny"} 0.75
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="tiny"} 1234.0
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{engine="0",le="0.3",model_name="tiny"} 4.0
vllm:e2e_request_latency_seconds_bucket{engine="0",le="+Inf",model_name="tiny"} 9.0
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 12.5
python_info{implementation="CPython",major="3",minor="12",patchlevel="3",version="3.12.3"} 1.0
"""

VLLM_V0_METRICS = """\
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="tiny"} 0.83
vllm:num_requests_running{model_name="tiny"} 7.0
vllm:num_requests_waiting{model_name="tiny"} 4.0
"""

# The shape of a vLLM V1 server's /metrics page (vLLM writes it with prometheus_client): process and GC
# metrics first, `_created` gauges beside counters and histograms, an info gauge whose labels hold the
# cache config, exponent floats, a model name with a slash.
VLLM_REAL_METRICS = (Path(__file__).resolve().parents[1] / "fixtures" / "vllm_v1_metrics.txt").read_text()

CONTEXT_MESSAGE = (
    "This model's maximum context length is 64 tokens. However, you requested 90 tokens "
    "(80 in the messages, 10 in the completion). Please reduce the length of the messages or completion."
)
SERVED = ["tiny", "slow", "hang", "endless", "context", "boom", "reject", "cutoff", "midfail"]


@dataclass
class ServerState:
    """What the test server saw, shared with the test thread."""

    metrics_text: str = VLLM_V1_METRICS
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    # prompt of an endless stream or a hanging request -> set when the server saw that client go away
    disconnected: dict[str, threading.Event] = field(default_factory=dict)
    # prompt -> set when a request with it reached the server
    received: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def gone(self, prompt: str) -> threading.Event:
        with self.lock:
            return self.disconnected.setdefault(prompt, threading.Event())

    def arrived(self, prompt: str) -> threading.Event:
        with self.lock:
            return self.received.setdefault(prompt, threading.Event())

    def reset(self) -> None:
        self.metrics_text = VLLM_V1_METRICS
        self.bodies.clear()
        self.headers.clear()


def _sse(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {text}\n\n".encode()


def _chunk(is_chat: bool, text: str | None, finish: str | None = None) -> dict[str, Any]:
    if is_chat:
        delta: dict[str, Any] = {} if text is None else {"content": text}
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": "x", "object": "chat.completion.chunk", "model": "tiny", "choices": [choice]}
    choice = {"index": 0, "text": text or "", "finish_reason": finish}
    return {"id": "x", "object": "text_completion", "model": "tiny", "choices": [choice]}


def make_app(state: ServerState) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "owned_by": "vllm", "max_model_len": 64} for m in SERVED]
        return {"object": "list", "data": data}

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(state.metrics_text, media_type="text/plain; version=0.0.4")

    async def answer(request: Request, is_chat: bool) -> Response:
        body = await request.json()
        state.bodies.append(body)
        state.headers.append(dict(request.headers))
        model = body["model"]
        prompt = " ".join(m["content"] for m in body["messages"]) if is_chat else body["prompt"]
        words = prompt.upper().split()
        state.arrived(prompt).set()
        if model == "slow":
            await asyncio.sleep(1.0)
        if model == "hang":  # no answer, ever: until the client goes away
            while not await request.is_disconnected():
                await asyncio.sleep(0.01)
            state.gone(prompt).set()
            return Response(status_code=499)
        if model == "boom":
            return JSONResponse({"error": {"message": "CUDA out of memory", "type": "InternalServerError"}}, 500)
        if model == "context":
            error = {"message": CONTEXT_MESSAGE, "type": "BadRequestError", "param": None, "code": 400}
            return JSONResponse({"error": error}, 400)
        if model == "reject":
            error = {"message": "temperature must be small", "type": "BadRequestError", "param": "temperature"}
            return JSONResponse({"error": error}, 400)
        usage = {"prompt_tokens": len(words), "completion_tokens": len(words), "total_tokens": 2 * len(words)}
        if not body.get("stream"):
            text = " ".join(words)
            if is_chat:
                choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
            else:
                choice = {"index": 0, "text": text}
            choice["finish_reason"] = "stop"
            return JSONResponse({"id": "x", "model": model, "choices": [choice], "usage": usage})

        async def events() -> AsyncIterator[bytes]:
            try:
                if is_chat:
                    yield _sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
                if model == "endless":
                    index = 0
                    while True:  # until the client goes away
                        yield _sse(_chunk(is_chat, f" w{index}"))
                        index += 1
                        await asyncio.sleep(0.01)
                for i, word in enumerate(words):
                    if model == "midfail" and i == 1:
                        yield _sse({"error": {"message": "engine died", "type": "InternalServerError", "code": 500}})
                        yield _sse("[DONE]")
                        return
                    yield b": keep-alive\n\n"
                    yield _sse(_chunk(is_chat, word if i == 0 else " " + word))
                if model == "cutoff":
                    return  # the connection ends without a finish_reason or [DONE]
                yield _sse(_chunk(is_chat, None, "length" if body.get("max_tokens") == len(words) else "stop"))
                if body.get("stream_options", {}).get("include_usage"):
                    yield _sse({"id": "x", "choices": [], "usage": usage})
                yield _sse("[DONE]")
            finally:
                if model == "endless":
                    state.gone(prompt).set()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await answer(request, is_chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await answer(request, is_chat=False)

    return app


@dataclass
class LiveServer:
    url: str
    state: ServerState


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    state = ServerState()
    sock = bound_socket()  # handed to uvicorn: nothing can take the port before it listens
    port = sock.getsockname()[1]
    config = uvicorn.Config(make_app(state), log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", state)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture
def live(live_server: LiveServer) -> LiveServer:
    live_server.state.reset()
    return live_server


# ---------------------------------------------------------------------------------------------
# OpenAIBackend against the live server


@pytest.mark.component
def test_openai_generate_chat_and_completion(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url + "/v1/", models=["tiny"], api_key="sk-test")
        result = await backend.generate(chat("hello small world", model="tiny", max_tokens=9, stop=["X"], seed=4))
        assert (result.text, result.finish_reason) == ("HELLO SMALL WORLD", "stop")
        assert (result.prompt_tokens, result.completion_tokens) == (3, 3)
        body = live.state.bodies[-1]
        assert body == {
            "model": "tiny",
            "stream": False,
            "messages": [{"role": "user", "content": "hello small world"}],
            "max_tokens": 9,
            "seed": 4,
            "stop": ["X"],
        }
        assert live.state.headers[-1]["authorization"] == "Bearer sk-test"
        completion = await backend.generate(req("plain prompt", model="tiny"))
        assert completion.text == "PLAIN PROMPT"
        assert "prompt" in live.state.bodies[-1] and "messages" not in live.state.bodies[-1]
        await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_stream_chat_and_completion(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url, models=["tiny"], metrics_url=live.url + "/none")
        deltas = await collect(backend.stream(chat("a b c", model="tiny")))
        # the role-only opening chunk and the keep-alive comments yield nothing
        assert [d.text for d in deltas] == ["A", " B", " C", ""]
        final = deltas[-1]
        assert (final.finish_reason, final.prompt_tokens, final.completion_tokens) == ("stop", 3, 3)
        assert live.state.bodies[-1]["stream_options"] == {"include_usage": True}
        deltas = await collect(backend.stream(req("x y", model="tiny", max_tokens=2)))
        assert "".join(d.text for d in deltas) == "X Y" and deltas[-1].finish_reason == "length"
        assert (await backend.load()).running == 0  # nothing left in flight
        await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_abort_mid_stream_disconnects_upstream(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url, models=["endless"], metrics_url=live.url + "/none")
        got: list[StreamDelta] = []

        async def consume() -> None:
            async for delta in backend.stream(chat("abort me", model="endless", request_id="s1")):
                got.append(delta)
                if len(got) == 3:
                    assert (await backend.load()).running == 1
                    await backend.abort("s1")

        await asyncio.wait_for(consume(), timeout=5)  # an endless stream: only the abort ends it
        assert 3 <= len(got) < 50 and not any(d.is_final for d in got)
        assert (await backend.load()).running == 0
        # checked before aclose(), so the abort alone closed the upstream request
        assert await asyncio.to_thread(live.state.gone("abort me").wait, 5), "the server never saw the disconnect"
        await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_consumer_leaving_closes_the_upstream_request(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url, models=["endless"])
        stream = backend.stream(req("leave", model="endless"))
        first = await anext(aiter(stream))
        assert first.text == " w0"
        await asyncio.wait_for(stream.aclose(), timeout=5)
        assert await asyncio.to_thread(live.state.gone("leave").wait, 5), "the server never saw the disconnect"
        await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_abort_generate(live: LiveServer) -> None:
    async def go() -> None:
        hanging = OpenAIBackend(live.url, models=["hang"])
        task = asyncio.create_task(hanging.generate(req("abort me", model="hang", request_id="g1")))
        assert await asyncio.to_thread(live.state.arrived("abort me").wait, HANG_S)
        async with asyncio.timeout(HANG_S):  # the server never answers: only the abort ends it
            await hanging.abort("g1")
            with pytest.raises(GenerationAbortedError):
                await task
        assert await asyncio.to_thread(live.state.gone("abort me").wait, HANG_S), "the upstream request stayed open"
        await hanging.aclose()
        # Cancelling the caller is a cancellation, not an abort.
        backend = OpenAIBackend(live.url, models=["slow"])
        outer = asyncio.create_task(backend.generate(req("cancel me", model="slow", request_id="g2")))
        assert await asyncio.to_thread(live.state.arrived("cancel me").wait, HANG_S)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert (await backend.load()).running == 0
        await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_health_and_model_discovery(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url)
        assert backend.models == []
        assert await backend.health() is True
        assert backend.models == SERVED
        fixed = OpenAIBackend(live.url, models=["tiny"])
        assert await fixed.health() is True
        assert fixed.models == ["tiny"]  # configured models are kept
        assert (await fixed.load()).max_context_tokens == 64  # vLLM's max_model_len
        down = OpenAIBackend(f"http://127.0.0.1:{free_port()}")
        assert await down.health() is False
        for b in (backend, fixed, down):
            await b.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_load_from_vllm_metrics(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url, models=["tiny"], metrics_ttl_s=0)
        load = await backend.load()
        assert (load.kv_usage, load.running, load.waiting) == (0.5, 5, 1)
        live.state.metrics_text = VLLM_V0_METRICS
        load = await backend.load()
        assert (load.kv_usage, load.running, load.waiting) == (0.83, 7, 4)
        cached = OpenAIBackend(live.url, models=["tiny"], metrics_ttl_s=60)
        assert (await cached.load()).kv_usage == 0.83
        live.state.metrics_text = VLLM_V1_METRICS
        assert (await cached.load()).kv_usage == 0.83  # within the TTL: no new scrape
        for b in (backend, cached):
            await b.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_backend_metrics_interval_sets_how_long_a_scrape_is_reused(live: LiveServer) -> None:
    """`backend.metrics_interval_s` reaches the backends that scrape /metrics (it was once read by nothing)."""
    from wwwserve.node.backends.vllm import build_vllm_backend
    from wwwserve.node.main import build_backends
    from wwwserve.node.settings import load_settings

    def built(interval: float) -> OpenAIBackend:
        settings = load_settings(None, {"backend.kind": "openai", "backend.openai.base_url": live.url,
                                        "backend.models": ["tiny"], "backend.metrics_interval_s": interval})
        (backend,) = build_backends(settings)
        assert isinstance(backend, OpenAIBackend)
        return backend

    async def go() -> None:
        fresh, cached = built(0.001), built(60.0)
        assert (await fresh.load()).kv_usage == (await cached.load()).kv_usage == 0.5
        live.state.metrics_text = VLLM_V0_METRICS
        await asyncio.sleep(0.01)  # past the 1 ms interval (a wait on the clock the interval is about)
        assert (await fresh.load()).kv_usage == 0.83
        assert (await cached.load()).kv_usage == 0.5  # within its 60 s: the last scrape
        for b in (fresh, cached):
            await b.aclose()

    asyncio.run(go())
    vllm = load_settings(None, {"backend.kind": "vllm", "backend.vllm.model": "m", "backend.metrics_interval_s": 7})
    assert build_vllm_backend(vllm)._inner._metrics_ttl_s == 7


@pytest.mark.component
def test_the_engines_kv_usage_is_on_the_nodes_metrics_page_and_absent_where_it_reports_none(
        live: LiveServer) -> None:
    """`wwwserve_engine_kv_cache_usage_ratio{backend}` is the engine's own figure from its last /metrics scrape;
    a scrape older than the interval is renewed in the background by a read, so the next scrape is current.
    A backend whose engine exports no KV metric has no series (not the in-flight estimate `load()` falls
    back on)."""
    import httpx
    import nacl.signing

    from wwwserve.node.app import create_app
    from wwwserve.node.settings import load_settings

    async def go() -> None:
        engine = OpenAIBackend(live.url, models=["tiny"], metrics_ttl_s=60, name="engine")
        blind = OpenAIBackend(live.url, models=["other"], metrics_url=live.url + "/nope", name="blind")
        settings = load_settings(overrides={"backend": {"kind": "fake", "models": ["tiny"]}})
        app = create_app(settings, [engine, blind], nacl.signing.SigningKey(b"\x07" * 32), "0x" + "ab" * 20, 31337)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://node") as client:
            first = (await client.get("/metrics")).text
            assert "wwwserve_engine_kv_cache_usage_ratio{" not in first  # nothing scraped yet: no series
            assert engine._refresh is not None and blind._refresh is not None  # the read started the scrapes
            await asyncio.gather(engine._refresh, blind._refresh)
            second = (await client.get("/metrics")).text
        assert 'wwwserve_engine_kv_cache_usage_ratio{backend="engine"} 0.5' in second  # mean of 0.25 and 0.75
        assert 'backend="blind"' not in second
        assert (await blind.load()).kv_usage == 0.0  # load() estimates; the gauge does not
        for backend in (engine, blind):
            await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_load_without_metrics_counts_in_flight(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url, models=["endless"], metrics_url=live.url + "/nope", max_concurrency=4)
        assert (await backend.load()).kv_usage == 0.0
        streams = [backend.stream(req("go", model="endless", request_id=f"s{i}")) for i in range(2)]
        for stream in streams:
            await anext(aiter(stream))
        load = await backend.load()
        assert (load.kv_usage, load.running, load.waiting) == (0.5, 2, 0)
        for stream in streams:
            await stream.aclose()
        assert (await backend.load()).running == 0
        live.state.metrics_text = "# nothing an engine exports\nprocess_cpu_seconds_total 3\n"
        other = OpenAIBackend(live.url, models=["tiny"], metrics_ttl_s=0)
        assert (await other.load()).kv_usage == 0.0  # a /metrics page without engine metrics
        for b in (backend, other):
            await b.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_load_while_the_metrics_page_is_malformed(live: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """A page that does not parse is not half-read: load falls back to the in-flight estimate, the node
    logs it once (not at every scrape), and reads the page again once it parses."""

    async def go() -> None:
        backend = OpenAIBackend(live.url, models=["tiny", "endless"], metrics_ttl_s=0, max_concurrency=4)
        live.state.metrics_text = VLLM_V1_METRICS + "this line is broken {\n"
        stream = backend.stream(req("go", model="endless", request_id="m1"))
        await anext(aiter(stream))
        for _ in range(3):
            load = await backend.load()
            assert (load.kv_usage, load.running, load.waiting) == (0.25, 1, 0)  # 1 in flight of 4
        live.state.metrics_text = VLLM_V1_METRICS
        load = await backend.load()
        assert (load.kv_usage, load.running, load.waiting) == (0.5, 5, 1)
        await stream.aclose()
        await backend.aclose()

    with caplog.at_level(logging.INFO, logger="wwwserve.node.backends.openai_compat"):
        asyncio.run(go())
    said = [r.getMessage() for r in caplog.records if "Prometheus page" in r.getMessage()]
    assert len(said) == 2, said
    assert "is not a valid Prometheus page (could not convert string to float: '{')" in said[0]
    assert "valid Prometheus page again" in said[1]


@pytest.mark.component
def test_openai_error_mapping_against_the_server(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url, models=SERVED)
        with pytest.raises(ContextLengthExceededError) as ctx:
            await backend.generate(chat("too long", model="context"))
        assert ctx.value.max_context_tokens == 64 and ctx.value.message == CONTEXT_MESSAGE
        with pytest.raises(ContextLengthExceededError):
            await collect(backend.stream(chat("too long", model="context")))
        with pytest.raises(BackendUnavailableError) as boom:
            await backend.generate(req(model="boom"))
        assert "CUDA" not in boom.value.message  # upstream internals stay in the log
        with pytest.raises(BackendUnavailableError):
            await collect(backend.stream(req(model="boom")))
        with pytest.raises(InvalidRequestError) as rejected:
            await backend.generate(req(model="reject"))
        assert type(rejected.value) is InvalidRequestError
        assert (rejected.value.message, rejected.value.param) == ("temperature must be small", "temperature")
        got: list[StreamDelta] = []
        with pytest.raises(BackendUnavailableError):
            async for delta in backend.stream(req("a b c", model="midfail")):
                got.append(delta)
        assert [d.text for d in got] == ["A"]
        with pytest.raises(BackendUnavailableError, match="closed the stream"):
            await collect(backend.stream(req("a b", model="cutoff")))
        await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_server_down_is_backend_unavailable() -> None:
    async def go() -> None:
        backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}", models=["tiny"])
        with pytest.raises(BackendUnavailableError):
            await backend.generate(req(model="tiny"))
        with pytest.raises(BackendUnavailableError):
            await collect(backend.stream(req(model="tiny")))
        load = await backend.load()  # never raises: estimated from (zero) in-flight requests
        assert (load.kv_usage, load.running, load.max_context_tokens) == (0.0, 0, None)
        await backend.aclose()

    asyncio.run(go())


@pytest.mark.component
def test_openai_slow_server_times_out(live: LiveServer) -> None:
    async def go() -> None:
        backend = OpenAIBackend(live.url, models=["hang"], timeout_s=0.2)
        async with asyncio.timeout(HANG_S):  # the server never answers; without timeout_s, 600 s each
            with pytest.raises(UpstreamTimeoutError):
                await backend.generate(req("plain", model="hang"))
            with pytest.raises(UpstreamTimeoutError):
                await collect(backend.stream(req("streamed", model="hang", request_id="r2")))
        for prompt in ("plain", "streamed"):
            assert await asyncio.to_thread(live.state.gone(prompt).wait, HANG_S), f"{prompt}: request left open"
        await backend.aclose()

    asyncio.run(go())


# ---------------------------------------------------------------------------------------------
# pure parts


def test_prometheus_parser_on_vllm_text() -> None:
    text = VLLM_V1_METRICS + (
        'weird{path="/a\\"b",x="1,2"} 5 1700000000000\n'
        "no_labels 2.5e-1\n"
        'vllm:num_requests_waiting{engine="2",model_name="tiny"} NaN\n'
    )
    samples = parse_prometheus_text(text)
    by_name = {(s.name, s.labels.get("engine")): s for s in samples}
    assert by_name[("vllm:kv_cache_usage_perc", "1")].value == 0.75
    assert by_name[("vllm:kv_cache_usage_perc", "1")].labels == {"engine": "1", "model_name": "tiny"}
    bucket = next(s for s in samples if s.labels.get("le") == "+Inf")
    assert bucket.value == 9.0
    weird = next(s for s in samples if s.name == "weird")
    assert weird.labels == {"path": '/a"b', "x": "1,2"} and weird.value == 5.0
    assert next(s for s in samples if s.name == "no_labels").value == 0.25
    load = load_from_metrics(samples)
    assert (load.kv_usage, load.running, load.waiting) == (0.5, 5, 1)  # the NaN sample is ignored


def test_a_real_vllm_page_is_read() -> None:
    samples = parse_prometheus_text(VLLM_REAL_METRICS)
    assert len(samples) == sum(1 for line in VLLM_REAL_METRICS.splitlines() if not line.startswith("#")) == 20
    load = load_from_metrics(samples, "Qwen/Qwen2.5-0.5B-Instruct")
    assert (load.kv_usage, load.running, load.waiting) == (0.0312954876273654, 4, 2)
    assert load_from_metrics(samples, "another-model") == MetricsLoad(None, None, None)
    info = next(s for s in samples if s.name == "vllm:cache_config_info")
    assert (info.labels["num_gpu_blocks"], info.labels["block_size"]) == ("102834", "16")


@pytest.mark.parametrize(
    "broken",
    [
        "this line is broken {\n",
        'unterminated{a="b 1\n',
        "vllm:num_requests_running{engine=\"0\"} three\n",
        'dup{a="1",a="2"} 1\n',
        "<html><body>502 Bad Gateway</body></html>",
    ],
)
def test_a_malformed_metrics_page_is_refused_whole(broken: str) -> None:
    with pytest.raises(ValueError):
        parse_prometheus_text(VLLM_V1_METRICS + broken)  # good samples before it are not half-used


def test_load_from_metrics_other_engines_and_model_filter() -> None:
    sglang = parse_prometheus_text(
        'sglang:token_usage{model_name="q"} 0.4\nsglang:num_running_reqs{model_name="q"} 6\n'
        'sglang:num_queue_reqs{model_name="q"} 2\n'
    )
    assert load_from_metrics(sglang) == load_from_metrics(sglang, "q")
    assert (load_from_metrics(sglang).kv_usage, load_from_metrics(sglang).running) == (0.4, 6)
    assert load_from_metrics(sglang, "other").kv_usage is None
    llama = load_from_metrics(
        parse_prometheus_text("llamacpp:kv_cache_usage_ratio 1.3\nllamacpp:requests_processing 1")
    )
    assert (llama.kv_usage, llama.running, llama.waiting) == (1.0, 1, None)  # clamped into [0, 1]
    both = parse_prometheus_text("vllm:gpu_cache_usage_perc 0.1\nvllm:kv_cache_usage_perc 0.2\n")
    assert load_from_metrics(both).kv_usage == 0.2  # the newer name wins
    assert load_from_metrics([]).kv_usage is None


def test_sse_decoder() -> None:
    decoder = SSEDecoder()
    lines = [": ping", "event: message", 'data: {"a":', "data:1}", "", "", "data: [DONE]"]
    events = [e for e in (decoder.feed(line) for line in lines) if e is not None]
    assert events == ['{"a":\n1}']
    assert decoder.flush() == "[DONE]" and decoder.flush() is None


def test_error_from_upstream_mapping() -> None:
    vllm_new = json.dumps({"error": {"message": CONTEXT_MESSAGE, "type": "BadRequestError", "code": 400}})
    error = error_from_upstream(400, vllm_new)
    assert isinstance(error, ContextLengthExceededError) and error.max_context_tokens == 64
    vllm_old = json.dumps({"object": "error", "message": CONTEXT_MESSAGE, "type": "BadRequestError", "code": 400})
    assert isinstance(error_from_upstream(400, vllm_old), ContextLengthExceededError)
    llama = json.dumps(
        {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 5000,
                "n_ctx": 4096,
            }
        }
    )
    error = error_from_upstream(400, llama)
    assert isinstance(error, ContextLengthExceededError)
    assert (error.prompt_tokens, error.max_context_tokens) == (5000, 4096)
    sglang = json.dumps(
        {
            "object": "error",
            "message": "The input (9000 tokens) is longer than the model's context length (8192 tokens).",
            "code": 400,
        }
    )
    error = error_from_upstream(400, sglang)
    assert isinstance(error, ContextLengthExceededError) and error.max_context_tokens == 8192

    unavailable = error_from_upstream(503, "upstream connect error", {"retry-after": "7"})
    assert isinstance(unavailable, BackendUnavailableError) and unavailable.retry_after_s == 7
    assert isinstance(error_from_upstream(500, "<html>oops</html>"), BackendUnavailableError)
    assert isinstance(error_from_upstream(401, '{"error": "bad key"}'), BackendUnavailableError)
    assert isinstance(error_from_upstream(504, ""), UpstreamTimeoutError)
    overloaded = error_from_upstream(429, "{}", {"retry-after": "2"})
    assert isinstance(overloaded, OverloadedError) and overloaded.retry_after_s == 2
    not_found = error_from_upstream(404, json.dumps({"detail": "The model `x` does not exist."}))
    assert type(not_found) is InvalidRequestError and not_found.message == "The model `x` does not exist."
    empty = error_from_upstream(422, "")
    assert type(empty) is InvalidRequestError and "422" in empty.message


# ---------------------------------------------------------------------------------------------
# a node's judge: its own backend, or a separate OpenAI-compatible endpoint (judge.base_url)


@dataclass
class _JudgeLedger:
    """What the duel manager reads from the Ledger manager when it is built."""

    home: Any
    has_account: bool = True
    contract_address: str = "0x" + "ab" * 20

    def data_path(self, folder: str) -> Any:
        return self.home / folder / "test.db"


def _judge_manager(tmp_path: Any, judge: dict[str, Any]) -> Any:
    import random

    from wwwserve.judge.feature import duel_feature
    from wwwserve.node.extensions import NodeContext
    from wwwserve.node.managers.model import ModelManager
    from wwwserve.node.metrics import Metrics
    from wwwserve.node.policy import DefaultPolicy, PolicyConfig
    from wwwserve.node.settings import load_settings

    settings = load_settings(overrides={"backend": {"kind": "fake", "models": ["served"]}, "judge": judge})
    models = ModelManager([FakeBackend(["served"])])
    policy = DefaultPolicy(PolicyConfig(auto_stake=False), random.Random(0))
    context = NodeContext(settings, "0x" + "11" * 20, _JudgeLedger(tmp_path), object(), policy,  # type: ignore[arg-type]
                          object(), models, [], Metrics())  # type: ignore[arg-type]
    feature = duel_feature(context)
    return None if feature is None else feature.manager


@pytest.mark.component
def test_a_node_can_judge_with_a_separate_endpoint(live: LiveServer, tmp_path: Any) -> None:
    manager = _judge_manager(tmp_path, {"base_url": live.url + "/v1", "model": "tiny", "max_tokens": 7})
    assert manager.judge_max_tokens == 7

    async def ask() -> str:
        try:
            return str(await manager.ask_model("answer a or b", 7))
        finally:
            await manager.aclose()

    assert asyncio.run(ask()) == "ANSWER A OR B"  # the endpoint's answer, not the node's fake backend's
    body = live.state.bodies[-1]
    assert body["model"] == "tiny" and body["max_tokens"] == 7 and body["temperature"] == 0.0
    assert body["messages"] == [{"role": "user", "content": "answer a or b"}]


def test_a_judge_model_must_be_served_or_have_an_endpoint(tmp_path: Any) -> None:
    from wwwserve.node.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match=r"judge.model.*not served by this node.*judge.base_url"):
        _judge_manager(tmp_path, {"model": "other"})
    with pytest.raises(SettingsError, match="model"):
        load_settings(overrides={"backend": {"kind": "fake", "models": ["m"]},
                                 "judge": {"base_url": "http://127.0.0.1:9/v1"}})
    # The default: the first served model, through the node's own queue.
    assert _judge_manager(tmp_path, {}) is not None
