"""Wire models of the node's user API: the OpenAI chat/completions/models shapes, plus our extensions.

Requests are validated strictly (a string is not a number, `"true"` is not a boolean), the way OpenAI
answers them: a wrong type or value is an `invalid_request_error` naming the offending `param`
(`node.errors.from_validation_error` turns a pydantic error into that). Fields OpenAI defines that
this network cannot honour (`n > 1`, `echo`, `logprobs`, image parts, ...) are rejected with a clear
message instead of being silently dropped; fields OpenAI does not define are ignored, so newer clients
keep working.

Responses serialize with exactly the OpenAI field names. Extensions ride along: `wwwserve` on
responses and on the final stream chunk (the executor's signed attestation, built by `node.signing`),
`wwwserve_work` beside it on answers to peers (the executor's work attestation, `ledger.work`), and
`wwwserve_nodes` on each model card (how many nodes in the network serve that model). All are omitted
when empty, so the official `openai` client sees ordinary objects.

The validators raise `PydanticCustomError` with their own error type (not a bare `ValueError`) so the
message reaches the user verbatim and the error's location is the field itself, never a union branch.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

# OpenAI: "Up to 4 sequences where the API will stop generating further tokens."
MAX_STOP_SEQUENCES = 4

SSE_DONE = b"data: [DONE]\n\n"
"""The sentinel event that ends every OpenAI stream, after a normal end or an error event."""

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


def new_request_id(prefix: str = "chatcmpl") -> str:
    """A fresh OpenAI-style id such as `chatcmpl-3f9a...` (128 random bits, hex)."""
    return f"{prefix}-{secrets.token_hex(16)}"


def _now_s() -> int:
    return int(time.time())


def _invalid(message: str, **ctx: Any) -> PydanticCustomError:
    # One error type for every rule of ours; the message is shown to the user as is.
    return PydanticCustomError("invalid_value", message, ctx or None)


def _short_repr(value: object) -> str:
    # Never echo a large (or secret-bearing) input back in full.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: object) -> str:
    return {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


# ---------------------------------------------------------------------------------------------
# requests


class _RequestModel(BaseModel):
    # strict: OpenAI rejects "0.5" for a number and "true" for a boolean; so do we.
    # extra="ignore": fields OpenAI adds later must not break older nodes.
    model_config = ConfigDict(strict=True, extra="ignore")


class TextContentPart(_RequestModel):
    """One `{"type": "text", "text": ...}` part of a message's content array."""

    type: Literal["text"]
    text: str


class StreamOptions(_RequestModel):
    """`stream_options`: only `include_usage` (a final chunk carrying `usage`) is defined."""

    include_usage: bool = False


