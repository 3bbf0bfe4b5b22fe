"""Paying peers: the fees this node owes, batched into cumulative vouchers (`node.vouchers`).

An origin owes the peer it handed a request to one fee (`peers.fee_wei`) once the answer is checked (the
Dispatcher calls `owe`). A voucher costs an EIP-712 signature, a durable write and an HTTP call: per
request that was most of a hop's cost. So fees are batched: one cumulative voucher per peer every
`flush_interval_s`, or at once when `FLUSH_AT_FEES` fees are owed to one peer (an executor refuses an
origin that owes it `peers.credit_limit_fees`, `node.billing`). Fees owed but not yet in a voucher are
spent already as far as the policy is concerned (`pending_wei`). The Ledger manager records and signs
each voucher (`record_fee`); the Communication manager delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["FLUSH_AT_FEES", "FeeBook", "VoucherRecorder"]

logger = logging.getLogger(__name__)

FLUSH_AT_FEES = 16
"""Fees owed to one peer that trigger a voucher at once rather than at the next interval."""


class VoucherRecorder(Protocol):
    """What paying needs of the Ledger manager: record (durably) and sign a voucher for `amount` more."""

    def record_fee(self, executor: str, fee_wei: int) -> Any: ...


class FeeBook:
    """The fees owed to peers, and their vouchers (see the module docstring)."""

    def __init__(self, ledger: VoucherRecorder | None, fee_wei: int,
                 deliver: Callable[[Any, Mapping[str, Any]], None] | None = None,
                 flush_interval_s: float = 0.5) -> None:
        self.ledger = ledger
        self.fee_wei = fee_wei
        self.deliver = deliver  # (peer, voucher JSON) -> sends it in the background
        self.flush_interval_s = flush_interval_s
        self._dues: dict[str, tuple[Any, int]] = {}  # peer address (lower) -> (peer, wei owed, no voucher yet)
        self._urgent: asyncio.Task[None] | None = None  # a flush started early for a peer owed many fees
        self._flusher: asyncio.Task[None] | None = None
        self._warned = False

    def owe(self, peer: Any) -> None:
        """Owe `peer` (with `.address`) one fee; a voucher covering every fee owed to it leaves within
        `flush_interval_s`, or at once past `FLUSH_AT_FEES`."""
        if self.ledger is None or self.fee_wei <= 0:
            return
        key = peer.address.lower()
        owed = self._dues.get(key)
        due = (owed[1] if owed is not None else 0) + self.fee_wei
        self._dues[key] = (peer, due)
        if due >= FLUSH_AT_FEES * self.fee_wei and (self._urgent is None or self._urgent.done()):
            # a busy pair pays at once, far below the executor's credit limit (node.billing, 64 fees)
            self._urgent = asyncio.get_running_loop().create_task(self.flush())
        elif self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def pending_wei(self) -> int:
        """Fees owed to peers that no voucher covers yet."""
        return sum(amount for _, amount in self._dues.values())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.flush_interval_s)
        await self.flush()

    async def flush(self) -> None:
        """Record (durably, then signed) and send one voucher per peer for the fees owed so far."""
        dues, self._dues = self._dues, {}
        if self.ledger is None:
            return
        for peer, amount in dues.values():
            try:
                # Off the event loop: the store's durable commit and the signature take milliseconds.
                voucher = await asyncio.to_thread(self.ledger.record_fee, peer.address, amount)
            except Exception as exc:
                if not self._warned:
                    logger.warning("cannot pay peers (fee voucher not recorded): %s", exc)
                    self._warned = True
                continue
            if self.deliver is not None:
                self.deliver(peer, voucher.to_json())

    async def aclose(self) -> None:
        """Pay what is owed before the node stops."""
        if self._urgent is not None and not self._urgent.done():
            with contextlib.suppress(Exception):
                await self._urgent
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()
