"""The OpenAI wire format as both of this node's clients read it: an engine's OpenAI-compatible server
(`node.backends.openai_compat`) and a peer node answering a delegation (`node.managers.communication`).

One SSE reader (`SSEDecoder`, `SSEEvents`: events until `[DONE]`, the rest drained so the keep-alive
connection is reused), one reading of a chunk's choices (`choice_text`), and one mapping of an
OpenAI-shaped error to a node error (`error_from_upstream` for an HTTP answer, `error_from_event` for an
error event inside a stream).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from wwwserve.ledger import safejson
from wwwserve.node.errors import (
    BackendUnavailableError,
    ContextLengthExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    NodeError,
    OverloadedError,
    UpstreamTimeoutError,
)
from wwwserve.node.http import drain_lines

__all__ = ["SSEDecoder", "SSEEvents", "choice_text", "error_from_event", "error_from_fields", "error_from_upstream",
           "parse_event"]

logger = logging.getLogger(__name__)

_CONTEXT_WORDING = re.compile(
    r"context length|context_length|context window|context size|exceed_context|max_model_len|"
    r"maximum model length|n_ctx",
    re.IGNORECASE,
)
_MAX_CONTEXT_NUMBER = re.compile(r"(?:maximum context length is|context length \()\s*(\d+)", re.IGNORECASE)
_UPSTREAM_MESSAGE_LIMIT = 1000  # characters of an upstream error message passed on to the user


class SSEDecoder:
    """Assembles SSE lines into event payloads (`data:` lines joined by newlines; others ignored)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        """Feed one line (without its newline); returns an event's data when a blank line ends it."""
        if not line:
            return self.flush()
        if line.startswith(":"):
            return None  # comment / keep-alive
        field_name, _, value = line.partition(":")
        if field_name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        """The pending event's data, if any (also used at end of stream without a trailing blank line)."""
        if not self._data:
            return None
        data = "\n".join(self._data)
        self._data = []
        return data


class SSEEvents:
    """The data of each SSE event on `lines`, until `[DONE]` (the rest of the body is then drained, so the
    connection can be reused) or the end of the body; `done` says whether `[DONE]` came. A line over
    `max_line_bytes` raises `ValueError`."""

    def __init__(self, lines: AsyncIterator[str], *, max_line_bytes: int | None = None) -> None:
        self.lines = lines
        self.max_line_bytes = max_line_bytes
        self.done = False

    async def __aiter__(self) -> AsyncIterator[str]:
        decoder = SSEDecoder()
        limit = self.max_line_bytes
        async for line in self.lines:
            if limit is not None and len(line) > limit:
                raise ValueError("oversized SSE line")
            data = decoder.feed(line)
            if data is None:
                continue
            if data.strip() == "[DONE]":
                self.done = True
                await drain_lines(self.lines)
                return
            yield data
        tail = decoder.flush()
        if tail is not None:
            if tail.strip() == "[DONE]":
                self.done = True
            else:
                yield tail


def parse_event(data: str) -> dict[str, Any]:
    """One event's JSON object (`ValueError` when it is not JSON or not an object)."""
    event = safejson.loads(data)
    if not isinstance(event, dict):
        raise ValueError("an SSE event that is not a JSON object")
    return event


def choice_text(choice: Mapping[str, Any], chat: bool | None = None) -> str | None:
    """The text a chunk's choice carries: `delta.content` (chat) or `text` (completion); `chat=None` takes
    whichever is there."""
    delta = choice.get("delta")
    if chat is None:
        chat = isinstance(delta, Mapping)
    piece = delta.get("content") if chat and isinstance(delta, Mapping) else (None if chat else choice.get("text"))
    return piece if isinstance(piece, str) else None


def _upstream_error_fields(body: str) -> tuple[str, dict[str, Any]]:
    try:
        parsed = safejson.loads(body)
    except ValueError:
        return body.strip()[:_UPSTREAM_MESSAGE_LIMIT], {}
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            return str(error.get("message", ""))[:_UPSTREAM_MESSAGE_LIMIT], error
        if isinstance(error, str):
            return error[:_UPSTREAM_MESSAGE_LIMIT], parsed
        for key in ("message", "detail"):  # older vLLM: {"object": "error", "message": ...}; FastAPI
            if isinstance(parsed.get(key), str):
                return parsed[key][:_UPSTREAM_MESSAGE_LIMIT], parsed
    return body.strip()[:_UPSTREAM_MESSAGE_LIMIT], {}


