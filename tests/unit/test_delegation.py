"""PoS delegation between in-process nodes: probes, signed envelopes, relayed attestations, bans, fees.

Several node apps talk over an httpx transport that routes each peer URL to that node's ASGI app (in place
of the aiohttp client, whose own tests are in tests/unit/test_http.py), with a
fake registry (`Directory`) in place of the chain. What is checked is the node's own behaviour: who gets
the request, what the user sees, that signatures and envelopes hold, and what happens when a peer fails
or lies. The same paths over real processes and a real chain are in tests/integration/test_delegation_net.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import nacl.signing
import pytest
import uvicorn

from node.app import create_app
from node.backends.base import Backend
from node.backends.fake import FakeBackend
from node.envelope import seal
from node.http import HttpConnectError, HttpError, HttpResponse
from node.managers.communication import PATH_DELEGATE, PATH_PROBE, CommunicationManager
from node.policy import Action, Decision, DefaultPolicy, LoadSnapshot, PolicyConfig
from node.settings import load_settings
from node.signing import SignedResult, verify_result

pytestmark = pytest.mark.anyio

MODEL = "fake-model"
CHAIN_ID = 31337
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "one two three"}]}


@dataclass(frozen=True)
class Record:
    address: str
    pubkey: bytes
    endpoint: str
    models: frozenset[str]
    stake_wei: int


@dataclass
class Voucher:
    origin: str
    executor: str
    cumulative_wei: int

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "executor": self.executor, "cumulative_wei": str(self.cumulative_wei)}


@dataclass
class FakeLedger:
    """The registry (shared by all nodes) plus this node's fee book."""

    me: str
    registry: dict[str, Record]
    credit: int = 10**18
    promised: dict[str, int] = field(default_factory=dict)

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def peers(self) -> list[Record]:
        return list(self.registry.values())

    def peer(self, address: str) -> Record | None:
        return self.registry.get(address)

    def pubkey_of(self, address: str) -> bytes | None:
        record = self.registry.get(address)
        return None if record is None else record.pubkey

    def credit_wei(self) -> int:
        return self.credit

    def recent_block_hash(self) -> bytes:
        return b"\x11" * 32

    def record_fee(self, executor: str, fee_wei: int) -> Voucher:
        self.promised[executor] = self.promised.get(executor, 0) + fee_wei
        return Voucher(self.me, executor, self.promised[executor])

    def accept_voucher(self, voucher: Any) -> int:  # pragma: no cover - the real one is tested elsewhere
        return 0


class Router(httpx.AsyncBaseTransport):
    """Routes http://<name>/... to the ASGI app registered under <name>; unknown hosts refuse to connect."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.down: set[str] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down or host not in self.apps:
            raise httpx.ConnectError(f"connection refused: {host}", request=request)
        return await self.apps[host].handle_async_request(request)


class RouterStream:
    """`node.http.HttpStream` over an httpx streamed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.status = response.status_code
        self.headers = response.headers

    async def read(self) -> bytes:
        try:
            return await self.response.aread()
        except httpx.HTTPError as exc:
            raise HttpError(str(exc)) from exc

    async def lines(self) -> AsyncIterator[str]:
        try:
            async for line in self.response.aiter_lines():
                yield line
        except httpx.HTTPError as exc:
            raise HttpError(str(exc)) from exc

    async def aclose(self) -> None:
        await self.response.aclose()


