"""The node's Prometheus metrics, kept in a per-node `prometheus_client` registry.

Every metric the node exposes is declared up front in `METRICS` (name → type, help, label names), so a
misspelt name or label is a `ValueError` at the call, not a silent new series. The whole list:

HTTP (`MetricsMiddleware`, and `measured` for the routes `NodeApp` serves directly):
- `wwwserve_http_requests_total{route,method,status}`: answered requests (counter);
- `wwwserve_http_requests_in_flight`: requests being answered now, streams until their last byte (gauge);
- `wwwserve_http_request_duration_seconds{route}`: time to the last byte (histogram).

Generation, recorded by the Dispatcher (`node.managers.dispatch`) for user API requests (a peer's
delegated request is counted in `wwwserve_delegations_received_total` instead):
- `wwwserve_generation_duration_seconds{kind,stream,executor}`: from dispatch to the last token of an answered
  request (kind chat/completion, stream true/false, executor local/peer; failed requests are not observed,
  they are in the HTTP counters by status);
- `wwwserve_time_to_first_token_seconds{kind,executor}`: streams only, from dispatch to the first content
  chunk handed to the client (a whole answer's first token is never seen by its client, so it is left out).

The network's side (`Metrics.count`): `wwwserve_dispatch_decisions_total{action}`,
`wwwserve_delegations_total{outcome}` (requests handed to peers: delegations out),
`wwwserve_delegations_received_total{outcome}` (peers' requests this node answered: executed here or relayed
on: delegations in), `wwwserve_reoffers_total{outcome}`, `wwwserve_peer_messages_total{path,outcome}`,
`wwwserve_duels_total{event}` (duel steps this node took), `wwwserve_duel_outcomes_total{role,outcome}` (how
the duels this node took part in as origin, executor or challenger ended, seen when they left the open set)
and `wwwserve_judge_steps_total{step}`; the chain's: `wwwserve_chain_rpc_errors_total{method,kind}` (every
failed JSON-RPC request of the Ledger manager, retries included: transport, rpc or revert).

Gauges read at scrape time (`Metrics.sample`: a callback, nothing on the request path):
- `wwwserve_requests_running`, `wwwserve_requests_waiting{source}` (the Request manager's slots held, and
  requests of users or peers waiting for a slot or a retry);
- `wwwserve_engine_kv_cache_usage_ratio{backend}`: KV-cache usage 0..1 as the engine last reported it (vLLM's
  /metrics); absent for a backend that reports none (the fake, the local one), never a made-up 0;
- `wwwserve_stake_wei`, `wwwserve_credit_wei`: this node's active stake and free credit in the Ledger
  manager's view (absent before its first sync). Prometheus values are float64: above 2**53 wei (0.009
  ETH) they are approximate. The chain stays the source of truth (`wwwserve stake show`);
- `wwwserve_chain_pending_transactions`: transactions this node sent and is waiting to see mined.

Each `Metrics` has its own `CollectorRegistry`, never the library's global one: a test process runs many
nodes, and two nodes must not share (or clash over) one counter. `/metrics` is the library's
`generate_latest` of that registry; counters and histograms also get the library's `*_created` series
(set `PROMETHEUS_DISABLE_CREATED_SERIES=True` in the node's environment to leave them out).
`docs/grafana-dashboard.json` charts these names (tests/unit/test_metrics.py checks it names no other).

Routes are the fixed paths of the API; anything else is counted as `other`, so a scanner probing
random URLs cannot grow the label set without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wwwserve.node.logs import request_scope

__all__ = ["DEFAULT_BUCKETS_S", "METRICS", "PROMETHEUS_CONTENT_TYPE", "GaugeSource", "MetricSpec", "Metrics",
           "MetricsMiddleware"]

logger = logging.getLogger(__name__)

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
    sampled: bool = False  # a gauge read at scrape time from a source (`Metrics.sample`)


GaugeSource = Callable[[], "float | Mapping[tuple[str, ...], float] | None"]
"""What a sampled gauge reads at scrape time: its value (unlabelled), its value per label tuple (in the
declared label order), or None when there is nothing to report (the series is then absent)."""


HTTP_REQUESTS = "wwwserve_http_requests_total"
HTTP_IN_FLIGHT = "wwwserve_http_requests_in_flight"
HTTP_DURATION = "wwwserve_http_request_duration_seconds"
GENERATION_DURATION = "wwwserve_generation_duration_seconds"
TIME_TO_FIRST_TOKEN = "wwwserve_time_to_first_token_seconds"

METRICS: dict[str, MetricSpec] = {
    HTTP_REQUESTS: MetricSpec(
        "counter", "HTTP requests answered, by route, method and status.", ("route", "method", "status")
    ),
    HTTP_IN_FLIGHT: MetricSpec("gauge", "HTTP requests being answered now."),
    HTTP_DURATION: MetricSpec("histogram", "Time from request to last response byte.", ("route",)),
    "wwwserve_dispatch_decisions_total": MetricSpec(
        "counter", "Dispatch decisions for requests, by action (local, offload, queue, retry).", ("action",)
    ),
    GENERATION_DURATION: MetricSpec(
        "histogram",
        "User API generation requests answered: time from dispatch to the last token, by kind (chat, "
        "completion), stream (true, false) and executor (local, peer).",
        ("kind", "stream", "executor"),
    ),
    TIME_TO_FIRST_TOKEN: MetricSpec(
        "histogram",
        "User API streams: time from dispatch to the first content chunk, by kind and executor (local, peer).",
        ("kind", "executor"),
    ),
    "wwwserve_delegations_total": MetricSpec(
        "counter", "Requests handed to peers, by outcome (ok, failed, unverified, work_invalid).", ("outcome",)
    ),
    "wwwserve_delegations_received_total": MetricSpec(
        "counter",
        "Peers' requests this node answered, by outcome (executed: on this node's engine; relayed: by a peer "
        "this node delegated it to).",
        ("outcome",),
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
    "wwwserve_duel_outcomes_total": MetricSpec(
        "counter",
        "Duels this node took part in that ended, by its role (origin, executor, challenger) and outcome "
        "(a_won, b_won, tie, void, cancelled).",
        ("role", "outcome"),
    ),
    "wwwserve_judge_steps_total": MetricSpec(
        "counter", "Steps this node took as a duel judge, by step (decide, commit, reveal, settle).", ("step",)
    ),
    "wwwserve_requests_running": MetricSpec("gauge", "Requests holding one of this node's slots now.", sampled=True),
    "wwwserve_requests_waiting": MetricSpec(
        "gauge", "Requests waiting at this node for a slot or a retry, by source (user, node: a peer).",
        ("source",), sampled=True,
    ),
    "wwwserve_engine_kv_cache_usage_ratio": MetricSpec(
        "gauge", "KV-cache usage (0..1) the engine behind a backend last reported; absent where it reports none.",
        ("backend",), sampled=True,
    ),
    "wwwserve_stake_wei": MetricSpec(
        "gauge", "This node's active stake in wei, as indexed (float64: approximate above 2**53).", sampled=True
    ),
    "wwwserve_credit_wei": MetricSpec(
        "gauge",
        "This node's free credit in wei (indexed credit minus unclaimed fee vouchers; float64: approximate "
        "above 2**53).",
        sampled=True,
    ),
    "wwwserve_chain_pending_transactions": MetricSpec(
        "gauge", "Transactions this node sent and is waiting to see mined.", sampled=True
    ),
    "wwwserve_chain_rpc_errors_total": MetricSpec(
        "counter",
        "Failed JSON-RPC requests of this node's chain connections (each try), by method and kind (transport: "
        "no answer; rpc: an error answer; revert: the contract reverted).",
        ("method", "kind"),
    ),
}
"""Every metric a node exposes. Label values come from small fixed sets (routes are capped to the API's)."""

_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


class _Sampled(Collector):
    """The sampled gauges of one `Metrics`: each read from its source at scrape time."""

    def __init__(self) -> None:
        self.sources: dict[str, GaugeSource] = {}

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, spec.help, labels=spec.labels) for name, spec in METRICS.items()
                if spec.sampled]

    def collect(self) -> Iterator[Metric]:
        for name, spec in METRICS.items():
            source = self.sources.get(name)
            if source is None:
                continue
            try:
                read = source()
            except Exception:  # a scrape must not fail over one gauge: that series is left out this time
                logger.debug("reading the gauge %s failed", name, exc_info=True)
                continue
            if read is None:
                continue
            family = GaugeMetricFamily(name, spec.help, labels=spec.labels)
            for labels, value in (read.items() if isinstance(read, Mapping) else [((), read)]):
                family.add_metric(list(labels), float(value))
            if family.samples:
                yield family


