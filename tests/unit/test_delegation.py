"""PoS delegation between in-process nodes: probes, signed envelopes, relayed attestations, work
attestations and the origin's duel draw, bans, fees.

Several node apps talk over an httpx transport that routes each peer URL to that node's ASGI app (in place
of the aiohttp client, whose own tests are in tests/unit/test_http.py), with a
fake registry (`Directory`) in place of the chain. What is checked is the node's own behaviour: who gets
the request, what the user sees, that signatures and envelopes hold, and what happens when a peer fails
or lies. The same paths over real processes and a real chain are in tests/integration/test_delegation_net.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nacl.signing
import pytest
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount

from wwwserve.judge.manager import PATH_EVIDENCE
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    duel_id_of,
    inspect_commitment,
    recover_work_signer,
    request_bytes,
    request_hash,
    request_id_hash,
    sign_work,
)
from wwwserve.node.api import completions
from wwwserve.node.app import create_app
from wwwserve.node.backends.base import Backend
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.node.billing import PeerStanding
from wwwserve.node.envelope import seal
from wwwserve.node.http import HttpConnectError, HttpError, HttpResponse
from wwwserve.node.managers.communication import PATH_DELEGATE, PATH_PROBE, CommunicationManager
from wwwserve.node.policy import Action, Decision, DefaultPolicy, LoadSnapshot, PolicyConfig
from wwwserve.node.settings import load_settings
from wwwserve.node.signing import SignedResult, TokenUsage, UsageMismatchError, verify_result

pytestmark = pytest.mark.anyio

MODEL = "fake-model"
CHAIN_ID = 31337
CONTRACT = "0x" + "c0" * 20
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
    """The registry (shared by all nodes) plus this node's fee book and wallet (None: locked).

    `tamper` rewrites each work attestation before it is signed (a lying executor); `forge_with` signs
    them with another key."""

    me: str
    registry: dict[str, Record]
    account: LocalAccount | None = None
    credit: int = 10**18
    promised: dict[str, int] = field(default_factory=dict)
    contract_address: str = CONTRACT
    tamper: Callable[[WorkAttestation], WorkAttestation] | None = None
    forge_with: LocalAccount | None = None
    signed: list[WorkAttestation] = field(default_factory=list)
    vouchered: dict[str, int] = field(default_factory=dict)  # origin -> best voucher received (cumulative)
    funds: dict[str, int] = field(default_factory=dict)  # origin -> credit on the ledger (default 1 ETH)

    @property
    def has_account(self) -> bool:
        return self.account is not None

    def sign_work(self, work: WorkAttestation) -> WorkAttestation:
        assert self.account is not None
        if self.tamper is not None:
            work = self.tamper(work)
        if self.forge_with is not None:
            signature = self.forge_with.unsafe_sign_hash(work.digest(CHAIN_ID, CONTRACT)).signature
            signed = dataclasses.replace(work, signature=bytes(signature))
        else:
            signed = sign_work(self.account, CHAIN_ID, CONTRACT, work)
        self.signed.append(signed)
        return signed

    def contact(self, address: str) -> Record | None:
        return self.registry.get(address)

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

    def accept_voucher(self, voucher: Any) -> int:  # the real checks are tested elsewhere
        origin = voucher.origin
        earned = max(0, voucher.cumulative_wei - self.vouchered.get(origin, 0))
        self.vouchered[origin] = max(self.vouchered.get(origin, 0), voucher.cumulative_wei)
        return earned

    def standing(self, address: str) -> PeerStanding:
        record = self.registry.get(address) or next(
            (r for a, r in self.registry.items() if a.lower() == address.lower()), None)
        return PeerStanding(active=record is not None and record.stake_wei > 0,
                            funds_wei=self.funds.get(address, 10**18), vouchered_wei=self.vouchered.get(address, 0),
                            claimed_wei=0)


class Router(httpx.AsyncBaseTransport):
    """Routes http://<name>/... to the ASGI app registered under <name>; unknown hosts refuse to connect.
    `rewrite[name]` edits that node's JSON answers and each event of its SSE answers on the way out (a peer
    of another protocol version)."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}
        self.down: set[str] = set()
        self.rewrite: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down or host not in self.apps:
            raise httpx.ConnectError(f"connection refused: {host}", request=request)
        response = await self.apps[host].handle_async_request(request)
        edit = self.rewrite.get(host)
        if edit is None:
            return response
        kind = response.headers.get("content-type", "")
        if kind.startswith("text/event-stream"):
            lines = []
            for line in (await response.aread()).decode().split("\n"):
                if line.startswith("data: {"):
                    line = "data: " + json.dumps(edit(json.loads(line[6:])))
                lines.append(line)
            return httpx.Response(response.status_code, headers={"content-type": kind},
                                  content="\n".join(lines).encode())
        if kind != "application/json":
            return response
        body = json.loads(await response.aread())
        return httpx.Response(response.status_code, headers={"content-type": "application/json"},
                              json=edit(body))


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
        wallet: bool = True,
        credit_limit_fees: int = 10**6,  # FakeLedger's vouchers are unsigned: executors never receive them
        peers: dict[str, Any] | None = None,
    ) -> Node:
        index = len(self.nodes) + 1
        account: LocalAccount = Account.from_key(bytes([index]) * 32)
        key = nacl.signing.SigningKey(bytes([index]) * 32)
        address = account.address
        endpoint = f"http://{name}"
        if self.live:
            sock = self.sockets[name] = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.registry[address] = Record(address, bytes(key.verify_key), endpoint, frozenset(models), stake_wei)
        ledger = FakeLedger(address, self.registry, account if wallet else None)
        comm = CommunicationManager(
            my_address=address, chain_id=CHAIN_ID, signing_key=key, directory=ledger,
            http=None if self.live else RouterClient(self.router), probe_timeout_s=1.0, ban_initial_s=30.0,
            ban_max_s=60.0, allow_private_endpoints=self.live,  # live nodes listen on 127.0.0.1
        )
        pol = {"rng_seed": index, "auto_stake": False, **(policy or {})}
        settings = load_settings(overrides={
            "backend": {"kind": "fake", "models": list(models) or ["unused"]},
            "policy": pol,
            "peers": {"fee_wei": 1000, "max_hops": max_hops, "credit_limit_fees": credit_limit_fees, **(peers or {})},
            "judge": {"enabled": False},  # duel tests attach a manager of their own
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
                  usage=TokenUsage.from_json(body["usage"]), expected_chain_id=CHAIN_ID)
    assert body["usage"]["completion_tokens"] > 0  # the executor's own count, relayed as it signed it
    assert resp.headers["x-wwwserve-executor"] == signed.executor
    # The origin owes a fee to its executor, and nothing to the other peer; a voucher records it soon.
    dispatcher = a.app.state.dispatcher
    assert dispatcher.fees.pending_wei() == 1000
    await dispatcher.fees.flush()
    assert a.ledger.promised == {signed.executor: 1000}
    assert dispatcher.fees.pending_wei() == 0


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
    verify_result(signed, bytes(b.key.verify_key), text, CHAT["messages"],
                  usage=TokenUsage.from_json(usage_chunk["usage"]), expected_chain_id=CHAIN_ID)
    with pytest.raises(UsageMismatchError):  # the relayed usage is the signed one, not any other
        verify_result(signed, usage=TokenUsage(usage_chunk["usage"]["prompt_tokens"], 10**6))
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
    await a.app.state.dispatcher.fees.flush()
    await b.app.state.dispatcher.fees.flush()
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


async def test_an_executor_stating_other_usage_than_it_signed_is_refused_and_banned(
        net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    a = net.add("a", policy=DISPATCHER)
    liar = net.add("b", policy=EXECUTOR)
    real_usage = completions.Usage

    class InflatedUsage(real_usage):  # type: ignore[valid-type,misc]
        @classmethod
        def of(cls, prompt_tokens: int, completion_tokens: int) -> Any:
            return real_usage.of(prompt_tokens, completion_tokens * 10)  # what a stream's usage chunk states

    # Every node's usage chunk now inflates what its signature says; the origin streams to no user here (a
    # whole answer), so only the executor's chunk to the origin lies.
    monkeypatch.setattr(completions, "Usage", InflatedUsage)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    signed = SignedResult.from_json(body["wwwserve"])
    assert signed.executor == a.address  # the liar's answer was not passed on; the origin ran it itself
    verify_result(signed, bytes(a.key.verify_key), usage=TokenUsage.from_json(body["usage"]))
    assert a.comm.bans.is_banned(liar.address)
    await a.app.state.dispatcher.fees.flush()
    assert liar.address not in a.ledger.promised


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
    await a.app.state.dispatcher.fees.flush()
    assert liar.address not in a.ledger.promised
    assert a.ledger.promised == {honest.address: 4000}  # one voucher for four fees


async def test_no_peer_accepts_falls_back_to_local_queue(net: Net, caplog: pytest.LogCaptureFixture) -> None:
    a = net.add("a", policy={"target_token_usage": -1.0, "offload_frequency": 1.0, "queue_frequency": 1.0})
    net.add("b", policy={"accept_frequency": 0.0})
    with caplog.at_level(logging.INFO, logger="wwwserve"):
        async with net.client("a") as client:
            resp = await client.post("/v1/chat/completions", json=CHAT)
    assert SignedResult.from_json(resp.json()["wwwserve"]).executor == a.address
    # A peer declining (409 probe_declined) is routine: no warning (it was logged as "peer answered 500")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_forwarded_model_without_accepting_peer_is_503(net: Net) -> None:
    net.add("a", models=("other",), policy=DISPATCHER, peers={"no_peer_wait_s": 0.3})
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
    from wwwserve.node.managers.communication import BanList

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


# ---- work attestations and the origin's duel draw ----------------------------------------------------


class RecordingDuels:
    """A `DuelManager` with the chain left out: records the duels the origin would open (`open_soon`) and
    the evidence an executor keeps (`keep_work`, into a real store under `tmp`)."""

    def __init__(self, node: Node, inspect: bool, tmp: Path | None = None, chain: Any = None) -> None:
        from wwwserve.judge.journal import VoteJournal
        from wwwserve.judge.manager import DuelManager
        from wwwserve.judge.store import EvidenceStore

        self.events: list[str] = []
        self.opened: list[tuple[Any, WorkAttestation, str]] = []  # (inspection, work, text)
        self.draws = 0
        recorder = self

        class Manager(DuelManager):
            def open_soon(self, inspection: Any, work: WorkAttestation, kind: Any, raw: Any, text: str) -> None:
                recorder.opened.append((inspection, work, text))

        def draw() -> bool:
            self.draws += 1
            return inspect

        folder = tmp or Path("/nonexistent")
        self.store = EvidenceStore(folder / f"{node.name}-evidence.db", contract_address=CONTRACT) if tmp else None
        self.manager = Manager(
            my_address=node.address, ledger=node.ledger, communication=node.comm, should_inspect=draw,
            store=self.store, journal=VoteJournal(folder / f"{node.name}-votes.db", contract_address=CONTRACT)
            if tmp else None, ask_model=None, run_request=None, chain=chain or object(),  # type: ignore[arg-type]
            count=lambda name, **labels: self.events.append(labels.get("event", name)), evidence_flush_s=0.0,
        )
        from wwwserve.judge.feature import DuelFeature

        node.app.use_feature(DuelFeature(self.manager))  # its duel hooks and /peer/evidence


def check_work(work: WorkAttestation, *, origin: Node, executor: Node, request_id: str, kind: str,
               request: dict[str, Any], text: str, inspect: bytes) -> None:
    """`work` is `executor`'s attestation of `text` as its answer to `request` from `origin`."""
    assert recover_work_signer(CHAIN_ID, CONTRACT, work) == executor.address == work.executor
    assert work.origin == origin.address
    assert work.request_id == request_id_hash(request_id)
    assert work.request_hash == request_hash(kind, request)
    assert work.answer_hash == answer_hash(text)
    assert work.inspect == inspect
    assert abs(work.issued_at - time.time()) < 10


@pytest.mark.parametrize("stream", [False, True])
async def test_every_delegated_answer_carries_work_signed_over_the_origins_commitment(net: Net, stream: bool) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    duels = RecordingDuels(a, inspect=True)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert resp.status_code == 200, resp.text
    if stream:
        events = sse(resp.text)
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
        final = next(e for e in events[:-1] if e.get("wwwserve"))
        assert "wwwserve_work" not in final  # the user gets the result signature; the work is the origin's
        request_id = final["id"]
    else:
        body = resp.json()
        text, request_id = body["choices"][0]["message"]["content"], body["id"]
        assert "wwwserve_work" not in body
    [(inspection, work, opened_text)] = duels.opened
    assert opened_text == text
    assert inspection.wants_duel and inspection.commitment == inspect_commitment(
        request_id_hash(request_id), True, inspection.salt)
    check_work(work, origin=a, executor=b, request_id=request_id, kind="chat", request=CHAT, text=text,
               inspect=inspection.commitment)
    assert b.ledger.signed == [work]


@pytest.mark.parametrize("stream", [False, True])
async def test_an_executor_answers_a_peer_with_its_work_and_zero_commitment_without_one(net: Net, stream: bool) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    request = {"model": MODEL, "prompt": "say one", "max_tokens": 5, "temperature": 0.5, "stream": stream}
    for inspect in (b"\x07" * 32, None):
        payload: dict[str, Any] = {"request_id": f"req-{inspect is None}", "kind": "completion", "request": request,
                                   "route": [a.address]}
        if inspect is not None:
            payload["inspect"] = "0x" + inspect.hex()
        body = json.dumps(payload).encode()
        async with net.client("b") as client:
            resp = await client.post(PATH_DELEGATE, content=body,
                                     headers=seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE))
        assert resp.status_code == 200, resp.text
        if stream:
            events = [e for e in sse(resp.text) if isinstance(e, dict)]
            text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
            work_json = next(e["wwwserve_work"] for e in events if "wwwserve_work" in e)
        else:
            text, work_json = resp.json()["choices"][0]["text"], resp.json()["wwwserve_work"]
        check_work(WorkAttestation.from_json(work_json), origin=a, executor=b, request_id=payload["request_id"],
                   kind="completion", request=request, text=text, inspect=inspect or b"\x00" * 32)


async def test_the_user_is_served_by_the_first_executor_alone_and_duels_open_only_when_drawn(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    backends = [FakeBackend([MODEL], words=w) for w in (3, 9)]
    executors = [net.add(name, backends=[backend], policy=EXECUTOR) for name, backend in zip("bc", backends,
                                                                                               strict=True)]
    async with net.client("a") as client:
        for inspect in (False, True):
            duels = RecordingDuels(a, inspect=inspect)
            for i in range(4):
                before = sum(backend.requests_seen for backend in backends)
                resp = await client.post("/v1/chat/completions", json={**CHAT, "user": f"u{i}"})
                assert resp.status_code == 200, resp.text
                assert sum(backend.requests_seen for backend in backends) == before + 1  # one executor, no race
            assert duels.draws == 4  # one blind draw per delegated request
            if not inspect:
                assert duels.opened == []
                continue
            assert len(duels.opened) == 4
            served = {w.executor for _, w, _ in duels.opened}
            assert served <= {e.address for e in executors}
            assert len({inspection.salt for inspection, _, _ in duels.opened}) == 4
    await a.app.state.dispatcher.fees.flush()
    assert sum(a.ledger.promised.values()) == 8000  # every answer paid, each to its one executor


def _tampered(kind: str) -> tuple[Callable[[WorkAttestation], WorkAttestation] | None, bool]:
    """(a rewrite of the executor's work, whether it signs with a stranger's key) for each lie."""
    other = Account.from_key(b"\x77" * 32).address
    lies: dict[str, Callable[[WorkAttestation], WorkAttestation]] = {
        # An executor that ran the request with another max_tokens than the origin sent attests another request.
        "request_hash": lambda w: dataclasses.replace(w, request_hash=request_hash("chat", {**CHAT, "max_tokens": 1})),
        "answer_hash": lambda w: dataclasses.replace(w, answer_hash=answer_hash("something else")),
        "origin": lambda w: dataclasses.replace(w, origin=other),
        "stale": lambda w: dataclasses.replace(w, issued_at=w.issued_at - 3600),
        "inspect": lambda w: dataclasses.replace(w, inspect=b"\x00" * 32),
    }
    if kind == "forged":
        return None, True
    return lies.get(kind), False


LIES = ["request_hash", "answer_hash", "origin", "stale", "inspect", "forged", "missing"]


@pytest.mark.parametrize("lie", LIES)
async def test_the_origin_refuses_wrong_or_missing_work_bans_the_peer_and_redispatches(net: Net, lie: str) -> None:
    a = net.add("a", policy=DISPATCHER)
    liar = net.add("b", policy=EXECUTOR, stake_wei=100 * 10**18)  # nearly always the first candidate
    honest = net.add("c", policy=EXECUTOR)
    liar.ledger.tamper, forged = _tampered(lie)
    if forged:
        liar.ledger.forge_with = Account.from_key(b"\x66" * 32)
    if lie == "missing":
        net.router.rewrite["b"] = lambda body: {k: v for k, v in body.items() if k != "wwwserve_work"}
    duels = RecordingDuels(a, inspect=True)
    async with net.client("a") as client:
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", json=CHAT)
            assert resp.status_code == 200, resp.text
            assert SignedResult.from_json(resp.json()["wwwserve"]).executor == honest.address
        metrics = (await client.get("/metrics")).text
    assert a.comm.bans.is_banned(liar.address)
    assert 'wwwserve_delegations_total{outcome="work_invalid"} 1' in metrics  # then banned: never asked again
    assert [w.executor for _, w, _ in duels.opened] == [honest.address] * 3  # only checked work is dueled
    await a.app.state.dispatcher.fees.flush()
    assert a.ledger.promised == {honest.address: 3000}  # the liar is not paid


async def test_a_streamed_answer_with_bad_work_reaches_the_user_but_is_never_dueled(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    liar = net.add("b", policy=EXECUTOR)
    liar.ledger.tamper = lambda w: dataclasses.replace(w, answer_hash=answer_hash("not what was sent"))
    duels = RecordingDuels(a, inspect=True)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        metrics = (await client.get("/metrics")).text
    events = sse(resp.text)
    assert events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
    final = next(e for e in events[:-1] if e.get("wwwserve"))
    assert SignedResult.from_json(final["wwwserve"]).executor == liar.address  # the user keeps the text
    assert duels.opened == []  # but no duel can be opened over it
    assert 'wwwserve_duels_total{event="unduelable"} 1' in metrics
    assert a.comm.bans.is_banned(liar.address)
    await a.app.state.dispatcher.fees.flush()
    assert a.ledger.promised == {}


async def test_a_node_without_an_unlocked_wallet_takes_no_delegations(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    locked_backend = FakeBackend([MODEL])
    locked = net.add("b", backends=[locked_backend], policy=EXECUTOR, stake_wei=100 * 10**18, wallet=False)
    c = net.add("c", policy=EXECUTOR)
    probe = json.dumps({"request_id": "r", "model": MODEL, "route": [a.address]}).encode()
    body = json.dumps({"request_id": "r", "kind": "chat", "request": CHAT, "route": [a.address]}).encode()
    async with net.client("b") as client:
        resp = await client.post(PATH_PROBE, content=probe,
                                  headers=seal(a.key, a.address, locked.address, probe, CHAIN_ID, path=PATH_PROBE))
        assert resp.json() == {"accept": False}
        resp = await client.post(PATH_DELEGATE, content=body,
                                 headers=seal(a.key, a.address, locked.address, body, CHAIN_ID, path=PATH_DELEGATE))
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "probe_declined"
        assert "wallet" in resp.json()["error"]["message"]
    async with net.client("a") as client:
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", json=CHAT)
            assert SignedResult.from_json(resp.json()["wwwserve"]).executor == c.address
    assert locked_backend.requests_seen == 0
    assert not a.comm.bans.is_banned(locked.address)  # declining is not a fault


async def test_a_relaying_hop_passes_the_executors_work_on_unchanged(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy_obj=ForwardingPolicy(), stake_wei=1000 * 10**18)
    c = net.add("c", policy=EXECUTOR)
    duels = RecordingDuels(a, inspect=True)
    request_ids = []
    async with net.client("a") as client:
        for stream in (False, True):
            resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
            assert resp.status_code == 200, resp.text
            request_ids.append(sse(resp.text)[0]["id"] if stream else resp.json()["id"])
    assert len(duels.opened) == 2
    for request_id, (inspection, work, text) in zip(request_ids, duels.opened, strict=True):
        check_work(work, origin=a, executor=c, request_id=request_id, kind="chat", request=CHAT, text=text,
                   inspect=inspection.commitment)
    assert b.ledger.signed == []  # the relay signed no work of its own


async def test_an_executor_keeps_the_request_and_its_answer_for_a_duel_over_its_work(
    net: Net, tmp_path: Path
) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    origin_duels = RecordingDuels(a, inspect=True)
    executor_duels = RecordingDuels(b, inspect=False, tmp=tmp_path)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 7, "temperature": 0.3})
    text = resp.json()["choices"][0]["message"]["content"]
    [(_, work, _)] = origin_duels.opened
    await executor_duels.manager.flush_evidence()
    assert executor_duels.store is not None
    kept = executor_duels.store.get(duel_id_of(a.address, work.request_id))
    assert kept is not None and kept.role == "a" and kept.answer == text and kept.work == work
    assert kept.request == request_bytes("chat", {**CHAT, "max_tokens": 7, "temperature": 0.3})
    # Work without an inspection commitment can never be dueled: nothing is kept for it.
    body = json.dumps({"request_id": "plain", "kind": "chat", "request": CHAT, "route": [a.address]}).encode()
    async with net.client("b") as client:
        resp = await client.post(PATH_DELEGATE, content=body,
                                 headers=seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE))
    assert resp.status_code == 200
    await executor_duels.manager.flush_evidence()
    assert executor_duels.store.duel_ids() == [duel_id_of(a.address, work.request_id)]


async def test_the_evidence_endpoint_serves_seat_holders_and_the_request_alone_to_the_challenger(
    net: Net, tmp_path: Path
) -> None:
    from wwwserve.judge.evidence import EvidencePieces
    from wwwserve.judge.store import StoredEvidence
    from wwwserve.ledger.records import DuelRound, DuelState, DuelStatus

    origin, executor, challenger = net.add("a"), net.add("b"), net.add("c")
    judge, stranger = net.add("j"), net.add("s")
    state = DuelState(duel_id=5, origin=origin.address, a=executor.address, b=challenger.address,
                      status=DuelStatus.JUDGING, seed_block=64, deadline=100, request_hash=request_hash("chat", CHAT),
                      answer_a_hash=answer_hash("four"), answer_b_hash=answer_hash("five"),
                      rounds=(DuelRound(1, (judge.address,) * 3, (0, 0, 0), 100, 110),))

    class Chain:
        def duel(self, duel_id: int) -> DuelState | None:
            return state if duel_id == 5 else None

        duel_onchain = duel

    duels = RecordingDuels(executor, inspect=False, tmp=tmp_path, chain=Chain())
    assert duels.store is not None
    duels.store.put(StoredEvidence(5, "a", request_bytes("chat", CHAT), "four"))

    async def ask(asker: Node, duel_id: int = 5) -> httpx.Response:
        body = json.dumps({"duel_id": duel_id}).encode()
        headers = seal(asker.key, asker.address, executor.address, body, CHAIN_ID, path=PATH_EVIDENCE)
        async with net.client("b") as client:
            return await client.post(PATH_EVIDENCE, content=body, headers=headers)

    served = await ask(judge)
    assert served.status_code == 200, served.text
    assert EvidencePieces.from_json(served.json()) == EvidencePieces(5, request_bytes("chat", CHAT), "four", None)
    to_challenger = await ask(challenger)
    assert EvidencePieces.from_json(to_challenger.json()) == EvidencePieces(5, request_bytes("chat", CHAT))
    for refused, status in ((await ask(stranger), 403), (await ask(origin), 403), (await ask(judge, 6), 404)):
        assert refused.status_code == status and "four" not in refused.text and "error" in refused.json()
    async with net.client("b") as client:
        unsigned = await client.post(PATH_EVIDENCE, json={"duel_id": 5})
    assert unsigned.status_code in (400, 401)


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
    from wwwserve.node.backends.base import GenerationRequest
    from wwwserve.node.errors import RequestInFlightError

    backend = FakeBackend([MODEL], latency_s=0.3)
    req = GenerationRequest(request_id="same", model=MODEL, messages=CHAT["messages"])

    async def both() -> list[Any]:
        return await asyncio.gather(backend.generate(req), backend.generate(req), return_exceptions=True)

    results = asyncio.run(both())
    assert sum(isinstance(r, RequestInFlightError) for r in results) == 1
    error = next(r for r in results if isinstance(r, RequestInFlightError))
    assert error.http_status == 409 and error.envelope()["error"]["code"] == "request_in_flight"


@pytest.mark.parametrize("stream", [False, True])
async def test_requests_that_are_at_fault_never_get_a_healthy_peer_banned(net: Net, stream: bool) -> None:
    """Issue 13, finding 5: 78 poison prompts got 34 healthy peers banned. Bodies no backend can take (a lone
    surrogate, 1e400, NaN, 100 levels of nesting) are a 400 at the origin and never delegated; a request
    the executor's own backend refuses (over its context) is relayed as that 400, and the executor is not
    banned: it did what an honest node does."""
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", backends=[FakeBackend([MODEL], max_context_tokens=8)], policy=EXECUTOR)
    c = net.add("c", backends=[FakeBackend([MODEL], max_context_tokens=8)], policy=EXECUTOR)
    flag = b"true" if stream else b"false"
    poison = [
        b'{"model": "fake-model", "stream": %s, "messages": [{"role": "user", "content": "\\ud800"}]}' % flag,
        b'{"model": "fake-model", "stream": %s, "max_tokens": 1e400, "messages": []}' % flag,
        b'{"model": "fake-model", "stream": %s, "temperature": NaN, "messages": []}' % flag,
        b'{"model": "fake-model", "stream": %s, "messages": ' % flag + b"[" * 100 + b"]" * 100 + b"}",
    ]
    too_long = {**CHAT, "stream": stream, "messages": [{"role": "user", "content": "word " * 50}]}
    async with net.client("a") as client:
        for body in poison:
            resp = await client.post("/v1/chat/completions", content=body)
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["code"] == "invalid_json"
        for _ in range(4):
            resp = await client.post("/v1/chat/completions", json=too_long)
            assert resp.status_code == 400, resp.text
            assert resp.json()["error"]["type"] == "invalid_request_error"
        assert a.comm.bans.banned() == {}
        ok = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert ok.status_code == 200, ok.text
    assert a.comm.bans.banned() == {}
    final = next(e for e in sse(ok.text) if isinstance(e, dict) and e.get("wwwserve")) if stream else ok.json()
    assert SignedResult.from_json(final["wwwserve"]).executor in (b.address, c.address)  # delegated, as before


class StallingBackend(FakeBackend):
    """Streams `words_before` words, then says nothing more (a frozen engine or a SIGSTOPped node); a whole
    answer never comes."""

    def __init__(self, words_before: int) -> None:
        super().__init__([MODEL])
        self.words_before = words_before

    async def generate(self, req: Any) -> Any:
        self.requests_seen += 1
        await asyncio.Event().wait()  # never set: silent until cancelled

    async def stream(self, req: Any) -> AsyncIterator[Any]:
        sent = 0
        async for delta in super().stream(req):
            if sent >= self.words_before:
                await asyncio.Event().wait()  # never set: silent until cancelled
            sent += 1
            yield delta


async def test_a_peer_silent_before_its_first_output_is_replaced_after_t1(net: Net) -> None:
    """Issue 13, finding 6: a frozen peer held delegated requests up to delegate_timeout_s (600 s). With T1
    (`peers.first_output_timeout_s`), a delegated stream with no output is abandoned, its peer banned and
    the request re-dispatched: the user gets the other executor's answer."""
    a = net.add("a", policy=DISPATCHER)
    frozen = net.add("b", backends=[StallingBackend(words_before=0)], policy=EXECUTOR, stake_wei=10**24)
    c = net.add("c", policy=EXECUTOR)
    a.comm.first_output_timeout_s = 0.5
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status_code == 200, resp.text
    final = next(e for e in sse(resp.text) if isinstance(e, dict) and e.get("wwwserve"))
    assert SignedResult.from_json(final["wwwserve"]).executor == c.address
    # b was drawn first (10^6 x c's stake: c goes first once in a million) and abandoned
    assert frozen.address.lower() in a.comm.bans.banned()


@pytest.mark.component  # real sockets
async def test_a_stream_silent_after_its_first_output_ends_after_t2(live_net: Net) -> None:
    """T2 (`peers.stream_idle_timeout_s`): once text reached the user it cannot be re-dispatched, but a
    silent executor no longer holds the user: the stream ends with an error event and the peer is banned.
    Real sockets (httpx's ASGI transport buffers whole responses)."""
    net = live_net
    a = net.add("a", policy=DISPATCHER)
    frozen = net.add("b", backends=[StallingBackend(words_before=2)], policy=EXECUTOR)
    a.comm.stream_idle_timeout_s = 0.5
    await net.serve()
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    events = sse(resp.text)
    assert events[-1] == "[DONE]" and "error" in events[-2], events[-3:]
    texts = [e["choices"][0]["delta"].get("content") for e in events if isinstance(e, dict) and e.get("choices")]
    assert any(texts)  # the first words had reached the user
    assert not any(isinstance(e, dict) and e.get("wwwserve") for e in events)
    assert frozen.address.lower() in a.comm.bans.banned()
    # The peer billed the delegation when it took it; an abandoned stream is never paid, so it takes the fee
    # back (else an honest origin would creep to the credit limit one abandoned stream at a time).
    for _ in range(100):
        if frozen.app.state.billing.billed_wei(a.address) == 0:
            break
        await asyncio.sleep(0.02)
    assert frozen.app.state.billing.billed_wei(a.address) == 0


async def test_a_whole_answer_from_a_peer_silent_before_its_first_output_is_replaced_after_t1(net: Net) -> None:
    """Issue 13, finding 6, for whole answers: a non-streamed delegation was bounded only by
    delegate_timeout_s (600 s). A peer's whole answer now comes as a stream that the origin collects, so T1
    holds for it too: no output within `peers.first_output_timeout_s`, the peer is banned and the request
    re-dispatched; the user, who has seen nothing, gets the other executor's answer."""
    a = net.add("a", policy=DISPATCHER)
    frozen = net.add("b", backends=[StallingBackend(words_before=0)], policy=EXECUTOR, stake_wei=10**24)
    c = net.add("c", policy=EXECUTOR)
    a.comm.first_output_timeout_s = 0.5
    async with net.client("a") as client, asyncio.timeout(10):  # before: held until delegate_timeout_s (600 s)
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    assert SignedResult.from_json(resp.json()["wwwserve"]).executor == c.address
    # b was drawn first (10^6 x c's stake: c goes first once in a million), abandoned at T1
    assert frozen.address.lower() in a.comm.bans.banned()


@pytest.mark.component  # real sockets
async def test_a_whole_answer_from_a_peer_that_falls_silent_is_replaced_after_t2(live_net: Net) -> None:
    """T2 for whole answers: a peer that sent some output and then nothing for `peers.stream_idle_timeout_s`
    is banned, and since nothing reached the user the request is re-dispatched (a stream could only end
    with an error event). Real sockets (httpx's ASGI transport buffers whole responses)."""
    net = live_net
    a = net.add("a", policy=DISPATCHER)
    frozen = net.add("b", backends=[StallingBackend(words_before=2)], policy=EXECUTOR, stake_wei=10**24)
    c = net.add("c", policy=EXECUTOR)
    a.comm.stream_idle_timeout_s = 0.5
    await net.serve()
    async with net.client("a") as client, asyncio.timeout(10):  # before: held until delegate_timeout_s (600 s)
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert SignedResult.from_json(body["wwwserve"]).executor == c.address
    assert body["choices"][0]["message"]["content"] == "three two one"  # c's whole answer, nothing of b's
    assert frozen.address.lower() in a.comm.bans.banned()
    for _ in range(100):  # b takes back the fee of the answer it never finished
        if frozen.app.state.billing.billed_wei(a.address) == 0:
            break
        await asyncio.sleep(0.02)
    assert frozen.app.state.billing.billed_wei(a.address) == 0


async def test_a_freeloading_origin_gets_nothing_past_its_credit_limit(net: Net) -> None:
    """Issue 13, finding 2: any registered node got answers through /peer/delegate and never paid (20 of 20,
    0 fees). Now an executor bills each delegation and refuses (402, no ban) an origin that owes more than
    the credit limit beyond its vouchers, has no stake, or cannot fund what it owes; a voucher reopens it."""
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR, credit_limit_fees=3)
    broke = net.add("poor", policy=DISPATCHER, stake_wei=0)

    def delegate(sender: Node, n: int) -> bytes:
        body = json.dumps({"request_id": f"free-{sender.name}-{n}", "kind": "chat", "request": CHAT,
                           "route": [sender.address]}).encode()
        return body

    async def post(sender: Node, n: int) -> httpx.Response:
        body = delegate(sender, n)
        async with net.client("b") as client:
            return await client.post(PATH_DELEGATE, content=body, headers=seal(
                sender.key, sender.address, b.address, body, CHAIN_ID, path=PATH_DELEGATE))

    answered = [(await post(a, n)).status_code for n in range(6)]
    assert answered == [200, 200, 200, 402, 402, 402]  # the freeloader's 4th request and on: nothing
    refused = await post(a, 6)
    assert refused.json()["error"]["code"] == "payment_required" and "voucher" in refused.json()["error"]["message"]
    b.ledger.vouchered[a.address] = 3 * 1000  # it paid for the three: the next ones are served again
    assert (await post(a, 7)).status_code == 200
    # no stake: nothing at all; no funds for what it would owe: nothing either
    assert (await post(broke, 0)).status_code == 402
    b.ledger.funds[a.address] = 3 * 1000 + 500
    assert (await post(a, 8)).status_code == 402
    assert "does not cover" in (await post(a, 9)).json()["error"]["message"]
    # an origin refused this way does not ban the executor: it tries another peer or runs the request itself
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status_code == 200
    assert a.comm.bans.banned() == {}


