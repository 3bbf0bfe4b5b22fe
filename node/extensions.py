"""How a feature plugs into a serving node without the node importing it (the layering is
`ledger ← node ← judge`): the duel feature (`wwwserve.judge.feature`) is one. The node serves without
any; the composition root (`wwwserve node run`, tests) passes factories to `create_app`.

A feature gets a `NodeContext` (what it may use of the node), and gives back:
- `duels`: the hooks the request path calls (`DuelHooks`): the origin's blind draw before delegating, the
  checked answer it may duel, the work an executor keeps as evidence; None when it has none;
- `peer_routes`: extra peer API paths, served behind the same envelope checks as the node's own;
- `mounts`: ASGI apps the node serves under a path prefix, as they are (the explorer at `/explorer` is one);
- `start` / `aclose`: its background work, run for the app's lifetime.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from starlette.types import ASGIApp

from wwwserve.ledger.work import WorkAttestation, inspect_commitment, request_id_hash

if TYPE_CHECKING:
    from wwwserve.node.backends.base import Backend
    from wwwserve.node.managers.communication import CommunicationManager
    from wwwserve.node.managers.model import ModelManager
    from wwwserve.node.managers.request import RequestManager
    from wwwserve.node.metrics import Metrics
    from wwwserve.node.policy import Policy
    from wwwserve.node.recent import RecentRequests
    from wwwserve.node.settings import NodeSettings

__all__ = ["DuelHooks", "FeatureFactory", "Inspection", "NodeContext", "NodeFeature", "PeerHandler"]

PeerHandler = Callable[[str, dict[str, Any]], Awaitable[Mapping[str, Any]]]
"""A feature's peer route: (the verified sender, the JSON body) → the JSON answer."""


@dataclass(frozen=True)
class Inspection:
    """The origin's blind draw for one user request: whether it will duel the answer, and the salt that
    opens its commitment (`ledger.work.inspect_commitment`) on-chain."""

    request_id: bytes  # request_id_hash of the request id
    wants_duel: bool
    salt: bytes

    @functools.cached_property
    def commitment(self) -> bytes:
        """What travels with the request (`DelegateBody.inspect`)."""
        return inspect_commitment(self.request_id, self.wants_duel, self.salt)

    @classmethod
    def draw(cls, request_id: str, wants_duel: bool) -> Inspection:
        """A fresh inspection with a random salt."""
        return cls(request_id_hash(request_id), wants_duel, os.urandom(32))


@dataclass(frozen=True)
class NodeContext:
    """What a feature may use of the node it plugs into."""

    settings: NodeSettings
    node_address: str
    ledger: Any  # the Ledger manager (None without a chain)
    communication: CommunicationManager | None
    policy: Policy
    requests: RequestManager
    model_manager: ModelManager
    backends: Sequence[Backend]
    metrics: Metrics
    recent: RecentRequests | None = None  # the log of requests this node answered (node.recent)


class DuelHooks(Protocol):
    """What the request path calls of the duel feature."""

    def should_inspect(self) -> bool:
        """The origin's blind draw, before a user's request is first delegated: duel its answer?"""
        ...

    def open_soon(self, inspection: Inspection, work: WorkAttestation, kind: Literal["chat", "completion"],
                  raw_request: Mapping[str, Any], text: str) -> None:
        """A delegated answer came back checked: open the duel the draw committed to (in the background)."""
        ...

    def keep_work(self, work: WorkAttestation, kind: Literal["chat", "completion"],
                  raw_request: Mapping[str, Any], text: str) -> None:
        """An executor answered a peer: keep the request, the answer and the work as evidence."""
        ...


class NodeFeature(Protocol):
    """A feature plugged into a node (see the module docstring)."""

    @property
    def duels(self) -> DuelHooks | None: ...

    def peer_routes(self) -> Mapping[str, PeerHandler]: ...

    def mounts(self) -> Mapping[str, ASGIApp]: ...

    def start(self) -> None: ...

    async def aclose(self) -> None: ...


FeatureFactory = Callable[[NodeContext], "NodeFeature | None"]
"""Builds a feature for one node, or None when the node cannot run it (no wallet, no peers, turned off)."""
