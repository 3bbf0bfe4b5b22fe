"""What an operator reads off a node: the generation histograms, delegations in, the queue gauges (node.metrics,
recorded by the Dispatcher), and one request id on the origin's and the executor's JSON log lines (node.logs).
Every value is read back from the node's own `/metrics` page or `Metrics`, after driving the real request path.
"""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import logging
import threading
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_delegation import (  # the in-process network of test_delegation
    CHAT,
    DISPATCHER,
    EXECUTOR,
    MODEL,
    ForwardingPolicy,
    Net,
    live_net,  # noqa: F401  (a fixture)
    net,  # noqa: F401  (a fixture)
    sse,
)

from wwwserve.node.app import create_app
from wwwserve.node.backends.base import GenerationRequest, GenerationResult, StreamDelta
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.logs import JsonFormatter, RequestIdFilter
from wwwserve.node.settings import load_settings
from wwwserve.node.signing import SignedResult

pytestmark = pytest.mark.anyio

NODE = "0x" + "ab" * 20
CHAIN_ID = 31337


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def page(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a /metrics page: (name, sorted labels) → value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = await client.get("/metrics")
    assert resp.status_code == 200
    return page(resp.text)


def local_app(backend: Any, **server: Any) -> Any:
    settings = load_settings(overrides={"server": server, "backend": {"kind": "fake", "models": [MODEL]}})
    return create_app(settings, [backend], __import__("nacl.signing").signing.SigningKey(b"\x07" * 32), NODE,
                      CHAIN_ID)


def local_client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node", timeout=10)


async def test_local_answers_are_timed_whole_and_streamed_with_time_to_first_token() -> None:
    app = local_app(FakeBackend([MODEL]))
    async with local_client(app) as client:
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
        streamed = await client.post("/v1/completions", json={"model": MODEL, "prompt": "one two", "stream": True})
        assert streamed.status_code == 200 and sse(streamed.text)[-1] == "[DONE]"
        bad = await client.post("/v1/chat/completions", json={**CHAT, "model": "nobody-serves-this"})
        assert bad.status_code == 404
        seen = await scrape(client)
    whole = (("executor", "local"), ("kind", "chat"), ("stream", "false"))
    stream = (("executor", "local"), ("kind", "completion"), ("stream", "true"))
    assert seen[("wwwserve_generation_duration_seconds_count", whole)] == 1
    assert seen[("wwwserve_generation_duration_seconds_count", stream)] == 1
    assert seen[("wwwserve_generation_duration_seconds_sum", whole)] > 0
    # A stream's first token comes before its last; a whole answer has no first token its client saw.
    ttft = (("executor", "local"), ("kind", "completion"))
    assert seen[("wwwserve_time_to_first_token_seconds_count", ttft)] == 1
    assert 0 < seen[("wwwserve_time_to_first_token_seconds_sum", ttft)] <= seen[
        ("wwwserve_generation_duration_seconds_sum", stream)]
    assert ("wwwserve_time_to_first_token_seconds_count", (("executor", "local"), ("kind", "chat"))) not in seen
    # The failed request is not timed as an answer (it is in the HTTP counters with its 404).
    assert sum(v for (name, _), v in seen.items() if name == "wwwserve_generation_duration_seconds_count") == 2
    # A fake engine reports no KV cache: the gauge is absent, not 0.
    assert not any(name == "wwwserve_engine_kv_cache_usage_ratio" for name, _ in seen)


class GatedBackend(FakeBackend):
    """A fake whose answers wait for `gate`: requests stay running (and queued behind them) until the test
    opens it."""

    def __init__(self) -> None:
        super().__init__([MODEL])
        self.gate = asyncio.Event()
        self.started = 0

    async def generate(self, req: GenerationRequest) -> GenerationResult:
        self.started += 1
        await self.gate.wait()
        return await super().generate(req)

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:  # type: ignore[override]
        self.started += 1
        await self.gate.wait()
        async for delta in super().stream(req):
            yield delta


async def test_the_queue_gauges_count_running_and_waiting_requests_at_scrape_time() -> None:
    backend = GatedBackend()
    app = local_app(backend, max_concurrent_requests=1)
    requests = app.state.request_manager
    async with local_client(app) as client:
        seen = await scrape(client)
        assert seen[("wwwserve_requests_running", ())] == 0
        assert seen[("wwwserve_requests_waiting", (("source", "user"),))] == 0
        calls = [asyncio.ensure_future(client.post("/v1/chat/completions", json=CHAT)) for _ in range(2)]
        while not (backend.started == 1 and requests.waiting == 1):
            await asyncio.sleep(0.005)  # the first runs (behind the gate), the second waits for its slot
        seen = await scrape(client)
        assert seen[("wwwserve_requests_running", ())] == 1
        assert seen[("wwwserve_requests_waiting", (("source", "user"),))] == 1
        assert seen[("wwwserve_requests_waiting", (("source", "node"),))] == 0
        backend.gate.set()
        assert [r.status_code for r in await asyncio.gather(*calls)] == [200, 200]
        seen = await scrape(client)
    assert seen[("wwwserve_requests_running", ())] == 0
    assert seen[("wwwserve_requests_waiting", (("source", "user"),))] == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_the_executor_counts_the_request_it_ran_for_a_peer_and_the_origin_times_it_as_a_peers(
        net: Net, stream: bool) -> None:  # noqa: F811
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert resp.status_code == 200, resp.text
        origin = await scrape(client)
    executed = b.app.state.metrics.value("wwwserve_delegations_received_total", outcome="executed")
    assert executed == 1
    assert a.app.state.metrics.value("wwwserve_delegations_received_total", outcome="executed") == 0
    assert origin[("wwwserve_delegations_total", (("outcome", "ok"),))] == 1
    flag = "true" if stream else "false"
    assert origin[("wwwserve_generation_duration_seconds_count",
                   (("executor", "peer"), ("kind", "chat"), ("stream", flag)))] == 1
    ttft = origin.get(("wwwserve_time_to_first_token_seconds_count", (("executor", "peer"), ("kind", "chat"))))
    assert ttft == (1 if stream else None)
    # The executor served a peer, not a user: nothing in its user histograms.
    assert b.app.state.metrics.value("wwwserve_generation_duration_seconds_count", executor="local", kind="chat",
                                     stream=flag) == 0


async def test_a_relaying_hop_counts_the_request_as_relayed_and_the_last_hop_as_executed(net: Net) -> None:  # noqa: F811
    net.add("a", policy=DISPATCHER)
    b = net.add("b", policy_obj=ForwardingPolicy(), stake_wei=10**20)  # a's first candidate, nearly always
    c = net.add("c", policy=EXECUTOR)
    async with net.client("a") as client:
        for _ in range(20):
            resp = await client.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200, resp.text
            if SignedResult.from_json(resp.json()["wwwserve"]).route[1:] == (b.address, c.address):
                break
        else:
            raise AssertionError("no request went a → b → c")
    value_b, value_c = b.app.state.metrics.value, c.app.state.metrics.value
    assert value_b("wwwserve_delegations_received_total", outcome="relayed") >= 1
    assert value_b("wwwserve_delegations_received_total", outcome="executed") == 0
    assert value_c("wwwserve_delegations_received_total", outcome="executed") >= 1
    assert value_c("wwwserve_delegations_received_total", outcome="relayed") == 0


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The wwwserve loggers' records at DEBUG, as the JSON lines `--log-format json` writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("wwwserve")
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


@pytest.mark.component
async def test_the_origins_request_id_is_on_the_executors_log_lines(live_net: Net,  # noqa: F811
                                                                     json_log: io.StringIO) -> None:
    """Real servers and the real client: the executor serves the request in a task of its own, so the id on
    its lines came with the request (`DelegateBody.request_id`), not from the origin's context."""
    live_net.add("a", policy=DISPATCHER)
    b = live_net.add("b", policy=EXECUTOR)
    await live_net.serve()
    async with live_net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    request_id = resp.json()["id"]
    assert SignedResult.from_json(resp.json()["wwwserve"]).executor == b.address
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    origin = [line for line in lines if line["logger"] == "wwwserve.node.managers.dispatch"
              and str(line["message"]).startswith("delegated to")]
    executor = [line for line in lines if line["logger"] == "wwwserve.node.api.peer"
                and str(line["message"]).startswith("delegation from")]
    assert [line.get("request_id") for line in origin] == [request_id]
    assert [line.get("request_id") for line in executor] == [request_id]
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)


