"""The Ledger manager itself (node.managers.ledger): built from the settings, started, closed; its jobs
are the classes it is made of (reads, payment, stake, reset).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount

from wwwserve.ledger.chain import call_with_retries, connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.deployment import load_deployment
from wwwserve.ledger.errors import LedgerError
from wwwserve.ledger.indexer import Indexer
from wwwserve.ledger.work import WorkAttestation, sign_work
from wwwserve.node.managers.ledger.base import LedgerAccountMissingError, logger
from wwwserve.node.managers.ledger.payment import LedgerPayments
from wwwserve.node.managers.ledger.reset import LedgerResets
from wwwserve.node.managers.ledger.stake import LedgerStaking
from wwwserve.node.metrics import Metrics
from wwwserve.node.policy import LoadSnapshot, Policy
from wwwserve.node.settings import NodeSettings

__all__ = ["LedgerManager", "deployment_instance"]

T = TypeVar("T")

# How long aclose() waits for a transaction already handed to the chain before abandoning it.
_CLOSE_TX_WAIT_S = 30.0


def deployment_instance(rpc_url: str, block_number: int, timeout_s: float = 5.0) -> str | None:
    """A short tag of one deployment: the first 12 hex digits of its deployment block's hash.

    A devnet started afresh redeploys the contract at the same address on the same chain id, so address
    and chain id alone would let a node reuse the index and vouchers of a chain that no longer exists
    (the index's cursor then points at a block the new chain lacks, and start-up fails). The block hash
    differs between the two chains. None when the chain cannot say (the files then go untagged).
    """
    try:
        w3 = connect(rpc_url, timeout_s=timeout_s)
        block = call_with_retries(w3, lambda: w3.eth.get_block(block_number), function="eth_getBlockByNumber")
        return bytes(block["hash"]).hex()[:12]
    except Exception as exc:
        logger.warning("could not read block %d to tag the index files: %s", block_number, exc)
        return None


class LedgerManager(LedgerPayments, LedgerStaking, LedgerResets):
    """The node's view of the chain and the sender of its transactions (see node.managers.ledger)."""

    @classmethod
    def from_settings(
        cls,
        settings: NodeSettings,
        *,
        chain_id: int,
        my_address: str,
        account: LocalAccount | None,
        policy: Policy | None = None,
        load_snapshot: Callable[[], Awaitable[LoadSnapshot]] | None = None,
        home: Path | None = None,
    ) -> LedgerManager:
        """Build from the node's settings; the contract comes from settings or the deployment record."""
        chain = settings.chain
        start_block = 0
        contract = chain.contract_address
        try:
            record = load_deployment(chain_id, home)
        except LedgerError:
            if contract is None:
                raise
            record = None
        if contract is None and record is not None:
            contract = record.address
        if record is not None and contract is not None and record.address.lower() == contract.lower():
            start_block = record.block_number  # nothing of this contract happened before it was deployed
        assert contract is not None
        return cls(
            instance=deployment_instance(str(chain.rpc_url), start_block),
            rpc_url=str(chain.rpc_url),
            contract_address=contract,
            chain_id=chain_id,
            my_address=my_address,
            account=account,
            index_db_url=chain.index_db_url,
            poll_interval_s=chain.poll_interval_s,
            voucher_claim_interval_s=chain.voucher_claim_interval_s,
            home=home,
            policy=policy,
            load_snapshot=load_snapshot,
            index_start_block=start_block,
        )

    def watch(self, metrics: Metrics) -> None:
        """Report to `metrics` (node.metrics), read at scrape time from the view and the sender: this node's
        stake and free credit (absent before the first sync), its transactions not yet mined (absent without
        an account); and count every failed JSON-RPC request by method and kind."""
        metrics.sample("wwwserve_stake_wei", lambda: None if self._view.own is None else self.stake_wei())
        metrics.sample("wwwserve_credit_wei", lambda: None if self._view.own is None else self.credit_wei())
        metrics.sample("wwwserve_chain_pending_transactions",
                       lambda: None if self._sender is None else self._sender.pending)
        self.on_rpc_error = lambda method, kind: metrics.count("wwwserve_chain_rpc_errors_total", method=method,
                                                               kind=kind)

    def use_policy(self, policy: Policy, load_snapshot: Callable[[], Awaitable[LoadSnapshot]]) -> None:
        """Drive auto-stake (or the fixed stake) with `policy` and live load; call before `start()`."""
        self.policy = policy
        self._load_snapshot = load_snapshot

    async def start(self) -> None:
        """Open the index, sync it once (routing has a view when this returns), then start the loops."""
        await self._in_pool(self._sync_pool, self._open)
        await self.refresh()
        self._spawn(self._poll_loop(), "ledger-poll")
        if self._account is not None:
            self._spawn(self._claim_loop(), "ledger-claims")
            if self.policy is not None and (
                (self.policy.config.auto_stake and self._load_snapshot is not None)
                or (not self.policy.config.auto_stake and self.policy.config.fixed_stake_wei is not None)
            ):
                self._spawn(self._stake_loop(), "ledger-stake")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    async def aclose(self) -> None:
        """Stop the loops; a transaction already sent is waited for (bounded), then everything is closed."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        # cancel_futures drops queued work; the one running (a tx awaiting its receipt) finishes or times out.
        drain = asyncio.to_thread(self._tx_pool.shutdown, wait=True, cancel_futures=True)
        try:
            await asyncio.wait_for(drain, timeout=_CLOSE_TX_WAIT_S)
        except TimeoutError:
            logger.warning("ledger: abandoning a transaction still pending after %.0f s", _CLOSE_TX_WAIT_S)
        await asyncio.to_thread(self._sync_pool.shutdown, wait=True, cancel_futures=True)
        if self._indexer is not None:
            self._indexer.close()
        self.store.close()

    @property
    def has_account(self) -> bool:
        """Whether the manager can sign and send transactions (and work attestations)."""
        return self._account is not None

    def sign_work(self, work: WorkAttestation) -> WorkAttestation:
        """`work` (this node's, as executor) signed with the operator wallet for this chain and contract;
        LedgerAccountMissingError without an account."""
        if self._account is None:
            raise LedgerAccountMissingError("signing work needs the operator account; the node has none")
        return sign_work(self._account, self.chain_id, self.contract_address, work)

    # duels: the chain side of judge.runner and judge.manager
    async def run_tx(self, fn: Callable[[], T]) -> T:
        """Run `fn` (a blocking call that sends a transaction) on the transaction thread, one at a time."""
        if self._account is None:
            raise LedgerAccountMissingError("sending a transaction needs the operator account; the node has none")
        return await self._in_pool(self._tx_pool, fn)

    @property
    def client(self) -> WWWServeClient:
        """The contract client (with this node's account when it has one)."""
        return self._require_client()

    @property
    def indexer(self) -> Indexer:
        """The node's indexer (synced every `poll_interval_s`)."""
        return self._require_indexer()