class Metrics:
    """The metrics of one node process, in its own `CollectorRegistry` (`registry`)."""

    def __init__(self, known_routes: Iterable[str] = (), buckets_s: tuple[float, ...] = DEFAULT_BUCKETS_S) -> None:
        if list(buckets_s) != sorted(set(buckets_s)):
            raise ValueError("histogram buckets must be strictly increasing")
        self.known_routes = frozenset(known_routes)
        self.registry = CollectorRegistry()
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._sampled = _Sampled()
        for name, spec in METRICS.items():  # registered in the table's order, which is the page's order
            if spec.kind == "counter":
                self._counters[name] = Counter(name, spec.help, spec.labels, registry=self.registry)
            elif spec.kind == "histogram":
                self._histograms[name] = Histogram(name, spec.help, spec.labels, buckets=buckets_s,
                                                   registry=self.registry)
            elif name == HTTP_IN_FLIGHT:
                self.in_flight = Gauge(name, spec.help, spec.labels, registry=self.registry)
            elif not spec.sampled:
                raise AssertionError(f"no collector for the declared {spec.kind} {name!r}")
        self.registry.register(self._sampled)
        self._durations = self._histograms[HTTP_DURATION]

    def _checked(self, name: str, kind: str, labels: Mapping[str, str]) -> None:
        spec = METRICS.get(name)
        if spec is None or spec.kind != kind or spec.sampled:
            raise ValueError(f"unknown {kind} {name!r}: declare it in wwwserve.node.metrics.METRICS")
        if set(labels) != set(spec.labels):
            raise ValueError(f"{kind} {name!r} takes the labels {list(spec.labels)}, not {sorted(labels)}")

    def count(self, name: str, **labels: str) -> None:
        """Add one to the counter `name` (declared in `METRICS`) with exactly its declared `labels`."""
        self._checked(name, "counter", labels)
        counter = self._counters[name]
        if labels:
            counter.labels(**labels).inc()
        else:
            counter.inc()

    def record(self, name: str, value: float, **labels: str) -> None:
        """Observe `value` in the histogram `name` (declared in `METRICS`) with exactly its declared `labels`."""
        self._checked(name, "histogram", labels)
        histogram = self._histograms[name]
        (histogram.labels(**labels) if labels else histogram).observe(value)

    def sample(self, name: str, source: GaugeSource) -> None:
        """Read the sampled gauge `name` (declared in `METRICS` with `sampled=True`) from `source` at every
        scrape; a later call replaces the source."""
        spec = METRICS.get(name)
        if spec is None or not spec.sampled:
            raise ValueError(f"unknown sampled gauge {name!r}: declare it in wwwserve.node.metrics.METRICS")
        self._sampled.sources[name] = source

    def value(self, sample: str, **labels: str) -> float:
        """The current value of one sample (a declared metric's name, or a histogram's `_bucket`,
        `_count` or `_sum`), 0 for a series not counted yet (see `reading` for sampled gauges)."""
        base = next((sample.removesuffix(s) for s in _HISTOGRAM_SUFFIXES if sample.endswith(s)), sample)
        if sample not in METRICS and METRICS.get(base, MetricSpec("gauge", "")).kind != "histogram":
            raise ValueError(f"unknown metric sample {sample!r}")
        found = self.registry.get_sample_value(sample, labels)
        return 0.0 if found is None else found

    def reading(self, name: str, **labels: str) -> float | None:
        """A sampled gauge's value now, None when its series is absent (no source, or nothing to report)."""
        spec = METRICS.get(name)
        if spec is None or not spec.sampled:
            raise ValueError(f"unknown sampled gauge {name!r}")
        return self.registry.get_sample_value(name, labels)

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
    answering), in a `node.logs.request_scope`. Shared by `MetricsMiddleware` and the node's direct
    request-path routes."""
    status = 500
    started = time.perf_counter()

    async def send_wrapper(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
        await send(message)

    metrics.in_flight.inc()
    try:
        with request_scope():  # the request id, for every line logged about this request (node.logs)
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