@pytest.fixture
def erring_rpc() -> Iterator[str]:
    """A JSON-RPC endpoint that answers eth_chainId, eth_call with a revert, eth_blockNumber with another error
    answer, and anything else with HTTP 503."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            errors = {"eth_call": {"code": 3, "message": "execution reverted: WWWServe: no"},
                      "eth_blockNumber": {"code": -32005, "message": "limit exceeded"}}
            method = request["method"]
            if method not in errors and method != "eth_chainId":
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            answer = {"result": "0x7a69"} if method == "eth_chainId" else {"error": errors[method]}
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], **answer}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.component
def test_failed_json_rpc_requests_are_counted_by_method_and_kind_each_try(erring_rpc: str) -> None:
    """The Ledger manager's Web3s count every failed request (`count_rpc_errors`), retries included."""
    from wwwserve.ledger.chain import RetryPolicy, call_with_retries, connect
    from wwwserve.ledger.errors import LedgerError
    from wwwserve.node.managers.ledger.base import count_rpc_errors
    from wwwserve.node.metrics import Metrics

    metrics = Metrics()
    w3 = connect(erring_rpc)
    count_rpc_errors(w3, lambda method, kind: metrics.count("wwwserve_chain_rpc_errors_total", method=method,
                                                            kind=kind))
    retry = RetryPolicy(attempts=3, backoff_s=0.0)
    for op, function in ((lambda: w3.eth.call({"to": "0x" + "11" * 20, "data": "0x"}), "eth_call"),
                         (lambda: w3.eth.block_number, "eth_blockNumber"),
                         (lambda: w3.eth.gas_price, "eth_gasPrice")):
        with pytest.raises((LedgerError, ValueError)):
            call_with_retries(w3, op, function=function, retry=retry)  # type: ignore[arg-type]
    counted = metrics.value
    assert counted("wwwserve_chain_rpc_errors_total", method="eth_call", kind="revert") == 1
    assert counted("wwwserve_chain_rpc_errors_total", method="eth_blockNumber", kind="rpc") == 1
    assert counted("wwwserve_chain_rpc_errors_total", method="eth_gasPrice", kind="transport") == 3  # each try
    # Counted where the request leaves (innermost): web3's own checks before eth_call are not its errors.
    assert counted("wwwserve_chain_rpc_errors_total", method="eth_call", kind="transport") == 0
    assert counted("wwwserve_chain_rpc_errors_total", method="eth_chainId", kind="rpc") == 0