def _retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    value = (headers or {}).get("retry-after")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 and math.isfinite(seconds) else None


def _int_field(fields: Mapping[str, Any], key: str) -> int | None:
    value = fields.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def error_from_upstream(status: int, body: str, headers: Mapping[str, str] | None = None, *,
                        upstream: str = "model backend", model: str | None = None) -> NodeError:
    """The node error for an OpenAI-compatible server's HTTP error answer (status, raw body, headers);
    `model` is the model the request asked for (named by a `ModelNotFoundError`)."""
    message, fields = _upstream_error_fields(body)
    return error_from_fields(fields, message, status, headers, upstream=upstream, model=model)


def error_from_event(event: Mapping[str, Any], *, upstream: str = "model backend",
                     model: str | None = None) -> NodeError:
    """The node error an OpenAI error event (`{"error": {...}}`, sent inside a stream after the first
    byte, or as a whole answer) stands for. Without an HTTP status, it is read from the error's `code`
    (vLLM puts the status there) or its `type`/`code` words (a wwwserve node's)."""
    error = event.get("error")
    if not isinstance(error, Mapping):
        return BackendUnavailableError(f"The {upstream} sent a malformed error event.")
    message = str(error.get("message") or "")[:_UPSTREAM_MESSAGE_LIMIT]
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 600:
        status = code
    elif code == "model_not_found":
        status = 404
    elif code in ("timeout", "upstream_timeout"):
        status = 504
    elif error.get("type") == "invalid_request_error" or code == "context_length_exceeded":
        status = 400
    else:
        status = 500
    return error_from_fields(error, message, status, None, upstream=upstream, model=model)


def _is_model_not_found(fields: Mapping[str, Any], status: int) -> bool:
    # OpenAI and a wwwserve node say code "model_not_found"; vLLM a 404 NotFoundError about param "model".
    # A bare 404 (a wrong path's {"detail": "Not Found"}) is not about the model.
    if fields.get("code") == "model_not_found":
        return True
    return status == 404 and (fields.get("param") == "model" or fields.get("type") == "NotFoundError")


def error_from_fields(fields: Mapping[str, Any], message: str, status: int, headers: Mapping[str, str] | None = None,
                      *, upstream: str = "model backend", model: str | None = None) -> NodeError:
    """The one mapping of an OpenAI-shaped error (its fields, message and HTTP status) to a node error,
    for an engine's answers and a peer's alike; `model` is the requested model, when the caller knows it."""
    code = str(fields.get("code") or "") + " " + str(fields.get("type") or "")
    if status in (408, 504):
        # A peer's wording is this network's own; an engine's stays in its log.
        return UpstreamTimeoutError((message or None) if upstream == "peer" else None)
    if status == 429:
        retry_after = _retry_after_s(headers)
        return OverloadedError(f"The {upstream} is saturated. Please retry later.", retry_after_s=retry_after)
    if status >= 500 or status in (401, 403):
        # The user cannot fix a crashed engine or this node's credentials: a retryable 503, details in the log.
        logger.warning("%s answered %d: %s", upstream, status, message)
        return BackendUnavailableError(retry_after_s=_retry_after_s(headers))
    param = fields.get("param")
    if _is_model_not_found(fields, status):
        # `param` names the field ("model"), not the model: the model is the one the request asked for.
        return ModelNotFoundError(model or "", message or None)
    if _CONTEXT_WORDING.search(message) or _CONTEXT_WORDING.search(code):
        found = _MAX_CONTEXT_NUMBER.search(message)
        max_context = int(found.group(1)) if found else _int_field(fields, "n_ctx")
        return ContextLengthExceededError(
            message or None, prompt_tokens=_int_field(fields, "n_prompt_tokens"), max_context_tokens=max_context
        )
    code_word = fields.get("code")
    return InvalidRequestError(
        message or f"The {upstream} rejected the request ({status}).",
        param=param if isinstance(param, str) else None,
        code=code_word if isinstance(code_word, str) and code_word else None,
    )
