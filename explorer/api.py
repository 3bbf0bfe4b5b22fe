"""The explorer's web app: the JSON routes under `api/`, live updates at `api/stream`, the page at `/`.

`explorer_app(queries, ...)` is a Starlette app that the node mounts at `/explorer` (explorer.feature) and that
`wwwserve explorer` serves without a node; every URL is relative to that mount. The routes and their JSON are
the contract in `ExplorerQueries` (explorer.queries): pages carry `items`, `total`, `offset`, `limit`; wei
amounts are decimal strings. Handlers that read the database are plain functions, which Starlette runs in its
thread pool, so a slow query never blocks the node's event loop. A bad parameter is a 400 and an unknown node
or duel a 404, both in the node's OpenAI error shape (`node.errors`).

`api/stream` is Server-Sent Events: a `change` event with `{"block", "requests"}` (the indexed block and the
count of requests logged, null without a request log) when the app starts streaming and whenever either
changes (checked every `poll_interval_s`), and a `: keepalive` comment every `keepalive_s`. The page refetches
its view on each change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
from eth_utils.address import to_checksum_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wwwserve.explorer.queries import DUEL_FILTERS, NODE_FILTERS, NODE_SORTS, ExplorerQueries
from wwwserve.node.errors import InvalidRequestError, NodeError

__all__ = ["STATIC_DIR", "ExplorerNotFoundError", "RequestLog", "explorer_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
"""The page (index.html, app.js, style.css), served as it is: no build step."""

MAX_LIMIT = 200  # items in one page
MAX_POINTS = 1000  # samples of the stake-share chart
MAX_TOP = 50  # series of the stake-share chart
DUEL_ID_LIMIT = 2**63  # duel ids are 63-bit hashes

_T = TypeVar("_T", bound=str)


class RequestLog(Protocol):
    """The node's recent-request log as the explorer reads it (`node.recent.RecentRequests`)."""

    def entries(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` records, newest first, as JSON objects."""
        ...

    @property
    def count(self) -> int:
        """How many requests were ever logged."""
        ...


class ExplorerNotFoundError(NodeError):
    """The node or duel asked for is not in the index (404)."""

    http_status = 404
    error_type = "invalid_request_error"
    code: str | None = "not_found"
    default_message = "Not found."


def _invalid(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code="invalid_parameter")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _invalid(name, f"{name} must be between {low} and {high}, got {value}")
    return value


def _choice(request: Request, name: str, choices: tuple[_T, ...], default: _T) -> _T:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    for choice in choices:
        if raw == choice:
            return choice
    raise _invalid(name, f"{name} must be one of {', '.join(choices)}, got {raw!r}")


def _address(raw: str, param: str) -> str:
    try:
        return to_checksum_address(raw)
    except ValueError:
        raise _invalid(param, f"{param} must be a 0x-prefixed 20-byte hex address, got {raw!r}") from None


def _page(request: Request) -> tuple[int, int]:
    return (_int_param(request, "offset", 0, 0, 2**62),
            _int_param(request, "limit", 50, 1, MAX_LIMIT))


def explorer_app(
    queries: ExplorerQueries,
    *,
    recent: RequestLog | None = None,
    node_address: str | None = None,
    chain_id: int | None = None,
    contract: str | None = None,
    poll_interval_s: float = 0.5,
    keepalive_s: float = 15.0,
) -> Starlette:
    """The explorer over `queries`: `recent` is this node's request log (None without a node, or on a private
    node), `node_address` this node's address; `chain_id` and `contract` override what the index records."""

    def totals(request: Request) -> Response:
        body = queries.totals()
        if chain_id is not None:
            body["chain_id"] = chain_id
        if contract is not None:
            body["contract"] = contract
        body["requests_logged"] = None if recent is None else recent.count
        body["node"] = node_address
        return JSONResponse(body)

    def nodes(request: Request) -> Response:
        offset, limit = _page(request)
        sort = _choice(request, "sort", NODE_SORTS, "stake")
        active = _choice(request, "active", NODE_FILTERS, "true")
        return JSONResponse(queries.nodes(offset=offset, limit=limit, sort=sort, active=active))

    def node(request: Request) -> Response:
        address = _address(request.path_params["address"], "address")
        found = queries.node(address)
        if found is None:
            raise ExplorerNotFoundError(f"no node {address} in the index")
        return JSONResponse(found)

    def duels(request: Request) -> Response:
        offset, limit = _page(request)
        status = _choice(request, "status", DUEL_FILTERS, "all")
        raw_node = request.query_params.get("node")
        who = None if raw_node is None else _address(raw_node, "node")
        return JSONResponse(queries.duels(offset=offset, limit=limit, status=status, node=who))

    def duel(request: Request) -> Response:
        raw = request.path_params["duel_id"]
        if not raw.isdecimal() or int(raw) >= DUEL_ID_LIMIT:
            raise _invalid("duel_id", f"a duel id is a decimal integer below 2**63, got {raw!r}")
        found = queries.duel(int(raw))
        if found is None:
            raise ExplorerNotFoundError(f"no duel {raw} in the index")
        return JSONResponse(found)

    def requests(request: Request) -> Response:
        limit = _int_param(request, "limit", 50, 1, MAX_LIMIT)
        if recent is None:
            return JSONResponse({"items": [], "total": 0, "offset": 0, "limit": limit, "available": False})
        return JSONResponse({"items": recent.entries(limit), "total": recent.count, "offset": 0, "limit": limit,
                             "available": True})

    def stake_history(request: Request) -> Response:
        points = _int_param(request, "points", 200, 1, MAX_POINTS)
        top = _int_param(request, "top", 8, 0, MAX_TOP)
        return JSONResponse(queries.stake_history(points=points, top=top))

    def unknown(request: Request) -> Response:
        raise ExplorerNotFoundError(f"no explorer API route {request.url.path}")

    async def stream(request: Request) -> Response:
        return StreamingResponse(_changes(queries.indexed_block, recent, poll_interval_s, keepalive_s),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NodeError)
        return JSONResponse(exc.envelope(), status_code=exc.http_status)

    routes = [
        Route("/api/totals", totals),
        Route("/api/nodes", nodes),
        Route("/api/nodes/{address}", node),
        Route("/api/duels", duels),
        Route("/api/duels/{duel_id}", duel),
        Route("/api/requests", requests),
        Route("/api/stake-history", stake_history),
        Route("/api/stream", stream),
        Route("/api/{rest:path}", unknown),
        Mount("/", StaticFiles(directory=STATIC_DIR, html=True, check_dir=False)),
    ]
    return Starlette(routes=routes, exception_handlers={NodeError: on_error})


async def _changes(indexed_block: Callable[[], int | None], recent: RequestLog | None, poll_interval_s: float,
                   keepalive_s: float) -> AsyncIterator[str]:
    """The SSE body of `api/stream` (see the module docstring); ends when the client goes (Starlette cancels)."""
    last: tuple[int | None, int | None] | None = None
    quiet_s = 0.0
    while True:
        try:
            block = await anyio.to_thread.run_sync(indexed_block)  # a query: off the event loop
        except Exception:  # a database hiccup: the page keeps its view; try again on the next tick
            log.warning("explorer stream: reading the indexed block failed", exc_info=True)
            block = last[0] if last is not None else None
        state = (block, None if recent is None else recent.count)
        if state != last:
            last = state
            quiet_s = 0.0
            yield f"event: change\ndata: {json.dumps({'block': state[0], 'requests': state[1]})}\n\n"
        elif quiet_s >= keepalive_s:
            quiet_s = 0.0
            yield ": keepalive\n\n"
        await anyio.sleep(poll_interval_s)
        quiet_s += poll_interval_s
