"""The node's log lines: plain text by default, or one JSON object per line (`wwwserve node run --log-format
json`), each with the id of the request being served when there is one.

The request id lives in a `ContextVar` (`REQUEST_ID`). The code that first knows a request's id binds it
(`bind_request_id`): the Dispatcher for every request it dispatches (a user's, whose id the serving class made,
or a peer's), the peer API for a delegated request as soon as its body is read. The id travels with a
delegated request (`DelegateBody.request_id`) and the executor serves it under the same id, so the origin's
and the executor's lines about one request carry the same `request_id`. asyncio copies the context into
tasks a request starts (a stream's body, `asyncio.to_thread`), so their lines carry it too. A task cannot
hand a context back to the one that started it, so each HTTP request also gets a `request_scope` (opened
by `node.metrics.measured`, around everything the request runs): an id bound in a task the request started
(the serving class runs a whole answer in one, to watch for disconnects) is kept there too, and the lines
the request's own task writes afterwards (uvicorn's access line) carry it.

A JSON line holds `time` (ISO 8601, UTC, milliseconds), `level`, `logger`, `message`, `request_id` (only when
one is in scope) and `exc_info` (the traceback, when the record has one).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

__all__ = ["LOG_FORMATS", "REQUEST_ID", "JsonFormatter", "LogFormat", "RequestIdFilter", "bind_request_id",
           "configure_logging", "current_request_id", "request_scope"]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

REQUEST_ID: ContextVar[str | None] = ContextVar("wwwserve_request_id", default=None)
"""The id of the request the running code serves (None outside a request)."""

TEXT_FORMAT = "%(levelname)s:     %(name)s: %(message)s"
"""The plain format: the node's own lines next to uvicorn's, which look the same."""


class _Scope:
    """One HTTP request's id, shared by every task the request starts (see the module docstring)."""

    __slots__ = ("request_id",)

    def __init__(self) -> None:
        self.request_id: str | None = None


_SCOPE: ContextVar[_Scope | None] = ContextVar("wwwserve_request_scope", default=None)


@contextlib.contextmanager
def request_scope() -> Iterator[None]:
    """Around one HTTP request: an id bound anywhere inside it (tasks it starts included) names its lines."""
    token = _SCOPE.set(_Scope())
    try:
        yield
    finally:
        _SCOPE.reset(token)


def bind_request_id(request_id: str) -> None:
    """Make `request_id` the current request's id for the rest of the running task (each HTTP request is
    served in a task of its own, so it ends with the request), the tasks it starts from now on, and the
    HTTP request's scope (`request_scope`)."""
    REQUEST_ID.set(request_id)
    scope = _SCOPE.get()
    if scope is not None:
        scope.request_id = request_id


def current_request_id() -> str | None:
    """The id bound by `bind_request_id` in this context or its HTTP request's scope, or None."""
    found = REQUEST_ID.get()
    if found is None:
        scope = _SCOPE.get()
        found = scope.request_id if scope is not None else None
    return found


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (`record.request_id`, None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        line: dict[str, object] = {
            "time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id is not None:
            line["request_id"] = request_id
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(level: str = "info", log_format: LogFormat = "text") -> None:
    """Send the root logger's records to stderr in `log_format`, at `level` (a logging level name).

    With "json", uvicorn must be run with `log_config=None`: its own loggers then propagate here instead
    of writing text lines through handlers of their own.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # text handlers of an earlier dictConfig
            uvicorn_logger = logging.getLogger(name)
            for old in list(uvicorn_logger.handlers):
                uvicorn_logger.removeHandler(old)
            uvicorn_logger.propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per httpx call would drown the rest
