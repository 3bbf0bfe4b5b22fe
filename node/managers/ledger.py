"""The Ledger manager: the node's in-memory view of the chain, and the only sender of its transactions.

Reads. An event `Indexer` (SQLite under `<home>/indexes/` by default, one file per chain, contract and
node so several nodes on one machine never share a file) follows the contract; every `refresh()` syncs
it in a worker thread and rebuilds an immutable `_View` (registry, stakes, own balances, voucher claims,
a recent block hash) that replaces the old one in a single assignment. Everything routing asks
(`peers`, `pubkey_of`, `credit_wei`, `recent_block_hash`, ...) is answered from that view: no RPC on the
request path. A failed refresh keeps the previous view (stale beats empty) and logs why, once per distinct
error. A chain that was reset (a restarted devnet: the index's blocks are gone, or the contract is) is
told once; the view is emptied (the node serves locally) until the contract is back, and then the node
re-indexes from block 0 into fresh files of its own.

Payment (DESIGN §2). The origin pays each executor with cumulative EIP-712 vouchers (`node.vouchers`):
`record_fee` advances and commits the amount owed *before* signing; `accept_voucher` checks, then keeps
the best voucher per origin; `claim_vouchers` turns what is owed into on-chain credit with one
`claimVoucher` per origin. `credit_wei()` is the indexed free credit minus fees promised and not yet
claimed, so a node never promises more than it holds.

Writes. All transactions (claims, stake changes) go through one `TxSender` on one worker thread, so
they are serialized, never block the event loop, and reuse its retries of transient RPC errors.
Auto-stake (policy.config.auto_stake) runs `node.policy.stake_change_wei` every
`auto_stake_interval_s` and waits for each stake transaction and a refresh before deciding again, so
at most one stake transaction is ever pending; with `fixed_stake_wei` it moves to that stake at once and
holds it (a lost duel's slash is topped up from free credit at the next interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from sqlalchemy import make_url, or_, select
from sqlalchemy.orm import Session
from web3 import Web3

from wwwserve.errors import WWWServeError
from wwwserve.ledger.chain import call_with_retries, connect, is_transient
from wwwserve.ledger.client import TxResult, WWWServeClient, sign_voucher_offline
from wwwserve.ledger.db import VoucherClaimRow, drop_index
from wwwserve.ledger.deployment import load_deployment
from wwwserve.ledger.errors import ChainUnreachableError, LedgerError, StaleVoucherError, VoucherUnfundedError
from wwwserve.ledger.home import wwwserve_home
from wwwserve.ledger.indexer import AccountInfo, Indexer, IndexerReorgError
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import WorkAttestation, sign_work
from wwwserve.node.billing import PeerStanding
from wwwserve.node.policy import LoadSnapshot, Policy, stake_change_wei
from wwwserve.node.routing import Peer, routable_stake_wei
from wwwserve.node.settings import NodeSettings
from wwwserve.node.vouchers import (
    SignedVoucher,
    VoucherCreditExceededError,
    VoucherError,
    VoucherForgedError,
    VoucherMalformedError,
    VoucherOverdrawnError,
    VoucherStaleError,
    VoucherStore,
    VoucherWrongExecutorError,
    check_voucher,
)

__all__ = [
    "LedgerAccountMissingError",
    "LedgerChainMismatchError",
    "LedgerManager",
    "LedgerManagerError",
    "PeerRecord",
    "SignedVoucher",
    "VoucherCreditExceededError",
    "VoucherError",
    "VoucherForgedError",
    "VoucherMalformedError",
    "VoucherOverdrawnError",
    "VoucherStaleError",
    "VoucherWrongExecutorError",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How long aclose() waits for a transaction already handed to the chain before abandoning it.
_CLOSE_TX_WAIT_S = 30.0
# Longest pause between auto-stake attempts after failures (not registered, chain down, ...).
_STAKE_BACKOFF_MAX_S = 60.0


class LedgerManagerError(WWWServeError):
    """Root of the Ledger manager's own errors (chain errors stay `ledger.errors.LedgerError`)."""


class LedgerAccountMissingError(LedgerManagerError):
    """The operation signs or sends something, and the manager was built without an account."""