async def test_an_origin_owing_one_peer_many_fees_pays_at_once(net: Net) -> None:
    """An honest busy origin stays far below an executor's credit limit: 16 fees owed to one peer send a
    voucher at once, not at the next interval (here a minute, the longest allowed)."""
    from wwwserve.node.managers.fees import FLUSH_AT_FEES

    a = net.add("a", policy=DISPATCHER, peers={"fee_flush_interval_s": 60.0})
    b = net.add("b", policy=EXECUTOR)
    assert a.app.state.dispatcher.fees.flush_interval_s == 60.0  # the setting reaches the fee book
    async with net.client("a") as client:
        for _ in range(FLUSH_AT_FEES):
            assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    dispatcher = a.app.state.dispatcher
    assert dispatcher.fees._urgent is not None
    await dispatcher.fees._urgent
    assert a.ledger.promised == {b.address: FLUSH_AT_FEES * 1000}
    assert dispatcher.fees.pending_wei() == 0


async def test_the_peer_api_refuses_a_flood_before_checking_signatures(net: Net) -> None:
    """Cheap checks first: an unregistered sender is refused on a lookup, a registered one over its rate gets
    429 (the origin treats it as busy: no ban), and neither costs a signature check."""
    import wwwserve.node.envelope as envelope

    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    b.app.state.peer_limiter.rate_per_s, b.app.state.peer_limiter.burst = 1.0, 5.0
    verified: list[int] = []
    real = b.comm.verifier.verify

    def counting(*args: Any, **kwargs: Any) -> Any:
        verified.append(1)
        return real(*args, **kwargs)

    b.comm.verifier.verify = counting  # type: ignore[method-assign]
    body = json.dumps({"model": MODEL, "route": [a.address]}).encode()
    async with net.client("b") as client:
        stranger = await client.post(PATH_PROBE, content=body, headers={envelope.HEADER_SENDER: "0x" + "99" * 20})
        assert stranger.status_code == 401 and verified == []
        statuses = []
        for _ in range(8):
            headers = seal(a.key, a.address, b.address, body, CHAIN_ID, path=PATH_PROBE)
            statuses.append((await client.post(PATH_PROBE, content=body, headers=headers)).status_code)
    assert [status == 429 for status in statuses] == [False] * 5 + [True] * 3
    assert len(verified) == 5  # the refused ones were never verified


