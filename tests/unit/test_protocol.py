"""The OpenAI wire models: real OpenAI requests validate, bad ones fail naming the right param,
responses serialize with exactly OpenAI's field names (plus our omitted-when-empty extensions)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import ValidationError

from wwwserve.node.errors import InvalidRequestError, from_validation_error
from wwwserve.node.protocol import (
    SSE_DONE,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionChunkChoice,
    ChatCompletionDelta,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    Usage,
    chat_completion_body,
    completion_body,
    new_request_id,
    sse_event,
)

# Request bodies as the OpenAI API reference shows them (chat/create, completions/create).
OPENAI_CHAT_DEFAULT = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
}
OPENAI_CHAT_STREAMING = {
    "model": "gpt-4o",
    "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello!"},
    ],
    "stream": True,
    "stream_options": {"include_usage": True},
}
OPENAI_CHAT_FULL = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function"}]},
        {"role": "tool", "content": "4", "tool_call_id": "call_1"},
        {"role": "user", "content": "", "name": "alice"},
    ],
    "n": 1,
    "max_tokens": 64,
    "max_completion_tokens": 32,
    "temperature": 0.2,
    "top_p": 1,
    "stop": ["\n\n", "END"],
    "seed": 42,
    "presence_penalty": -0.5,
    "frequency_penalty": 2,
    "user": "user-1234",
    # Fields OpenAI defines that we do not interpret, and a made-up one: all ignored.
    "parallel_tool_calls": True,
    "response_format": {"type": "text"},
    "some_future_field": {"x": 1},
}
OPENAI_COMPLETION = {
    "model": "gpt-3.5-turbo-instruct",
    "prompt": "Say this is a test",
    "max_tokens": 7,
    "temperature": 0,
}


def _chat(**overrides: Any) -> dict[str, Any]:
    return {**OPENAI_CHAT_DEFAULT, **overrides}


def _chat_error(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate(body)
    return from_validation_error(info.value)


def _completion_error(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate(body)
    return from_validation_error(info.value)


# ---------------------------------------------------------------------------------------------
# chat requests: good


def test_openai_default_chat_example_validates() -> None:
    req = ChatCompletionRequest.model_validate(OPENAI_CHAT_DEFAULT)
    assert req.model == "gpt-4o"
    assert [m.role for m in req.messages] == ["system", "user"]
    assert req.messages[1].text() == "Hello!"
    assert req.n == 1
    assert req.stream is False
    assert req.include_usage is False
    assert req.stop_sequences == []
    assert req.max_output_tokens is None
    assert req.temperature is None and req.top_p is None


def test_openai_streaming_example_validates_with_include_usage() -> None:
    req = ChatCompletionRequest.model_validate(OPENAI_CHAT_STREAMING)
    assert req.stream is True
    assert req.include_usage is True
    assert req.messages[0].role == "developer"


def test_full_chat_request_reads_every_field_and_ignores_unknown_ones() -> None:
    req = ChatCompletionRequest.model_validate(OPENAI_CHAT_FULL)
    assert req.messages[1].text() == "What is 2+2?"
    assert req.messages[2].content is None and req.messages[2].text() == ""
    assert req.messages[3].tool_call_id == "call_1"
    assert req.messages[4].content == "" and req.messages[4].name == "alice"
    # max_completion_tokens is the current name and wins over the deprecated max_tokens
    assert req.max_output_tokens == 32
    assert req.stop_sequences == ["\n\n", "END"]
    assert req.seed == 42 and req.user == "user-1234"
    assert req.top_p == 1.0 and req.frequency_penalty == 2.0
    assert not hasattr(req, "some_future_field")
    assert "some_future_field" not in req.model_dump()


def test_single_stop_string_and_max_tokens_alone() -> None:
    req = ChatCompletionRequest.model_validate(_chat(stop="###", max_tokens=5))
    assert req.stop_sequences == ["###"]
    assert req.max_output_tokens == 5


@pytest.mark.parametrize("temperature", [0, 0.0, 1, 2, 2.0])
def test_temperature_bounds_are_inclusive(temperature: float) -> None:
    assert ChatCompletionRequest.model_validate(_chat(temperature=temperature)).temperature == temperature


def test_request_from_json_text_validates() -> None:
    req = ChatCompletionRequest.model_validate_json(json.dumps(OPENAI_CHAT_FULL))
    assert req.max_output_tokens == 32


# ---------------------------------------------------------------------------------------------
# chat requests: bad, each naming its param


@pytest.mark.parametrize(
    ("body", "param", "code", "needle"),
    [
        (_chat(messages=[]), "messages", "invalid_value", "at least 1"),
        ({"model": "gpt-4o"}, "messages", "missing_required_parameter", "Missing required parameter"),
        ({"messages": OPENAI_CHAT_DEFAULT["messages"]}, "model", "missing_required_parameter", "'model'"),
        (_chat(model=""), "model", "invalid_value", "at least 1"),
        (_chat(model=7), "model", "invalid_type", "string"),
        (_chat(messages="Hello"), "messages", "invalid_type", "list"),
        (_chat(messages=[{"role": "bot", "content": "x"}]), "messages[0].role", "invalid_value", "'user'"),
        (_chat(messages=[{"content": "x"}]), "messages[0].role", "missing_required_parameter", "Missing"),
        (
            _chat(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": 5}]),
            "messages[1].content",
            "invalid_type",
            "but got an integer",
        ),
        (_chat(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter", "Missing"),
        (_chat(messages=[{"role": "user", "content": None}]), "messages[0].content", "missing_required_parameter", ""),
        (
            _chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            "messages[0].content",
            "invalid_value",
            "only 'text' parts",
        ),
        (
            _chat(messages=[{"role": "user", "content": [{"type": "text", "text": 3}]}]),
            "messages[0].content",
            "invalid_value",
            "string 'text'",
        ),
        (
            _chat(messages=[{"role": "tool", "content": "4"}]),
            "messages[0].tool_call_id",
            "missing_required_parameter",
            "",
        ),
        (_chat(messages=["hi"]), "messages[0]", "invalid_type", ""),
        (_chat(temperature=3), "temperature", "invalid_value", "less than or equal to 2"),
        (_chat(temperature=-0.1), "temperature", "invalid_value", "greater than or equal to 0"),
        (_chat(temperature="0.5"), "temperature", "invalid_type", "valid number"),
        (_chat(top_p=0), "top_p", "invalid_value", "greater than 0"),
        (_chat(top_p=1.5), "top_p", "invalid_value", "less than or equal to 1"),
        (_chat(n=2), "n", "invalid_value", "only n=1"),
        (_chat(n="1"), "n", "invalid_type", "integer"),
        (_chat(max_tokens=0), "max_tokens", "invalid_value", "greater than or equal to 1"),
        (_chat(max_tokens=1.5), "max_tokens", "invalid_type", "integer"),
        (_chat(max_completion_tokens=-1), "max_completion_tokens", "invalid_value", ""),
        (_chat(stop=["a", "b", "c", "d", "e"]), "stop", "invalid_value", "at most 4 stop sequences"),
        (_chat(stop=["a", 1]), "stop", "invalid_type", "must be a string"),
        (_chat(stop=5), "stop", "invalid_type", "but got an integer"),
        (_chat(seed="42"), "seed", "invalid_type", "integer"),
        (_chat(stream="true"), "stream", "invalid_type", "boolean"),
        (_chat(stream_options={"include_usage": True}), "stream_options", "invalid_value", "only allowed when"),
        (
            _chat(stream=True, stream_options={"include_usage": "yes"}),
            "stream_options.include_usage",
            "invalid_type",
            "",
        ),
        (_chat(presence_penalty=2.5), "presence_penalty", "invalid_value", ""),
        (_chat(logprobs=True), "logprobs", "invalid_value", "not supported"),
        (_chat(user=123), "user", "invalid_type", "string"),
    ],
)
def test_bad_chat_request_names_its_param(body: dict[str, Any], param: str, code: str, needle: str) -> None:
    err = _chat_error(body)
    assert err.param == param
    assert err.code == code
    assert err.http_status == 400 and err.error_type == "invalid_request_error"
    assert needle in err.message
    assert "\n" not in err.message
    assert f"'{param}'" in err.message


def test_stream_options_allowed_with_stream_false_is_still_rejected() -> None:
    err = _chat_error(_chat(stream=False, stream_options={"include_usage": False}))
    assert err.param == "stream_options"


def test_error_message_never_echoes_a_long_input() -> None:
    secret = "s3cr3t-" + "x" * 500
    err = _chat_error(_chat(messages=[{"role": "user", "content": [{"type": secret}]}]))
    assert secret not in err.message
    assert len(err.message) < 250


# ---------------------------------------------------------------------------------------------
# completion requests


def test_openai_completion_example_validates() -> None:
    req = CompletionRequest.model_validate(OPENAI_COMPLETION)
    assert req.prompt_text == "Say this is a test"
    assert req.max_output_tokens == 7
    assert req.temperature == 0.0


def test_completion_prompt_as_single_item_list() -> None:
    req = CompletionRequest.model_validate({**OPENAI_COMPLETION, "prompt": ["only one"], "stop": "\n"})
    assert req.prompt_text == "only one"
    assert req.stop_sequences == ["\n"]


@pytest.mark.parametrize(
    ("overrides", "param", "needle"),
    [
        ({"prompt": ["a", "b"]}, "prompt", "exactly one prompt"),
        ({"prompt": []}, "prompt", "exactly one prompt"),
        ({"prompt": [1, 2, 3]}, "prompt", "token-id prompts"),
        ({"prompt": [5]}, "prompt", "token-id prompts"),
        ({"prompt": [None]}, "prompt", "expected a string"),
        ({"prompt": 12}, "prompt", "expected a string"),
        ({"echo": True}, "echo", "echo is not supported"),
        ({"best_of": 3}, "best_of", "best_of=1"),
        ({"suffix": "tail"}, "suffix", "not supported"),
        ({"logprobs": 2}, "logprobs", "not supported"),
        ({"n": 3}, "n", "only n=1"),
        ({"temperature": 3}, "temperature", "less than or equal to 2"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"stop": ["1", "2", "3", "4", "5"]}, "stop", "at most 4"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when"),
    ],
)
def test_bad_completion_request_names_its_param(overrides: dict[str, Any], param: str, needle: str) -> None:
    err = _completion_error({**OPENAI_COMPLETION, **overrides})
    assert err.param == param
    assert needle in err.message


def test_completion_without_prompt_is_missing_prompt() -> None:
    body = dict(OPENAI_COMPLETION)
    del body["prompt"]
    err = _completion_error(body)
    assert (err.param, err.code) == ("prompt", "missing_required_parameter")


def test_completion_echo_false_and_best_of_one_are_fine() -> None:
    req = CompletionRequest.model_validate({**OPENAI_COMPLETION, "echo": False, "best_of": 1})
    assert req.echo is False


# ---------------------------------------------------------------------------------------------
# responses


def _dump(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(model.model_dump_json())
    return out


def test_chat_completion_response_has_exactly_openai_fields() -> None:
    resp = ChatCompletionResponse(
        model="m",
        choices=[ChatCompletionChoice(message=ChatCompletionMessage(content="Hi there"), finish_reason="stop")],
        usage=Usage.of(prompt_tokens=9, completion_tokens=12),
    )
    body = _dump(resp)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert body["object"] == "chat.completion"
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", body["id"])
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hi there"}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21}


def test_wwwserve_extension_appears_only_when_set() -> None:
    attestation = {"executor": "0xabc", "signature": "00" * 64, "route": ["0x1", "0xabc"]}
    resp = ChatCompletionResponse(
        id="chatcmpl-1",
        model="m",
        choices=[ChatCompletionChoice(message=ChatCompletionMessage(content="x"), finish_reason="length")],
        wwwserve=attestation,
    )
    assert _dump(resp)["wwwserve"] == attestation
    assert resp.model_dump()["wwwserve"] == attestation  # python mode omits the same way
    assert "wwwserve" not in resp.model_copy(update={"wwwserve": None}).model_dump()


def test_chat_chunks_match_openai_stream_shape() -> None:
    first = ChatCompletionChunk(
        id="chatcmpl-1",
        model="m",
        choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(role="assistant", content=""))],
    )
    middle = ChatCompletionChunk(
        id="chatcmpl-1", model="m", choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(content="Hel"))]
    )
    last = ChatCompletionChunk(
        id="chatcmpl-1",
        model="m",
        choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(), finish_reason="stop")],
    )
    usage = ChatCompletionChunk(
        id="chatcmpl-1", model="m", choices=[], usage=Usage.of(3, 4), wwwserve={"signature": "ab"}
    )
    b_first, b_middle, b_last, b_usage = (_dump(c) for c in (first, middle, last, usage))
    assert set(b_middle) == {"id", "object", "created", "model", "choices", "system_fingerprint"}
    assert b_middle["object"] == "chat.completion.chunk"
    assert b_first["choices"][0]["delta"] == {"role": "assistant", "content": ""}  # "" is kept, only None goes
    assert b_middle["choices"][0] == {"index": 0, "delta": {"content": "Hel"}, "logprobs": None, "finish_reason": None}
    assert b_last["choices"][0]["delta"] == {} and b_last["choices"][0]["finish_reason"] == "stop"
    assert b_usage["choices"] == [] and b_usage["usage"]["total_tokens"] == 7
    assert b_usage["wwwserve"] == {"signature": "ab"}


def test_completion_response_and_chunk_shapes() -> None:
    resp = CompletionResponse(
        model="m", choices=[CompletionChoice(text="This is a test.", finish_reason="length")], usage=Usage.of(5, 7)
    )
    body = _dump(resp)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": "This is a test.", "logprobs": None, "finish_reason": "length"}]
    chunk = _dump(CompletionChunk(id="cmpl-1", model="m", choices=[CompletionChoice(text="Th", finish_reason=None)]))
    assert set(chunk) == {"id", "object", "created", "model", "choices", "system_fingerprint"}
    assert chunk["object"] == "text_completion"


def test_model_list_carries_node_counts() -> None:
    models = ModelList(data=[ModelCard(id="HuggingFaceTB/SmolLM2-135M-Instruct", created=1, wwwserve_nodes=3)])
    assert _dump(models) == {
        "object": "list",
        "data": [
            {
                "id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "object": "model",
                "created": 1,
                "owned_by": "wwwserve",
                "wwwserve_nodes": 3,
            }
        ],
    }
    with pytest.raises(ValidationError):
        ModelCard(id="m", wwwserve_nodes=-1)


def test_response_models_reject_unknown_fields_to_catch_typos() -> None:
    with pytest.raises(ValidationError):
        Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2, totl=3)  # type: ignore[call-arg]


# ---------------------------------------------------------------------------------------------
# helpers


def test_sse_event_frames_models_and_dicts() -> None:
    chunk = ChatCompletionChunk(
        id="c", created=1, model="m", choices=[ChatCompletionChunkChoice(delta=ChatCompletionDelta(content="é"))]
    )
    event = sse_event(chunk)
    assert event.startswith(b"data: {") and event.endswith(b"}\n\n")
    assert event.count(b"\n") == 2
    assert json.loads(event[len(b"data: ") :]) == json.loads(chunk.model_dump_json())
    assert sse_event({"a": [1, "x\ny"]}) == b'data: {"a":[1,"x\\ny"]}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"


def test_new_request_id_is_prefixed_and_unique() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{32}", i) for i in ids)
    assert new_request_id("cmpl").startswith("cmpl-")


# ---- the direct answer builders ------------------------------------------------------------------


@pytest.mark.parametrize("wwwserve", [None, {"executor": "0xabc", "signature": "00"}])
@pytest.mark.parametrize("finish", ["stop", "length", None])
def test_answer_builders_match_the_response_models(wwwserve: dict[str, str] | None, finish: str | None) -> None:
    chat = chat_completion_body("chatcmpl-1", "m", "Hello.", finish, 7, 3, wwwserve)  # type: ignore[arg-type]
    model = ChatCompletionResponse(
        id="chatcmpl-1", created=chat["created"], model="m",
        choices=[ChatCompletionChoice(message=ChatCompletionMessage(content="Hello."), finish_reason=finish)],
        usage=Usage.of(7, 3), wwwserve=wwwserve,
    )
    assert chat == model.model_dump()
    plain = completion_body("cmpl-1", "m", "Hi", finish, 2, 1, wwwserve)  # type: ignore[arg-type]
    expected = CompletionResponse(
        id="cmpl-1", created=plain["created"], model="m",
        choices=[CompletionChoice(text="Hi", finish_reason=finish)], usage=Usage.of(2, 1), wwwserve=wwwserve,
    )
    assert plain == expected.model_dump()