class ChatMessage(_RequestModel):
    """One message of a chat request.

    `content` is a string or an array of text parts. It may be null only for an assistant message
    (one that carried tool calls). An empty string is allowed, as OpenAI allows it.
    """

    role: Role
    content: str | list[TextContentPart] | None = Field(default=None, validate_default=True)
    name: str | None = None
    # Carried through for backends that understand tools; this node does not interpret them.
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = Field(default=None, validate_default=True)

    @field_validator("content", mode="before")
    @classmethod
    def _check_content(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if value is None:
            if role in (None, "assistant"):
                return value
            raise PydanticCustomError("missing", "Field required")
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise PydanticCustomError(
                "invalid_type",
                "expected a string or an array of content parts, but got {got} instead",
                {"got": _type_name(value)},
            )
        for index, part in enumerate(value):
            if not isinstance(part, dict):
                raise _invalid(
                    "content part {index} must be an object, but got {got}",
                    index=index,
                    got=_type_name(part),
                )
            part_type = part.get("type")
            if part_type != "text":
                raise _invalid(
                    "content part {index} has type {part_type}; this node serves text-only models, "
                    "so only 'text' parts are supported",
                    index=index,
                    part_type=_short_repr(part_type),
                )
            if not isinstance(part.get("text"), str):
                raise _invalid("content part {index} needs a string 'text'", index=index)
        return value

    @field_validator("tool_call_id")
    @classmethod
    def _check_tool_call_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A tool result must say which call it answers (OpenAI requires it too).
        if value is None and info.data.get("role") == "tool":
            raise PydanticCustomError("missing", "Field required")
        return value

    def text(self) -> str:
        """The message's content as plain text (text parts joined without separator; null → "")."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _SamplingRequest(_RequestModel):
    """The sampling fields chat and completion requests share, with OpenAI's ranges."""

    model: str = Field(min_length=1)
    n: int = 1
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("n", mode="before")
    @classmethod
    def _check_n(cls, value: Any) -> Any:
        # Only type-correct values reach the rule; a wrong type gets the ordinary type error.
        if isinstance(value, int) and not isinstance(value, bool) and value != 1:
            raise _invalid("only n=1 is supported (one choice per request), got {n}", n=value)
        return value

    @field_validator("stop", mode="before")
    @classmethod
    def _check_stop(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise PydanticCustomError(
                "invalid_type",
                "expected a string or an array of strings, but got {got} instead",
                {"got": _type_name(value)},
            )
        if len(value) > MAX_STOP_SEQUENCES:
            raise _invalid(
                "at most {limit} stop sequences are allowed, got {count}",
                limit=MAX_STOP_SEQUENCES,
                count=len(value),
            )
        if not all(isinstance(item, str) for item in value):
            raise PydanticCustomError("invalid_type", "every stop sequence must be a string")
        return value

    @field_validator("stream_options")
    @classmethod
    def _check_stream_options(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        # Same rule and wording as OpenAI; `stream` is declared first, so it is already in info.data.
        if value is not None and not info.data.get("stream", False):
            raise _invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
        return value

    @property
    def stop_sequences(self) -> list[str]:
        """`stop` as a list (empty when absent)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage(self) -> bool:
        """Whether a stream must end with a chunk carrying `usage`."""
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_SamplingRequest):
    """`POST /v1/chat/completions`."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None

    @field_validator("logprobs")
    @classmethod
    def _check_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise _invalid("logprobs are not supported by this network")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _check_top_logprobs(cls, value: int | None) -> int | None:
        if value is not None:
            raise _invalid("logprobs are not supported by this network")
        return value

    @property
    def max_output_tokens(self) -> int | None:
        """The output budget: `max_completion_tokens` (the current name) wins over `max_tokens` (deprecated)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_SamplingRequest):
    """`POST /v1/completions` (legacy): one text prompt."""

    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _check_prompt(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            if len(value) == 1 and isinstance(value[0], str):
                return value
            if value and all(isinstance(item, int) and not isinstance(item, bool) for item in value):
                raise _invalid("token-id prompts are not supported; send the prompt as text")
            if len(value) != 1:
                raise _invalid("exactly one prompt is supported per request, got {count}", count=len(value))
            raise PydanticCustomError(
                "invalid_type", "expected a string, but got {got} instead", {"got": _type_name(value[0])}
            )
        raise PydanticCustomError(
            "invalid_type", "expected a string, but got {got} instead", {"got": _type_name(value)}
        )

    @field_validator("echo")
    @classmethod
    def _check_echo(cls, value: bool) -> bool:
        if value:
            raise _invalid("echo is not supported by this network")
        return value

    @field_validator("best_of")
    @classmethod
    def _check_best_of(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise _invalid("only best_of=1 is supported, got {best_of}", best_of=value)
        return value

    @field_validator("suffix")
    @classmethod
    def _check_suffix(cls, value: str | None) -> str | None:
        if value:
            raise _invalid("suffix is not supported by this network")
        return value

    @field_validator("logprobs")
    @classmethod
    def _check_logprobs(cls, value: int | None) -> int | None:
        if value is not None:
            raise _invalid("logprobs are not supported by this network")
        return value

    @property
    def prompt_text(self) -> str:
        """The single prompt as a string."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    @property
    def max_output_tokens(self) -> int | None:
        """The output budget (`max_tokens`; OpenAI's legacy default of 16 is left to the backend)."""
        return self.max_tokens


# ---------------------------------------------------------------------------------------------
# responses


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


# ---------------------------------------------------------------------------------------------
# server-sent events


def sse_event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One SSE `data:` event (`b'data: {...}\\n\\n'`) carrying a model or a plain dict as compact JSON."""
    if isinstance(payload, BaseModel):
        body = payload.model_dump_json()
    else:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + body.encode() + b"\n\n"