# ---- requests queued on a busy node are re-offered to peers (issue 13) ---------------------------------

# Never runs a request at once, offers each one, queues it here when no peer takes it; offers it again
# every 0.1 s while it waits.
BUSY_ORIGIN = {"target_token_usage": -1.0, "offload_frequency": 1.0, "queue_frequency": 1.0,
               "accept_frequency": 0.0, "reoffer_interval_s": 0.1}


def busy_engine() -> FakeBackend:
    """One request at a time, each about 4 s long (8 words at 2 words a second)."""
    return FakeBackend([MODEL], capacity=1, tokens_per_s=2.0, words=8)


async def occupy(backend: FakeBackend) -> asyncio.Task[Any]:
    """Keep `backend`'s only slot busy with a request of its own (another user's, say)."""
    from wwwserve.node.backends.base import GenerationRequest

    task = asyncio.ensure_future(backend.generate(GenerationRequest(model=MODEL, prompt="busy", request_id="busy")))
    for _ in range(100):
        if backend.running == 1:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the engine did not start the occupying request")


def executor_of(resp: httpx.Response, stream: bool) -> str:
    assert resp.status_code == 200, resp.text
    final = next(e for e in sse(resp.text) if isinstance(e, dict) and e.get("wwwserve")) if stream else resp.json()
    return SignedResult.from_json(final["wwwserve"]).executor


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_queued_on_a_busy_node_goes_to_a_peer_that_becomes_idle(net: Net, stream: bool) -> None:
    """The origin's engine is busy for seconds and its only peer is busy too, so the request queues here.
    The peer frees up well before the engine does: the waiting request is offered to it again and it serves
    the user (before, the request waited for the engine: seconds more). It left the engine's queue, the
    engine never ran it, and the peer is paid once."""
    engine = busy_engine()
    a = net.add("a", backends=[engine], policy=BUSY_ORIGIN)
    peer_engine = FakeBackend([MODEL], capacity=1, latency_s=0.6)
    b = net.add("b", backends=[peer_engine], policy=EXECUTOR)
    occupier = await occupy(engine)
    async with net.client("b") as b_user, net.client("a") as client:
        own = asyncio.ensure_future(b_user.post("/v1/chat/completions", json=CHAT))  # b's own user: b is busy
        for _ in range(100):
            if peer_engine.running == 1:
                break
            await asyncio.sleep(0.01)
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert (await own).status_code == 200
    # b served it: had it waited for the origin's engine, the engine would have (and it still runs the occupier)
    assert executor_of(resp, stream) == b.address
    counted = a.app.state.metrics.value
    assert counted("wwwserve_dispatch_decisions_total", action="queue") == 1  # b declined at first
    assert counted("wwwserve_reoffers_total", outcome="taken") == 1
    assert engine.waiting == 0 and engine.running == 1  # it left the queue; only the occupier runs here
    await a.app.state.dispatcher.fees.flush()
    assert a.ledger.promised == {b.address: 1000}  # one fee, for the answer the user got
    occupier.cancel()


