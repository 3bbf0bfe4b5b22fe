"""The user API's request models: chat and legacy completions, validated the way OpenAI validates them.

Strict types (a string is not a number, `"true"` is not a boolean); fields OpenAI defines that this network
cannot honour are rejected with a clear message; fields OpenAI does not define are ignored. The validators
raise `PydanticCustomError` with their own error type, so the message reaches the user verbatim and the
error's location is the field itself, never a union branch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# OpenAI: "Up to 4 sequences where the API will stop generating further tokens."
MAX_STOP_SEQUENCES = 4

Role = Literal["system", "developer", "user", "assistant", "tool"]


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
