"""The indexer's errors: none of them is transient, so `Indexer.run()` stops on every one."""

from __future__ import annotations

from wwwserve.ledger.errors import LedgerError


class IndexerError(LedgerError):
    """Root of the indexer's errors. These are not transient: `run()` stops on them."""


class IndexerReorgError(IndexerError):
    """The chain no longer contains the block the cursor points at (or a batch changed under us)."""


class IndexerStateError(IndexerError):
    """An event does not fit the indexed state (events were missed, or the ABI does not match)."""


class IndexerDatabaseMismatchError(IndexerError):
    """The database already indexes a different contract or chain."""