class RouterClient:
    """`node.http.HttpClient` over the Router: the nodes' peer calls reach the in-process apps."""

    def __init__(self, router: Router) -> None:
        self.client = httpx.AsyncClient(transport=router, timeout=10)

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      headers: Mapping[str, str] | None = None, timeout_s: float | None = None) -> HttpResponse:
        try:
            response = await self.client.request(method, url, content=content, headers=headers)
        except httpx.ConnectError as exc:
            raise HttpConnectError(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise HttpError(str(exc)) from exc
        return HttpResponse(response.status_code, response.headers, response.content)

    async def open_stream(self, method: str, url: str, *, content: bytes | None = None,
                          headers: Mapping[str, str] | None = None, timeout_s: float | None = None) -> RouterStream:
        try:
            response = await self.client.send(self.client.build_request(method, url, content=content,
                                                                        headers=headers), stream=True)
        except httpx.ConnectError as exc:
            raise HttpConnectError(str(exc)) from exc
        except httpx.HTTPError as exc:
            raise HttpError(str(exc)) from exc
        return RouterStream(response)

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass
class Node:
    name: str
    address: str
    key: nacl.signing.SigningKey
    ledger: FakeLedger
    comm: CommunicationManager
    app: Any


class Net:
    """In-process nodes; with `live=True` each is a real uvicorn server on loopback and the nodes talk over
    their real aiohttp client (for streaming timing: httpx's ASGI transport buffers a whole response)."""

    def __init__(self, live: bool = False) -> None:
        self.registry: dict[str, Record] = {}
        self.router = Router()
        self.nodes: dict[str, Node] = {}
        self.live = live
        self.sockets: dict[str, socket.socket] = {}
        self.servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    def add(
        self,
        name: str,
        *,
        backends: list[Backend] | None = None,
        policy: dict[str, Any] | None = None,
        stake_wei: int = 10**18,
        models: tuple[str, ...] = (MODEL,),
        max_hops: int = 3,
        policy_obj: Any = None,
    ) -> Node:
        index = len(self.nodes) + 1
        address = "0x" + f"{index:02x}" * 20
        key = nacl.signing.SigningKey(bytes([index]) * 32)
        from eth_utils.address import to_checksum_address

        address = to_checksum_address(address)
        endpoint = f"http://{name}"
        if self.live:
            sock = self.sockets[name] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.registry[address] = Record(address, bytes(key.verify_key), endpoint, frozenset(models), stake_wei)
        ledger = FakeLedger(address, self.registry)
        comm = CommunicationManager(
            my_address=address, chain_id=CHAIN_ID, signing_key=key, directory=ledger,
            http=None if self.live else RouterClient(self.router), probe_timeout_s=1.0, ban_initial_s=30.0,
            ban_max_s=60.0,
        )
        pol = {"rng_seed": index, "auto_stake": False, **(policy or {})}
        settings = load_settings(overrides={
            "backend": {"kind": "fake", "models": list(models) or ["unused"]},
            "policy": pol,
            "peers": {"fee_wei": 1000, "max_hops": max_hops},
        })
        if backends is None:
            backends = [FakeBackend(list(models))] if models else []
        app = create_app(settings, backends, key, address, CHAIN_ID, ledger=ledger, communication=comm,
                         policy=policy_obj)
        self.router.apps[name] = httpx.ASGITransport(app=app)
        node = Node(name, address, key, ledger, comm, app)
        self.nodes[name] = node
        return node

    def client(self, name: str) -> httpx.AsyncClient:
        if self.live:
            return httpx.AsyncClient(base_url=self.registry[self.nodes[name].address].endpoint, timeout=10)
        return httpx.AsyncClient(transport=self.router, base_url=f"http://{name}", timeout=10)

    async def serve(self) -> None:
        """Start every live node's server (its lifespan too) in this event loop."""
        for name, node in self.nodes.items():
            server = uvicorn.Server(uvicorn.Config(node.app, log_level="warning", timeout_graceful_shutdown=1))
            task = asyncio.get_running_loop().create_task(server.serve(sockets=[self.sockets[name]]))
            self.servers.append((server, task))
            while not server.started:
                assert not task.done(), task
                await asyncio.sleep(0.01)

    async def aclose(self) -> None:
        for server, _ in self.servers:
            server.should_exit = True
        await asyncio.gather(*(task for _, task in self.servers), return_exceptions=True)
        for sock in self.sockets.values():
            sock.close()


class ForwardingPolicy(DefaultPolicy):
    """Accepts every probe for a model it serves, then always offloads: a pure relay (for multi-hop)."""

    def __init__(self) -> None:
        super().__init__(PolicyConfig(auto_stake=False), random.Random(0))

    def accept_probe(self, snapshot: LoadSnapshot, model: str | None) -> bool:
        return True

    def decide_dispatch(self, request_model: str, snapshot: LoadSnapshot) -> Decision:
        return Decision(Action.OFFLOAD)


DISPATCHER = {"target_token_usage": -1.0, "offload_frequency": 1.0, "accept_frequency": 0.0}
EXECUTOR = {"accept_frequency": 1.0}


def sse(text: str) -> list[Any]:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append("[DONE]" if data == "[DONE]" else json.loads(data))
    return out


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def net() -> Net:
    return Net()


@pytest.fixture
async def live_net() -> AsyncIterator[Net]:
    net = Net(live=True)
    try:
        yield net
    finally:
        await net.aclose()


# ---- the happy path -----------------------------------------------------------------------------


async def test_busy_origin_delegates_and_user_gets_verifiable_answer(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    c = net.add("c", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    signed = SignedResult.from_json(body["wwwserve"])
    assert signed.executor in (b.address, c.address)
    assert list(signed.route) == [a.address, signed.executor]
    executor_key = net.registry[signed.executor].pubkey
    verify_result(signed, executor_key, body["choices"][0]["message"]["content"], CHAT["messages"],
                  expected_chain_id=CHAIN_ID)
    assert resp.headers["x-wwwserve-executor"] == signed.executor
    # The origin owes a fee to its executor, and nothing to the other peer; a voucher records it soon.
    dispatcher = a.app.state.dispatcher
    assert dispatcher.pending_fees_wei() == 1000
    await dispatcher.flush_fees()
    assert a.ledger.promised == {signed.executor: 1000}
    assert dispatcher.pending_fees_wei() == 0


async def test_streamed_delegation_relays_chunks_and_attestation(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions",
                                 json={**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.status_code == 200
    events = sse(resp.text)
    assert events[-1] == "[DONE]"
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if isinstance(e, dict) and e["choices"]
    )
    assert text
    usage_chunk = events[-2]
    assert usage_chunk["usage"]["completion_tokens"] > 0
    signed = SignedResult.from_json(usage_chunk["wwwserve"])
    assert signed.executor == b.address
    assert list(signed.route) == [a.address, b.address]
    verify_result(signed, bytes(b.key.verify_key), text, CHAT["messages"], expected_chain_id=CHAIN_ID)
    # One id for the whole answer: the origin's request id, which the executor signed.
    assert {e["id"] for e in events[:-1]} == {signed.request_id}


async def test_completion_delegates_too(net: Net) -> None:
    net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/completions", json={"model": MODEL, "prompt": "say one"})
    assert resp.status_code == 200, resp.text
    signed = SignedResult.from_json(resp.json()["wwwserve"])
    verify_result(signed, bytes(b.key.verify_key), resp.json()["choices"][0]["text"], "say one")


async def test_idle_origin_serves_locally(net: Net) -> None:
    a = net.add("a", policy={"offload_frequency": 1.0})
    net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    signed = SignedResult.from_json(resp.json()["wwwserve"])
    assert signed.executor == a.address and list(signed.route) == [a.address]
    assert a.ledger.promised == {}


async def test_model_served_only_elsewhere_is_forwarded(net: Net) -> None:
    a = net.add("a", models=("other",), policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
        models = (await client.get("/v1/models")).json()["data"]
    assert SignedResult.from_json(resp.json()["wwwserve"]).executor == b.address
    assert {m["id"]: m["wwwserve_nodes"] for m in models} == {"other": 1, MODEL: 1}
    del a


async def test_model_nowhere_in_network_is_404(net: Net) -> None:
    net.add("a", policy=DISPATCHER)
    net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"


async def test_models_list_counts_nodes_network_wide(net: Net) -> None:
    net.add("a")
    net.add("b")
    net.add("c", models=(MODEL, "big"))
    net.add("d", models=("big",), stake_wei=0)  # no stake: not routable, not counted
    async with net.client("a") as client:
        data = (await client.get("/v1/models")).json()["data"]
    assert {m["id"]: m["wwwserve_nodes"] for m in data} == {MODEL: 3, "big": 1}


# ---- multi-hop and routes -------------------------------------------------------------------------


async def test_multi_hop_route_and_no_cycles(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    # b takes every probe and forwards; with 9x c's stake it is almost always a's first candidate.
    b = net.add("b", policy_obj=ForwardingPolicy(), stake_wei=9 * 10**18)
    c = net.add("c", policy=EXECUTOR)
    routes = set()
    async with net.client("a") as client:
        for _ in range(12):
            resp = await client.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200, resp.text
            signed = SignedResult.from_json(resp.json()["wwwserve"])
            routes.add(tuple(signed.route))
            assert len(set(signed.route)) == len(signed.route)  # never a cycle
            assert signed.route[-1] == signed.executor == c.address
            verify_result(signed, bytes(c.key.verify_key), resp.json()["choices"][0]["message"]["content"],
                          CHAT["messages"])
    assert (a.address, b.address, c.address) in routes
    # Each delegating node pays its own next hop.
    await a.app.state.dispatcher.flush_fees()
    await b.app.state.dispatcher.flush_fees()
    assert set(a.ledger.promised) <= {b.address, c.address}
    assert set(b.ledger.promised) == {c.address}


async def test_max_hops_forces_local_execution(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER, max_hops=1)
    b = net.add("b", policy_obj=ForwardingPolicy(), max_hops=1)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    signed = SignedResult.from_json(resp.json()["wwwserve"])
    # b would forward, but the route is already max_hops long, so it runs the request itself.
    assert list(signed.route) == [a.address, b.address]


# ---- failures ---------------------------------------------------------------------------------------


async def test_dead_peer_is_banned_and_request_redispatched(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    c = net.add("c", policy=EXECUTOR)
    net.router.down.add("b")
    sent = 0
    async with net.client("a") as client:
        # Until b is drawn first once (each request draws afresh; b is banned the first time it fails).
        while not a.comm.bans.is_banned(b.address) or sent < 4:
            assert sent < 40, "b was never drawn"
            resp = await client.post("/v1/chat/completions", json=CHAT)
            sent += 1
            assert resp.status_code == 200, resp.text
            assert SignedResult.from_json(resp.json()["wwwserve"]).executor == c.address
        metrics = (await client.get("/metrics")).text
    assert not a.comm.bans.is_banned(c.address)
    assert f'wwwserve_delegations_total{{outcome="ok"}} {sent}' in metrics
    assert f'wwwserve_dispatch_decisions_total{{action="offload"}} {sent}' in metrics
    assert 'wwwserve_delegations_total{outcome="failed"} 1' in metrics  # then banned: never tried again


async def test_executor_failing_before_output_is_replaced(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    net.add("b", backends=[FakeBackend([MODEL], fail=True)], policy=EXECUTOR)
    c = net.add("c", policy=EXECUTOR)
    async with net.client("a") as client:
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
            assert resp.status_code == 200
            final = [e for e in sse(resp.text) if isinstance(e, dict) and e.get("wwwserve")]
            assert SignedResult.from_json(final[0]["wwwserve"]).executor == c.address
    del a


async def test_executor_dying_mid_answer_non_stream_is_redispatched(net: Net) -> None:
    net.add("a", policy=DISPATCHER)
    net.add("b", backends=[FakeBackend([MODEL], fail_after_words=2, words=10)], policy=EXECUTOR)
    c = net.add("c", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    assert SignedResult.from_json(resp.json()["wwwserve"]).executor == c.address


async def test_executor_dying_mid_stream_ends_with_error_event(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", backends=[FakeBackend([MODEL], fail_after_words=2, words=10)], policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse(resp.text)
    assert events[-1] == "[DONE]"
    assert "error" in events[-2]
    assert set(events[-2]["error"]) == {"message", "type", "param", "code"}
    # Text had reached the user before the failure, and no chunk claims a signature.
    assert any(isinstance(e, dict) and e.get("choices") and e["choices"][0]["delta"].get("content")
               for e in events)
    assert not any(isinstance(e, dict) and e.get("wwwserve") for e in events)
    assert a.ledger.promised == {}
    del b


async def test_lying_executor_is_rejected_banned_and_not_paid(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    liar = net.add("b", policy=EXECUTOR)
    honest = net.add("c", policy=EXECUTOR)
    # The liar signs with a key other than the one it registered.
    net.registry[liar.address] = Record(liar.address, b"\x99" * 32, "http://b", frozenset({MODEL}), 10**18)
    async with net.client("a") as client:
        for _ in range(4):
            resp = await client.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200, resp.text
            assert SignedResult.from_json(resp.json()["wwwserve"]).executor == honest.address
    await a.app.state.dispatcher.flush_fees()
    assert liar.address not in a.ledger.promised
    assert a.ledger.promised == {honest.address: 4000}  # one voucher for four fees


async def test_no_peer_accepts_falls_back_to_local_queue(net: Net) -> None:
    a = net.add("a", policy={"target_token_usage": -1.0, "offload_frequency": 1.0, "queue_frequency": 1.0})
    net.add("b", policy={"accept_frequency": 0.0})
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert SignedResult.from_json(resp.json()["wwwserve"]).executor == a.address


async def test_forwarded_model_without_accepting_peer_is_503(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    import node.managers.dispatch as dispatch

    monkeypatch.setattr(dispatch, "NO_PEER_WAIT_S", 0.3)
    net.add("a", models=("other",), policy=DISPATCHER)
    net.add("b", policy={"accept_frequency": 0.0})
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 503
    assert resp.json()["error"]["code"] == "overloaded"
    assert "retry-after" in resp.headers


# ---- the peer API refuses what is not properly signed -----------------------------------------------


def _delegate_body(route: list[str]) -> bytes:
    return json.dumps({"request_id": "req-1", "kind": "chat", "request": {**CHAT, "stream": True},
                       "route": route}).encode()


async def test_peer_api_rejects_unsigned_forged_replayed_and_cycles(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    backend = FakeBackend([MODEL])
    b = net.add("b", backends=[backend], policy=EXECUTOR)
    stranger = nacl.signing.SigningKey(b"\x42" * 32)
    async with net.client("b") as client:
        body = _delegate_body([a.address])
        unsigned = await client.post(PATH_DELEGATE, content=body)
        assert unsigned.status_code in (400, 401)
        assert set(unsigned.json()["error"]) == {"message", "type", "param", "code"}
        forged = seal(stranger, a.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE)
        assert (await client.post(PATH_DELEGATE, content=body, headers=forged)).status_code == 401
        wrong_path = seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_PROBE)
        assert (await client.post(PATH_DELEGATE, content=body, headers=wrong_path)).status_code == 401
        good = seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE)
        first = await client.post(PATH_DELEGATE, content=body, headers=good)
        assert first.status_code == 200 and sse(first.text)[-1] == "[DONE]"
        replay = await client.post(PATH_DELEGATE, content=body, headers=good)
        assert replay.status_code == 409
        tampered = body.replace(b"one two three", b"one two four!")
        fresh = seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE)
        assert (await client.post(PATH_DELEGATE, content=tampered, headers=fresh)).status_code == 401
        cycle = _delegate_body([b.address, a.address])
        sealed = seal(a.key, a.address, b.address, cycle, CHAIN_ID, path=PATH_DELEGATE)
        resp = await client.post(PATH_DELEGATE, content=cycle, headers=sealed)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "route"
        not_sender = _delegate_body([b.address])
        sealed = seal(a.key, a.address, b.address, not_sender, CHAIN_ID, path=PATH_DELEGATE)
        assert (await client.post(PATH_DELEGATE, content=not_sender, headers=sealed)).status_code == 400
    # Of all these messages only the one genuine, fresh, well-routed delegation ran.
    assert backend.requests_seen == 1


async def test_probe_answers_by_policy_and_refuses_cycles(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)

    async def probe(route: list[str], model: str = MODEL) -> bool:
        body = json.dumps({"request_id": "r", "model": model, "route": route}).encode()
        headers = seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_PROBE)
        async with net.client("b") as client:
            resp = await client.post(PATH_PROBE, content=body, headers=headers)
        assert resp.status_code == 200, resp.text
        accept: bool = resp.json()["accept"]
        return accept

    assert await probe([a.address]) is True
    assert await probe([a.address], model="other") is False
    assert await probe([b.address, a.address]) is False


# ---- bans --------------------------------------------------------------------------------------------


def test_ban_backoff_doubles_and_caps() -> None:
    from node.managers.communication import BanList

    now = [0.0]
    bans = BanList(5.0, 30.0, clock=lambda: now[0])
    assert [bans.fail("0xA") for _ in range(5)] == [5.0, 10.0, 20.0, 30.0, 30.0]
    assert bans.is_banned("0xa")
    now[0] = 29.0
    assert bans.is_banned("0xA")
    now[0] = 31.0
    assert not bans.is_banned("0xA")
    assert bans.failures("0xA") == 5
    bans.succeed("0xA")
    assert bans.fail("0xA") == 5.0


async def test_delegation_with_accept_check_is_declined_without_running(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    backend = FakeBackend([MODEL])
    b = net.add("b", backends=[backend], policy={"accept_frequency": 0.0})
    body = json.dumps({"request_id": "req-2", "kind": "chat", "request": CHAT, "route": [a.address],
                       "accept_check": True}).encode()
    headers = seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE)
    async with net.client("b") as client:
        resp = await client.post(PATH_DELEGATE, content=body, headers=headers)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "probe_declined"
    assert backend.requests_seen == 0
    assert not a.comm.bans.is_banned(b.address)  # declining is not a fault


async def test_a_burst_on_a_one_slot_node_spreads_to_peers(net: Net) -> None:
    # One slot, slow answers: the first request runs here, the ones arriving meanwhile see every slot
    # taken (decision and admission happen in one step, so a burst cannot all see the node idle).
    a = net.add("a", backends=[FakeBackend([MODEL], capacity=1, latency_s=0.2)], policy={"offload_frequency": 1.0})
    b = net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=CHAT) for _ in range(4)))
    executors = [SignedResult.from_json(r.json()["wwwserve"]).executor for r in responses]
    assert executors.count(a.address) == 1 and executors.count(b.address) == 3, executors


# ---- duels: the user gets whichever of two answers comes first -----------------------------------


class RecordingDuels:
    """A `DuelManager` with the chain left out: records the duels it would open, and its events."""

    def __init__(self, origin: Node, inspect: bool) -> None:
        from node.managers.duel import DuelManager

        self.events: list[str] = []
        self.opened: list[tuple[str, str, str, str]] = []
        recorder = self

        class Manager(DuelManager):
            async def _open(self, greq: Any, prompt: Any, served: Any, other: Any) -> None:
                recorder.opened.append((served[1].executor, other[1].executor, served[0], other[0]))

        self.manager = Manager(
            my_address=origin.address, chain_id=CHAIN_ID, ledger=origin.ledger, communication=origin.comm,
            should_inspect=lambda: inspect, store=None, journal=None, ask_model=None,  # type: ignore[arg-type]
            verify=origin.app.state.dispatcher.verify_remote,
            count=lambda name, **labels: self.events.append(labels.get("event", name)),
        )
        origin.app.state.dispatcher.duels = self.manager


async def test_a_duel_races_two_executors_and_the_user_gets_the_first_answer(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    # Most stake: nearly always the first candidate, so the rival (never the first candidate) wins the race.
    slow = net.add("slow", policy=EXECUTOR, backends=[FakeBackend([MODEL], latency_s=1.5, words=3)],
                   stake_wei=100 * 10**18)
    fast = net.add("fast", policy=EXECUTOR, backends=[FakeBackend([MODEL], words=9)])
    duels = RecordingDuels(a, inspect=True)
    loop = asyncio.get_running_loop()
    async with net.client("a") as client:
        for i in range(4):
            started = loop.time()
            resp = await client.post("/v1/chat/completions", json={**CHAT, "user": f"u{i}"})
            assert resp.status_code == 200, resp.text
            assert resp.json()["wwwserve"]["executor"] == fast.address
            assert loop.time() - started < 1.2  # never waited for the slow answer (1.5 s)
            deadline = loop.time() + 5
            while len(duels.opened) <= i and loop.time() < deadline:  # the slow answer is in: both idle again
                await asyncio.sleep(0.05)
    # Every duel: the served (fast) answer as A, the slow one, verified, as B.
    assert [(x, y) for x, y, _, _ in duels.opened] == [(fast.address, slow.address)] * 4
    assert all(len(x.split()) == 9 and len(y.split()) == 3 for _, _, x, y in duels.opened)
    assert "second_answered_first" in duels.events  # the rival won the race
    await a.app.state.dispatcher.flush_fees()
    assert a.ledger.promised == {fast.address: 4000}  # only the served answers are paid (the duel pays the other)


async def test_when_the_first_candidate_fails_the_duels_other_executor_serves_the_user(net: Net) -> None:
    # Found by CI: the first candidate died while the rival was still answering; the dispatcher then looked
    # for a third executor among the others only (never the rival's, which runs this request id already),
    # found none, and ended up running the request on the busy origin's own queue.
    own = FakeBackend([MODEL])
    a = net.add("a", policy=DISPATCHER, backends=[own])
    dead = net.add("dead", policy=EXECUTOR, stake_wei=1000 * 10**18)  # nearly always the first candidate
    live = net.add("live", policy=EXECUTOR, backends=[FakeBackend([MODEL], latency_s=0.5)])
    net.router.down.add("dead")
    duels = RecordingDuels(a, inspect=True)
    sent = 0
    async with net.client("a") as client:
        while not a.comm.bans.is_banned(dead.address):  # until dead was drawn first once (then it is banned)
            assert sent < 10, "dead was never drawn"
            resp = await client.post("/v1/chat/completions", json={**CHAT, "user": f"u{sent}"})
            sent += 1
            assert resp.status_code == 200, resp.text
            assert SignedResult.from_json(resp.json()["wwwserve"]).executor == live.address
    assert own.requests_seen == 0  # never fell back to the busy origin
    await asyncio.sleep(0.2)
    assert duels.opened == []  # one answer only: no duel


async def test_the_user_never_waits_on_a_duels_other_executor_that_is_only_looking_for_a_free_peer(
    net: Net,
) -> None:
    own = FakeBackend([MODEL])
    a = net.add("a", policy=DISPATCHER, backends=[own])
    busy = {"accept_frequency": 0.0}  # every peer declines: the rival keeps looking, a round per 5 s
    net.add("b", policy=busy, backends=[FakeBackend([MODEL])])
    net.add("c", policy=busy, backends=[FakeBackend([MODEL])])
    duels = RecordingDuels(a, inspect=True)
    duels.manager.second_retry_s = 5.0
    loop = asyncio.get_running_loop()
    async with net.client("a") as client:
        started = loop.time()
        resp = await client.post("/v1/chat/completions", json=CHAT)
        took = loop.time() - started
    assert resp.status_code == 200, resp.text
    assert own.requests_seen == 1 and took < 2.5, took  # the origin's fallback, not 5 s behind the rival
    assert duels.opened == []


async def test_without_a_duel_draw_one_executor_answers(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    backends = [FakeBackend([MODEL]), FakeBackend([MODEL])]
    net.add("b", policy=EXECUTOR, backends=[backends[0]])
    net.add("c", policy=EXECUTOR, backends=[backends[1]])
    duels = RecordingDuels(a, inspect=False)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    await asyncio.sleep(0.2)
    assert sum(b.requests_seen for b in backends) == 1 and duels.opened == []


async def test_a_second_executor_is_asked_again_while_every_peer_declines(net: Net) -> None:
    from node.backends.base import GenerationRequest
    from node.managers.communication import PeerDeclinedError

    a = net.add("a", policy=DISPATCHER)
    net.add("b", policy=EXECUTOR)
    manager = RecordingDuels(a, inspect=True).manager
    manager.second_retry_s = 0.01
    real = a.comm.delegate_whole
    calls: list[str] = []

    async def busy_at_first(peer: Any, body: Any, greq: Any) -> Any:
        calls.append(peer.address)
        if len(calls) <= 2:
            raise PeerDeclinedError()  # busy: declined the accept check
        return await real(peer, body, greq)

    a.comm.delegate_whole = busy_at_first  # type: ignore[method-assign]
    greq = GenerationRequest(request_id="chatcmpl-retry", model=MODEL, messages=CHAT["messages"])
    answer = await manager._second_answer(greq, "chat", dict(CHAT), CHAT["messages"], [])
    assert answer is not None and len(calls) == 3 and answer.attestation.executor == calls[-1]
    calls.clear()
    manager.second_attempts = 2  # two rounds, both declined: no second executor
    assert await manager._second_answer(greq, "chat", dict(CHAT), CHAT["messages"], []) is None
    assert len(calls) == 2


async def test_a_request_id_already_running_on_a_peer_is_refused_as_in_flight(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    backend = FakeBackend([MODEL], latency_s=0.5)
    b = net.add("b", backends=[backend], policy=EXECUTOR)

    def send() -> Any:
        body = json.dumps({"request_id": "req-twice", "kind": "chat", "request": CHAT, "route": [a.address],
                           "accept_check": False}).encode()
        headers = seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE)
        return client.post(PATH_DELEGATE, content=body, headers=headers)

    async with net.client("b") as client:
        first, second = await asyncio.gather(send(), send())
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409], (first.text, second.text)
    refused = first if first.status_code == 409 else second
    assert refused.json()["error"]["code"] == "request_in_flight" and "req-twice" in refused.json()["error"]["message"]
    assert backend.requests_seen == 1  # the copy never ran


def test_a_backend_refuses_a_request_id_it_is_running() -> None:
    from node.backends.base import GenerationRequest
    from node.errors import RequestInFlightError

    backend = FakeBackend([MODEL], latency_s=0.3)
    req = GenerationRequest(request_id="same", model=MODEL, messages=CHAT["messages"])

    async def both() -> list[Any]:
        return await asyncio.gather(backend.generate(req), backend.generate(req), return_exceptions=True)

    results = asyncio.run(both())
    assert sum(isinstance(r, RequestInFlightError) for r in results) == 1
    error = next(r for r in results if isinstance(r, RequestInFlightError))
    assert error.http_status == 409 and error.envelope()["error"]["code"] == "request_in_flight"


async def test_a_second_executor_found_late_is_never_the_one_that_served_the_user(net: Net) -> None:
    from node.backends.base import GenerationRequest
    from node.managers.communication import PeerDeclinedError

    a = net.add("a", policy=DISPATCHER)
    net.add("b", policy=EXECUTOR)
    net.add("c", policy=EXECUTOR)
    manager = RecordingDuels(a, inspect=True).manager
    manager.second_retry_s = 0.01
    real = a.comm.delegate_whole
    calls: list[str] = []
    excluded: set[str] = set()

    async def both_busy_at_first(peer: Any, body: Any, greq: Any) -> Any:
        calls.append(peer.address)
        if len(calls) <= 2:
            if len(calls) == 1:
                excluded.add(peer.address.lower())  # meanwhile, this peer served the user's copy
            raise PeerDeclinedError()
        return await real(peer, body, greq)

    a.comm.delegate_whole = both_busy_at_first  # type: ignore[method-assign]
    greq = GenerationRequest(request_id="chatcmpl-late", model=MODEL, messages=CHAT["messages"])
    answer = await manager._second_answer(greq, "chat", dict(CHAT), CHAT["messages"], excluded)
    assert answer is not None and answer.attestation.executor != calls[0]
    assert len(set(calls)) == 2 and calls[2] == answer.attestation.executor


# ---- streamed duels: the user gets the stream that starts first ----------------------------------


async def _first_text_after(client: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, list[Any]]:
    """Seconds to the first text chunk of a streamed answer, and all its events."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    first: float | None = None
    text = ""
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        async for chunk in resp.aiter_text():
            text += chunk
            if first is None and '"content":"' in text.replace(": ", ":").replace('"content":""', ""):
                first = loop.time() - started
    assert first is not None, text
    return first, sse(text)


async def test_a_streamed_duel_serves_the_stream_that_starts_first(live_net: Net) -> None:
    net = live_net
    a = net.add("a", policy=DISPATCHER)
    # Most stake: nearly always the first candidate, whose first token comes after 1.5 s; the rival
    # (never the first candidate) starts at once and streams for ~0.5 s.
    slow = net.add("slow", policy=EXECUTOR, backends=[FakeBackend([MODEL], latency_s=1.5, words=3)],
                   stake_wei=100 * 10**18)
    fast = net.add("fast", policy=EXECUTOR, backends=[FakeBackend([MODEL], words=9, tokens_per_s=20)])
    duels = RecordingDuels(a, inspect=True)
    await net.serve()
    loop = asyncio.get_running_loop()
    async with net.client("a") as client:
        for i in range(3):
            first, events = await _first_text_after(client, {**CHAT, "stream": True, "user": f"u{i}"})
            assert first < 1.2  # the user never waited for the slow stream's first token (1.5 s)
            signed = [e for e in events if isinstance(e, dict) and e.get("wwwserve")]
            assert signed[-1]["wwwserve"]["executor"] == fast.address and events[-1] == "[DONE]"
            deadline = loop.time() + 5
            while len(duels.opened) <= i and loop.time() < deadline:  # the slow stream is read to its end
                await asyncio.sleep(0.05)
    # Every duel: the served (fast) stream as A, the slow one, read whole and verified, as B.
    assert [(x, y) for x, y, _, _ in duels.opened] == [(fast.address, slow.address)] * 3
    assert all(len(x.split()) == 9 and len(y.split()) == 3 for _, _, x, y in duels.opened)
    assert "second_answered_first" in duels.events
    await a.app.state.dispatcher.flush_fees()
    assert a.ledger.promised == {fast.address: 3000}  # only the served streams are paid


async def running(backends: list[FakeBackend]) -> list[int]:
    return [(await b.load()).running for b in backends]


async def test_a_user_leaving_a_streamed_duel_stops_both_executors(live_net: Net) -> None:
    net = live_net
    a = net.add("a", policy=DISPATCHER)
    # Two executors streaming 60 words at 10 words/s: both run for ~6 s unless stopped.
    backends = [FakeBackend([MODEL], words=60, tokens_per_s=10) for _ in range(2)]
    net.add("b", policy=EXECUTOR, backends=[backends[0]])
    net.add("c", policy=EXECUTOR, backends=[backends[1]])
    duels = RecordingDuels(a, inspect=True)
    await net.serve()
    loop = asyncio.get_running_loop()
    async with net.client("a") as client:
        async with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
            assert resp.status_code == 200
            deadline = loop.time() + 3
            async for _ in resp.aiter_text():  # both copies running, text reaching the user: leave
                if await running(backends) == [1, 1] or loop.time() > deadline:
                    break
            assert await running(backends) == [1, 1] and [b.requests_seen for b in backends] == [1, 1]
        left = loop.time()
        while any(await running(backends)) and loop.time() < left + 3:
            await asyncio.sleep(0.05)
    assert await running(backends) == [0, 0]  # both stopped long before their 6 s
    assert loop.time() - left < 3
    await asyncio.sleep(0.3)
    assert duels.opened == [] and "no_second_executor" not in duels.events  # no duel: nothing was served


async def test_a_streamed_duels_other_answer_dying_midway_opens_no_duel(live_net: Net) -> None:
    net = live_net
    a = net.add("a", policy=DISPATCHER)
    net.add("dying", policy=EXECUTOR, backends=[FakeBackend([MODEL], latency_s=0.5, words=9, fail_after_words=2)],
            stake_wei=100 * 10**18)
    fast = net.add("fast", policy=EXECUTOR, backends=[FakeBackend([MODEL], words=9)])
    duels = RecordingDuels(a, inspect=True)
    await net.serve()
    async with net.client("a") as client:
        _, events = await _first_text_after(client, {**CHAT, "stream": True})
    signed = [e for e in events if isinstance(e, dict) and e.get("wwwserve")]
    assert signed[-1]["wwwserve"]["executor"] == fast.address and events[-1] == "[DONE]"  # the user is unaffected
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while "no_second_executor" not in duels.events and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert duels.opened == [] and "no_second_executor" in duels.events
