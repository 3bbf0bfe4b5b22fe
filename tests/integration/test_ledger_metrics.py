"""The Ledger manager's metrics against a real anvil chain (node.metrics, `LedgerManager.watch`): this node's
stake and credit as indexed, its pending transactions, and the chain's error answers counted by method."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_ledger_manager import UNIT, Chain, chain, manager  # noqa: F401  (chain: a fixture)

from wwwserve.ledger.errors import LedgerError
from wwwserve.node.metrics import Metrics

pytestmark = pytest.mark.integration


def test_stake_credit_pending_transactions_and_rpc_errors_reach_the_nodes_metrics(
        chain: Chain, tmp_path: Path) -> None:  # noqa: F811
    account = chain.node(deposit_wei=10 * UNIT, stake_wei=UNIT)

    async def scenario() -> None:
        mgr = manager(chain, account, tmp_path)
        metrics = Metrics()
        mgr.watch(metrics)
        # Before the first sync there is nothing to report: absent series, not zeros.
        assert metrics.reading("wwwserve_stake_wei") is None
        assert metrics.reading("wwwserve_credit_wei") is None
        assert metrics.reading("wwwserve_chain_pending_transactions") is None
        await mgr.start()
        try:
            indexed = chain.client()
            assert metrics.reading("wwwserve_stake_wei") == float(UNIT)
            assert metrics.reading("wwwserve_credit_wei") == float(indexed.credit(account.address)) > 0
            assert metrics.reading("wwwserve_chain_pending_transactions") == 0
            # A stake beyond the credit reverts in the gas estimate: one error answer, counted by its method.
            with pytest.raises(LedgerError):
                await mgr.run_tx(lambda: mgr.client.stake(10**30))
            assert metrics.value("wwwserve_chain_rpc_errors_total", method="eth_estimateGas", kind="revert") == 1
            assert metrics.value("wwwserve_chain_rpc_errors_total", method="eth_estimateGas", kind="transport") == 0
            await mgr.run_tx(lambda: mgr.client.stake(UNIT))
            assert metrics.reading("wwwserve_chain_pending_transactions") == 0  # mined and seen
            await mgr.refresh()
            assert metrics.reading("wwwserve_stake_wei") == float(2 * UNIT)
            assert metrics.reading("wwwserve_credit_wei") == float(indexed.credit(account.address))
        finally:
            await mgr.aclose()

    asyncio.run(scenario())
