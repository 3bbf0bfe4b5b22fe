"""Proof-of-stake routing: pick delegation candidates in proportion to stake, reproducibly.

Pure functions, no I/O: the live node and the discrete-event simulator call this same code.

A peer's chance of being drawn first is `s_i / sum(s_j for j in E)` where `E` holds the peers with stake
> 0 that are not excluded (the route, so no cycles) and serve the requested model (DESIGN §3). `k`
candidates are drawn *without* replacement with Efraimidis–Spirakis keys `-ln(U_i) / s_i`, smallest
first. Unlike the reference code, `U_i` is not fresh randomness: it is hashed from a public seed
(request id, a recent block hash, hop) and the peer's address, so anyone holding the same view of the
stakes can recompute a selection and audit it (`audit_selection`).

Precision. Stakes are int wei up to 2**256. Keys are compared in log space,
`ln(-ln U_i) - ln(s_i)`, where `math.log` takes the exact int (no `float(stake)` overflow or early
rounding); its absolute error is ~1e-13 for every stake a uint256 can hold. Keys closer than
`_NEAR_TIE` (1e-9, four orders of magnitude above that error) are re-ranked with `decimal` at 60 digits,
whose `ln` is correctly rounded on every platform, so two machines with different libm builds still
agree on the list. Exact ties (same `U_i` and same stake: a hash collision) fall back to the address.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal

from wwwserve.errors import WWWServeError

__all__ = [
    "Peer",
    "RoutingInputError",
    "StakeIndex",
    "audit_delegation",
    "audit_selection",
    "candidates_for_delegation",
    "pos_sample",
    "routable_stake_wei",
    "selection_seed",
    "uniform_for",
]

# Domain tags keep these hashes from colliding with any other sha256 use in the protocol.
_SEED_TAG = b"wwwserve/pos-seed/v1"
_UNIFORM_TAG = b"wwwserve/pos-uniform/v1"

# U_i = (2x + 1) / 2**53 with x a 52-bit integer: exactly representable, strictly inside (0, 1).
_UNIFORM_BITS = 52
_UNIFORM_DENOMINATOR = 1 << (_UNIFORM_BITS + 1)

_NEAR_TIE = 1e-9
_DECIMAL = Context(prec=60)


class RoutingInputError(WWWServeError, ValueError):
    """A routing function got an argument it cannot use (negative stake, k < 0, bad seed...)."""


@dataclass(frozen=True)
class Peer:
    """A routable node as the delegating node sees it (from the on-chain registry and stakes)."""

    address: str  # the node id: the operator's wallet address (compared case-insensitively)
    stake_wei: int  # routable (active) stake
    models: frozenset[str]  # model ids the node serves
    endpoint: str  # base URL of its peer API

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address:
            raise RoutingInputError("Peer.address must be a non-empty string")
        if not isinstance(self.stake_wei, int) or isinstance(self.stake_wei, bool) or self.stake_wei < 0:
            raise RoutingInputError(f"Peer.stake_wei must be a non-negative int (wei), got {self.stake_wei!r}")
        if not isinstance(self.models, frozenset):
            # Accept any iterable of names for convenience; the stored field stays a frozenset.
            object.__setattr__(self, "models", frozenset(self.models))


def routable_stake_wei(active_stake_wei: int, min_stake_wei: int) -> int:
    """The stake routing weighs a node by: its active stake from MIN_STAKE up (as the contract's sortition
    tree), else 0. A node slashed below the minimum is neither delegated to nor drawn as a judge."""
    return active_stake_wei if active_stake_wei >= min_stake_wei else 0


def _norm(address: str) -> str:
    # Checksummed and lower-case spellings of one address are the same node.
    return address.lower()


def _field(data: bytes) -> bytes:
    # Length-prefixing makes the encoding injective: ("ab", "c") and ("a", "bc") hash differently.
    return len(data).to_bytes(8, "big") + data


def selection_seed(request_id: str, block_hash: bytes, hop: int) -> bytes:
    """The public seed of one PoS selection: sha256(tag, request id, block hash, hop), 32 bytes.

    `block_hash` should be a recent block's hash, fixed before the request exists, so the delegating
    node cannot grind seeds; `hop` is the number of delegations before this one (0 at the origin), so
    every hop of a multi-hop route draws afresh.
    """
    if not isinstance(request_id, str) or not request_id:
        raise RoutingInputError("request_id must be a non-empty string")
    if not isinstance(block_hash, bytes | bytearray):
        raise RoutingInputError(f"block_hash must be bytes, got {type(block_hash).__name__}")
    if not isinstance(hop, int) or isinstance(hop, bool) or hop < 0 or hop >= 2**64:
        raise RoutingInputError(f"hop must be an int in [0, 2**64), got {hop!r}")
    payload = _SEED_TAG + _field(request_id.encode()) + _field(bytes(block_hash)) + hop.to_bytes(8, "big")
    return hashlib.sha256(payload).digest()


def _uniform_numerator(seed: bytes, address: str) -> int:
    digest = hashlib.sha256(_UNIFORM_TAG + _field(seed) + _field(_norm(address).encode())).digest()
    x = int.from_bytes(digest[:8], "big") >> (64 - _UNIFORM_BITS)
    return 2 * x + 1


def uniform_for(seed: bytes, address: str) -> float:
    """The peer's U_i in (0, 1) for this seed: 52 random bits, never 0 and never 1."""
    return _uniform_numerator(seed, address) / _UNIFORM_DENOMINATOR


