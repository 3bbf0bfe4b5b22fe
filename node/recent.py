"""The node's log of recent requests: the last few hundred generation requests it answered, in memory.

The explorer's "recent requests" view reads it (`entries`, newest first) and its live updates watch `count`
(how many were ever logged). One record per request this node answered, for a user or a peer: the route
(origin first), the executor, the latency to the last byte, the HTTP status, and whether the answer came from
a peer whose signature this node checked. Nothing of the prompt or the answer is kept: the log is for watching
the network, and anyone who can reach the explorer can read it.

Written on the event loop, read from the explorer's worker threads: a lock guards the ring buffer.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DEFAULT_CAPACITY", "RecentRequests", "RequestRecord"]

DEFAULT_CAPACITY = 500
"""Records kept; older ones are dropped first."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One answered (or failed) generation request, as the explorer shows it."""

    id: str
    time: float  # unix seconds, when the request arrived
    model: str
    kind: Literal["chat", "completion"]
    source: Literal["user", "peer"]
    route: tuple[str, ...]  # the nodes it passed, origin first, executor last (when known)
    executor: str | None  # None when no node answered
    latency_ms: int  # arrival to the last byte (a stream's end)
    status: int  # the HTTP status the client got (a stream that failed midway: 502; abandoned: 499)
    stream: bool
    signature_checked: bool  # a peer executed it and this node verified the executor's signature
    error: str | None = None  # the error code when it failed

    def to_json(self) -> dict[str, Any]:
        """The record as the explorer's `api/requests` lists it."""
        return {"id": self.id, "time": self.time, "model": self.model, "kind": self.kind, "source": self.source,
                "route": list(self.route), "executor": self.executor, "latency_ms": self.latency_ms,
                "status": self.status, "stream": self.stream, "signature_checked": self.signature_checked,
                "error": self.error}


class RecentRequests:
    """A bounded, thread-safe log of `RequestRecord`s (the newest `capacity`)."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._records: deque[RequestRecord] = deque(maxlen=capacity)
        self._count = 0
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many requests were ever logged (grows by one per request; the explorer watches it)."""
        return self._count

    def add(self, record: RequestRecord) -> None:
        """Log one request."""
        with self._lock:
            self._records.append(record)
            self._count += 1

    def record(self, *, request_id: str, started_s: float, model: str, kind: Literal["chat", "completion"],
               source: Literal["user", "peer"], route: Sequence[str], executor: str | None, status: int,
               stream: bool, signature_checked: bool, error: str | None = None) -> None:
        """Log a request that arrived at `started_s` (`time.time()`) and ends now."""
        latency_ms = max(0, round((time.time() - started_s) * 1000))
        self.add(RequestRecord(request_id, started_s, model, kind, source, tuple(route), executor, latency_ms,
                               status, stream, signature_checked, error))

    def entries(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` records, newest first, as JSON objects."""
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        with self._lock:
            newest = list(self._records)[::-1][:limit]
        return [r.to_json() for r in newest]
