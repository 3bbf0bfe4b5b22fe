"""Errors of the node's user API and the one OpenAI error envelope they all become.

Every error a user can see is a `NodeError` subclass that knows its HTTP status, its OpenAI `type`
and `code`, and optionally the `param` it is about. `to_node_error` maps *any* exception onto one
(pydantic and FastAPI validation errors, Starlette HTTP errors, and, for anything unexpected, a 500
with a generic message: internals go to the log, never to the user). `error_envelope` then builds
`{"error": {"message", "type", "param", "code"}}`, the only place that shape is written; it serves
plain JSON answers (`error_response`) and streams alike (`sse_error_events`: one `data: {"error":...}`
event, then `data: [DONE]`, so a client that already got tokens still sees a clean end).

`install_error_handlers(app)` wires this into a FastAPI app, and in particular turns FastAPI's own
422 validation answers into OpenAI's 400 `invalid_request_error`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from wwwserve.errors import WWWServeError
from wwwserve.node.protocol import SSE_DONE, sse_event

logger = logging.getLogger(__name__)

GENERIC_INTERNAL_MESSAGE = "The server had an error while processing your request. Please retry."


class NodeError(WWWServeError):
    """Root of every error the node's user API answers with; subclasses fix status, type and code."""

    http_status: int = 500
    error_type: str = "server_error"
    code: str | None = "internal_error"
    default_message: str = GENERIC_INTERNAL_MESSAGE

    def __init__(self, message: str | None = None, *, param: str | None = None, code: str | None = None) -> None:
        self.message = message if message is not None else self.default_message
        self.param = param
        if code is not None:
            self.code = code
        super().__init__(self.message)

    @property
    def retry_after_s(self) -> float | None:
        """Seconds the client should wait before retrying; None when a retry would not help."""
        return None

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error object for this error."""
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}


class InvalidRequestError(NodeError, ValueError):
    """The request is malformed or has an invalid value (400)."""

    http_status = 400
    error_type = "invalid_request_error"
    code: str | None = None
    default_message = "The request is invalid."


class ContextLengthExceededError(InvalidRequestError):
    """The prompt plus the requested output does not fit the model's context window (400)."""

    code = "context_length_exceeded"

    def __init__(
        self,
        message: str | None = None,
        *,
        prompt_tokens: int | None = None,
        max_context_tokens: int | None = None,
        param: str | None = "messages",
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_context_tokens = max_context_tokens
        if message is None:
            if prompt_tokens is not None and max_context_tokens is not None:
                message = (
                    f"This model's maximum context length is {max_context_tokens} tokens, but the request "
                    f"needs {prompt_tokens} tokens. Please shorten the messages or lower max_tokens."
                )
            else:
                message = "The request does not fit the model's context length. Please shorten the messages."
        super().__init__(message, param=param)


class AuthenticationError(NodeError):
    """The API key is missing or wrong (401)."""

    http_status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"
    default_message = "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'."


class ModelNotFoundError(NodeError):
    """No node of the network serves the requested model (404)."""

    http_status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str, message: str | None = None) -> None:
        self.model = model
        shown = model if len(model) <= 100 else model[:97] + "..."
        super().__init__(
            message or f"The model '{shown}' is not served by any node of this network. See GET /v1/models.",
            param="model",
        )


class RequestTooLargeError(NodeError):
    """The request body is over the size limit; answered before the body is parsed (413)."""

    http_status = 413
    error_type = "invalid_request_error"
    code = "request_too_large"

    def __init__(self, limit_bytes: int, message: str | None = None) -> None:
        self.limit_bytes = limit_bytes
        super().__init__(message or f"The request body is larger than the limit of {limit_bytes} bytes.")


class RequestTimeoutError(NodeError):
    """The request body did not arrive in time (408); nothing was parsed or run."""

    http_status = 408
    error_type = "invalid_request_error"
    code = "request_timeout"

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"The request body did not arrive within {timeout_s:g} s.")


class _RetryableError(NodeError):
    """An error after which retrying later can succeed; carries the `Retry-After` hint."""

    def __init__(self, message: str | None = None, *, retry_after_s: float | None = None) -> None:
        if retry_after_s is not None and (math.isnan(retry_after_s) or retry_after_s < 0):
            raise ValueError(f"retry_after_s must be a non-negative number, got {retry_after_s}")
        self._retry_after_s = retry_after_s
        super().__init__(message)

    @property
    def retry_after_s(self) -> float | None:
        return self._retry_after_s


