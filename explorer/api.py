"""The explorer's web app: the JSON routes under `api/`, live updates at `api/stream`, the page at `/`.

`explorer_app(queries, ...)` is a Starlette app that the node mounts at `/explorer` (explorer.feature) and that
`wwwserve explorer` serves without a node; every URL is relative to that mount. The routes and their JSON are
the contract in `ExplorerQueries` (explorer.queries): pages carry `items`, `total`, `offset`, `limit`; wei
amounts are decimal strings. Handlers that read the database are plain functions, which Starlette runs in its
thread pool, so a slow query never blocks the node's event loop. A bad parameter is a 400 and an unknown node
or duel a 404, both in the node's OpenAI error shape (`node.errors`).

`api/stream` is Server-Sent Events: a `change` event with `{"block", "requests"}` (the indexed block and the
count of requests logged, null without a request log) when a stream opens and whenever either changes (checked
every `poll_interval_s` by one poller for all streams, `ChangeFeed`), and a `: keepalive` comment after
`keepalive_s` without one. At most `max_streams` (64) are open at once; the next is a 503 `explorer_busy`, and
the page polls `api/totals` instead. The page refetches its view on each change.
"""

from __future__ import annotations

import asyncio
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
from wwwserve.node.errors import InvalidRequestError, NodeError, OverloadedError, error_response

__all__ = ["STATIC_DIR", "ChangeFeed", "ExplorerBusyError", "ExplorerNotFoundError", "RequestLog", "explorer_app"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
"""The page (index.html, app.js, style.css), served as it is: no build step."""

MAX_LIMIT = 200  # items in one page
MAX_POINTS = 1000  # samples of the stake-share chart
MAX_TOP = 50  # series of the stake-share chart
DUEL_ID_LIMIT = 2**63  # duel ids are 63-bit hashes
MAX_STREAMS = 64  # live streams served at once (`ChangeFeed`)

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


class ExplorerBusyError(OverloadedError):
    """As many live streams as the explorer serves at once are open (503, with Retry-After)."""

    code = "explorer_busy"


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
    max_streams: int = MAX_STREAMS,
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

    feed = ChangeFeed(queries.indexed_block, recent, poll_interval_s=poll_interval_s, max_streams=max_streams)

    async def stream(request: Request) -> Response:
        if feed.streams >= feed.max_streams:
            raise ExplorerBusyError(f"{feed.max_streams} live streams are open on this node: poll api/totals "
                                    "instead, or try again later", retry_after_s=30.0)
        return StreamingResponse(feed.events(keepalive_s), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, NodeError)
        return error_response(exc, request)

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


class ChangeFeed:
    """What `api/stream` tells: one poller per app, however many streams are open.

    The poller reads the indexed block (a query, in a worker thread) and the request count every
    `poll_interval_s` while at least one stream is open, and wakes every stream when either changed; it stops
    when the last stream closes. So a stranger who opens many streams costs the node one query per tick, not
    one per stream per tick, and at most `max_streams` are served at once (the next gets a 503, and the page
    polls instead).
    """

    def __init__(self, indexed_block: Callable[[], int | None], recent: RequestLog | None, *,
                 poll_interval_s: float, max_streams: int) -> None:
        self.indexed_block = indexed_block
        self.recent = recent
        self.poll_interval_s = poll_interval_s
        self.max_streams = max_streams
        self.streams = 0
        self.state: tuple[int | None, int | None] | None = None
        self._changed = asyncio.Event()  # set, and replaced, at each change
        self._poller: asyncio.Task[None] | None = None

    def _read(self) -> tuple[int | None, int | None]:
        try:
            block = self.indexed_block()
        except Exception:  # a database hiccup: the pages keep their view; try again on the next tick
            log.warning("explorer stream: reading the indexed block failed", exc_info=True)
            block = self.state[0] if self.state is not None else None
        return block, None if self.recent is None else self.recent.count

    async def _poll(self) -> None:
        try:
            while self.streams > 0:
                state = await anyio.to_thread.run_sync(self._read)
                if state != self.state:
                    self.state = state
                    changed, self._changed = self._changed, asyncio.Event()
                    changed.set()
                await asyncio.sleep(self.poll_interval_s)
        finally:
            self._poller = None  # no await since the loop's test: a stream opened meanwhile starts a new one

    async def events(self, keepalive_s: float) -> AsyncIterator[str]:
        """One stream's SSE body: a `change` event for the state now and for each change, a keepalive comment
        after `keepalive_s` without one; ends when the client goes (Starlette cancels it)."""
        self.streams += 1
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="explorer-changes")
        try:
            sent: tuple[int | None, int | None] | None = None
            while True:
                if self.state is not None and self.state != sent:
                    sent = self.state
                    yield f"event: change\ndata: {json.dumps({'block': sent[0], 'requests': sent[1]})}\n\n"
                    continue
                try:
                    await asyncio.wait_for(self._changed.wait(), keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
        finally:
            self.streams -= 1