def _log_key(u: float, stake_wei: int) -> float:
    # ln(-ln(U) / s) = ln(-ln U) - ln s; math.log on the int avoids float(stake) overflow and rounding.
    return math.log(-math.log(u)) - math.log(stake_wei)


def _exact_key(numerator: int, stake_wei: int) -> Decimal:
    u = _DECIMAL.divide(Decimal(numerator), Decimal(_UNIFORM_DENOMINATOR))
    return _DECIMAL.divide(_DECIMAL.minus(_DECIMAL.ln(u)), Decimal(stake_wei))


def _check_seed(seed: bytes) -> None:
    if not isinstance(seed, bytes | bytearray) or not seed:
        raise RoutingInputError("seed must be non-empty bytes (see selection_seed)")


def _check_k(k: int, name: str = "k") -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise RoutingInputError(f"{name} must be a non-negative int, got {k!r}")


def pos_sample(
    peers: Iterable[Peer],
    k: int,
    seed: bytes,
    exclude: Collection[str] = frozenset(),
    model: str | None = None,
) -> list[Peer]:
    """Draw up to `k` eligible peers in proportion to stake, without replacement, in draw order.

    Eligible: stake > 0, address not in `exclude` (case-insensitive), and serving `model` when given.
    Fewer than `k` eligible peers → all of them, still in key order. The same (peers, seed) always gives
    the same list, whatever order `peers` comes in.
    """
    _check_k(k)
    _check_seed(seed)
    if isinstance(exclude, str):
        raise RoutingInputError("exclude must be a collection of addresses, not one string")
    seed = bytes(seed)
    excluded = {_norm(a) for a in exclude}
    ranked: list[tuple[float, str, int, Peer]] = []
    seen: set[str] = set()
    for peer in peers:
        addr = _norm(peer.address)
        if addr in seen:
            raise RoutingInputError(f"peer {peer.address} is listed twice")
        seen.add(addr)
        if peer.stake_wei <= 0 or addr in excluded or (model is not None and model not in peer.models):
            continue
        numerator = _uniform_numerator(seed, addr)
        ranked.append((_log_key(numerator / _UNIFORM_DENOMINATOR, peer.stake_wei), addr, numerator, peer))
    if k == 0 or not ranked:
        return []
    ranked.sort(key=lambda r: (r[0], r[1]))
    if any(b[0] - a[0] < _NEAR_TIE for a, b in itertools.pairwise(ranked)):
        # Rare (≈1e-9 per adjacent pair): settle the order with correctly rounded decimal arithmetic so
        # it does not depend on this platform's libm.
        ranked.sort(key=lambda r: (_exact_key(r[2], r[3].stake_wei), r[1]))
    return [r[3] for r in ranked[:k]]


