"""The Ledger manager's fee vouchers (DESIGN §2; node.managers.ledger): what this node promises as an
origin, what it accepts and claims as an executor, and the loop that claims.

`record_fee` commits the new cumulative amount owed before signing it; `accept_voucher` checks a voucher
against the view and keeps the best per origin; `claim_vouchers` sends one `claimVoucher` per origin on
the transaction thread, every `voucher_claim_interval_s` from `_claim_loop`.
"""

from __future__ import annotations

import asyncio

from wwwserve.ledger.client import TxResult, sign_voucher_offline
from wwwserve.ledger.errors import LedgerError, StaleVoucherError, VoucherUnfundedError
from wwwserve.node.billing import PeerStanding
from wwwserve.node.managers.ledger.base import LedgerAccountMissingError, checksum_or_none, logger
from wwwserve.node.managers.ledger.reads import LedgerReads
from wwwserve.node.vouchers import (
    SignedVoucher,
    VoucherMalformedError,
    VoucherOverdrawnError,
    VoucherStaleError,
    check_voucher,
)

__all__ = ["LedgerPayments"]


class LedgerPayments(LedgerReads):
    """Fee vouchers, both sides, and their claims (see the module docstring)."""

    def record_fee(self, executor: str, fee_wei: int) -> SignedVoucher:
        """Origin side: owe `executor` `fee_wei` more and return the signed cumulative voucher.

        The new total is committed before signing. VoucherCreditExceededError when the fee exceeds
        `credit_wei()`; LedgerAccountMissingError without an account.
        """
        if self._account is None:
            raise LedgerAccountMissingError("paying a fee needs the operator account; the node has none")
        executor = checksum_or_none(executor) or ""
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
        checksummed = checksum_or_none(address) or ""
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

    def promised_unclaimed(self) -> dict[str, int]:
        """executor -> wei this node promised it and the chain has not paid yet."""
        claimed = self._view.claimed_from_me
        out = {e: total - claimed.get(e, 0) for e, total in self._promised.items()}
        return {e: v for e, v in out.items() if v > 0}

    async def _claim_loop(self) -> None:
        while True:
            await asyncio.sleep(self.voucher_claim_interval_s)
            try:
                await self.claim_vouchers()
            except Exception as exc:
                logger.warning("ledger: voucher claims failed: %s", exc)
