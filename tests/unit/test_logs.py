"""Structured logs (node.logs): the JSON line's fields, the request id bound in a request's context, the
`--log-format` option. That a delegated request's id reaches the executor's lines is test_delegation's."""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.node.logs import (
    JsonFormatter,
    RequestIdFilter,
    bind_request_id,
    configure_logging,
    current_request_id,
    request_scope,
)


def _json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("wwwserve.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_a_json_line_has_time_level_logger_message_and_the_bound_request_id(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured

    def serve() -> None:
        logger.info("outside %s", "any request")
        bind_request_id("chatcmpl-abc")
        logger.warning("inside %d", 1)

    contextvars.copy_context().run(serve)  # the binding stays in that context
    logger.info("after")
    outside, inside, after = _json_lines(stream)
    assert outside["message"] == "outside any request" and "request_id" not in outside
    assert inside == {"time": inside["time"], "level": "warning", "logger": "wwwserve.test_logs",
                      "message": "inside 1", "request_id": "chatcmpl-abc"}
    assert str(inside["time"]).endswith("Z") and "T" in str(inside["time"])
    assert "request_id" not in after and current_request_id() is None


def test_tasks_a_request_starts_log_its_id_and_tracebacks_stay_in_one_line(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured

    async def request(rid: str) -> None:
        bind_request_id(rid)
        await asyncio.sleep(0)
        await asyncio.to_thread(logger.info, "in a worker thread")  # to_thread copies the context
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")

    async def main() -> None:
        await asyncio.gather(asyncio.create_task(request("r-1")), asyncio.create_task(request("r-2")))

    asyncio.run(main())
    lines = _json_lines(stream)
    assert sorted((line["message"], line["request_id"]) for line in lines) == [
        ("failed", "r-1"), ("failed", "r-2"), ("in a worker thread", "r-1"), ("in a worker thread", "r-2")]
    assert all("ValueError: boom" in str(line["exc_info"]) for line in lines if line["message"] == "failed")
    assert len(stream.getvalue().splitlines()) == 4  # the traceback is inside its line


def test_configure_logging_json_sends_every_logger_to_one_json_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    try:
        configure_logging("debug", "json")
        logging.getLogger("uvicorn.error").warning("Shutting down")  # uvicorn sets its own levels
        out = capsys.readouterr().err.splitlines()
        assert json.loads(out[-1])["logger"] == "uvicorn.error"
        with pytest.raises(ValueError, match="log format"):
            configure_logging("info", "xml")  # type: ignore[arg-type]
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)


def test_node_run_refuses_an_unknown_log_format() -> None:
    result = CliRunner().invoke(app, ["node", "run", "--log-format", "xml"])
    assert result.exit_code == 2
    assert "--log-format must be one of text, json" in result.output


def test_an_id_bound_in_a_task_the_request_started_names_the_requests_later_lines(
        captured: tuple[logging.Logger, io.StringIO]) -> None:
    """The serving class runs a whole answer in a task of its own; uvicorn's access line is written by the
    request's task afterwards: the request scope carries the id back."""
    logger, stream = captured

    async def request(scoped: bool) -> None:
        async def generate() -> None:
            bind_request_id("chatcmpl-in-a-task")

        if scoped:
            with request_scope():
                await asyncio.create_task(generate())
                logger.info("access line")
        else:
            await asyncio.create_task(generate())
            logger.info("unscoped")
        logger.info("after the request")

    asyncio.run(request(scoped=True))
    asyncio.run(request(scoped=False))
    lines = [(line["message"], line.get("request_id")) for line in _json_lines(stream)]
    assert lines == [("access line", "chatcmpl-in-a-task"), ("after the request", None),
                     ("unscoped", None), ("after the request", None)]
