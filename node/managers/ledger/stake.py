"""The Ledger manager's stake (node.managers.ledger): stake changes, and auto-stake's loop.

Auto-stake (policy.config.auto_stake, off by default) asks `node.policy.stake_change_wei` every
`auto_stake_interval_s`, bounded by the contract's MIN_STAKE below and the credit reserve, and sends a move
only once `StakeHysteresis` lets it through (the load called for it `auto_stake_settle_intervals` looks in
a row): one look is `node.policy.stake_look_wei`, which the simulator calls too. It waits for each stake
transaction and a refresh before deciding again, so at most one is pending.
With `fixed_stake_wei` it moves to that stake at once and holds it.
"""

from __future__ import annotations

import asyncio
import dataclasses

from wwwserve.ledger.client import TxResult
from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.node.managers.ledger.base import LedgerAccountMissingError, logger
from wwwserve.node.managers.ledger.reads import LedgerReads
from wwwserve.node.policy import LoadSnapshot, StakeHysteresis, stake_look_wei

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

    async def _stake_delta(self, hysteresis: StakeHysteresis | None) -> int:
        """One look (`node.policy.stake_look_wei`, as the simulator makes it): the move to send now."""
        assert self.policy is not None
        snapshot = await self._load_snapshot() if self._load_snapshot is not None else LoadSnapshot()
        # The ledger is the authority on spendable credit: staking never eats fees already promised.
        snapshot = dataclasses.replace(snapshot, credit_wei=max(0, self.credit_wei()))
        return stake_look_wei(self.policy, snapshot, self.stake_wei(), hysteresis, min_stake_wei=self._min_stake_wei)

    async def _stake_loop(self) -> None:
        assert self.policy is not None
        config = self.policy.config
        interval_s = config.auto_stake_interval_s
        hysteresis = StakeHysteresis(config.auto_stake_settle_intervals) if config.auto_stake else None
        if hysteresis is not None:
            logger.info(
                "ledger: auto-stake is on: stake follows load (never below MIN_STAKE %d wei, never spending the "
                "last %.0f credits of free credit), moved after %d steady looks %.1f s apart",
                self._min_stake_wei, config.auto_stake_credit_reserve_wei / WEI_PER_CREDIT,
                config.auto_stake_settle_intervals, interval_s,
            )
        delay_s = 0.0 if not config.auto_stake else interval_s  # a fixed stake is reached right away
        while True:
            await asyncio.sleep(delay_s)
            try:
                delta_wei = await self._stake_delta(hysteresis)
                # Awaited (tx mined, view refreshed) before the next decision: one stake tx pending at most.
                await self.change_stake(delta_wei)
            except Exception as exc:  # not registered, stake locked by a duel, chain down, ...
                logger.warning("ledger: stake change failed: %s", exc)
                delay_s = min(_STAKE_BACKOFF_MAX_S, max(interval_s, 2 * delay_s))
                continue
            # A fixed stake is held: checked every interval, topped up from credit after a lost duel took it.
            delay_s = interval_s