class LedgerChainMismatchError(LedgerManagerError):
    """The RPC endpoint serves another chain than the one the node was configured for."""


@dataclass(frozen=True)
class PeerRecord:
    """A registered, active node as the ledger shows it: who it is, where, what it serves, its stake."""

    address: str  # checksummed node id (the operator wallet)
    pubkey: bytes  # 32-byte registered ed25519 key
    endpoint: str  # base URL of its API (no trailing slash)
    models: frozenset[str]
    stake_wei: int  # routable stake: the active stake when it is at least the contract's MIN_STAKE, else 0

    def routing_peer(self) -> Peer:
        """The same node in `node.routing`'s vocabulary."""
        return Peer(address=self.address, stake_wei=self.stake_wei, models=self.models, endpoint=self.endpoint)


@dataclass(frozen=True)
class _View:
    """One consistent snapshot of the chain as of one indexer sync (replaced whole, never mutated)."""

    peers: Mapping[str, PeerRecord] = field(default_factory=dict)  # active nodes only
    pubkeys: Mapping[str, bytes] = field(default_factory=dict)  # every node that ever registered
    endpoints: Mapping[str, str] = field(default_factory=dict)  # every node that ever registered
    funds_wei: Mapping[str, int] = field(default_factory=dict)  # registered node -> credit + pending withdrawal
    own: AccountInfo | None = None
    claimed_from_me: Mapping[str, int] = field(default_factory=dict)  # executor -> paid by me under vouchers
    claimed_by_me: Mapping[str, int] = field(default_factory=dict)  # origin -> paid to me under vouchers
    block_number: int = -1
    block_hash: bytes = b"\x00" * 32


def default_index_db_url(home: Path, chain_id: int, contract: str, node: str, instance: str | None = None) -> str:
    """`sqlite:///<home>/indexes/<chain>-<contract>-<node>[-<instance>].sqlite`: one file per node, no sharing."""
    suffix = f"-{instance}" if instance else ""
    return f"sqlite:///{home / 'indexes' / f'{chain_id}-{contract}-{node}{suffix}.sqlite'}"


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


