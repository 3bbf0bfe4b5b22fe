"""The one OpenAI error envelope: every NodeError's status/type/code, the mapping of any exception
onto it, Retry-After, SSE error events, and the FastAPI handlers on a throwaway app."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ValidationError

from wwwserve.node.errors import (
    GENERIC_INTERNAL_MESSAGE,
    AuthenticationError,
    BackendUnavailableError,
    ContextLengthExceededError,
    InternalError,
    InvalidRequestError,
    ModelNotFoundError,
    NodeError,
    OverloadedError,
    RateLimitError,
    RequestTooLargeError,
    UpstreamTimeoutError,
    error_envelope,
    error_headers,
    error_response,
    from_validation_error,
    install_error_handlers,
    retry_after_header,
    sse_error_events,
    to_node_error,
)
from wwwserve.node.protocol import SSE_DONE, ChatCompletionRequest, CompletionRequest

GOOD_CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hello!"}]}
JSON = {"content-type": "application/json"}


def _shape(body: dict[str, Any]) -> dict[str, Any]:
    # Exactly the OpenAI error object, nothing more, nothing less.
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    inner: dict[str, Any] = body["error"]
    return inner


# ---------------------------------------------------------------------------------------------
# the classes


@pytest.mark.parametrize(
    ("error", "status", "error_type", "code", "param"),
    [
        (InvalidRequestError("bad"), 400, "invalid_request_error", None, None),
        (
            InvalidRequestError("bad", param="top_p", code="invalid_value"),
            400,
            "invalid_request_error",
            "invalid_value",
            "top_p",
        ),
        (
            ContextLengthExceededError(prompt_tokens=9000, max_context_tokens=8192),
            400,
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        ),
        (AuthenticationError(), 401, "authentication_error", "invalid_api_key", None),
        (ModelNotFoundError("gpt-9"), 404, "invalid_request_error", "model_not_found", "model"),
        (RequestTooLargeError(limit_bytes=1_000_000), 413, "invalid_request_error", "request_too_large", None),
        (RateLimitError(retry_after_s=2), 429, "rate_limit_error", "rate_limit_exceeded", None),
        (OverloadedError(retry_after_s=1), 503, "server_error", "overloaded", None),
        (BackendUnavailableError(), 503, "server_error", "backend_unavailable", None),
        (UpstreamTimeoutError(), 504, "server_error", "upstream_timeout", None),
        (InternalError(), 500, "server_error", "internal_error", None),
    ],
)
def test_each_error_knows_status_type_code_param(
    error: NodeError, status: int, error_type: str, code: str | None, param: str | None
) -> None:
    assert isinstance(error, NodeError)
    assert error.http_status == status
    inner = _shape(error_envelope(error))
    assert inner == {"message": error.message, "type": error_type, "param": param, "code": code}
    assert str(error) == error.message


def test_messages_carry_the_useful_numbers() -> None:
    assert "8192" in ContextLengthExceededError(prompt_tokens=9000, max_context_tokens=8192).message
    assert "9000" in ContextLengthExceededError(prompt_tokens=9000, max_context_tokens=8192).message
    assert "1000000 bytes" in RequestTooLargeError(limit_bytes=1_000_000).message
    assert "'gpt-9'" in ModelNotFoundError("gpt-9").message
    assert len(ModelNotFoundError("x" * 10_000).message) < 300


def test_invalid_request_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        raise InvalidRequestError("bad")
    assert issubclass(ContextLengthExceededError, InvalidRequestError)


def test_code_override_does_not_leak_into_the_class() -> None:
    InvalidRequestError("x", code="invalid_json")
    assert InvalidRequestError("y").code is None


def test_retry_after_header_rounds_up_and_is_at_least_one() -> None:
    assert retry_after_header(RateLimitError(retry_after_s=2.1)) == "3"
    assert retry_after_header(OverloadedError(retry_after_s=0)) == "1"
    assert retry_after_header(OverloadedError(retry_after_s=0.2)) == "1"
    assert retry_after_header(BackendUnavailableError(retry_after_s=30)) == "30"
    assert retry_after_header(OverloadedError()) is None
    assert retry_after_header(InvalidRequestError("x")) is None
    assert retry_after_header(RuntimeError("x")) is None
    assert error_headers(RateLimitError(retry_after_s=5)) == {"Retry-After": "5"}
    assert error_headers(UpstreamTimeoutError()) == {}
    with pytest.raises(ValueError):
        RateLimitError(retry_after_s=-1)


# ---------------------------------------------------------------------------------------------
# mapping any exception


def test_unknown_exception_becomes_generic_500_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    exc = KeyError("/etc/secret-path password=hunter2")
    with caplog.at_level(logging.ERROR, logger="wwwserve.node.errors"):
        mapped = to_node_error(exc)
    assert isinstance(mapped, InternalError) and mapped.http_status == 500
    inner = _shape(error_envelope(exc))
    assert inner == {
        "message": GENERIC_INTERNAL_MESSAGE,
        "type": "server_error",
        "param": None,
        "code": "internal_error",
    }
    assert "hunter2" not in json.dumps(error_envelope(exc))
    assert any(record.exc_info and record.exc_info[1] is exc for record in caplog.records)


def test_node_error_maps_to_itself() -> None:
    err = OverloadedError(retry_after_s=3)
    assert to_node_error(err) is err


def test_from_validation_error_picks_the_first_error() -> None:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"model": "m", "messages": [], "temperature": 9})
    errors = info.value.errors()
    assert {e["loc"][0] for e in errors} == {"messages", "temperature"}
    err = from_validation_error(info.value)
    assert err.param == errors[0]["loc"][0]
    assert err.message.count("\n") == 0


def test_pydantic_validation_error_maps_like_from_validation_error() -> None:
    with pytest.raises(ValidationError) as info:
        CompletionRequest.model_validate({"model": "m", "prompt": "x", "top_p": 0})
    inner = _shape(error_envelope(info.value))
    assert inner["param"] == "top_p" and inner["type"] == "invalid_request_error"
    assert to_node_error(info.value).http_status == 400


def test_validation_error_without_a_field_has_no_param() -> None:
    class Strict(BaseModel):
        x: int

    with pytest.raises(ValidationError) as info:
        Strict.model_validate("not an object")
    err = from_validation_error(info.value)
    assert err.param is None and err.http_status == 400


# ---------------------------------------------------------------------------------------------
# SSE


def test_sse_error_events_are_one_error_event_then_done() -> None:
    payload = sse_error_events(BackendUnavailableError("backend down"))
    assert payload.endswith(SSE_DONE)
    first, rest = payload.split(b"\n\n", 1)
    assert rest == SSE_DONE
    assert first.startswith(b"data: ")
    inner = _shape(json.loads(first[len(b"data: ") :]))
    assert inner == {"message": "backend down", "type": "server_error", "param": None, "code": "backend_unavailable"}


def test_sse_error_events_hide_unknown_exceptions() -> None:
    payload = sse_error_events(RuntimeError("traceback detail"))
    assert b"traceback detail" not in payload
    assert json.loads(payload.split(b"\n\n")[0][len(b"data: ") :])["error"]["code"] == "internal_error"


# ---------------------------------------------------------------------------------------------
# FastAPI integration


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> dict[str, Any]:
        if req.model == "missing":
            raise ModelNotFoundError(req.model)
        if req.model == "busy":
            raise OverloadedError(retry_after_s=2.5)
        if req.model == "limited":
            raise RateLimitError(retry_after_s=7)
        if req.model == "long":
            raise ContextLengthExceededError(prompt_tokens=10, max_context_tokens=5)
        if req.model == "boom":
            raise RuntimeError("database password=hunter2")
        if req.model == "http":
            raise HTTPException(status_code=401, detail="no key", headers={"WWW-Authenticate": "Bearer"})
        if req.model == "http500":
            raise HTTPException(status_code=502, detail="internal upstream detail")
        if req.stream:

            async def events() -> AsyncIterator[bytes]:
                yield b'data: {"partial":true}\n\n'
                yield sse_error_events(UpstreamTimeoutError())

            return StreamingResponse(events(), media_type="text/event-stream")  # type: ignore[return-value]
        return {"model": req.model}

    return app


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # raise_server_exceptions=False: see what a real client sees for an unexpected exception.
    with TestClient(_app(), raise_server_exceptions=False) as c:
        yield c


def test_valid_request_passes_through(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", json=GOOD_CHAT)
    assert resp.status_code == 200 and resp.json() == {"model": "m"}


@pytest.mark.parametrize("body", [b"{bad json", b'{"model": "m",}', b"\xff\xfe", b'{"model": "m"'])
def test_malformed_json_is_400_openai_shape(client: TestClient, body: bytes) -> None:
    resp = client.post("/v1/chat/completions", content=body, headers=JSON)
    assert resp.status_code == 400
    inner = _shape(resp.json())
    assert inner["type"] == "invalid_request_error"
    assert inner["param"] is None


def test_json_that_is_not_an_object_is_400(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", content=b"[1, 2]", headers=JSON)
    assert resp.status_code == 400
    assert _shape(resp.json())["message"] == "The request body must be a JSON object."


def test_missing_body_is_400(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", headers=JSON)
    assert resp.status_code == 400
    assert _shape(resp.json())["type"] == "invalid_request_error"


def test_form_content_type_gets_a_hint_about_json(client: TestClient) -> None:
    # What `curl -d '{...}'` without -H sends.
    resp = client.post(
        "/v1/chat/completions",
        content=json.dumps(GOOD_CHAT).encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert resp.status_code == 400
    assert "Content-Type: application/json" in _shape(resp.json())["message"]


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"stop": ["1", "2", "3", "4", "5"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"max_tokens": "10"}, "max_tokens"),
    ],
)
def test_wrong_types_and_values_are_400_with_param(client: TestClient, overrides: dict[str, Any], param: str) -> None:
    resp = client.post("/v1/chat/completions", json={**GOOD_CHAT, **overrides})
    assert resp.status_code == 400  # not FastAPI's 422
    inner = _shape(resp.json())
    assert inner["param"] == param
    assert inner["type"] == "invalid_request_error"
    assert inner["code"] in {"invalid_type", "invalid_value"}


@pytest.mark.parametrize(
    ("model", "status", "code", "retry_after"),
    [
        ("missing", 404, "model_not_found", None),
        ("busy", 503, "overloaded", "3"),
        ("limited", 429, "rate_limit_exceeded", "7"),
        ("long", 400, "context_length_exceeded", None),
    ],
)
def test_node_errors_answer_with_their_status_and_shape(
    client: TestClient, model: str, status: int, code: str, retry_after: str | None
) -> None:
    resp = client.post("/v1/chat/completions", json={**GOOD_CHAT, "model": model})
    assert resp.status_code == status
    assert _shape(resp.json())["code"] == code
    assert resp.headers.get("retry-after") == retry_after


def test_unexpected_exception_is_generic_500(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", json={**GOOD_CHAT, "model": "boom"})
    assert resp.status_code == 500
    inner = _shape(resp.json())
    assert inner["message"] == GENERIC_INTERNAL_MESSAGE
    assert "hunter2" not in resp.text and "RuntimeError" not in resp.text


def test_http_exception_keeps_status_and_headers(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", json={**GOOD_CHAT, "model": "http"})
    assert resp.status_code == 401
    assert _shape(resp.json()) == {
        "message": "no key",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert resp.headers["www-authenticate"] == "Bearer"


def test_http_5xx_detail_is_not_shown(client: TestClient) -> None:
    resp = client.post("/v1/chat/completions", json={**GOOD_CHAT, "model": "http500"})
    assert resp.status_code == 502
    assert _shape(resp.json())["message"] == GENERIC_INTERNAL_MESSAGE


def test_unknown_route_and_wrong_method_are_openai_shaped(client: TestClient) -> None:
    resp = client.post("/v1/nope", json={})
    assert resp.status_code == 404
    assert _shape(resp.json())["message"] == "Invalid URL (POST /v1/nope)"
    resp = client.get("/v1/chat/completions")
    assert resp.status_code == 405
    assert _shape(resp.json())["type"] == "invalid_request_error"


def test_stream_error_event_reaches_the_client(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions", json={**GOOD_CHAT, "stream": True}) as resp:
        raw = b"".join(resp.iter_bytes())
    events = [e for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"data: [DONE]"
    error = json.loads(events[-2][len(b"data: ") :])
    assert _shape(error)["code"] == "upstream_timeout"


def test_error_response_builds_json_response_directly() -> None:
    resp = error_response(OverloadedError(retry_after_s=1))
    assert resp.status_code == 503
    assert resp.headers["retry-after"] == "1"
    assert json.loads(bytes(resp.body))["error"]["code"] == "overloaded"


def test_hundred_invalid_requests_then_a_valid_one(client: TestClient) -> None:
    bad_bodies = [b"{", b"[]", b'{"model": 1}', b'{"model":"m","messages":[]}']
    for i in range(100):
        assert client.post("/v1/chat/completions", content=bad_bodies[i % 4], headers=JSON).status_code == 400
    assert client.post("/v1/chat/completions", json=GOOD_CHAT).status_code == 200


@pytest.mark.component
def test_openai_client_is_not_needed() -> None:
    # Block `openai` outright: the wire models and errors must import and work without it.
    code = (
        "import sys; sys.modules['openai'] = None\n"
        "import wwwserve.node.protocol, wwwserve.node.errors\n"
        "wwwserve.node.protocol.ChatCompletionRequest.model_validate("
        "{'model': 'm', 'messages': [{'role': 'user', 'content': 'x'}]})\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
