"""The explorer as a node feature: every node with a chain serves it at `/explorer`, over its own index.

The node's Ledger manager opens its indexer when the app starts and may open a new one after a chain reset
(a restarted devnet), so the explorer's app is built on first use and rebuilt whenever the index's engine
changes; before the ledger has started it answers 503 in the OpenAI error shape. A node without a chain has no
index and serves no explorer (`explorer_feature` returns None). A node with user API keys (`server.api_keys`)
leaves its recent-request log out: the explorer is open to anyone who can reach the node.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from sqlalchemy import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from wwwserve.explorer.api import explorer_app
from wwwserve.explorer.queries import ExplorerQueries
from wwwserve.ledger.indexer import Indexer
from wwwserve.node.extensions import NodeContext, PeerHandler
from wwwserve.node.managers.ledger import LedgerManagerError
from wwwserve.node.recent import RecentRequests

__all__ = ["EXPLORER_PATH", "ExplorerFeature", "LazyExplorer", "explorer_feature"]

EXPLORER_PATH = "/explorer"
"""Where a node serves the explorer (the page at `/explorer/`, its JSON under `/explorer/api/`)."""


class LazyExplorer:
    """The explorer's ASGI app over whatever index `open_indexer()` gives now: built on first use, rebuilt when
    the index's engine changes (a re-index after a chain reset), 503 while there is none."""

    def __init__(self, open_indexer: Callable[[], Indexer | None], *, recent: RecentRequests | None,
                 node_address: str | None) -> None:
        self.open_indexer = open_indexer
        self.recent = recent
        self.node_address = node_address
        self._engine: Engine | None = None
        self._app: ASGIApp | None = None

    def current_app(self) -> ASGIApp | None:
        """The explorer's app over the current index (None while there is none)."""
        indexer = self.open_indexer()
        if indexer is None:
            return None
        if indexer.engine is not self._engine or self._app is None:
            self._engine = indexer.engine
            self._app = explorer_app(ExplorerQueries(indexer.engine), recent=self.recent,
                                     node_address=self.node_address, chain_id=indexer.chain_id,
                                     contract=indexer.contract_address)
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self.current_app()
        if app is not None:
            await app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        body = json.dumps({"error": {"message": "The index is not open yet: try again in a moment.",
                                     "type": "service_unavailable", "param": None, "code": "index_not_ready"}})
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"), (b"retry-after", b"1")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body.encode()})


class ExplorerFeature:
    """Mounts the explorer at `/explorer`, over the node's index and its recent-request log."""

    duels = None  # the explorer only reads

    def __init__(self, context: NodeContext) -> None:
        self.context = context
        # A node that asks its users for a key (server.api_keys) is private: who asked it what, and when, is not
        # for strangers, so its explorer shows the chain's data only.
        recent = None if context.settings.server.api_keys else context.recent
        self.app = LazyExplorer(self._indexer, recent=recent, node_address=context.node_address)

    def _indexer(self) -> Indexer | None:
        try:
            indexer: Indexer = self.context.ledger.indexer  # opened as the ledger starts; anew after a reset
        except LedgerManagerError:
            return None
        return indexer

    def peer_routes(self) -> Mapping[str, PeerHandler]:
        return {}

    def mounts(self) -> Mapping[str, ASGIApp]:
        return {EXPLORER_PATH: self.app}

    def start(self) -> None:
        """Nothing to start: the node's Ledger manager keeps the index in sync."""

    async def aclose(self) -> None:
        """Nothing to stop."""


def explorer_feature(context: NodeContext) -> ExplorerFeature | None:
    """The explorer for a node with a chain (its index); None for a node without one."""
    if context.ledger is None:
        return None
    return ExplorerFeature(context)
