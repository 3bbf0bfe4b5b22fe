"""Peers' registered endpoints: what a node agrees to connect to.

An endpoint is whatever its owner wrote on-chain, and every node connects to it (probes, delegation,
evidence, vouchers, and a health check every `peers.discovery_interval_s`), so an unchecked endpoint makes
every node a request forger for its owner (issue 13, finding 3: 15 GETs in 35 s from 4 nodes to a path
and query of the attacker's choice). Here:

- An endpoint is `http(s)://host[:port]` and nothing else: no user or password, no path beyond `/`, no
  query, no fragment (`parse_endpoint`). The node appends its own fixed paths (`/health`, `/peer/...`).
- Its addresses must be public (`address_allowed`): loopback, private, shared, link-local (cloud metadata
  at 169.254.169.254), multicast, unspecified and reserved addresses are refused. Private and loopback ones
  are allowed on a devnet (`peers.allow_private_endpoints`: by default when the chain id is a devnet's),
  where nodes run on one machine or one Docker network; link-local and the rest never are.
- A host name is checked on every connection, after resolution (`PeerResolver`), so a name that resolves
  to a public address when registered and to a private one later (DNS rebinding) still gets nowhere.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from wwwserve.errors import WWWServeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class EndpointError(WWWServeError, ValueError):
    """A registered endpoint this node will not connect to; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """A checked endpoint: `base` is `scheme://host:port` (IPv6 in brackets), with no trailing slash."""

    scheme: str
    host: str
    port: int
    ip: IPAddress | None  # the host, when it is an address rather than a name

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if self.ip is not None and self.ip.version == 6 else self.host
        return f"{self.scheme}://{host}:{self.port}"


def _check_name(host: str) -> None:
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(0 < len(label) <= 63 for label in labels):
        raise EndpointError(f"{host!r} is not a host name")
    for label in labels:
        if label.startswith("-") or label.endswith("-") or not all(c.isalnum() or c == "-" for c in label):
            raise EndpointError(f"{host!r} is not a host name")


@lru_cache(maxsize=4096)
def parse_endpoint(text: str) -> Endpoint:
    """Check the form of an endpoint (see the module doc); `EndpointError` says what is wrong."""
    if not isinstance(text, str) or not text or len(text) > 512 or not text.isascii() or text != text.strip():
        raise EndpointError("an endpoint is an ASCII URL like http://203.0.113.7:8000, without spaces")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise EndpointError(f"{text!r} is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EndpointError(f"{text!r}: the scheme must be http or https")
    if parts.username is not None or parts.password is not None:
        raise EndpointError(f"{text!r}: an endpoint carries no user name or password")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        raise EndpointError(f"{text!r}: an endpoint has no path, query or fragment (the node adds its own paths)")
    host = (parts.hostname or "").lower()
    if not host:
        raise EndpointError(f"{text!r} names no host")
    ip: IPAddress | None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
        _check_name(host)
    if port == 0:
        raise EndpointError(f"{text!r}: port 0")
    return Endpoint(scheme, host, port or (443 if scheme == "https" else 80), ip)


def address_allowed(ip: IPAddress, *, allow_private: bool) -> bool:
    """Whether a node may connect to `ip`: public addresses always; loopback and private ones (RFC 1918,
    fc00::/7, 100.64.0.0/10) only with `allow_private`; link-local, multicast, unspecified and reserved
    ones never."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return False
    if ip.is_loopback:  # before `is_reserved`: ::1 is both
        return allow_private
    if ip.is_reserved:
        return False
    if ip.is_private or ip in _SHARED:
        return allow_private
    return ip.is_global


_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private" in Python


def check_endpoint(text: str, *, allow_private: bool) -> Endpoint:
    """`parse_endpoint`, and for an address (not a name) `address_allowed`; names are checked when they
    resolve (`PeerResolver`)."""
    endpoint = parse_endpoint(text)
    if endpoint.ip is not None and not address_allowed(endpoint.ip, allow_private=allow_private):
        if address_allowed(endpoint.ip, allow_private=True):
            why = "not public (loopback, private or documentation): allowed on a devnet only " \
                  "(peers.allow_private_endpoints)"
        else:
            why = "link-local, multicast, reserved or unspecified: no node connects to it"
        raise EndpointError(f"{text!r}: {endpoint.ip} is {why}")
    return endpoint


class PeerResolver(AbstractResolver):
    """aiohttp's resolver, keeping only addresses `address_allowed` lets a node connect to: a name whose
    every address is refused fails to connect (`OSError`), as an unreachable peer does."""

    def __init__(self, *, allow_private: bool, inner: AbstractResolver | None = None) -> None:
        self.allow_private = allow_private
        self._inner = inner  # aiohttp's default is made on first use: it needs the running event loop

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        if self._inner is None:
            self._inner = DefaultResolver()
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if address_allowed(ipaddress.ip_address(r["host"]),
                                                      allow_private=self.allow_private)]
        if not kept:
            raise OSError(f"{host} resolves only to addresses a node does not connect to "
                          f"({', '.join(sorted({str(r['host']) for r in results}))})")
        return kept

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()
