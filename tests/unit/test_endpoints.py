"""node.endpoints and the Communication manager's use of it: no request forgery through registered
endpoints (issue 13, finding 3)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nacl.signing
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from wwwserve.node.endpoints import EndpointError, PeerResolver, address_allowed, check_endpoint, parse_endpoint
from wwwserve.node.http import AiohttpClient, HttpConnectError, HttpResponse
from wwwserve.node.managers.communication import CommunicationManager

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(("text", "base"), [
    ("http://8.8.8.8:8000", "http://8.8.8.8:8000"),
    ("http://8.8.8.8:8000/", "http://8.8.8.8:8000"),
    ("HTTPS://Node.Example.com", "https://node.example.com:443"),
    ("http://node-1.example.org", "http://node-1.example.org:80"),
    ("http://[2001:4860:4860::8888]:9000", "http://[2001:4860:4860::8888]:9000"),
])
def test_an_endpoint_is_a_scheme_a_host_and_a_port(text: str, base: str) -> None:
    assert check_endpoint(text, allow_private=False).base == base


@pytest.mark.parametrize(("text", "why"), [
    ("http://8.8.8.8:8000/admin?x=1", "no path, query or fragment"),
    ("http://8.8.8.8/peer", "no path, query or fragment"),
    ("http://8.8.8.8/#frag", "no path, query or fragment"),
    ("http://user:pw@8.8.8.8", "no user name or password"),
    ("http://user@8.8.8.8", "no user name or password"),
    ("file:///etc/passwd", "scheme must be http or https"),
    ("gopher://8.8.8.8:70", "scheme must be http or https"),
    ("http://8.8.8.8:99999", "not a URL"),
    ("http://8.8.8.8:0", "port 0"),
    ("http://bad_host.example", "not a host name"),
    ("http://-x.example", "not a host name"),
    ("http://", "names no host"),
    (" http://8.8.8.8", "without spaces"),
    ("http://nödé.example", "ASCII"),
    ("", "ASCII URL"),
])
def test_endpoints_with_anything_else_are_refused(text: str, why: str) -> None:
    with pytest.raises(EndpointError, match=why):
        parse_endpoint(text)


@pytest.mark.parametrize(("address", "public", "devnet"), [
    ("8.8.8.8", True, True),
    ("2001:4860:4860::8888", True, True),
    ("127.0.0.1", False, True),
    ("::1", False, True),
    ("::ffff:127.0.0.1", False, True),
    ("10.0.0.5", False, True),
    ("172.18.0.2", False, True),  # a Docker network
    ("192.168.1.10", False, True),
    ("100.64.0.1", False, True),
    ("169.254.169.254", False, False),  # cloud metadata: never
    ("fe80::1", False, False),
    ("0.0.0.0", False, False),
    ("224.0.0.1", False, False),
    ("240.0.0.1", False, False),
])
def test_which_addresses_a_node_connects_to(address: str, public: bool, devnet: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert address_allowed(ip, allow_private=False) is public
    assert address_allowed(ip, allow_private=True) is devnet
    host = f"[{address}]" if ":" in address else address
    if not public:
        with pytest.raises(EndpointError, match=str(ip)):
            check_endpoint(f"http://{host}:80", allow_private=False)


class FixedResolver(AbstractResolver):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
                for a in self.answers[host]]

    async def close(self) -> None:
        return None


async def test_a_name_is_checked_after_it_resolves() -> None:
    """A name that resolves to a private address (or changes to one: DNS rebinding) gets no connection."""
    inner = FixedResolver({"mixed.example": ["10.0.0.1", "8.8.8.8"], "rebound.example": ["169.254.169.254"],
                           "lan.example": ["192.168.0.7"]})
    resolver = PeerResolver(allow_private=False, inner=inner)
    assert [r["host"] for r in await resolver.resolve("mixed.example", 80)] == ["8.8.8.8"]
    with pytest.raises(OSError, match=r"169\.254\.169\.254"):
        await resolver.resolve("rebound.example", 80)
    with pytest.raises(OSError):
        await resolver.resolve("lan.example", 80)
    devnet = PeerResolver(allow_private=True, inner=inner)
    assert [r["host"] for r in await devnet.resolve("lan.example", 80)] == ["192.168.0.7"]
    with pytest.raises(OSError):
        await devnet.resolve("rebound.example", 80)


@pytest.mark.component
async def test_the_peer_client_does_not_connect_to_a_name_for_loopback() -> None:
    """Over a real socket: `localhost` resolves to loopback; the peer client refuses it off a devnet and
    connects on one."""
    app = web.Application()
    hits: list[str] = []

    async def health(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        strict = AiohttpClient(connect_timeout_s=2, resolver=PeerResolver(allow_private=False))
        with pytest.raises(HttpConnectError):
            await strict.request("GET", f"http://localhost:{port}/health")
        await strict.aclose()
        assert hits == []
        devnet = AiohttpClient(connect_timeout_s=2, resolver=PeerResolver(allow_private=True))
        assert (await devnet.request("GET", f"http://localhost:{port}/health")).status == 200
        await devnet.aclose()
        assert hits == ["/health"]
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Record:
    address: str
    endpoint: str
    models: frozenset[str] = frozenset({"m"})
    stake_wei: int = 10**18


class Directory:
    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def peers(self) -> list[Record]:
        return self.records

    def pubkey_of(self, address: str) -> bytes | None:
        return None

    def contact(self, address: str) -> Record | None:
        return next((r for r in self.records if r.address == address), None)


class RecordingClient:
    """An HttpClient that answers 200 to everything and keeps every URL asked for."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      headers: Mapping[str, str] | None = None, timeout_s: float | None = None) -> HttpResponse:
        self.urls.append(url)
        return HttpResponse(200, {}, b'{"status": "ok"}')

    async def open_stream(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        return None


ATTACKS = [
    "http://8.8.4.4:9000/internal/admin?delete=1",  # a path and query of the attacker's choice
    "http://admin:secret@8.8.4.4:9000",
    "http://169.254.169.254",
    "http://127.0.0.1:6379",  # a local Redis, off a devnet
    "http://10.1.2.3:8080",
    "gopher://8.8.4.4:70",
]


@pytest.mark.parametrize("devnet", [False, True])
async def test_refused_endpoints_get_no_request_and_no_delegation(devnet: bool) -> None:
    """Issue 13, finding 3: four nodes sent 15 GETs in 35 s to a path and query the endpoint's owner
    chose. Every peer here registered one of those endpoints but one, which registered a plain public one:
    the liveness round and routing reach that one alone, at its fixed /health path. On a devnet loopback
    and private addresses are reachable; the metadata address, credentials, paths and schemes never are."""
    good = Record("0x" + "11" * 20, "http://8.8.8.8:9000")
    bad = [Record("0x" + f"{i + 2:02x}" * 20, endpoint) for i, endpoint in enumerate(ATTACKS)]
    client = RecordingClient()
    comm = CommunicationManager(my_address="0x" + "ff" * 20, chain_id=1,
                                signing_key=nacl.signing.SigningKey(b"\x01" * 32), directory=Directory([good, *bad]),
                                http=client, allow_private_endpoints=devnet)
    results = await comm.check_liveness()
    reachable = {"http://127.0.0.1:6379", "http://10.1.2.3:8080"} if devnet else set()
    expected = ["http://8.8.8.8:9000/health", *sorted(f"{e}/health" for e in reachable)]
    assert sorted(client.urls) == sorted(expected)
    assert {p.endpoint for p in comm.routable_peers("m")} == {good.endpoint, *reachable}
    assert set(results) == {good.address} | {r.address for r in bad if r.endpoint in reachable}
    assert comm.bans.banned() == {}  # refusing to connect is not the peer failing
    with pytest.raises(HttpConnectError, match="refused"):
        comm._url(bad[0], "/peer/probe")


def test_the_manager_is_built_before_any_event_loop_runs() -> None:
    """`node run` builds its managers before uvicorn starts the loop: the peer resolver must not need one."""
    comm = CommunicationManager(my_address="0x" + "ff" * 20, chain_id=31337,
                                signing_key=nacl.signing.SigningKey(b"\x01" * 32), directory=Directory([]))
    assert comm.allow_private_endpoints is False


class DownClient(RecordingClient):
    """Every peer but `up` fails its health check (a placeholder endpoint nobody serves, a node that is down)."""

    def __init__(self, up: str) -> None:
        super().__init__()
        self.up = up

    async def request(self, method: str, url: str, *, content: bytes | None = None,
                      headers: Mapping[str, str] | None = None, timeout_s: float | None = None) -> HttpResponse:
        self.urls.append(url)
        if not url.startswith(self.up):
            raise HttpConnectError("connection refused")
        return HttpResponse(200, {}, b'{"status": "ok"}')


async def test_models_list_only_nodes_a_request_can_reach() -> None:
    """Issue 15: a node registered with placeholders (an endpoint nobody serves, `qwen3-8b`) was listed by
    every node's /v1/models for as long as the network ran. It drops out at its first failed health check;
    this node's own registration always counts."""
    me = Record("0x" + "ff" * 20, "http://8.8.8.1:9000", frozenset({"smol"}))
    good = Record("0x" + "11" * 20, "http://8.8.8.8:9000", frozenset({"smol"}))
    ghost = Record("0x" + "22" * 20, "http://8.8.8.9:9000", frozenset({"qwen3-8b", "smol"}))
    refused = Record("0x" + "33" * 20, "http://10.0.0.1:9000", frozenset({"other"}))  # private, off a devnet
    comm = CommunicationManager(my_address=me.address, chain_id=1, signing_key=nacl.signing.SigningKey(b"\x01" * 32),
                                directory=Directory([me, good, ghost, refused]), http=DownClient(good.endpoint))
    assert comm.network_models() == {"smol": 3, "qwen3-8b": 1}  # before any health check: not known to be down
    await comm.check_liveness()
    assert comm.network_models() == {"smol": 2}