class LedgerManager:
    """The node's view of the chain and the sender of its transactions (see the module docstring)."""

    def __init__(
        self,
        *,
        rpc_url: str,
        contract_address: str,
        chain_id: int,
        my_address: str,
        account: LocalAccount | None,
        index_db_url: str | None = None,
        poll_interval_s: float = 1.0,
        voucher_claim_interval_s: float = 30.0,
        home: Path | None = None,
        policy: Policy | None = None,
        load_snapshot: Callable[[], Awaitable[LoadSnapshot]] | None = None,
        index_start_block: int = 0,
        instance: str | None = None,
    ) -> None:
        """Cheap: nothing touches the chain until `start()`. The voucher store is opened here.

        `index_start_block` is where a fresh index starts reading (at most the deployment block).
        """
        if account is not None and account.address != to_checksum_address(my_address):
            raise LedgerManagerError(f"account {account.address} is not the node's address {my_address}")
        self.rpc_url = rpc_url
        self.contract_address = str(to_checksum_address(contract_address))
        self.chain_id = chain_id
        self.my_address = str(to_checksum_address(my_address))
        self.poll_interval_s = poll_interval_s
        self.voucher_claim_interval_s = voucher_claim_interval_s
        self.policy = policy
        self._account = account
        self._load_snapshot = load_snapshot
        self._home = home or wwwserve_home()
        self._index_db_url = index_db_url or default_index_db_url(
            self._home, chain_id, self.contract_address, self.my_address, instance
        )
        self._custom_index_url = index_db_url is not None
        self.chain_reset: str | None = None  # why, while the chain this node indexed is gone (a reset devnet)
        self.on_reset: Callable[[str], None] | None = None  # told once per reset (node run: chain.on_reset)
        self._index_start_block = index_start_block
        self.epoch = -1  # the deployment read: 0 from the start, one more each time a chain reset is re-indexed
        self._open_deployment_files(instance)
        self._promise_lock = threading.Lock()
        self._view = _View()
        self._min_stake_wei = 1  # the contract's MIN_STAKE, read when the chain is opened
        self._indexer: Indexer | None = None
        self._client: WWWServeClient | None = None
        # One thread for indexer syncs, one for transactions: each kind is serialized, neither waits on the other.
        self._sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sync")
        self._tx_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-tx")
        self._refresh_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

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

    # -----------------------------------------------------------------------------------------
    # lifecycle
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

    def _open_deployment_files(self, instance: str | None) -> None:
        """Open this node's files on one deployment (`instance` tags a deployment: see `deployment_instance`):
        the voucher store now; judge votes and duel evidence are named by `data_path` from the same tag. Each
        opening is a new `epoch`: what peers owe is billed afresh against the new store's vouchers (node.billing)."""
        self.epoch += 1
        self._data_tag = f"{self.chain_id}-{self.my_address}" + (f"-{instance}" if instance else "")
        self.store = VoucherStore(self.data_path("vouchers"), contract_address=self.contract_address)
        # Cached so credit_wei() (on the request path) never reads the database.
        self._promised: dict[str, int] = self.store.promised()
        # The best voucher held from each origin, cached for `standing()` (on the peer request path).
        self._vouchered: dict[str, int] = {e.voucher.origin: e.voucher.cumulative_wei for e in self.store.earned()}

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro, name=name))

    def _open(self) -> None:
        # Two Web3 instances: the sync thread and the tx thread never share one HTTP session.
        sync_w3 = connect(self.rpc_url)
        self._indexer = Indexer(sync_w3, self.contract_address, self._index_db_url, start_block=self._index_start_block)
        if self._indexer.chain_id != self.chain_id:
            raise LedgerChainMismatchError(
                f"{self.rpc_url} serves chain {self._indexer.chain_id}, the node is configured for {self.chain_id}"
            )
        tx_w3 = connect(self.rpc_url)
        sender = TxSender(tx_w3, self._account) if self._account is not None else None
        self._client = WWWServeClient(tx_w3, self.contract_address, sender)
        # The contract routes and draws judges by stake only from MIN_STAKE up; so does this node.
        self._min_stake_wei = self._client.params().min_stake_wei

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

    async def _in_pool(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    # -----------------------------------------------------------------------------------------
    # reads (from memory)
    async def refresh(self) -> None:
        """Sync the index now (in a thread) and replace the in-memory view."""
        async with self._refresh_lock:
            self._view = await self._in_pool(self._sync_pool, self._sync_and_build)

    def _sync_and_build(self) -> _View:
        try:
            return self._build_view()
        except LedgerError:
            raise
        except Exception as exc:
            # The indexer lets transport errors through raw; callers see one typed error for an outage.
            if is_transient(exc):
                raise ChainUnreachableError(self.rpc_url, f"{type(exc).__name__}: {exc}") from exc
            raise

    def _build_view(self) -> _View:
        indexer = self._require_indexer()
        indexer.sync()
        cursor = indexer.cursor()
        view = self._view
        if (
            cursor is not None
            and cursor.block_number == view.block_number
            and bytes.fromhex(cursor.block_hash.removeprefix("0x")) == view.block_hash
        ):
            return view  # no new block since the last view: nothing to rebuild (the GIL is shared with serving)
        peers: dict[str, PeerRecord] = {}
        pubkeys: dict[str, bytes] = {}
        endpoints: dict[str, str] = {}
        funds: dict[str, int] = {}
        stakes = {entry.address: entry for entry in indexer.stake_table()}
        for node in indexer.nodes(active_only=False):
            pubkey = bytes.fromhex(node.pubkey.removeprefix("0x"))
            pubkeys[node.address] = pubkey
            endpoints[node.address] = node.endpoint.rstrip("/")
            entry = stakes.get(node.address)
            if entry is not None:
                funds[node.address] = entry.credit_wei + entry.pending_withdrawal_wei
            if node.active:
                peers[node.address] = PeerRecord(
                    address=node.address,
                    pubkey=pubkey,
                    endpoint=node.endpoint.rstrip("/"),
                    models=frozenset(node.models),
                    stake_wei=routable_stake_wei(entry.active_stake_wei if entry is not None else 0,
                                                 self._min_stake_wei),
                )
        claimed_from_me: dict[str, int] = {}
        claimed_by_me: dict[str, int] = {}
        me = self.my_address
        with Session(indexer.engine) as session:
            rows = session.execute(
                select(VoucherClaimRow.origin, VoucherClaimRow.executor, VoucherClaimRow.paid_wei).where(
                    or_(VoucherClaimRow.origin == me, VoucherClaimRow.executor == me)
                )
            )
            for origin, executor, paid in rows:
                # The contract's claimed[origin][executor] grows by `paid` on every claim.
                if origin == me:
                    claimed_from_me[executor] = claimed_from_me.get(executor, 0) + int(paid)
                if executor == me:
                    claimed_by_me[origin] = claimed_by_me.get(origin, 0) + int(paid)
        # Claims someone else submitted (or that raced ours) still count as paid (the mark only rises).
        for origin, paid in claimed_by_me.items():
            self.store.mark_claimed(origin, paid)
        if cursor is not None:
            block_number, block_hash = cursor.block_number, bytes.fromhex(cursor.block_hash.removeprefix("0x"))
        else:
            block = indexer.w3.eth.get_block("latest")
            block_number, block_hash = int(block["number"]), bytes(block["hash"])
        return _View(
            peers=peers,
            pubkeys=pubkeys,
            endpoints=endpoints,
            funds_wei=funds,
            own=indexer.account(me),
            claimed_from_me=claimed_from_me,
            claimed_by_me=claimed_by_me,
            block_number=block_number,
            block_hash=block_hash,
        )

    def _require_indexer(self) -> Indexer:
        if self._indexer is None:
            raise LedgerManagerError("the Ledger manager is not started")
        return self._indexer

    def peers(self) -> list[PeerRecord]:
        """Active registered nodes (this node included) as of the last refresh, by address."""
        return [self._view.peers[a] for a in sorted(self._view.peers)]

    def peer(self, address: str) -> PeerRecord | None:
        """One active registered node, or None."""
        return self._view.peers.get(_checksum_or_none(address) or "")

    def pubkey_of(self, address: str) -> bytes | None:
        """The ed25519 key `address` registered (active or not); None if it never registered."""
        return self._view.pubkeys.get(_checksum_or_none(address) or "")

    def contact(self, address: str) -> Peer | None:
        """How to reach any node that ever registered (one that left still serves its duel evidence); None
        if it never did."""
        checksummed = _checksum_or_none(address) or ""
        endpoint = self._view.endpoints.get(checksummed)
        if endpoint is None:
            return None
        record = self._view.peers.get(checksummed)
        return record.routing_peer() if record is not None else Peer(checksummed, 0, frozenset(), endpoint)

    def stake_wei(self) -> int:
        """This node's active stake."""
        own = self._view.own
        return 0 if own is None else own.active_stake_wei

    def credit_wei(self) -> int:
        """Free on-chain credit minus fees promised in vouchers and not yet claimed (may be negative)."""
        own = self._view.own
        credit = 0 if own is None else own.credit_wei
        return credit - self._unclaimed_promises_wei()

    def _unclaimed_promises_wei(self) -> int:
        claimed = self._view.claimed_from_me
        return sum(max(0, total - claimed.get(executor, 0)) for executor, total in self._promised.items())

    def promised_unclaimed(self) -> dict[str, int]:
        """executor -> wei this node promised it and the chain has not paid yet."""
        claimed = self._view.claimed_from_me
        out = {e: total - claimed.get(e, 0) for e, total in self._promised.items()}
        return {e: v for e, v in out.items() if v > 0}

    def recent_block_hash(self) -> bytes:
        """The hash (32 bytes) of the newest indexed block: the public seed of PoS selection."""
        return self._view.block_hash

    def recent_block_number(self) -> int:
        """The number of the block `recent_block_hash` belongs to (-1 before the first refresh)."""
        return self._view.block_number

    # -----------------------------------------------------------------------------------------
    # vouchers
    def record_fee(self, executor: str, fee_wei: int) -> SignedVoucher:
        """Origin side: owe `executor` `fee_wei` more and return the signed cumulative voucher.

        The new total is committed before signing. VoucherCreditExceededError when the fee exceeds
        `credit_wei()`; LedgerAccountMissingError without an account.
        """
        if self._account is None:
            raise LedgerAccountMissingError("paying a fee needs the operator account; the node has none")
        executor = _checksum_or_none(executor) or ""
        if not executor:
            raise VoucherMalformedError("executor must be a 20-byte hex address")
        if executor == self.my_address:
            raise VoucherMalformedError("a node does not pay itself")
        with self._promise_lock:
            cumulative = self.store.promise(executor, fee_wei, limit_wei=self.credit_wei())
            self._promised[executor] = cumulative
        signature = sign_voucher_offline(self._account, self.chain_id, self.contract_address, executor, cumulative)
        return SignedVoucher(
            origin=self.my_address, executor=executor, cumulative_wei=cumulative, signature=signature
        )

    def accept_voucher(self, voucher: SignedVoucher) -> int:
        """Executor side: check `voucher`, keep it if it is the best from its origin; return the newly earned wei.

        Raises (all `VoucherError`): VoucherWrongExecutorError, VoucherForgedError, VoucherStaleError,
        VoucherOverdrawnError (the origin's indexed credit + pending withdrawal does not cover what
        would be left unclaimed).
        """
        check_voucher(voucher, chain_id=self.chain_id, contract=self.contract_address, me=self.my_address)
        paid = self._view.claimed_by_me.get(voucher.origin, 0)
        if voucher.cumulative_wei <= paid:
            raise VoucherStaleError(f"{voucher.cumulative_wei} wei from {voucher.origin} is already paid ({paid} wei)")
        held = self.store.best(voucher.origin)
        if held is not None and voucher.cumulative_wei <= held.voucher.cumulative_wei:
            raise VoucherStaleError(
                f"voucher from {voucher.origin} for {voucher.cumulative_wei} wei is not above the "
                f"{held.voucher.cumulative_wei} wei already held"
            )
        funds = self._view.funds_wei.get(voucher.origin, 0)
        if voucher.cumulative_wei - paid > funds:
            raise VoucherOverdrawnError(
                f"{voucher.origin} holds {funds} wei on the ledger, the voucher leaves "
                f"{voucher.cumulative_wei - paid} wei unclaimed"
            )
        if paid and held is not None and paid > held.claimed_wei:
            self.store.mark_claimed(voucher.origin, paid)
        # The store re-checks staleness under its lock (two copies of one voucher racing in).
        earned = self.store.accept(voucher)
        self._vouchered[voucher.origin] = max(self._vouchered.get(voucher.origin, 0), voucher.cumulative_wei)
        return earned

    def standing(self, address: str) -> PeerStanding:
        """What this node's ledger says of `address` as a paying origin (node.billing)."""
        checksummed = _checksum_or_none(address) or ""
        record = self._view.peers.get(checksummed)
        return PeerStanding(
            active=record is not None and record.stake_wei > 0,  # stake_wei is 0 below MIN_STAKE
            funds_wei=self._view.funds_wei.get(checksummed, 0),
            vouchered_wei=self._vouchered.get(checksummed, 0),
            claimed_wei=self._view.claimed_by_me.get(checksummed, 0),
            epoch=self.epoch,
        )

    def owed_to_me(self) -> dict[str, int]:
        """origin -> wei earned under vouchers and not yet claimed on-chain."""
        return self.store.owed()

    async def claim_vouchers(self) -> list[TxResult]:
        """Claim every voucher with unclaimed value, one transaction at a time off the event loop.

        A voucher the chain already paid (someone else claimed it) or that the origin cannot fund now is
        skipped and logged; it stays in the store and is tried again next time if value remains.
        """
        if self._account is None:
            raise LedgerAccountMissingError("claiming vouchers needs the operator account; the node has none")
        async with self._claim_lock:
            results = await self._in_pool(self._tx_pool, self._claim_all)
        if results:
            await self.refresh()
        return results

    def _claim_all(self) -> list[TxResult]:
        client = self._require_client()
        results: list[TxResult] = []
        for earned in self.store.earned():
            if earned.unclaimed_wei <= 0:
                continue
            v = earned.voucher
            try:
                result = client.claim_voucher(v.origin, v.executor, v.cumulative_wei, v.signature)
            except StaleVoucherError:
                pass  # paid already (the origin or a third party submitted it): just catch up below
            except VoucherUnfundedError:
                logger.warning(
                    "ledger: %s cannot fund its voucher now; %d wei stay owed", v.origin, earned.unclaimed_wei
                )
                continue
            except LedgerError as exc:
                logger.warning("ledger: claiming the voucher of %s failed: %s", v.origin, exc)
                continue
            else:
                paid = sum(int(e.args["paid"]) for e in result.events_named("VoucherClaimed"))
                logger.info(
                    "ledger: claimed %d wei from %s (voucher %d wei) in tx %s",
                    paid, v.origin, v.cumulative_wei, result.tx_hash,
                )
                results.append(result)
            try:
                self.store.mark_claimed(v.origin, client.claimed(v.origin, v.executor))
            except LedgerError as exc:
                logger.warning("ledger: reading what %s paid failed: %s", v.origin, exc)
        return results

    def _require_client(self) -> WWWServeClient:
        if self._client is None:
            raise LedgerManagerError("the Ledger manager is not started")
        return self._client

    def data_path(self, folder: str) -> Path:
        """`<home>/<folder>/<chain>-<node>[-<deployment tag>].db`: a file of this node on this deployment."""
        return self._home / folder / f"{self._data_tag}.db"

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

    # -----------------------------------------------------------------------------------------
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

    # -----------------------------------------------------------------------------------------
    # stake
    async def change_stake(self, delta_wei: int) -> TxResult | None:
        """Stake `delta_wei` more (> 0) or request unstaking `-delta_wei` (< 0); then refresh. 0: nothing."""
        if delta_wei == 0:
            return None
        if self._account is None:
            raise LedgerAccountMissingError("changing stake needs the operator account; the node has none")
        client = self._require_client()

        def send() -> TxResult:
            result = client.stake(delta_wei) if delta_wei > 0 else client.request_unstake(-delta_wei)
            logger.info(
                "ledger: %s %d wei (stake was %d wei) in tx %s",
                "staked" if delta_wei > 0 else "requested unstaking of", abs(delta_wei), self.stake_wei(),
                result.tx_hash,
            )
            return result

        result = await self._in_pool(self._tx_pool, send)
        await self.refresh()
        return result

    async def _stake_delta(self) -> int:
        assert self.policy is not None
        snapshot = await self._load_snapshot() if self._load_snapshot is not None else LoadSnapshot()
        # The ledger is the authority on spendable credit: staking never eats fees already promised.
        snapshot = dataclasses.replace(snapshot, credit_wei=max(0, self.credit_wei()))
        return stake_change_wei(self.policy, snapshot, self.stake_wei())

    # -----------------------------------------------------------------------------------------
    # loops
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

    # -----------------------------------------------------------------------------------------
    # a chain that was reset (a devnet restarted): detect, serve locally, re-index when the contract is back
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
        self._view = _View()  # no peers, no stake, no credit: requests are served here, nothing is delegated
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

    async def _claim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.voucher_claim_interval_s)
            try:
                await self.claim_vouchers()
            except Exception as exc:
                logger.warning("ledger: voucher claims failed: %s", exc)

    async def _stake_loop(self) -> None:
        assert self.policy is not None
        config = self.policy.config
        interval_s = config.auto_stake_interval_s
        delay_s = 0.0 if not config.auto_stake else interval_s  # a fixed stake is reached right away
        while True:
            await asyncio.sleep(delay_s)
            try:
                # Awaited (tx mined, view refreshed) before the next decision: one stake tx pending at most.
                await self.change_stake(await self._stake_delta())
            except Exception as exc:  # not registered, stake locked by a duel, chain down, ...
                logger.warning("ledger: stake change failed: %s", exc)
                delay_s = min(_STAKE_BACKOFF_MAX_S, max(interval_s, 2 * delay_s))
                continue
            # A fixed stake is held: checked every interval, topped up from credit after a lost duel took it.
            delay_s = interval_s


@functools.lru_cache(maxsize=4096)
def _checksum_or_none(address: str) -> str | None:
    # Cached: EIP-55 is a pure-Python keccak (~0.1 ms), and the same few peers are looked up per request.
    try:
        return str(to_checksum_address(address))
    except (ValueError, TypeError):
        return None
