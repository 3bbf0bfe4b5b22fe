"""Send transactions for one local account, and turn every chain failure into a typed ledger error.

`TxSender` owns one eth-account `LocalAccount` (keys never leave the process; nodes never need an
unlocked account) and works over any web3 provider (`ledger.chain.connect` builds the HTTP one, with
web3's own request retries off: the retries are the ones below). Per transaction it:

1. estimates gas against the pending block, the one the transaction joins (a revert here becomes the
   contract's typed error and nothing is sent), and adds a margin;
2. reads EIP-1559 fees from the node, or a legacy gas price where the chain has no base fee;
3. under a lock, takes the next local nonce (fetched from the node's pending count once, then counted
   locally), signs, and sends the raw bytes. A transient transport failure resends the *same bytes*, so
   a retry can never become a second transaction; a nonce conflict (another process used the key) first
   checks whether our own transaction is already known, and only then re-signs once with a fresh nonce;
4. waits for the receipt; a status-0 receipt is replayed with eth_call to recover the revert reason.

`pending` counts the transactions it sent and has not seen mined (nor given up waiting for): the node's
`wwwserve_chain_pending_transactions` gauge.

Every read it makes goes through `ledger.chain.call_with_retries` with the sender's `RetryPolicy`: bounded
retries with backoff for transient transport errors, ending in `ChainUnreachableError` naming the URL;
reverts become typed errors (decoded by `ledger.chain.revert_reason_of`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import MethodUnavailable, TransactionNotFound
from web3.types import TxReceipt

from wwwserve.ledger.chain import (
    RetryPolicy,
    call_with_retries,
    endpoint_of,
    is_transient,
    revert_reason_of,
    rpc_message,
)
from wwwserve.ledger.errors import (
    ChainRequestError,
    ChainUnreachableError,
    LedgerError,
    LedgerValueError,
    TransactionRejectedError,
    TransactionTimeoutError,
    revert_error,
)

T = TypeVar("T")

# Substrings of the node's answer to eth_sendRawTransaction (geth, anvil, hardhat, eth-tester).
_ALREADY_KNOWN = ("already known", "already imported", "known transaction")
_NONCE_CONFLICT = (
    "nonce too low",
    "invalid transaction nonce",
    "replacement transaction underpriced",
    "replacement underpriced",
    "nonce has already been used",
)


@dataclass(frozen=True)
class PendingTx:
    """A transaction the node accepted but that may not be mined yet."""

    tx_hash: str
    nonce: int
    function: str
    # what was sent, kept to replay a failed transaction with eth_call and recover its revert reason
    call: dict[str, Any]


class TxSender:
    """Signs and sends transactions for one local account, with its own thread-safe nonce counter.

    One TxSender per account per process. Several processes may use different accounts on one node
    without coordination; two processes sharing a key are survived (nonce conflicts resync) but not
    recommended.
    """

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        gas_margin_bps: int = 2_000,
        receipt_timeout_s: float = 120.0,
        poll_interval_s: float = 0.05,
        retry: RetryPolicy | None = None,
        priority_fee_wei: int | None = None,
    ) -> None:
        """`gas_margin_bps` is added to each gas estimate (2_000 = +20 %); `priority_fee_wei` overrides the
        node's suggested tip."""
        if not isinstance(account, LocalAccount):
            raise LedgerValueError("TxSender needs an eth-account LocalAccount (the key must be local)")
        if gas_margin_bps < 0:
            raise LedgerValueError("gas_margin_bps must be >= 0")
        self._w3 = w3
        self._account = account
        self._gas_margin_bps = gas_margin_bps
        self._receipt_timeout_s = receipt_timeout_s
        self._poll_interval_s = poll_interval_s
        self._retry = retry or RetryPolicy()
        self._priority_fee_wei = priority_fee_wei
        self._lock = threading.Lock()
        self._next_nonce: int | None = None
        self._chain_id: int | None = None
        self._estimate_pending = True  # until the node says it cannot estimate against "pending"
        self._unmined: set[str] = set()  # hashes sent and not yet seen mined by `wait`

    # -- properties ---------------------------------------------------------------------------
    @property
    def w3(self) -> Web3:
        return self._w3

    @property
    def address(self) -> ChecksumAddress:
        """Checksummed address of the sending account."""
        return self._account.address

    @property
    def account(self) -> LocalAccount:
        return self._account

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    @property
    def pending(self) -> int:
        """Transactions sent (the node holds them) whose receipt `wait` has not returned or given up on."""
        return len(self._unmined)

    @property
    def chain_id(self) -> int:
        """The chain id, read once from the node."""
        if self._chain_id is None:
            self._chain_id = int(self._rpc(lambda: self._w3.eth.chain_id, "eth_chainId"))
        return self._chain_id

    def reset_nonce(self) -> None:
        """Forget the local nonce; the next send reads the pending count from the node again."""
        with self._lock:
            self._next_nonce = None

    # -- sending ------------------------------------------------------------------------------
    def send(
        self,
        *,
        to: str | None,
        data: bytes | str = b"",
        value_wei: int = 0,
        gas: int | None = None,
        function: str = "transaction",
    ) -> TxReceipt:
        """Send a transaction and wait for a successful receipt.

        `to=None` deploys `data` as a contract. `gas=None` estimates it (a revert raises the typed error
        before anything is sent). Raises ContractRevertedError subclasses, TransactionRejectedError,
        TransactionTimeoutError or ChainUnreachableError.
        """
        return self.wait(self.submit(to=to, data=data, value_wei=value_wei, gas=gas, function=function))

    def submit(
        self,
        *,
        to: str | None,
        data: bytes | str = b"",
        value_wei: int = 0,
        gas: int | None = None,
        function: str = "transaction",
    ) -> PendingTx:
        """Sign and send a transaction without waiting for it to be mined."""
        if isinstance(value_wei, bool) or not isinstance(value_wei, int) or value_wei < 0:
            raise LedgerValueError(f"{function}: value_wei must be a non-negative int, got {value_wei!r}")
        payload = HexBytes(data)
        call: dict[str, Any] = {"from": self.address, "data": payload, "value": value_wei}
        if to is not None:
            call["to"] = Web3.to_checksum_address(to)
        if gas is None:
            estimate = self._estimate(call, function)
            gas = estimate + estimate * self._gas_margin_bps // 10_000
        fees = self._fees(function)
        tx: dict[str, Any] = {**call, "gas": gas, "chainId": self.chain_id, **fees}
        del tx["from"]
        with self._lock:
            pending = self._send_locked(tx, call, function)
            self._unmined.add(pending.tx_hash)
            return pending

    def _estimate(self, call: dict[str, Any], function: str) -> int:
        """Gas of `call` in the pending block: anvil estimates against the latest block by default,
        where a call valid from the next block on (a reveal right after the commit window) reverts.
        Nodes that know no "pending" estimate (eth-tester) already estimate in the next block."""
        if self._estimate_pending:
            try:
                return int(self._rpc(lambda: self._w3.eth.estimate_gas(cast(Any, call), "pending"), function))
            except ChainRequestError as exc:
                if not isinstance(exc.__cause__, MethodUnavailable):
                    raise
                self._estimate_pending = False
        return int(self._rpc(lambda: self._w3.eth.estimate_gas(cast(Any, call)), function))

    def _send_locked(self, tx: dict[str, Any], call: dict[str, Any], function: str) -> PendingTx:
        nonce = self._take_nonce(function)
        tx_hash = self._sign_and_push(tx, nonce, function)
        if tx_hash is None:
            # Someone else holds this nonce. Our own earlier attempt may have landed (a reply lost in
            # transit); only when it did not is it safe to sign the same call with a fresh nonce.
            self._next_nonce = None
            nonce = self._take_nonce(function)
            tx_hash = self._sign_and_push(tx, nonce, function)
            if tx_hash is None:
                self._next_nonce = None
                raise TransactionRejectedError(function, "nonce conflict persisted after resyncing the nonce")
        self._next_nonce = nonce + 1
        return PendingTx(tx_hash=tx_hash, nonce=nonce, function=function, call=dict(call, gas=tx["gas"]))

    def _take_nonce(self, function: str) -> int:
        if self._next_nonce is None:
            address = self._account.address
            self._next_nonce = int(
                self._rpc(lambda: self._w3.eth.get_transaction_count(address, "pending"), function)
            )
        return self._next_nonce

    def _sign_and_push(self, tx: dict[str, Any], nonce: int, function: str) -> str | None:
        """Send `tx` with `nonce`; the hash once the node holds it, None on a nonce conflict."""
        signed = self._account.sign_transaction({**tx, "nonce": nonce})
        raw = bytes(signed.raw_transaction)
        tx_hash = "0x" + keccak(raw).hex()
        delays = self._retry.delays_s()
        while True:
            try:
                self._w3.eth.send_raw_transaction(raw)
                return tx_hash
            except Exception as exc:
                if isinstance(exc, LedgerError):
                    raise
                message = rpc_message(exc).lower()
                if any(marker in message for marker in _ALREADY_KNOWN):
                    return tx_hash  # these exact bytes reached the node earlier
                if any(marker in message for marker in _NONCE_CONFLICT):
                    return tx_hash if self._is_known(tx_hash, function) else None
                reason = revert_reason_of(exc)
                if reason is not None:  # nodes that simulate on submission (hardhat) revert here
                    raise revert_error(reason, function) from exc
                if is_transient(exc):
                    delay = next(delays, None)
                    if delay is not None:
                        time.sleep(delay)
                        continue
                    # The node may or may not hold the transaction: forget the nonce so the next send
                    # asks the node instead of guessing.
                    self._next_nonce = None
                    raise ChainUnreachableError(
                        endpoint_of(self._w3),
                        f"{type(exc).__name__}: {exc} (after {self._retry.attempts} attempts; "
                        f"{function} transaction {tx_hash} may or may not have reached the node)",
                    ) from exc
                raise TransactionRejectedError(function, rpc_message(exc)) from exc

    def _is_known(self, tx_hash: str, function: str) -> bool:
        def lookup() -> bool:
            try:
                self._w3.eth.get_transaction(HexBytes(tx_hash))
            except TransactionNotFound:
                return False
            return True

        return self._rpc(lookup, function)

    def _fees(self, function: str) -> dict[str, int]:
        """EIP-1559 fees (max fee = 2 x base fee + tip, so a few fuller blocks do not strand it), or a
        legacy gas price when the latest block has no base fee or the node has no fee suggestion."""
        block = self._rpc(lambda: self._w3.eth.get_block("latest"), function)
        base_fee = block.get("baseFeePerGas")
        if base_fee is not None:
            tip = self._priority_fee_wei
            if tip is None:
                try:
                    tip = int(self._rpc(lambda: self._w3.eth.max_priority_fee, function))
                except ChainUnreachableError:
                    raise
                except Exception:
                    tip = None
            if tip is not None:
                return {"maxFeePerGas": 2 * int(base_fee) + tip, "maxPriorityFeePerGas": tip}
        return {"gasPrice": int(self._rpc(lambda: self._w3.eth.gas_price, function))}

    # -- receipts -----------------------------------------------------------------------------
    def wait(self, pending: PendingTx, timeout_s: float | None = None) -> TxReceipt:
        """Wait for `pending` to be mined; raise the typed revert error if it failed."""
        try:
            return self._wait(pending, timeout_s)
        finally:
            self._unmined.discard(pending.tx_hash)

    def _wait(self, pending: PendingTx, timeout_s: float | None) -> TxReceipt:
        timeout = self._receipt_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        tx_hash = HexBytes(pending.tx_hash)
        failures = 0
        while True:
            try:
                receipt = self._w3.eth.get_transaction_receipt(tx_hash)
                break
            except TransactionNotFound:
                failures = 0
            except Exception as exc:
                if not is_transient(exc):
                    raise
                failures += 1
                if failures >= self._retry.attempts:
                    raise ChainUnreachableError(
                        endpoint_of(self._w3),
                        f"{type(exc).__name__}: {exc} (while waiting for {pending.tx_hash})",
                    ) from exc
            if time.monotonic() >= deadline:
                raise TransactionTimeoutError(pending.function, pending.tx_hash, timeout)
            time.sleep(self._poll_interval_s)
        if receipt["status"] == 0:
            raise self._failed_tx_error(pending, receipt)
        return receipt

    def _failed_tx_error(self, pending: PendingTx, receipt: TxReceipt) -> LedgerError:
        """Recover why a mined transaction failed by replaying it with eth_call.

        The state just before its block is the faithful replay; with a pruned history (anvil
        --prune-history) that state is gone, so the block itself and then latest are tried.
        """
        block = int(receipt["blockNumber"])
        call = dict(pending.call)
        for block_id in (block - 1, block, "latest"):
            try:
                self._w3.eth.call(cast(Any, call), block_id)
            except Exception as exc:
                reason = revert_reason_of(exc)
                if reason is not None:
                    return revert_error(reason, pending.function, pending.tx_hash)
                continue
            break
        return revert_error("", pending.function, pending.tx_hash)

    # -- helpers ------------------------------------------------------------------------------
    def _rpc(self, op: Callable[[], T], function: str) -> T:
        return call_with_retries(self._w3, op, function=function, retry=self._retry)