async def test_with_re_offers_off_a_queued_request_waits_for_the_engine(net: Net) -> None:
    """`policy.reoffer_interval_s = 0`: the request queued here stays until the engine runs it."""
    engine = busy_engine()
    a = net.add("a", backends=[engine], policy={**BUSY_ORIGIN, "reoffer_interval_s": 0.0})
    peer_engine = FakeBackend([MODEL], capacity=1, latency_s=0.6)
    net.add("b", backends=[peer_engine], policy=EXECUTOR)
    engine.tokens_per_s = 20.0  # a short wait, this time
    occupier = await occupy(engine)
    async with net.client("b") as b_user, net.client("a") as client:
        own = asyncio.ensure_future(b_user.post("/v1/chat/completions", json=CHAT))
        for _ in range(100):
            if peer_engine.running == 1:
                break
            await asyncio.sleep(0.01)
        resp = await client.post("/v1/chat/completions", json=CHAT)
        await own
    assert executor_of(resp, stream=False) == a.address
    await occupier


class DecliningAtFirst(DefaultPolicy):
    """Declines the first `declines` probes, then accepts every one (an executor that frees up)."""

    def __init__(self, declines: int) -> None:
        super().__init__(PolicyConfig(auto_stake=False), random.Random(0))
        self.declines = declines

    def accept_probe(self, snapshot: LoadSnapshot, model: str | None) -> bool:
        self.declines -= 1
        return self.declines < 0


