"""OpenAIBackend: an unknown model is a `ModelNotFoundError` naming the model, and a closed backend refuses
work without opening a connection again. Both found by the conformance suite (tests/conformance).

The HTTP client is a stand-in that answers from a table and records every call (no socket).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.backends.openai_compat import OpenAIBackend
from wwwserve.node.backends.openai_wire import error_from_event, error_from_upstream
from wwwserve.node.errors import BackendUnavailableError, InvalidRequestError, ModelNotFoundError
from wwwserve.node.http import HttpResponse

# vLLM 0.32's answer to a model it does not serve (vllm/entrypoints/serve/engine/serving.py, _check_model)
VLLM_UNKNOWN_MODEL = {"error": {"message": "The model `gpt-9` does not exist. Valid aliases: smollm2.",
                                "type": "NotFoundError", "param": "model", "code": 404}}
# OpenAI's own, and a wwwserve node's (node.errors.ModelNotFoundError: param "model")
OPENAI_UNKNOWN_MODEL = {"error": {"message": "The model `gpt-9` does not exist or you do not have access to it.",
                                  "type": "invalid_request_error", "param": None, "code": "model_not_found"}}
NODE_UNKNOWN_MODEL = {"error": {"message": "The model 'gpt-9' is not served by any node of this network.",
                                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}


@dataclass
class _Stream:
    status: int
    headers: Mapping[str, str]
    body: bytes

    async def read(self) -> bytes:
        return self.body

    async def lines(self) -> AsyncIterator[str]:
        for line in self.body.decode().splitlines():
            yield line

    async def aclose(self) -> None:
        pass


@dataclass
class TableClient:
    """Answers every request with `status` and `body`; records (method, url) of each call."""

    status: int
    body: dict[str, Any]
    calls: list[tuple[str, str]] = field(default_factory=list)

    async def request(self, method: str, url: str, **_: Any) -> HttpResponse:
        self.calls.append((method, url))
        return HttpResponse(self.status, {}, json.dumps(self.body).encode())

    async def open_stream(self, method: str, url: str, **_: Any) -> _Stream:
        self.calls.append((method, url))
        return _Stream(self.status, {}, json.dumps(self.body).encode())

    async def aclose(self) -> None:
        pass


def ask(model: str = "gpt-9") -> GenerationRequest:
    return GenerationRequest(request_id="r1", model=model, prompt="hello", max_tokens=4)


@pytest.mark.parametrize("body", [VLLM_UNKNOWN_MODEL, OPENAI_UNKNOWN_MODEL, NODE_UNKNOWN_MODEL],
                         ids=["vllm", "openai", "wwwserve-node"])
def test_an_unknown_model_is_model_not_found_naming_the_requested_model(body: dict[str, Any]) -> None:
    async def go() -> None:
        backend = OpenAIBackend("http://engine:8000", models=["gpt-9"], http=TableClient(404, body))
        with pytest.raises(ModelNotFoundError) as whole:
            await backend.generate(ask())
        assert (whole.value.model, whole.value.http_status, whole.value.param) == ("gpt-9", 404, "model")
        assert whole.value.message == body["error"]["message"]
        with pytest.raises(ModelNotFoundError) as streamed:
            _ = [delta async for delta in backend.stream(ask())]
        assert streamed.value.model == "gpt-9"

    asyncio.run(go())


def test_model_not_found_mapping_without_a_request() -> None:
    # A peer's error event names no model this side knows: the error says so with an empty model.
    assert error_from_event(NODE_UNKNOWN_MODEL, upstream="peer").model == ""  # type: ignore[attr-defined]
    assert error_from_upstream(404, json.dumps(VLLM_UNKNOWN_MODEL), model="m").model == "m"  # type: ignore[attr-defined]
    # A 404 that is not about the model (a wrong path) stays a plain invalid request.
    assert type(error_from_upstream(404, json.dumps({"detail": "Not Found"}), model="m")) is InvalidRequestError


def test_a_closed_backend_refuses_work_without_opening_a_connection() -> None:
    async def go() -> None:
        client = TableClient(200, {"object": "list", "data": [{"id": "m"}]})
        backend = OpenAIBackend("http://engine:8000", http=client)
        assert await backend.health() is True and backend.models == ["m"]
        await backend.aclose()
        await backend.aclose()  # idempotent
        calls = len(client.calls)
        assert await backend.health() is False
        with pytest.raises(BackendUnavailableError, match="shut down"):
            await backend.generate(ask("m"))
        with pytest.raises(BackendUnavailableError, match="shut down"):
            _ = [delta async for delta in backend.stream(ask("m"))]
        load = await backend.load()
        assert (load.running, load.waiting) == (0, 0)
        assert len(client.calls) == calls  # nothing reached the server after aclose

    asyncio.run(go())
