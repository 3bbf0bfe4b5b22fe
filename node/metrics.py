"""The node's Prometheus metrics, kept in a per-node `prometheus_client` registry.

Every metric the node exposes is declared up front in `METRICS` (name → type, help, label names), so a
misspelt name or label is a `ValueError` at the call, not a silent new series. HTTP traffic, errors
and latency per route:
- `wwwserve_http_requests_total{route,method,status}`: answered requests (counter);
- `wwwserve_http_requests_in_flight`: requests being answered now, streams until their last byte (gauge);
- `wwwserve_http_request_duration_seconds{route}`: time to the last byte (histogram).
and the network's side (counted with `Metrics.count`): dispatch decisions, delegations by outcome,
re-offers, peer messages, duels and judging.

Each `Metrics` has its own `CollectorRegistry`, never the library's global one: a test process runs many
nodes, and two nodes must not share (or clash over) one counter. `/metrics` is the library's
`generate_latest` of that registry; counters and histograms also get the library's `*_created` series
(set `PROMETHEUS_DISABLE_CREATED_SERIES=True` in the node's environment to leave them out).

Routes are the fixed paths of the API; anything else is counted as `other`, so a scanner probing
random URLs cannot grow the label set without bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["DEFAULT_BUCKETS_S", "METRICS", "PROMETHEUS_CONTENT_TYPE", "MetricSpec", "Metrics", "MetricsMiddleware"]

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The content type of `/metrics`, as `prometheus_client` names its text format."""

DEFAULT_BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Latency buckets (seconds): from a cached fake answer to a long generation."""


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One declared metric: its Prometheus type, help text and label names (in exposition order)."""

    kind: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...] = ()


HTTP_REQUESTS = "wwwserve_http_requests_total"
HTTP_IN_FLIGHT = "wwwserve_http_requests_in_flight"
HTTP_DURATION = "wwwserve_http_request_duration_seconds"

METRICS: dict[str, MetricSpec] = {
    HTTP_REQUESTS: MetricSpec(
        "counter", "HTTP requests answered, by route, method and status.", ("route", "method", "status")
    ),
    HTTP_IN_FLIGHT: MetricSpec("gauge", "HTTP requests being answered now."),
    HTTP_DURATION: MetricSpec("histogram", "Time from request to last response byte.", ("route",)),
    "wwwserve_dispatch_decisions_total": MetricSpec(
        "counter", "Dispatch decisions for requests, by action (local, offload, queue, retry).", ("action",)
    ),
    "wwwserve_delegations_total": MetricSpec(
        "counter", "Requests handed to peers, by outcome (ok, failed, unverified, work_invalid).", ("outcome",)
    ),
    "wwwserve_reoffers_total": MetricSpec(
        "counter",
        "Offers to peers of requests queued on this node's busy engine, by outcome (taken: a peer's output "
        "came first and served it; none: no peer took it this time).",
        ("outcome",),
    ),
    "wwwserve_peer_messages_total": MetricSpec(
        "counter",
        "Peer API messages received, by path and outcome (accepted, rejected, rate_limited, payment_required).",
        ("path", "outcome"),
    ),
    "wwwserve_duels_total": MetricSpec(
        "counter",
        "Duel steps this node took, by event: as origin (opened, open_failed, unduelable, challenger_drawn, "
        "request_published, judges_drawn, settled), as challenger (answered, request_missing), as duelist "
        "(appealed, judges_drawn, settled).",
        ("event",),
    ),
    "wwwserve_judge_steps_total": MetricSpec(
        "counter", "Steps this node took as a duel judge, by step (decide, commit, reveal, settle).", ("step",)
    ),
}
"""Every metric a node exposes. Label values come from small fixed sets (routes are capped to the API's)."""

_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


class Metrics:
    """The metrics of one node process, in its own `CollectorRegistry` (`registry`)."""

    def __init__(self, known_routes: Iterable[str] = (), buckets_s: tuple[float, ...] = DEFAULT_BUCKETS_S) -> None:
        if list(buckets_s) != sorted(set(buckets_s)):
            raise ValueError("histogram buckets must be strictly increasing")
        self.known_routes = frozenset(known_routes)
        self.registry = CollectorRegistry()
        self._counters: dict[str, Counter] = {}
        for name, spec in METRICS.items():  # registered in the table's order, which is the page's order
            if spec.kind == "counter":
                self._counters[name] = Counter(name, spec.help, spec.labels, registry=self.registry)
            elif name == HTTP_IN_FLIGHT:
                self.in_flight = Gauge(name, spec.help, spec.labels, registry=self.registry)
            elif name == HTTP_DURATION:
                self._durations = Histogram(name, spec.help, spec.labels, buckets=buckets_s, registry=self.registry)
            else:
                raise AssertionError(f"no collector for the declared {spec.kind} {name!r}")

    def count(self, name: str, **labels: str) -> None:
        """Add one to the counter `name` (declared in `METRICS`) with exactly its declared `labels`."""
        counter = self._counters.get(name)
        if counter is None:
            raise ValueError(f"unknown counter {name!r}: declare it in wwwserve.node.metrics.METRICS")
        expected = METRICS[name].labels
        if set(labels) != set(expected):
            raise ValueError(f"counter {name!r} takes the labels {list(expected)}, not {sorted(labels)}")
        if expected:
            counter.labels(**labels).inc()
        else:
            counter.inc()

    def value(self, sample: str, **labels: str) -> float:
        """The current value of one sample (a declared metric's name, or a histogram's `_bucket`,
        `_count` or `_sum`), 0 for a series not counted yet."""
        base = next((sample.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if sample.endswith(s)), sample)
        if sample not in METRICS and METRICS.get(base, MetricSpec("gauge", "")).kind != "histogram":
            raise ValueError(f"unknown metric sample {sample!r}")
        found = self.registry.get_sample_value(sample, labels)
        return 0.0 if found is None else found

    def route_label(self, path: str) -> str:
        """The `route` label for a request path: the path itself if it is an API route, else `other`."""
        return path if path in self.known_routes else "other"

    def observe(self, route: str, method: str, status: int, duration_s: float) -> None:
        """Count one answered request and its duration."""
        self._counters[HTTP_REQUESTS].labels(route=route, method=method, status=str(status)).inc()
        self._durations.labels(route=route).observe(duration_s)

    def render(self) -> str:
        """All metrics in the Prometheus text format (`prometheus_client.generate_latest`)."""
        return generate_latest(self.registry).decode("utf-8")


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

    metrics.in_flight.inc()
    try:
        await app(scope, receive, send_wrapper)
    finally:
        metrics.in_flight.dec()
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