@pytest.mark.parametrize("stream", [False, True])
async def test_a_peer_that_takes_a_queued_request_and_stalls_does_not_hold_it(net: Net, stream: bool) -> None:
    """The attacker of re-offers: a peer that accepts a queued request and then sends nothing. The request
    never left the local queue, so it is served here as soon as the engine reaches it, long before T1
    would have ended the offer; the stalled offer is cancelled (the peer aborts and takes its fee back)."""
    engine = FakeBackend([MODEL], capacity=1, tokens_per_s=10.0, words=8)  # busy for under a second
    a = net.add("a", backends=[engine], policy=BUSY_ORIGIN)
    staller = StallingBackend(words_before=0)
    b = net.add("b", backends=[staller], policy_obj=DecliningAtFirst(declines=1))
    a.comm.first_output_timeout_s = 10.0
    occupier = await occupy(engine)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert executor_of(resp, stream) == a.address
    # the stalled offer was cancelled when the engine answered, not ended by T1 (which bans the peer)
    assert b.address.lower() not in a.comm.bans.banned(), "the stalling peer held the request until T1"
    await occupier
    for _ in range(100):  # the peer's side of the cancelled offer winds down
        if staller.running == 0 and b.app.state.billing.billed_wei(a.address) == 0:
            break
        await asyncio.sleep(0.01)
    assert staller.running == 0 and staller.requests_seen == 1
    assert b.app.state.billing.billed_wei(a.address) == 0
    await a.app.state.dispatcher.fees.flush()
    assert a.ledger.promised == {}


