"""`wwwserve explorer`: the explorer without a node, over an index of its own that follows the chain.

It opens (or creates) an event index of the deployment, catches up with the chain (a progress line per batch
of blocks), keeps it in sync in a thread every `poll_interval_s`, and serves the explorer at `/explorer/`
(`/` redirects there). There is no recent-request log: requests pass through nodes, and this process is none.
A chain reset (a restarted devnet: the indexed blocks are gone) empties the index and reads the new chain.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount, Route

from wwwserve.explorer.feature import EXPLORER_PATH, LazyExplorer
from wwwserve.ledger.db import drop_index
from wwwserve.ledger.indexer import Indexer, IndexerReorgError

__all__ = ["StandaloneExplorer", "standalone_app"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Told (indexed block, block caught up to) after each batch of the first catch-up (`Indexer.sync`)."""


@dataclass
class StandaloneExplorer:
    """An index of one deployment kept in sync in a thread, and the explorer's app over it."""

    open_index: Callable[[], Indexer]
    db_url: str
    poll_interval_s: float = 2.0

    def __post_init__(self) -> None:
        self.indexer: Indexer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.app = LazyExplorer(lambda: self.indexer, recent=None, node_address=None)

    def catch_up(self, progress: Progress | None = None) -> None:
        """Open the index and read the chain up to its head, `progress` told after each batch."""
        index = self.open_index()
        try:
            index.sync(progress=progress)
        except IndexerReorgError:
            log.warning("the indexed chain is gone (a reset devnet?): emptying %s and reading the chain anew",
                        self.db_url)
            index.close()
            drop_index(self.db_url)
            index = self.open_index()
            index.sync(progress=progress)
        self.indexer = index

    def start(self) -> None:
        """Keep the index in sync in a daemon thread (after `catch_up`)."""
        self._thread = threading.Thread(target=self._follow, name="explorer-index", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                assert self.indexer is not None
                self.indexer.run(self.poll_interval_s, self._stop)
            except IndexerReorgError:
                self.catch_up()  # the chain was reset: index the new one (the app follows the new engine)
            except Exception:  # run() retries RPC hiccups itself; anything else is logged and retried
                log.exception("the explorer's index stopped; retrying in %.1f s", self.poll_interval_s)
                self._stop.wait(self.poll_interval_s)

    def stop(self) -> None:
        """Stop following the chain and close the index."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.indexer is not None:
            self.indexer.close()


def standalone_app(explorer: StandaloneExplorer) -> Starlette:
    """`/explorer/...` served by the explorer; `/` redirects to the page."""

    async def home(request: Request) -> RedirectResponse:
        return RedirectResponse(f"{EXPLORER_PATH}/")

    return Starlette(routes=[Route("/", home), Mount(EXPLORER_PATH, app=explorer.app)])
