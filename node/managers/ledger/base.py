"""What every job of the Ledger manager shares (node.managers.ledger): its errors, the shape of the
in-memory view (`ChainView`, `PeerRecord`), the manager's state, and the steps several jobs take (open
the chain and this deployment's files, run blocking work on the sync or the transaction thread).

`LedgerBase` holds the state and takes the constructor's arguments; each job adds its methods as a class
of its own module (reads, payment, stake, reset) and `node.managers.ledger.manager.LedgerManager` is all
of them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.middleware import Web3Middleware
from web3.types import MakeRequestFn, RPCEndpoint, RPCResponse

from wwwserve.errors import WWWServeError
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.home import wwwserve_home
from wwwserve.ledger.indexer import AccountInfo, Indexer
from wwwserve.ledger.tx import TxSender
from wwwserve.node.policy import LoadSnapshot, Policy
from wwwserve.node.routing import Peer
from wwwserve.node.vouchers import VoucherStore

__all__ = [
    "ChainView",
    "LedgerAccountMissingError",
    "LedgerBase",
    "LedgerChainMismatchError",
    "LedgerManagerError",
    "PeerRecord",
    "checksum_or_none",
    "count_rpc_errors",
    "default_index_db_url",
    "logger",
]

# One logger for the whole manager, under the name it had as one module: log lines and the operator's
# logging filters stay what they were.
logger = logging.getLogger("wwwserve.node.managers.ledger")

T = TypeVar("T")


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
class ChainView:
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


@functools.lru_cache(maxsize=4096)
def checksum_or_none(address: str) -> str | None:
    """`address` checksummed (EIP-55), or None when it is not a 20-byte hex address."""
    # Cached: EIP-55 is a pure-Python keccak (~0.1 ms), and the same few peers are looked up per request.
    try:
        return str(to_checksum_address(address))
    except (ValueError, TypeError):
        return None


def default_index_db_url(home: Path, chain_id: int, contract: str, node: str, instance: str | None = None) -> str:
    """`sqlite:///<home>/indexes/<chain>-<contract>-<node>[-<instance>].sqlite`: one file per node, no sharing."""
    suffix = f"-{instance}" if instance else ""
    return f"sqlite:///{home / 'indexes' / f'{chain_id}-{contract}-{node}{suffix}.sqlite'}"


def count_rpc_errors(w3: Web3, report: Callable[[str, str], object]) -> None:
    """Tell `report(method, kind)` of every JSON-RPC request of `w3` that fails, each try on its own (the
    retries of `ledger.chain` are requests too): "transport" when no answer came (refused, timed out, an HTTP
    error), "revert" when the node answered that the contract reverted, "rpc" for any other error answer."""

    class RpcErrorCounter(Web3Middleware):
        def wrap_make_request(self, make_request: MakeRequestFn) -> MakeRequestFn:
            def counted(method: RPCEndpoint, params: object) -> RPCResponse:
                try:
                    response = make_request(method, params)
                except Exception:
                    report(str(method), "transport")
                    raise
                error = response.get("error")
                if error is not None:
                    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
                    report(str(method), "revert" if "revert" in message.lower() else "rpc")
                return response

            return counted

    w3.middleware_onion.inject(RpcErrorCounter, "wwwserve_rpc_errors", layer=0)


class LedgerBase:
    """The Ledger manager's state and the steps its jobs share (see node.managers.ledger)."""

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
        self._view = ChainView()
        self._min_stake_wei = 1  # the contract's MIN_STAKE, read when the chain is opened
        self._indexer: Indexer | None = None
        self._client: WWWServeClient | None = None
        self._sender: TxSender | None = None
        # Told of every failed JSON-RPC request, (method, kind): `LedgerManager.watch` counts them.
        self.on_rpc_error: Callable[[str, str], object] | None = None
        # One thread for indexer syncs, one for transactions: each kind is serialized, neither waits on the other.
        self._sync_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sync")
        self._tx_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-tx")
        self._refresh_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

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

    def _open(self) -> None:
        # Two Web3 instances: the sync thread and the tx thread never share one HTTP session.
        sync_w3 = connect(self.rpc_url)
        count_rpc_errors(sync_w3, self._rpc_failed)
        self._indexer = Indexer(sync_w3, self.contract_address, self._index_db_url, start_block=self._index_start_block)
        if self._indexer.chain_id != self.chain_id:
            raise LedgerChainMismatchError(
                f"{self.rpc_url} serves chain {self._indexer.chain_id}, the node is configured for {self.chain_id}"
            )
        tx_w3 = connect(self.rpc_url)
        count_rpc_errors(tx_w3, self._rpc_failed)
        sender = TxSender(tx_w3, self._account) if self._account is not None else None
        self._sender = sender
        self._client = WWWServeClient(tx_w3, self.contract_address, sender)
        # The contract routes and draws judges by stake only from MIN_STAKE up; so does this node.
        self._min_stake_wei = self._client.params().min_stake_wei

    def _rpc_failed(self, method: str, kind: str) -> None:
        if self.on_rpc_error is not None:
            self.on_rpc_error(method, kind)

    async def _in_pool(self, pool: ThreadPoolExecutor, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    def _require_indexer(self) -> Indexer:
        if self._indexer is None:
            raise LedgerManagerError("the Ledger manager is not started")
        return self._indexer

    def _require_client(self) -> WWWServeClient:
        if self._client is None:
            raise LedgerManagerError("the Ledger manager is not started")
        return self._client

    def data_path(self, folder: str) -> Path:
        """`<home>/<folder>/<chain>-<node>[-<deployment tag>].db`: a file of this node on this deployment."""
        return self._home / folder / f"{self._data_tag}.db"
