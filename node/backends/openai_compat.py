"""A backend that talks to any OpenAI-compatible server (vLLM, SGLang, llama.cpp server) over HTTP.

Generation is `POST /v1/chat/completions` or `/v1/completions`, whole or streamed (SSE `data:` events
ending with `data: [DONE]`; usage is requested with `stream_options.include_usage`). Each request
runs in its own task so that `abort(request_id)` can cancel it: cancelling closes the HTTP connection,
which is how vLLM and SGLang learn that a request is abandoned and free its KV cache.

Health and model discovery use `GET /v1/models` (vLLM also reports each model's `max_model_len`
there). Load comes from the server's Prometheus `/metrics` when it has one: vLLM
(`vllm:kv_cache_usage_perc`, older `vllm:gpu_cache_usage_perc`, `vllm:num_requests_running`,
`vllm:num_requests_waiting`), SGLang (`sglang:token_usage`, `sglang:num_running_reqs`,
`sglang:num_queue_reqs`) or llama.cpp (`llamacpp:kv_cache_usage_ratio`, `llamacpp:requests_processing`,
`llamacpp:requests_deferred`), read with `prometheus_client`'s parser. Without metrics, or while the
page does not parse (logged once until it parses again), it is estimated from this backend's own
in-flight requests against `max_concurrency`.

Upstream failures become the node's typed errors: connection failures and 5xx →
`BackendUnavailableError`; timeouts → `UpstreamTimeoutError`; a 400 about the context length →
`ContextLengthExceededError`; 429 → `OverloadedError`; other 4xx → `InvalidRequestError` carrying the
upstream message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wwwserve.node.backends.base import (
    BackendLoad,
    GenerationAbortedError,
    GenerationRequest,
    GenerationResult,
    StreamDelta,
    estimate_tokens,
    normalize_finish_reason,
)
from wwwserve.node.backends.openai_wire import (
    SSEDecoder,
    SSEEvents,
    choice_text,
    error_from_event,
    error_from_upstream,
    parse_event,
)
from wwwserve.node.errors import (
    BackendUnavailableError,
    NodeError,
    RequestInFlightError,
    UpstreamTimeoutError,
)
from wwwserve.node.http import (
    AiohttpClient,
    HttpClient,
    HttpConnectError,
    HttpError,
    HttpStream,
    HttpTimeoutError,
)
from wwwserve.node.protocol import FinishReason

__all__ = [
    "MetricsLoad",
    "OpenAIBackend",
    "SSEDecoder",
    "error_from_upstream",
    "load_from_metrics",
    "parse_prometheus_text",
]

logger = logging.getLogger(__name__)

# Metric names in order of preference; the first present in a scrape wins.
KV_USAGE_METRICS = (
    "vllm:kv_cache_usage_perc",  # vLLM V1 (a fraction despite the name)
    "vllm:gpu_cache_usage_perc",  # vLLM V0 and older V1 releases
    "sglang:token_usage",
    "llamacpp:kv_cache_usage_ratio",
)
RUNNING_METRICS = ("vllm:num_requests_running", "sglang:num_running_reqs", "llamacpp:requests_processing")
WAITING_METRICS = ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "llamacpp:requests_deferred")



# ---------------------------------------------------------------------------------------------
# Prometheus text format


def parse_prometheus_text(text: str) -> list[Sample]:
    """Every sample of a Prometheus text page, read by `prometheus_client`'s parser.

    Values follow the format's float spelling (`NaN`, `+Inf`, `1e-3`); a sample's timestamp is kept but
    not used. The page is read whole or not at all: a malformed line raises `ValueError` (the
    parser's), since a page cut or garbled part-way could say "no requests waiting" by omission.
    """
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


@dataclass(frozen=True, slots=True)
class MetricsLoad:
    """What a metrics scrape said about load; None where the server exports no such metric."""

    kv_usage: float | None
    running: int | None
    waiting: int | None


def _values(samples: Iterable[Sample], names: tuple[str, ...], model: str | None) -> list[float]:
    by_name: dict[str, list[float]] = {}
    for sample in samples:
        if sample.name in names and not math.isnan(sample.value):
            served = sample.labels.get("model_name")
            if model is not None and served is not None and served != model:
                continue
            by_name.setdefault(sample.name, []).append(sample.value)
    for name in names:
        if name in by_name:
            return by_name[name]
    return []


def load_from_metrics(samples: Iterable[Sample], model: str | None = None) -> MetricsLoad:
    """The load a vLLM / SGLang / llama.cpp scrape reports, summed over engines (data-parallel ranks).

    KV usage is the mean over engines: a data-parallel server routes each request to its least
    loaded engine, so the mean says how much room the server as a whole has. With `model`, samples
    labelled with another `model_name` are ignored.
    """
    listed = list(samples)
    kv = _values(listed, KV_USAGE_METRICS, model)
    running = _values(listed, RUNNING_METRICS, model)
    waiting = _values(listed, WAITING_METRICS, model)
    return MetricsLoad(
        kv_usage=min(1.0, max(0.0, sum(kv) / len(kv))) if kv else None,
        running=max(0, round(sum(running))) if running else None,
        waiting=max(0, round(sum(waiting))) if waiting else None,
    )


# ---------------------------------------------------------------------------------------------
# server-sent events


# ---------------------------------------------------------------------------------------------
# error mapping


def _from_transport_error(exc: HttpError) -> NodeError:
    if isinstance(exc, HttpConnectError) or (isinstance(exc, HttpTimeoutError) and exc.connect):
        # No connection at all is an unavailable backend, not a slow model.
        return BackendUnavailableError("The model backend is not reachable. Please retry later.")
    if isinstance(exc, HttpTimeoutError):
        return UpstreamTimeoutError()
    logger.warning("model backend transport error: %r", exc)
    return BackendUnavailableError()


# ---------------------------------------------------------------------------------------------
# the backend

_END = object()  # stream queue sentinel: the stream is over (normally, or aborted)


class OpenAIBackend:
    """A `Backend` over an OpenAI-compatible HTTP server."""

    def __init__(
        self,
        base_url: str,
        models: list[str] | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        metrics_url: str | None = None,
        http: HttpClient | None = None,
        *,
        name: str | None = None,
        max_concurrency: int = 16,
        metrics_ttl_s: float = 0.5,
        health_timeout_s: float = 5.0,
    ) -> None:
        if timeout_s <= 0 or max_concurrency < 1:
            raise ValueError("timeout_s must be > 0 and max_concurrency >= 1")
        root = base_url.rstrip("/")
        # Accept both http://host:8000 and http://host:8000/v1 (what OpenAI clients are given).
        self._root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.name = name or f"openai:{self._root}"
        self.models: list[str] = list(models) if models is not None else []
        self._discover = models is None
        # timeout_s bounds each wait (connect, or the gap between bytes), so a long stream that keeps
        # producing is never cut, while a server that stops answering is.
        self._timeout_s = timeout_s
        self._health_timeout_s = min(health_timeout_s, timeout_s)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._post_headers = {**self._headers, "Content-Type": "application/json"}
        self._metrics_url = metrics_url or f"{self._root}/metrics"
        self._metrics_ttl_s = metrics_ttl_s
        self.max_concurrency = max_concurrency
        self._owns_client = http is None
        # The engine queues requests itself, so the pool must not cap concurrency below it.
        self._client: HttpClient = http or AiohttpClient(
            read_timeout_s=timeout_s, connect_timeout_s=min(timeout_s, 10.0), max_connections=4096
        )
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._aborted: set[str] = set()
        self._context_tokens: dict[str, int] = {}  # model -> max_model_len, from /v1/models
        self._models_fetched = False
        self._metrics: MetricsLoad | None = None
        self._metrics_at = -math.inf
        self._metrics_lock = asyncio.Lock()
        self._metrics_malformed = False  # the last scrape's page did not parse (logged once per spell)
        self._refresh: asyncio.Task[None] | None = None  # a scrape `engine_kv_usage` started
        # After aclose every call is refused without I/O: a call would otherwise open a new connection
        # pool that nobody closes any more.
        self._closed = False

    # ---- generation -------------------------------------------------------------------------

    def _body(self, req: GenerationRequest, stream: bool) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {"model": req.model, "stream": stream}
        if req.is_chat:
            path, body["messages"] = "/v1/chat/completions", req.messages
        else:
            path, body["prompt"] = "/v1/completions", req.prompt
        for key in ("max_tokens", "temperature", "top_p", "seed"):
            value = getattr(req, key)
            if value is not None:
                body[key] = value
        if req.stop:
            body["stop"] = req.stop
        if stream:
            body["stream_options"] = {"include_usage": True}
        return self._root + path, body

    def _register(self, request_id: str, task: asyncio.Task[Any]) -> None:
        if request_id in self._tasks:
            task.cancel()
            raise RequestInFlightError(request_id)
        self._tasks[request_id] = task

    def _unregister(self, request_id: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(request_id) is task:
            del self._tasks[request_id]
            self._aborted.discard(request_id)

    async def _post_json(self, url: str, body: dict[str, Any]) -> Any:
        try:
            response = await self._client.request(
                "POST", url, content=json.dumps(body).encode(), headers=self._post_headers
            )
        except HttpError as exc:
            raise _from_transport_error(exc) from exc
        if response.status >= 400:
            raise error_from_upstream(response.status, response.text, response.headers, model=body.get("model"))
        try:
            return response.json()
        except ValueError:
            logger.warning("model backend answered with invalid JSON: %.200r", response.text)
            raise BackendUnavailableError() from None

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailableError("The model backend is shut down.")

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        """One non-streamed request; the HTTP call is a task of its own so that `abort` can cancel it."""
        self._check_open()
        url, body = self._body(req, stream=False)
        task = asyncio.create_task(self._post_json(url, body))
        self._register(req.request_id, task)
        try:
            data = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if req.request_id in self._aborted and (current is None or not current.cancelling()):
                raise GenerationAbortedError(req.request_id) from None
            raise
        finally:
            self._unregister(req.request_id, task)
        return self._result(req, data)

    def _result(self, req: GenerationRequest, data: Any) -> GenerationResult:
        try:
            choice = data["choices"][0]
            text = (choice["message"].get("content") if req.is_chat else choice.get("text")) or ""
            finish = normalize_finish_reason(choice.get("finish_reason"))
        except (KeyError, IndexError, TypeError, AttributeError):
            logger.warning("model backend answer has no choice: %.200r", data)
            raise BackendUnavailableError() from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        return GenerationResult(
            text=str(text),
            finish_reason=finish,
            prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else estimate_tokens(req.prompt_text),
            completion_tokens=completion_tokens if isinstance(completion_tokens, int) else estimate_tokens(str(text)),
        )

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        """Stream deltas; a producer task reads the SSE response so that `abort` can cancel it."""
        self._check_open()
        url, body = self._body(req, stream=True)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        producer = asyncio.create_task(self._pump(req, url, body, queue))
        self._register(req.request_id, producer)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._unregister(req.request_id, producer)
            if not producer.done():
                # The consumer left (client disconnect, error): close the upstream request too.
                producer.cancel()
                await asyncio.wait([producer])

    async def _pump(self, req: GenerationRequest, url: str, body: dict[str, Any], queue: asyncio.Queue[Any]) -> None:
        try:
            response = await self._client.open_stream(
                "POST", url, content=json.dumps(body).encode(), headers=self._post_headers
            )
            try:
                if response.status >= 400:
                    text = (await response.read()).decode("utf-8", errors="replace")
                    raise error_from_upstream(response.status, text, response.headers, model=req.model)
                await self._read_events(req, response, queue)
            finally:
                await response.aclose()
        except asyncio.CancelledError:
            queue.put_nowait(_END)  # aborted: the stream ends without a final delta
            raise
        except NodeError as exc:
            queue.put_nowait(exc)
        except HttpError as exc:
            queue.put_nowait(_from_transport_error(exc))
        except Exception as exc:
            queue.put_nowait(exc)
        else:
            queue.put_nowait(_END)

    async def _read_events(self, req: GenerationRequest, response: HttpStream, queue: asyncio.Queue[Any]) -> None:
        finish: FinishReason | None = None
        usage: dict[str, Any] = {}
        text_deltas = 0
        events = SSEEvents(response.lines())
        async for data in events:
            try:
                event = parse_event(data)
            except ValueError:
                logger.warning("model backend sent a malformed stream event: %.200r", data)
                raise BackendUnavailableError() from None
            if "error" in event:
                # vLLM reports failures after the first byte as an error event inside the stream.
                raise error_from_event(event, model=req.model)
            for choice in event.get("choices") or []:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                piece = choice_text(choice, req.is_chat)
                if piece:
                    text_deltas += 1
                    queue.put_nowait(StreamDelta(text=piece))
                if choice.get("finish_reason") is not None:
                    finish = normalize_finish_reason(choice["finish_reason"])
            if isinstance(event.get("usage"), dict):
                usage = event["usage"]
        if not events.done and finish is None:
            raise BackendUnavailableError("The model backend closed the stream before it finished. Please retry.")
        prompt_tokens = usage.get("prompt_tokens")
        completion_tokens = usage.get("completion_tokens")
        queue.put_nowait(
            StreamDelta(
                finish_reason=finish or "stop",
                prompt_tokens=prompt_tokens if isinstance(prompt_tokens, int) else None,
                # Without usage, one delta per token is what vLLM/SGLang send: a fair estimate.
                completion_tokens=completion_tokens if isinstance(completion_tokens, int) else text_deltas,
            )
        )

    async def abort(self, request_id: str) -> None:
        """Cancel the request's HTTP call; the closed connection makes the server drop the request."""
        task = self._tasks.get(request_id)
        if task is not None and not task.done():
            self._aborted.add(request_id)
            task.cancel()

    # ---- health, models, load ---------------------------------------------------------------

    async def discover_models(self) -> list[str]:
        """The model ids `GET /v1/models` lists (and their `max_model_len` where given)."""
        self._check_open()
        try:
            response = await self._client.request(
                "GET", f"{self._root}/v1/models", headers=self._headers, timeout_s=self._health_timeout_s
            )
        except HttpError as exc:
            raise _from_transport_error(exc) from exc
        if response.status != 200:
            raise error_from_upstream(response.status, response.text, response.headers)
        try:
            cards = response.json()["data"]
            ids = [str(card["id"]) for card in cards]
        except (ValueError, KeyError, TypeError):
            raise BackendUnavailableError("The model backend's model list is malformed.") from None
        for card in cards:
            length = card.get("max_model_len")
            if isinstance(length, int) and length > 0:
                self._context_tokens[str(card["id"])] = length
        self._models_fetched = True
        if self._discover:
            self.models = ids
        return ids

    async def health(self) -> bool:
        """True when `GET /v1/models` answers (refreshes discovered models); False after `aclose`; never raises."""
        try:
            await self.discover_models()
        except NodeError:
            return False
        return True

    async def _scrape(self) -> MetricsLoad | None:
        if self._closed:
            return None
        try:
            response = await self._client.request(
                "GET", self._metrics_url, headers=self._headers, timeout_s=self._health_timeout_s
            )
        except HttpError:
            return None
        if response.status != 200:
            return None
        try:
            samples = parse_prometheus_text(response.text)
        except ValueError as exc:
            if not self._metrics_malformed:  # once per bad spell, not at every scrape (twice a second)
                logger.warning(
                    "%s is not a valid Prometheus page (%s); load is estimated from in-flight requests "
                    "until it is", self._metrics_url, str(exc) or "a malformed line",
                )
            self._metrics_malformed = True
            return None
        if self._metrics_malformed:
            logger.info("%s is a valid Prometheus page again; load is read from it", self._metrics_url)
            self._metrics_malformed = False
        model = self.models[0] if len(self.models) == 1 else None
        metrics = load_from_metrics(samples, model)
        if metrics.kv_usage is None and metrics.running is None and metrics.waiting is None:
            return None  # a /metrics page, but not an engine we know
        return metrics

    async def load(self) -> BackendLoad:
        """Metrics-based load (scraped at most every `metrics_ttl_s`), else estimated from in-flight requests."""
        if not self._models_fetched:
            await self.health()  # learns max_model_len once; a failure just leaves it unknown
            self._models_fetched = True
        async with self._metrics_lock:
            now = time.monotonic()
            if now - self._metrics_at >= self._metrics_ttl_s:
                self._metrics = await self._scrape()
                self._metrics_at = time.monotonic()
            metrics = self._metrics
        in_flight = len(self._tasks)
        kv_usage = metrics.kv_usage if metrics and metrics.kv_usage is not None else None
        running = metrics.running if metrics and metrics.running is not None else in_flight
        waiting = metrics.waiting if metrics and metrics.waiting is not None else 0
        if kv_usage is None:
            kv_usage = min(1.0, (running + waiting) / self.max_concurrency)
        limits = [self._context_tokens[m] for m in self.models if m in self._context_tokens]
        return BackendLoad(
            kv_usage=kv_usage, running=running, waiting=waiting, max_context_tokens=min(limits) if limits else None
        )

    def engine_kv_usage(self) -> float | None:
        """The KV-cache usage (0..1) the engine's /metrics said at the last scrape, None when it exports none
        (the metrics gauge `wwwserve_engine_kv_cache_usage_ratio` is then absent, not an estimate). Never
        waits: a scrape older than `metrics_ttl_s` is renewed in the background, for the next read."""
        if not self._closed and time.monotonic() - self._metrics_at >= self._metrics_ttl_s \
                and (self._refresh is None or self._refresh.done()):
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to renew it on
                self._refresh = asyncio.get_running_loop().create_task(self._renew_quietly())
        metrics = self._metrics
        return metrics.kv_usage if metrics is not None else None

    async def _renew_quietly(self) -> None:
        try:
            await self.load()
        except Exception:
            logger.debug("renewing the engine's load for the metrics failed", exc_info=True)

    async def aclose(self) -> None:
        """Cancel in-flight requests and close the HTTP client if this backend created it; idempotent, and
        every later call is refused (`BackendUnavailableError`, health False)."""
        self._closed = True
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()))
        if self._owns_client:
            await self._client.aclose()