async def test_queued_requests_keep_their_order_while_they_are_offered(net: Net) -> None:
    """Offers that no peer takes cost a queued request nothing: the engine serves the queue in arrival order."""
    engine = FakeBackend([MODEL], capacity=1, tokens_per_s=20.0, words=6)
    a = net.add("a", backends=[engine], policy=BUSY_ORIGIN)
    net.add("b", policy={"accept_frequency": 0.0})  # never takes anything
    occupier = await occupy(engine)
    finished: list[int] = []

    async def ask(n: int) -> None:
        body = {**CHAT, "messages": [{"role": "user", "content": f"request {n}"}]}
        resp = await client.post("/v1/chat/completions", json=body)
        assert executor_of(resp, stream=False) == a.address
        finished.append(n)

    async with net.client("a") as client:
        first = asyncio.ensure_future(ask(1))
        for _ in range(100):
            if engine.waiting == 1:
                break
            await asyncio.sleep(0.01)
        await asyncio.gather(first, ask(2))
    assert finished == [1, 2]
    assert a.app.state.metrics.value("wwwserve_reoffers_total", outcome="none") > 2
    await occupier


async def test_a_queued_request_that_is_cancelled_while_offered_releases_everything(net: Net) -> None:
    """The client leaves while its request waits here and an offer to a stalling peer is under way: the
    request leaves the engine's queue and the peer's work is aborted, nothing left held."""
    from wwwserve.node.managers.request import generation_request

    engine = busy_engine()
    a = net.add("a", backends=[engine], policy=BUSY_ORIGIN)
    staller = StallingBackend(words_before=0)
    b = net.add("b", backends=[staller], policy_obj=DecliningAtFirst(declines=1))
    a.comm.first_output_timeout_s = 30.0
    occupier = await occupy(engine)
    greq, prompt = generation_request("chat", {**CHAT, "stream": True}, "chatcmpl-leaves")
    opening = asyncio.ensure_future(a.app.state.dispatcher.open_stream(greq, "chat", {**CHAT, "stream": True}, prompt))
    for _ in range(300):
        if staller.running == 1 and engine.waiting == 1:
            break
        await asyncio.sleep(0.01)
    assert staller.running == 1 and engine.waiting == 1  # waiting here, and offered to the staller
    opening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await opening
    for _ in range(100):
        if staller.running == 0 and engine.waiting == 0:
            break
        await asyncio.sleep(0.01)
    assert staller.running == 0 and engine.waiting == 0 and engine.running == 1
    assert a.app.state.request_manager.running == 0  # no slot left taken (the occupier bypassed the node)
    assert b.app.state.billing.billed_wei(a.address) == 0
    occupier.cancel()


