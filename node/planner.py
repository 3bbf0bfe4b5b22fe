"""The dispatch procedure, without I/O: where one request runs, stepped by the node and by the simulator.

`plan(...)` is a generator. It makes every decision of DESIGN §3 (decide → candidates → probe order →
fallback → retry until a deadline) and yields a `Step` each time it needs the outside world; its driver
does what the step says and sends the answer back with `generator.send(answer)`:

| step           | the driver does                                               | and sends back            |
|----------------|---------------------------------------------------------------|---------------------------|
| `AskPolicy`    | `policy.decide_dispatch` (or `decide_fallback`) on its load   | the `Decision`            |
| `Offer`        | offers the request to `candidates` in order: the first with   | an `OfferResult`          |
|                | its probe folded in, then the others probed in parallel, the  |                           |
|                | first acceptor in candidate order takes it                    |                           |
| `Wait`         | waits until `until_s` on its clock                            | the time it is then       |

The generator returns an `Outcome`: `RunHere(queued=...)`, `Delegated(address)` or `Refused(reason)`.
The live node's `Dispatcher` steps it on asyncio (an offer is real HTTP to peers); the simulator steps it
in its event loop (an offer is computed from the candidates' policies, and answers a round trip later).
Neither re-implements a decision: what differs is only how long each step takes.

Which peers exist is read through a `PeerView` (the node's registry, the simulator's nodes or its stake
tree). Units and limits come from one place: `DispatchLimits`, built from the node's settings, and
`wwwserve.ledger.params` for money.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from wwwserve.node.policy import Action, Decision
from wwwserve.node.routing import selection_seed

__all__ = [
    "AskPolicy",
    "Delegated",
    "DispatchLimits",
    "Offer",
    "OfferResult",
    "Outcome",
    "PeerView",
    "PlanRequest",
    "Refused",
    "RunHere",
    "Step",
    "Wait",
    "draw",
    "plan",
]


@dataclass(frozen=True)
class DispatchLimits:
    """Every routing knob of the dispatch procedure, in one place (the node fills it from its settings;
    the simulator from its node specs)."""

    max_hops: int = 3  # a request that has passed this many nodes runs where it is
    k_exec: int = 1  # candidates drawn per offer: k_exec + 2
    retry_delay_s: float = 0.1  # a RETRY waits this long before the policy is asked again
    request_timeout_s: float = 600.0  # a request this node serves waits for the network until then, then queues
    no_peer_wait_s: float = 30.0  # a request for a model served only elsewhere waits this long, then 503
    max_redispatches: int = 8  # peers one request may go to after failures before the user gets an error

    def __post_init__(self) -> None:
        if self.max_hops < 0 or self.k_exec < 1 or self.max_redispatches < 1:
            raise ValueError("max_hops >= 0, k_exec >= 1 and max_redispatches >= 1 are required")
        if min(self.retry_delay_s, self.request_timeout_s, self.no_peer_wait_s) <= 0:
            raise ValueError("retry_delay_s, request_timeout_s and no_peer_wait_s must be > 0")


@dataclass(frozen=True)
class PlanRequest:
    """What the planner knows of one request at the node deciding it."""

    request_id: str
    model: str
    route: tuple[str, ...]  # the nodes it already passed, origin first (empty: this node's user sent it)
    serves: bool  # this node serves `model`
    network_serves: bool  # some registered node with stake serves `model` (this one included)
    networked: bool = True  # this node delegates at all (False: no peers configured)
    attempt: int = 0  # how many peers already failed this request (re-dispatches so far)


class PeerView(Protocol):
    """The peers a node can route to, as its registry shows them now."""

    def any_routable(self, model: str, exclude: frozenset[str]) -> bool:
        """Whether a peer other than this node, with routable stake, serves `model`, leaving out `exclude`
        (lower-case addresses)."""
        ...

    def draw(self, model: str, route: Sequence[str], seed: bytes, k: int, exclude: frozenset[str]) -> list[str]:
        """`node.routing.candidates_for_delegation` over the routable peers not in `exclude` (or the same
        distribution from a stake tree): addresses in probe order."""
        ...

    def block_hash(self) -> bytes:
        """The recent block hash PoS draws are seeded from."""
        ...


@dataclass(frozen=True)
class AskPolicy:
    fallback: bool  # False: decide_dispatch; True: decide_fallback (after an offer nobody took)


@dataclass(frozen=True)
class Offer:
    candidates: tuple[str, ...]
    seed: bytes


@dataclass(frozen=True)
class OfferResult:
    accepted: str | None  # the candidate that took the request (its stream is open), or None
    failed: tuple[str, ...] = ()  # candidates that failed (banned by the driver; avoided from now on)
    now_s: float = 0.0  # the driver's clock when the offer ended


@dataclass(frozen=True)
class Wait:
    until_s: float


Step = AskPolicy | Offer | Wait


@dataclass(frozen=True)
class RunHere:
    queued: bool  # False: LOCAL (the engine has room); True: QUEUE on the busy engine


@dataclass(frozen=True)
class Delegated:
    address: str


@dataclass(frozen=True)
class Refused:
    reason: Literal["model_not_found", "overloaded", "peers_failed"]


Outcome = RunHere | Delegated | Refused


def draw(peers: PeerView, request_id: str, model: str, route: Sequence[str], limits: DispatchLimits,
         avoid: set[str]) -> tuple[list[str], bytes]:
    """The PoS candidates of one offer, in probe order, and the seed they were drawn with: `k_exec + 2`
    routable peers, never this node, never one on the route, never one in `avoid`."""
    seed = selection_seed(request_id, peers.block_hash(), len(route))
    return peers.draw(model, route, seed, limits.k_exec, frozenset(avoid)), seed


def plan(
    request: PlanRequest,
    peers: PeerView,
    limits: DispatchLimits,
    now_s: float,
    avoid: set[str],
    record: Callable[[Action], None] | None = None,
) -> Generator[Step, object, Outcome]:
    """The dispatch procedure for `request` at one node, starting at `now_s` on the driver's clock.

    `avoid` (lower-case addresses) holds the peers that failed this request; the planner adds the ones an
    offer reports failed. `record` is told each policy decision taken (for metrics and counts).
    """
    note = record if record is not None else (lambda action: None)
    if request.attempt >= limits.max_redispatches:
        return Refused("peers_failed")
    if not request.networked or len(request.route) >= limits.max_hops:
        return RunHere(queued=False) if request.serves else Refused("model_not_found")
    if not request.serves and not request.network_serves:
        return Refused("model_not_found")
    wait_s = limits.request_timeout_s if request.serves else min(limits.no_peer_wait_s, limits.request_timeout_s)
    deadline_s = now_s + wait_s
    while True:
        action = Action.OFFLOAD
        if request.serves:
            decision = yield AskPolicy(fallback=False)
            assert isinstance(decision, Decision)
            action = decision.action
            if action == Action.OFFLOAD and not peers.any_routable(request.model, frozenset(avoid)):
                # Nobody else serves this model (or every such peer failed it): waiting for one is only
                # delay, so the request queues here.
                action = Action.QUEUE
        note(action)
        if action == Action.LOCAL:
            return RunHere(queued=False)
        if action == Action.QUEUE:
            return RunHere(queued=True)
        if action == Action.OFFLOAD:
            candidates, seed = draw(peers, request.request_id, request.model, request.route, limits, avoid)
            if candidates:
                result = yield Offer(tuple(candidates), seed)
                assert isinstance(result, OfferResult)
                avoid.update(address.lower() for address in result.failed)
                now_s = result.now_s
                if result.accepted is not None:
                    return Delegated(result.accepted)
            if request.serves:
                decision = yield AskPolicy(fallback=True)
                assert isinstance(decision, Decision)
                action = decision.action
                note(action)
                if action == Action.QUEUE:
                    return RunHere(queued=True)
                if action == Action.LOCAL:  # a custom policy may fall back to running it now
                    return RunHere(queued=False)
        # RETRY (or an offer nobody took): wait and ask again, until the deadline.
        if now_s + limits.retry_delay_s > deadline_s:
            # Waited long enough for the network: a request this node serves takes the local queue.
            return RunHere(queued=True) if request.serves else Refused("overloaded")
        now = yield Wait(now_s + limits.retry_delay_s)
        assert isinstance(now, float | int)
        now_s = float(now)
