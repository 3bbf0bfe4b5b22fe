"""The Ledger manager's stake (node.managers.ledger): stake changes, and auto-stake's loop.

Auto-stake (policy.config.auto_stake) asks `node.policy.stake_change_wei` every `auto_stake_interval_s`
and waits for each stake transaction and a refresh before deciding again, so at most one is pending; with
`fixed_stake_wei` it moves to that stake at once and holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses

from wwwserve.ledger.client import TxResult
from wwwserve.node.managers.ledger.base import LedgerAccountMissingError, logger
from wwwserve.node.managers.ledger.reads import LedgerReads
from wwwserve.node.policy import LoadSnapshot, stake_change_wei

__all__ = ["LedgerStaking"]

# Longest pause between auto-stake attempts after failures (not registered, chain down, ...).
_STAKE_BACKOFF_MAX_S = 60.0


class LedgerStaking(LedgerReads):
    """Stake changes and auto-stake (see the module docstring)."""

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
