"""The Ledger manager: the node's in-memory view of the chain, and the only sender of its transactions.

Reads. An event `Indexer` (SQLite under `<home>/indexes/` by default, one file per chain, contract and
node so several nodes on one machine never share a file) follows the contract; every `refresh()` syncs
it in a worker thread and rebuilds an immutable `ChainView` (registry, stakes, own balances, voucher claims,
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
Auto-stake (policy.config.auto_stake, off by default; bounded by MIN_STAKE and a credit reserve, moves
held back until the load is steady: see `stake`) runs `node.policy.stake_change_wei` every
`auto_stake_interval_s` and waits for each stake transaction and a refresh before deciding again, so
at most one stake transaction is ever pending; with `fixed_stake_wei` it moves to that stake at once and
holds it (a lost duel's slash is topped up from free credit at the next interval).

The manager is one class, `LedgerManager`, made of one class per job, each in its own module: `base`
(the state, the view's shape, the errors, the steps the jobs share), `reads` (the registry view and the
queries on it), `payment` (fee vouchers and their claims), `stake` (stake changes, auto-stake), `reset`
(the poll loop and a reset chain) and `manager` (construction, start, close, the chain side of duels).
Every name is importable from here.
"""

from wwwserve.node.managers.ledger.base import (
    LedgerAccountMissingError,
    LedgerChainMismatchError,
    LedgerManagerError,
    PeerRecord,
    default_index_db_url,
)
from wwwserve.node.managers.ledger.manager import LedgerManager, deployment_instance
from wwwserve.node.vouchers import (
    SignedVoucher,
    VoucherCreditExceededError,
    VoucherError,
    VoucherForgedError,
    VoucherMalformedError,
    VoucherOverdrawnError,
    VoucherStaleError,
    VoucherWrongExecutorError,
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
    "default_index_db_url",
    "deployment_instance",
]
