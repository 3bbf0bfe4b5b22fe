"""The peer API's vocabulary, shared by the node that calls a peer and the one that answers: the paths,
the message bodies (`ProbeBody`, `DelegateBody`), the errors a call to a peer ends in (`PeerDeclinedError`:
nothing ran, try another; `PeerFailedError`: it failed, ban it), the directory of peers the Ledger
manager keeps (`PeerDirectory`), and the ban list (`BanList`, exponential backoff)."""


from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from wwwserve.errors import WWWServeError

__all__ = ["PATH_DELEGATE", "PATH_HEALTH", "PATH_PROBE", "PATH_VOUCHER", "BanList", "DelegateBody", "DirectoryPeer",
           "PeerDeclinedError", "PeerDirectory", "PeerFailedError", "ProbeBody"]

PATH_PROBE = "/peer/probe"
PATH_DELEGATE = "/peer/delegate"
PATH_VOUCHER = "/peer/voucher"
PATH_HEALTH = "/health"


class PeerDeclinedError(WWWServeError):
    """A peer declined a delegation sent with `accept_check` (as it would have declined the probe)."""


class PeerFailedError(WWWServeError):
    """A peer did not do what it was asked (unreachable, timeout, bad answer, bad signature).

    `started` tells whether the peer had already streamed output when it failed: before that the request
    can be re-dispatched elsewhere, after it the user's stream must end with an error event.
    """

    def __init__(self, address: str, message: str, *, started: bool = False) -> None:
        super().__init__(f"peer {address}: {message}")
        self.address = address
        self.reason = message
        self.started = started


# ---------------------------------------------------------------------------------------------
# wire bodies


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeBody(_Body):
    """Would you run this request now? (acceptance probe, DESIGN §2 step 3)."""

    request_id: str = Field(min_length=1, max_length=256)
    model: str = Field(min_length=1, max_length=256)
    route: list[str] = Field(default_factory=list, max_length=32)


class DelegateBody(_Body):
    """Run this request and stream the answer back; `route` lists the nodes it passed, origin first.

    `inspect` is the origin's inspection commitment (`ledger.work.inspect_commitment`, hex), which the
    executor signs into its work attestation unchanged; a request without one is attested with 32 zero
    bytes (which no salt opens: such work can never be dueled)."""

    request_id: str = Field(min_length=1, max_length=256)
    kind: Literal["chat", "completion"]
    request: dict[str, Any]
    route: list[str] = Field(min_length=1, max_length=32)
    # Run it only if you would accept a probe for it now (else 409 probe_declined): the first candidate's
    # probe and the delegation in one round trip instead of two.
    accept_check: bool = False
    inspect: str | None = Field(default=None, pattern=r"^0x[0-9a-fA-F]{64}$")

    def inspect_bytes(self) -> bytes:
        """The commitment as 32 bytes (zero when the origin sent none)."""
        return bytes.fromhex(self.inspect[2:]) if self.inspect is not None else b"\x00" * 32


# ---------------------------------------------------------------------------------------------
# directory and bans


class DirectoryPeer(Protocol):
    """A registry entry as the Ledger manager keeps it (`node.managers.ledger.PeerRecord` fits)."""

    @property
    def address(self) -> str: ...

    @property
    def endpoint(self) -> str: ...

    @property
    def models(self) -> frozenset[str]: ...

    @property
    def stake_wei(self) -> int: ...


class PeerDirectory(Protocol):
    """The registry view the Communication manager reads (`LedgerManager` fits)."""

    def peers(self) -> Sequence[DirectoryPeer]: ...

    def peer(self, address: str) -> DirectoryPeer | None: ...

    def pubkey_of(self, address: str) -> bytes | None: ...


@dataclass
class _BanRecord:
    failures: int = 0
    until: float = 0.0


class BanList:
    """Exponential-backoff bans: the n-th consecutive failure bans for `initial_s * 2**(n-1)`, capped."""

    def __init__(self, initial_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._clock = clock
        self._records: dict[str, _BanRecord] = {}

    def fail(self, address: str) -> float:
        """Record a failure of `address`; returns the length of the ban it now serves (seconds)."""
        record = self._records.setdefault(address.lower(), _BanRecord())
        record.failures += 1
        # min() before the power: 2**failures must not overflow a float after a very long outage.
        duration = float(min(self.max_s, self.initial_s * 2 ** min(record.failures - 1, 60)))
        record.until = self._clock() + duration
        return duration

    def succeed(self, address: str) -> None:
        """A success clears the peer's record (its next failure bans for `initial_s` again)."""
        self._records.pop(address.lower(), None)

    def is_banned(self, address: str) -> bool:
        """Whether `address` is serving a ban now."""
        record = self._records.get(address.lower())
        return record is not None and record.until > self._clock()

    def failures(self, address: str) -> int:
        """Consecutive failures recorded for `address`."""
        record = self._records.get(address.lower())
        return 0 if record is None else record.failures

    def banned(self) -> dict[str, float]:
        """Address (lower-case) → seconds of ban left, for peers banned now."""
        now = self._clock()
        return {a: r.until - now for a, r in self._records.items() if r.until > now}


# ---------------------------------------------------------------------------------------------
# delegated streams