def _delegation_exclude(self_address: str, route: Sequence[str]) -> set[str]:
    return {self_address, *route}


def candidates_for_delegation(
    peers: Iterable[Peer],
    self_address: str,
    route: Sequence[str],
    seed: bytes,
    k_exec: int = 1,
    model: str | None = None,
) -> list[Peer]:
    """The `k_exec + 2` peers to probe, in priority order (DESIGN §3); never self, never a node on the route.

    The first `k_exec` that accept, taken in this order, execute the request. Fewer are returned when the
    network has fewer eligible peers.
    """
    _check_k(k_exec, "k_exec")
    if isinstance(route, str):
        raise RoutingInputError("route must be a sequence of addresses, not one string")
    if k_exec < 1:
        raise RoutingInputError("k_exec must be >= 1")
    return pos_sample(peers, k_exec + 2, seed, exclude=_delegation_exclude(self_address, route), model=model)


def _same_addresses(claimed: Sequence[Peer | str], expected: Sequence[Peer]) -> bool:
    claimed_addrs = [_norm(c.address if isinstance(c, Peer) else c) for c in claimed]
    return claimed_addrs == [_norm(p.address) for p in expected]


def audit_selection(
    claimed: Sequence[Peer | str],
    peers: Iterable[Peer],
    k: int,
    seed: bytes,
    exclude: Collection[str] = frozenset(),
    model: str | None = None,
) -> bool:
    """Whether `claimed` (peers or addresses, in order) is exactly what `pos_sample` draws for these inputs.

    `peers` must be the stakes as of the block whose hash went into the seed; a reordered, padded,
    truncated or substituted list fails.
    """
    return _same_addresses(claimed, pos_sample(peers, k, seed, exclude=exclude, model=model))


def audit_delegation(
    claimed: Sequence[Peer | str],
    peers: Iterable[Peer],
    self_address: str,
    route: Sequence[str],
    seed: bytes,
    k_exec: int = 1,
    model: str | None = None,
) -> bool:
    """Whether `claimed` is exactly `candidates_for_delegation` for these inputs (see `audit_selection`)."""
    expected = candidates_for_delegation(peers, self_address, route, seed, k_exec=k_exec, model=model)
    return _same_addresses(claimed, expected)


_TREE_TAG = b"wwwserve/pos-tree/v1"


