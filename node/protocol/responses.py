"""The user API's response models (whole answers, stream chunks, the model list) and the direct builders of
the two answer bodies on every request's path.

They serialize with exactly OpenAI's field names; our extension fields (`wwwserve`, `wwwserve_work`,
`wwwserve_nodes`) are left out when empty.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


def new_request_id(prefix: str = "chatcmpl") -> str:
    """A fresh OpenAI-style id such as `chatcmpl-3f9a...` (128 random bits, hex)."""
    return f"{prefix}-{secrets.token_hex(16)}"


def _now_s() -> int:
    return int(time.time())


class _ResponseModel(BaseModel):
    """Base of the response models: fields named in `_OMIT_IF_NONE` are left out when they are None.

    OpenAI omits e.g. `usage` from ordinary stream chunks and `role` from later deltas; our own
    extension fields must not appear as `null` in every plain response either.
    """

    model_config = ConfigDict(extra="forbid")
    _OMIT_IF_NONE: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _omit_empty(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in self._OMIT_IF_NONE:
            if data.get(key, ...) is None:
                del data[key]
        return data


class Usage(_ResponseModel):
    """Token counts of one request."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        """Usage with `total_tokens` computed."""
        return cls(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )


class ChatCompletionMessage(_ResponseModel):
    """The assistant's message in a non-streamed chat choice."""

    role: Literal["assistant"] = "assistant"
    content: str | None


class ChatCompletionChoice(_ResponseModel):
    """One choice of a chat completion."""

    index: int = 0
    message: ChatCompletionMessage
    logprobs: None = None
    finish_reason: FinishReason | None


class ChatCompletionResponse(_ResponseModel):
    """The body of a non-streamed `POST /v1/chat/completions` answer."""

    _OMIT_IF_NONE = frozenset({"wwwserve", "wwwserve_work"})

    id: str = Field(default_factory=new_request_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=_now_s)
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    wwwserve: dict[str, Any] | None = None
    wwwserve_work: dict[str, Any] | None = None


class ChatCompletionDelta(_ResponseModel):
    """What one stream chunk adds to the message: the role first, then content pieces."""

    _OMIT_IF_NONE = frozenset({"role", "content"})

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatCompletionChunkChoice(_ResponseModel):
    """One choice of a stream chunk; `finish_reason` is set on the last content chunk only."""

    index: int = 0
    delta: ChatCompletionDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_ResponseModel):
    """One SSE event of a streamed chat completion.

    With `stream_options.include_usage` the stream ends with a chunk whose `choices` is empty and
    whose `usage` is set; the final chunk also carries the `wwwserve` attestation.
    """

    _OMIT_IF_NONE = frozenset({"usage", "wwwserve", "wwwserve_work"})

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=_now_s)
    model: str
    choices: list[ChatCompletionChunkChoice]
    system_fingerprint: str | None = None
    usage: Usage | None = None
    wwwserve: dict[str, Any] | None = None
    wwwserve_work: dict[str, Any] | None = None


class CompletionChoice(_ResponseModel):
    """One choice of a legacy completion (also the shape used in its stream chunks)."""

    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None


class CompletionResponse(_ResponseModel):
    """The body of a non-streamed `POST /v1/completions` answer."""

    _OMIT_IF_NONE = frozenset({"wwwserve", "wwwserve_work"})

    id: str = Field(default_factory=lambda: new_request_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now_s)
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    wwwserve: dict[str, Any] | None = None
    wwwserve_work: dict[str, Any] | None = None


class CompletionChunk(_ResponseModel):
    """One SSE event of a streamed legacy completion (OpenAI keeps `object` = "text_completion")."""

    _OMIT_IF_NONE = frozenset({"usage", "wwwserve", "wwwserve_work"})

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=_now_s)
    model: str
    choices: list[CompletionChoice]
    system_fingerprint: str | None = None
    usage: Usage | None = None
    wwwserve: dict[str, Any] | None = None
    wwwserve_work: dict[str, Any] | None = None


class ModelCard(_ResponseModel):
    """One entry of `GET /v1/models`, with how many nodes of the network serve the model."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=_now_s)
    owned_by: str = "wwwserve"
    wwwserve_nodes: int = Field(default=0, ge=0)


class ModelList(_ResponseModel):
    """The body of `GET /v1/models`."""

    object: Literal["list"] = "list"
    data: list[ModelCard] = Field(default_factory=list)


def _answer_body(
    obj: str, request_id: str, model: str, choice: dict[str, Any], prompt_tokens: int, completion_tokens: int,
    wwwserve: dict[str, Any] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": request_id,
        "object": obj,
        "created": _now_s(),
        "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "system_fingerprint": None,
    }
    if wwwserve is not None:
        body["wwwserve"] = wwwserve
    return body


def chat_completion_body(
    request_id: str,
    model: str,
    text: str,
    finish_reason: FinishReason | None,
    prompt_tokens: int,
    completion_tokens: int,
    wwwserve: dict[str, Any] | None,
) -> dict[str, Any]:
    """`ChatCompletionResponse(...).model_dump()` for one choice, built directly: it is on every request's
    path, and the model's validation and serializer cost more than the rest of building the answer
    (tests/unit/test_protocol.py checks the two stay identical)."""
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
              "finish_reason": finish_reason}
    return _answer_body("chat.completion", request_id, model, choice, prompt_tokens, completion_tokens, wwwserve)


def completion_body(
    request_id: str,
    model: str,
    text: str,
    finish_reason: FinishReason | None,
    prompt_tokens: int,
    completion_tokens: int,
    wwwserve: dict[str, Any] | None,
) -> dict[str, Any]:
    """`CompletionResponse(...).model_dump()` for one choice, built directly (see `chat_completion_body`)."""
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return _answer_body("text_completion", request_id, model, choice, prompt_tokens, completion_tokens, wwwserve)