class RateLimitError(_RetryableError):
    """The client sent too many requests (429)."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"
    default_message = "Rate limit reached. Please slow down and retry later."


class OverloadedError(_RetryableError):
    """The node and the peers it tried are all saturated (503)."""

    http_status = 503
    error_type = "server_error"
    code = "overloaded"
    default_message = "The network is overloaded. Please retry later."


class BackendUnavailableError(_RetryableError):
    """The model backend is down or not ready (503)."""

    http_status = 503
    error_type = "server_error"
    code = "backend_unavailable"
    default_message = "The model backend is unavailable. Please retry later."


class PeerRejectedError(NodeError):
    """A peer API message failed its signed-envelope check; `http_status` comes from the check (400/401/409)."""

    error_type = "invalid_request_error"
    code = "peer_envelope_rejected"

    def __init__(self, message: str, http_status: int) -> None:
        self.http_status = http_status
        super().__init__(message)


class ProbeDeclinedError(NodeError):
    """A peer asked this node to run a request only if it would accept a probe for it, and it would not (409).

    Peer API only: the asking node tries its next candidate; nothing ran.
    """

    http_status = 409
    error_type = "server_error"
    code = "probe_declined"
    default_message = "This node does not take the request now."


class PaymentRequiredError(NodeError):
    """Peer API only: the sending node owes this one too much, or cannot fund what it owes (402); nothing
    ran. The asking node tries its next candidate and does not ban this one (node.billing)."""

    http_status = 402
    error_type = "invalid_request_error"
    code = "payment_required"
    default_message = "This node takes no more delegations from the sender until it pays."


class RequestInFlightError(NodeError, ValueError):
    """A request with this id is already running on this node (409); nothing new ran.

    Request ids are unique per user request, so only a peer can send one twice (e.g. an origin whose
    duel copy and re-dispatched request met on one executor): the asking node tries another peer.
    """

    http_status = 409
    error_type = "invalid_request_error"
    code = "request_in_flight"

    def __init__(self, request_id: str) -> None:
        super().__init__(f"A request with id {request_id!r} is already running on this node.")


class UpstreamTimeoutError(NodeError):
    """The backend or the peer executing the request did not answer in time (504)."""

    http_status = 504
    error_type = "server_error"
    code = "upstream_timeout"
    default_message = "The model did not answer in time. Please retry."


class InternalError(NodeError):
    """An unexpected failure inside the node (500); the message is always generic."""


# ---------------------------------------------------------------------------------------------
# mapping any exception onto a NodeError

# Union branches and validator wrappers appear in pydantic's error locations ("str",
# "list[str]", "function-after[...]"); they are not parameter names and must not reach `param`.
_LOC_TAG = re.compile(r"[^A-Za-z0-9_]")
_LOC_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "bytes"})

# Pydantic error types that mean "wrong JSON type" (OpenAI code invalid_type) rather than a bad value.
_TYPE_ERROR_SUFFIXES = ("_type", "_parsing")


def _param_of(loc: Sequence[int | str]) -> str | None:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            if parts:
                parts[-1] += f"[{item}]"
            continue
        if _LOC_TAG.search(item) or item in _LOC_TYPE_NAMES:
            continue
        parts.append(item)
    return ".".join(parts) or None


def _invalid_request_from_errors(
    errors: Sequence[Mapping[str, Any]], content_type: str | None = None
) -> InvalidRequestError:
    if not errors:
        return InvalidRequestError("The request is invalid.")
    first = errors[0]
    loc: Sequence[int | str] = tuple(first.get("loc", ()))
    error_type = str(first.get("type", ""))
    if loc and loc[0] == "body":
        loc = loc[1:]  # FastAPI prefixes where the value came from; OpenAI params are body fields
        if error_type == "json_invalid":
            return InvalidRequestError(
                "We could not parse the JSON body of your request. The body must be valid JSON.",
                code="invalid_json",
            )
        if not loc:
            if content_type is not None and "json" not in content_type.lower():
                # FastAPI only parses JSON sent as JSON; `curl -d` without -H sends a form type.
                return InvalidRequestError(
                    "The request body must be JSON sent with 'Content-Type: application/json'.",
                    code="invalid_content_type",
                )
            if error_type == "missing":
                return InvalidRequestError("The request needs a JSON body.", code="missing_body")
            return InvalidRequestError("The request body must be a JSON object.", code="invalid_type")
    param = _param_of(loc)
    msg = str(first.get("msg", "invalid value")).rstrip(".")
    if error_type == "missing":
        if param is None:
            return InvalidRequestError("A required parameter is missing.", code="missing_required_parameter")
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
        )
    if error_type == "invalid_type" or error_type.endswith(_TYPE_ERROR_SUFFIXES):
        code = "invalid_type"
        lead = "Invalid type for"
    else:
        code = "invalid_value"
        lead = "Invalid value for"
    if param is None:
        return InvalidRequestError(f"Invalid request: {msg}.", code=code)
    return InvalidRequestError(f"{lead} '{param}': {msg}.", param=param, code=code)


def from_validation_error(exc: ValidationError | RequestValidationError) -> InvalidRequestError:
    """A 400 `invalid_request_error` naming the first invalid parameter (e.g. `messages[0].role`).

    The message is one line and never contains the offending input, only its location and the rule.
    """
    return _invalid_request_from_errors(exc.errors())


def _from_http_exception(exc: StarletteHTTPException, request: Request | None) -> NodeError:
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else None
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    if status == 404 and request is not None and detail in (None, phrase):
        # Unknown route: OpenAI answers "Invalid URL (POST /v1/foo)".
        detail = f"Invalid URL ({request.method} {request.url.path})"
    error: NodeError
    if status >= 500:
        error = InternalError(GENERIC_INTERNAL_MESSAGE)
    elif status == 401:
        error = AuthenticationError(detail)
    elif status == 429:
        error = RateLimitError(detail)
    else:
        error = InvalidRequestError(detail or phrase, code=None)
    error.http_status = status
    return error


def to_node_error(exc: BaseException, request: Request | None = None) -> NodeError:
    """Map any exception onto a `NodeError`; unknown ones become a generic 500 and are logged here."""
    if isinstance(exc, NodeError):
        return exc
    if isinstance(exc, RequestValidationError) and request is not None:
        return _invalid_request_from_errors(exc.errors(), request.headers.get("content-type", ""))
    if isinstance(exc, ValidationError | RequestValidationError):
        return from_validation_error(exc)
    if isinstance(exc, StarletteHTTPException):
        return _from_http_exception(exc, request)
    logger.error("unexpected error answered as 500", exc_info=exc)
    return InternalError()


def error_envelope(exc: BaseException) -> dict[str, Any]:
    """`{"error": {"message", "type", "param", "code"}}` for any exception."""
    return to_node_error(exc).envelope()


def retry_after_header(exc: BaseException) -> str | None:
    """The `Retry-After` header value (whole seconds, at least 1) or None when there is no hint."""
    seconds = exc.retry_after_s if isinstance(exc, NodeError) else None
    if seconds is None:
        return None
    return str(max(1, math.ceil(seconds)))


def error_headers(exc: BaseException) -> dict[str, str]:
    """Headers an error answer carries (`Retry-After` for 429/503 with a hint)."""
    value = retry_after_header(exc)
    return {"Retry-After": value} if value is not None else {}


def error_response(exc: BaseException, request: Request | None = None) -> JSONResponse:
    """The JSON answer for any exception: its status, the envelope and the headers."""
    error = to_node_error(exc, request)
    headers = error_headers(error)
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers = {**exc.headers, **headers}  # e.g. WWW-Authenticate, Allow
    return JSONResponse(status_code=error.http_status, content=error.envelope(), headers=headers)


def sse_error_events(exc: BaseException) -> bytes:
    """How a stream ends on error: one `data: {"error": ...}` event, then `data: [DONE]`."""
    return sse_event(error_envelope(exc)) + SSE_DONE


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of `app` in the OpenAI shape (and validation errors with 400, not 422)."""

    async def handle(request: Request, exc: Exception) -> Response:
        return error_response(exc, request)

    app.add_exception_handler(NodeError, handle)
    app.add_exception_handler(RequestValidationError, handle)
    app.add_exception_handler(ValidationError, handle)
    app.add_exception_handler(StarletteHTTPException, handle)
    # Starlette routes a bare `Exception` handler to its ServerErrorMiddleware: the 500 answer is
    # ours, and the exception is still re-raised to the server afterwards (so it gets logged there).
    app.add_exception_handler(Exception, handle)
