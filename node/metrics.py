"""The node's Prometheus metrics, written by hand in the text exposition format (no client library).

HTTP traffic, errors and latency per route:
- `wwwserve_http_requests_total{route,method,status}`: answered requests (counter);
- `wwwserve_http_requests_in_flight`: requests being answered now, streams until their last byte (gauge);
- `wwwserve_http_request_duration_seconds{route}`: time to the last byte (histogram).
and the network's side (`EVENT_COUNTERS`): dispatch decisions, delegations by outcome, peer messages,
duels and judging.

Routes are the fixed paths of the API; anything else is counted as `other`, so a scanner probing
random URLs cannot grow the label set without bound.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_BUCKETS_S", "PROMETHEUS_CONTENT_TYPE", "Metrics", "MetricsMiddleware"]

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Latency buckets (seconds): from a cached fake answer to a long generation."""


@dataclass
class _Histogram:
    buckets_s: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative; last = +Inf
    total: int = 0
    sum_s: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets_s) + 1)

    def observe(self, value_s: float) -> None:
        self.counts[bisect.bisect_left(self.buckets_s, value_s)] += 1
        self.total += 1
        self.sum_s += value_s


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


EVENT_COUNTERS: dict[str, str] = {
    "wwwserve_dispatch_decisions_total": "Dispatch decisions for requests, by action (local, offload, queue, retry).",
    "wwwserve_delegations_total": "Requests handed to peers, by outcome (ok, failed, unverified, work_invalid).",
    "wwwserve_reoffers_total": "Offers to peers of requests queued on this node's busy engine, by outcome (taken: a "
    "peer's output came first and served it; none: no peer took it this time).",
    "wwwserve_peer_messages_total": "Peer API messages received, by path and outcome (accepted, rejected).",
    "wwwserve_duels_total": "Duel steps this node took, by event: as origin (opened, open_failed, unduelable, "
    "challenger_drawn, request_published, judges_drawn, settled), as challenger (answered, request_missing), "
    "as duelist (appealed, judges_drawn, settled).",
    "wwwserve_judge_steps_total": "Steps this node took as a duel judge, by step (decide, commit, reveal, settle).",
}
"""The event counters a node keeps, with their help text; labels come from fixed small sets."""


class Metrics:
    """In-memory counters of one node process; single event loop, so no locking."""

    def __init__(self, known_routes: Iterable[str] = (), buckets_s: tuple[float, ...] = DEFAULT_BUCKETS_S) -> None:
        if list(buckets_s) != sorted(set(buckets_s)):
            raise ValueError("histogram buckets must be strictly increasing")
        self.known_routes = frozenset(known_routes)
        self.buckets_s = buckets_s
        self.requests: dict[tuple[str, str, str], int] = {}
        self.in_flight = 0
        self.durations: dict[str, _Histogram] = {}
        self.events: dict[tuple[str, tuple[tuple[str, str], ...]], int] = {}

    def count(self, name: str, **labels: str) -> None:
        """Add one to the event counter `name` (one of `EVENT_COUNTERS`) with `labels`."""
        if name not in EVENT_COUNTERS:
            raise ValueError(f"unknown counter {name!r}")
        key = (name, tuple(sorted(labels.items())))
        self.events[key] = self.events.get(key, 0) + 1

    def route_label(self, path: str) -> str:
        """The `route` label for a request path: the path itself if it is an API route, else `other`."""
        return path if path in self.known_routes else "other"

    def observe(self, route: str, method: str, status: int, duration_s: float) -> None:
        """Count one answered request and its duration."""
        key = (route, method, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.durations.get(route)
        if hist is None:
            hist = self.durations[route] = _Histogram(self.buckets_s)
        hist.observe(duration_s)

    def render(self) -> str:
        """All metrics in the Prometheus text format (version 0.0.4)."""
        lines = [
            "# HELP wwwserve_http_requests_total HTTP requests answered, by route, method and status.",
            "# TYPE wwwserve_http_requests_total counter",
        ]
        for (route, method, status), count in sorted(self.requests.items()):
            lines.append(f"wwwserve_http_requests_total{_labels(route=route, method=method, status=status)} {count}")
        lines += [
            "# HELP wwwserve_http_requests_in_flight HTTP requests being answered now.",
            "# TYPE wwwserve_http_requests_in_flight gauge",
            f"wwwserve_http_requests_in_flight {self.in_flight}",
            "# HELP wwwserve_http_request_duration_seconds Time from request to last response byte.",
            "# TYPE wwwserve_http_request_duration_seconds histogram",
        ]
        name = "wwwserve_http_request_duration_seconds"
        for route, hist in sorted(self.durations.items()):
            cumulative = 0
            for bound, count in zip((*hist.buckets_s, float("inf")), hist.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _number(bound)
                lines.append(f"{name}_bucket{_labels(route=route, le=le)} {cumulative}")
            lines.append(f"{name}_sum{_labels(route=route)} {_number(hist.sum_s)}")
            lines.append(f"{name}_count{_labels(route=route)} {hist.total}")
        for counter, help_text in EVENT_COUNTERS.items():
            lines += [f"# HELP {counter} {help_text}", f"# TYPE {counter} counter"]
            for (event, labels), value in sorted(self.events.items()):
                if event == counter:
                    lines.append(f"{counter}{_labels(**dict(labels))} {value}")
        return "\n".join(lines) + "\n"


async def measured(metrics: Metrics, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app` for one HTTP request, timing it and counting its status (500 when it raised before
    answering). Shared by `MetricsMiddleware` and the node's direct request-path routes."""
    status = 500
    started = time.perf_counter()

    async def send_wrapper(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        await send(message)

    metrics.in_flight += 1
    try:
        await app(scope, receive, send_wrapper)
    finally:
        metrics.in_flight -= 1
        metrics.observe(metrics.route_label(scope["path"]), scope["method"], status, time.perf_counter() - started)


class MetricsMiddleware:
    """Pure ASGI middleware feeding `Metrics`: it sees a stream's true end, unlike a route handler."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and count its status (500 when the app raised before answering)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await measured(self.metrics, self.app, scope, receive, send)
