"""Local TCP ports for processes and servers started on this machine: the one place ports are found.

Two ways, in order of preference:

- `bound_socket()`: a socket already bound to a port the kernel chose. A server that can take a socket
  (uvicorn's `sockets=[sock]`, asyncio's `start_server(sock=...)`) is handed it, so nothing can take the
  port between choosing it and listening on it.
- `free_port()` / `free_port_block(n)`: reserve-then-release, for a process that must bind the port itself
  (anvil, a `wwwserve node run` subprocess, a vLLM server) or for a port that must be written down before
  anything listens on it (an endpoint registered on-chain). A port is picked at random outside the kernel's
  ephemeral range (Linux: 32768-60999), so the source port of an outgoing connection cannot take it between
  the check and the bind; the check binds with SO_REUSEADDR like uvicorn and anvil do, so a port left in
  TIME_WAIT by an earlier run counts as free (it is, for them).
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable

LOOPBACK = "127.0.0.1"
# Below the ephemeral range of Linux (32768-60999) and macOS (49152-65535), above the well-known services.
PORT_RANGE = (20000, 30000)
_TRIES = 200
# Independent of the global `random`, which tests and simulations seed: two processes must not walk the
# same sequence of ports.
_rng = random.SystemRandom()


def bound_socket(host: str = LOOPBACK) -> socket.socket:
    """A TCP socket bound to a port the kernel chose at `host` (not listening yet); the caller owns it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def ports_in_use(ports: Iterable[int], host: str = LOOPBACK) -> list[int]:
    """The ports of `ports` that something listens on (or that cannot be bound) at `host`."""
    taken = []
    for port in ports:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                taken.append(port)
    return taken


def free_port_block(count: int, host: str = LOOPBACK) -> int:
    """A base port with `count` consecutive ports free at `host` right now (nodes listen on base, base + 1, ...)."""
    low, high = PORT_RANGE
    for _ in range(_TRIES):
        base = _rng.randrange(low, high - count)
        if not ports_in_use(range(base, base + count), host):
            return base
    raise OSError(f"no block of {count} free ports found in {low}-{high} on {host}")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on at `host` right now, for a process that binds it itself."""
    return free_port_block(1, host)
