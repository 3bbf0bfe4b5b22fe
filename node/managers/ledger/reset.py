"""The Ledger manager's poll loop and a chain that was reset (node.managers.ledger).

`_poll_loop` refreshes the view every `poll_interval_s`; a failure keeps the last view and is logged once
per distinct error. When the failure says the chain this node indexed is gone (a restarted devnet: the
index's blocks are gone, or the contract is), the view is emptied and the node serves locally until the
contract is back; then it re-indexes from block 0 into fresh files of its own.
"""

from __future__ import annotations

import asyncio
import functools
import time

from sqlalchemy import make_url
from web3 import Web3

from wwwserve.ledger.chain import connect
from wwwserve.ledger.db import drop_index
from wwwserve.ledger.indexer import IndexerReorgError
from wwwserve.node.managers.ledger.base import ChainView, default_index_db_url, logger
from wwwserve.node.managers.ledger.reads import LedgerReads

__all__ = ["LedgerResets"]


class LedgerResets(LedgerReads):
    """The poll loop, and detecting a reset chain and resuming on the new one (see the module docstring)."""

    async def _poll_loop(self) -> None:
        failing: str | None = None  # the last failure logged: a chain down for an hour is one line, not 3,600
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                if self.chain_reset is not None:
                    await self._in_pool(self._sync_pool, self._try_resume)
                    if self.chain_reset is not None:
                        continue
                await self.refresh()
                if failing is not None:
                    logger.warning("ledger: refreshing works again")
                    failing = None
            except Exception as exc:  # a chain outage must not kill the loop; the old view stays
                reset = await self._in_pool(self._sync_pool, functools.partial(self._reset_reason, exc))
                if reset is not None:
                    self._enter_reset(reset)
                    failing = None
                elif str(exc) != failing:
                    failing = str(exc)
                    logger.warning("ledger: refresh failed (keeping the last view): %s", exc)

    def _reset_reason(self, exc: BaseException) -> str | None:
        """Why the chain this node indexed is gone (None: a failure of another kind, such as an outage)."""
        if isinstance(exc, IndexerReorgError):
            return str(exc)
        indexer = self._indexer
        if indexer is None:
            return None
        try:
            w3 = indexer.w3
            if not w3.eth.get_code(Web3.to_checksum_address(self.contract_address)):
                return f"no contract code at {self.contract_address} any more"
            cursor = indexer.cursor()
            if cursor is not None and cursor.block_number > w3.eth.block_number:
                return f"the chain's head is below block {cursor.block_number}, which the index holds"
        except Exception:  # unreachable: an outage, not a reset
            return None
        return None

    def _enter_reset(self, reason: str) -> None:
        self.chain_reset = reason
        self._view = ChainView()  # no peers, no stake, no credit: requests are served here, nothing is delegated
        if self.on_reset is not None:
            self.on_reset(reason)
            return
        logger.warning("ledger: the chain was reset (%s): serving locally, without peers, payments or duels, "
                       "until contract %s is on the chain again; then the node re-indexes from the start",
                       reason, self.contract_address)

    def _try_resume(self) -> None:
        """Re-open the index (a fresh file) and this deployment's voucher store once the contract is back."""
        w3 = self._indexer.w3 if self._indexer is not None else connect(self.rpc_url)
        if not w3.eth.get_code(Web3.to_checksum_address(self.contract_address)) or w3.eth.chain_id != self.chain_id:
            return
        instance = f"reset-{bytes(w3.eth.get_block(0)['hash']).hex()[:12]}-{int(time.time())}"
        old = self._indexer
        self._index_start_block = 0
        if self._custom_index_url:
            # The operator's database (chain.index_db_url) stays where it is: its tables describe the old chain,
            # so they are emptied and the new chain is read into them.
            if old is not None:
                old.close()
                old = None
            drop_index(self._index_db_url)
        else:
            self._index_db_url = default_index_db_url(self._home, self.chain_id, self.contract_address,
                                                      self.my_address, instance)
        self._open_deployment_files(instance)
        self._open()
        if old is not None:
            old.close()
        self.chain_reset = None
        logger.warning("ledger: contract %s is on the chain again: re-indexing from block 0 into %s",
                       self.contract_address, make_url(self._index_db_url).render_as_string(hide_password=True))