class StakeIndex:
    """PoS candidates in O(k log N) instead of O(N): a Fenwick (sum) tree over the peers' stakes.

    `pos_sample` hashes every peer for every selection, which is what a node with the whole registry in
    view must do; at tens of thousands of nodes that is the cost of a request. This index keeps the
    routable stakes of one model's peers in a sum tree (`set` is O(log N) when a stake changes) and
    draws candidates one after the other, each with probability stake / remaining stake, without
    replacement: the same distribution as `pos_sample`'s Efraimidis–Spirakis keys (successive sampling
    by weight), from a different stream of the same public seed. A draw depends on the seed, the stakes
    and the order peers were added; `from_stakes` adds them in address order, so anyone holding the
    same stakes can recompute a selection. The simulator uses it for large networks; a live node can
    keep one per model from its indexer's stake events.
    """

    @classmethod
    def from_stakes(cls, stakes: Mapping[str, int]) -> StakeIndex:
        """An index over `stakes` (address → routable stake), added in address order (auditable)."""
        index = cls()
        for address in sorted(stakes, key=_norm):
            index.set(address, stakes[address])
        return index

    def __init__(self) -> None:
        self._slot: dict[str, int] = {}  # address (lower case) -> slot
        self._addresses: list[str] = []
        self._stakes: list[int] = []
        self._tree: list[int] = [0]  # 1-based Fenwick tree over _stakes
        self._routable = 0

    def __len__(self) -> int:
        """Peers with routable stake."""
        return self._routable

    @property
    def total_wei(self) -> int:
        """The routable stake of every peer in the index."""
        return self._prefix(len(self._stakes))

    def stake_of(self, address: str) -> int:
        slot = self._slot.get(_norm(address))
        return 0 if slot is None else self._stakes[slot]

    def set(self, address: str, stake_wei: int) -> None:
        """Record `address`'s routable stake (0: not routable)."""
        if not isinstance(stake_wei, int) or isinstance(stake_wei, bool) or stake_wei < 0:
            raise RoutingInputError(f"stake must be a non-negative int (wei), got {stake_wei!r}")
        key = _norm(address)
        slot = self._slot.get(key)
        if slot is None:
            if stake_wei == 0:
                return
            slot = self._slot[key] = len(self._stakes)
            self._addresses.append(key)
            self._stakes.append(0)
            self._grow()
        self._routable += (stake_wei > 0) - (self._stakes[slot] > 0)
        self._add(slot, stake_wei - self._stakes[slot])

    def _grow(self) -> None:
        # Fenwick node i covers (i - lowbit(i), i]; a new last slot's node sums its own range.
        i = len(self._stakes)
        self._tree.append(0)
        low = i & -i
        self._tree[i] = self._prefix(i - 1) - self._prefix(i - low) if low > 1 else 0

    def _add(self, slot: int, delta: int) -> None:
        if delta == 0:
            return
        self._stakes[slot] += delta
        i = slot + 1
        tree = self._tree
        n = len(tree) - 1
        while i <= n:
            tree[i] += delta
            i += i & -i

    def _prefix(self, count: int) -> int:
        total, tree, i = 0, self._tree, count
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def _find(self, target: int) -> int:
        """The slot where the running sum of stakes first exceeds `target` (0 <= target < total)."""
        tree = self._tree
        n = len(tree) - 1
        pos, step = 0, 1 << n.bit_length()
        while step:
            nxt = pos + step
            if nxt <= n and tree[nxt] <= target:
                pos = nxt
                target -= tree[nxt]
            step >>= 1
        return pos

    def draw(self, seed: bytes, k: int, exclude: Collection[str] = frozenset()) -> list[str]:
        """Up to `k` addresses by stake, without replacement, never one in `exclude`, in draw order."""
        _check_k(k)
        _check_seed(seed)
        removed: list[tuple[int, int]] = []
        try:
            for address in exclude:
                slot = self._slot.get(_norm(address))
                if slot is not None and self._stakes[slot] > 0:
                    removed.append((slot, self._stakes[slot]))
                    self._add(slot, -self._stakes[slot])
            out: list[str] = []
            for j in range(k):
                total = self.total_wei
                if total <= 0:
                    break
                digest = hashlib.sha256(_TREE_TAG + _field(bytes(seed)) + j.to_bytes(8, "big")).digest()
                # 256 bits reduced mod a total of at most ~2**100 wei: the bias is below 2**-150.
                slot = self._find(int.from_bytes(digest, "big") % total)
                out.append(self._addresses[slot])
                removed.append((slot, self._stakes[slot]))
                self._add(slot, -self._stakes[slot])
            return out
        finally:
            for slot, stake in removed:
                self._add(slot, stake)

    def candidates_for_delegation(self, self_address: str, route: Sequence[str], seed: bytes,
                                  k_exec: int = 1) -> list[str]:
        """`candidates_for_delegation` over this index: `k_exec + 2` addresses, never self or the route."""
        _check_k(k_exec, "k_exec")
        if k_exec < 1:
            raise RoutingInputError("k_exec must be >= 1")
        return self.draw(seed, k_exec + 2, exclude=_delegation_exclude(self_address, route))