# ---- the recent-request log (node.recent), which the explorer shows ------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_the_recent_request_log_names_route_executor_and_checked_signature_on_both_nodes(
        net: Net, stream: bool) -> None:
    a = net.add("a", policy=DISPATCHER)
    b = net.add("b", policy=EXECUTOR)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert resp.status_code == 200, resp.text
    origin_log, executor_log = a.app.state.recent, b.app.state.recent
    assert origin_log.count == executor_log.count == 1
    [seen] = origin_log.entries()
    assert seen["route"] == [a.address, b.address] and seen["executor"] == b.address
    assert seen["signature_checked"] is True and seen["source"] == "user"
    assert seen["status"] == 200 and seen["stream"] is stream and seen["error"] is None
    assert seen["model"] == MODEL and seen["kind"] == "chat" and seen["latency_ms"] >= 0
    [ran] = executor_log.entries()
    assert ran["id"] == seen["id"]  # one request, seen on both hops under the origin's id
    assert ran["route"] == [a.address, b.address] and ran["executor"] == b.address
    assert ran["source"] == "peer" and ran["signature_checked"] is False  # it ran there: nothing to check


async def test_the_recent_request_log_records_a_failed_request_with_its_status(net: Net) -> None:
    a = net.add("a", policy=DISPATCHER)
    async with net.client("a") as client:
        resp = await client.post("/v1/chat/completions", json={**CHAT, "model": "nowhere"})
    assert resp.status_code == 404, resp.text
    [failed] = a.app.state.recent.entries()
    assert failed["status"] == 404 and failed["executor"] is None and failed["error"] == "model_not_found"
    assert failed["signature_checked"] is False
