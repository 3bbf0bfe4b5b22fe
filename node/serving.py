"""Connection-level limits uvicorn lacks (issue 13, finding 7: slowloris).

uvicorn closes an idle keep-alive connection after a response, but not one that never finishes its
request headers: 20,100 connections that sent nothing (or half a header line) held a node's file
descriptors until it hit the open-file limit. `GuardedHttpToolsProtocol` is uvicorn's httptools protocol
plus two limits, both settings of `[server]`:

- `header_timeout_s`: a connection must complete a request's headers this long after it opened (or after
  the first byte of its next request); otherwise it is closed. Bodies have their own bound
  (`body_timeout_s`, enforced where the app reads them, `node.app`).
- `max_connections_per_client`: open connections from one address beyond this are closed as they arrive.
  Loopback is exempt: on one machine every peer (and `wwwserve up`'s nodes) share 127.0.0.1, and whoever
  can reach loopback is on the machine already.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class ConnectionLimits:
    """The limits, and the open connections per client address (shared by every connection of a server)."""

    def __init__(self, header_timeout_s: float, max_connections_per_client: int, *,
                 exempt_loopback: bool = True) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections_per_client = max_connections_per_client
        self.exempt_loopback = exempt_loopback
        self.open: Counter[str] = Counter()
        self.refused = 0  # connections closed for the per-client cap
        self.timed_out = 0  # connections closed for slow headers

    def admit(self, host: str | None) -> bool:
        """Count a new connection from `host`; False (not counted) when it is over the cap."""
        if host is None:
            return True
        if self.open[host] >= self.max_connections_per_client and not (self.exempt_loopback and _is_loopback(host)):
            self.refused += 1
            return False
        self.open[host] += 1
        return True

    def release(self, host: str | None) -> None:
        if host is not None and self.open[host] > 0:
            self.open[host] -= 1
            if not self.open[host]:
                del self.open[host]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline and a per-client connection cap (`limits`, set
    on the class by `protocol_class`)."""

    limits: ConnectionLimits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host: str | None = self.client[0] if self.client else None
        self._admitted = self.limits.admit(self._host)
        self._header_timer: asyncio.TimerHandle | None = None
        if not self._admitted:
            transport.abort()
            return
        self._start_header_timer()

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.limits.header_timeout_s, self._headers_too_slow)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self.limits.timed_out += 1
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()  # the next request on a kept-alive connection gets the same deadline

    def on_headers_complete(self) -> None:
        self._stop_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        if getattr(self, "_admitted", False):
            self._admitted = False
            self.limits.release(self._host)
        super().connection_lost(exc)


def protocol_class(limits: ConnectionLimits) -> Any:
    """A subclass of `GuardedHttpToolsProtocol` bound to `limits`, for `uvicorn.Config(http=...)`."""
    return type("NodeHttpProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


class PeerRateLimiter:
    """Token buckets for the peer API, one per (claimed sender, client address): `rate_per_s` messages a
    second, bursts of `burst`. Checked before the body is read or a signature verified (cheap checks
    first), so a flood costs the node a dictionary lookup per message, not an ed25519 verification. Keyed
    by the client address too, so spoofing an honest peer's address from elsewhere spends only the
    spoofer's own bucket."""

    def __init__(self, rate_per_s: float, burst: float, *, max_keys: int = 100_000) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}  # key -> (tokens, last refill)

    def take(self, sender: str, client: str, now: float) -> float | None:
        """Spend one token; None if there was one, else the seconds until there will be."""
        key = (sender.lower(), client)
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate_per_s
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._buckets.clear()  # bounded memory under a flood of fresh keys; honest buckets refill at once
        self._buckets[key] = (tokens - 1, now)
        return None
