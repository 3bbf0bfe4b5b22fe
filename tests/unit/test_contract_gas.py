"""Gas ceilings: every state-changing WWWServe function stays under a fixed bound.

The figures are real receipt `gasUsed` (intrinsic and calldata gas included) from `bench/gas.py`,
which deploys the committed artifact on py-evm through web3's EthereumTesterProvider and runs every
function plus several duel lifecycles on eight nodes. boa's per-call gas is not used here: it does
not reproduce a transaction's cold-storage and refund accounting. The ceilings sit about 15% above
today's figures, so they catch regressions (a loop over nodes, an unbounded array), not noise.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    MIN_STAKE,
    TEST_PARAMS,
    contract_fixture,
    deploy,
    make_node,
    mine,
    module_contract_fixture,
    open_duel,
    with_params,
)

from ledger.params import DeploymentParams

BENCH_PATH = Path(__file__).resolve().parents[2] / "bench" / "gas.py"
CEILINGS = {
    "register": 480_000,  # stores endpoint, model list and metadata strings
    "updateNode": 100_000,
    "leave": 68_000,
    "deposit": 52_000,
    "requestWithdrawal": 85_000,
    "cancelWithdrawal": 33_000,
    "withdraw": 38_000,
    "stake": 200_000,  # first stake: the node's leaf and its path in the sum tree become nonzero
    "requestUnstake": 115_000,
    "withdrawStake": 38_000,
    "claimVoucher": 76_000,
    "openDuel": 182_000,
    "drawJudges": 195_000,
    "commitVote": 65_000,
    "revealVote": 45_000,
    "settleDuel": 185_000,
    "cancelUndrawnDuel": 67_000,
}
FIRST_DUEL_CEILING = 720_000
STEADY_DUEL_CEILING = 650_000


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wwwserve_bench_gas", BENCH_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report() -> Any:
    return _load_bench().measure(DeploymentParams())


def test_every_function_stays_under_its_gas_ceiling(report: Any) -> None:
    assert set(report.worst_by_function) == set(CEILINGS), "every state-changing function is measured"
    over = {name: (gas, CEILINGS[name]) for name, gas in report.worst_by_function.items() if gas > CEILINGS[name]}
    assert not over, f"over the gas ceiling (measured, ceiling): {over}"


def test_voucher_claim_meets_its_budget(report: Any) -> None:
    claims = {label: (gas, target) for label, gas, target in report.budgets if label.startswith("voucher")}
    assert len(claims) == 2
    assert all(gas <= target == 80_000 for gas, target in claims.values()), claims


def test_full_duel_lifecycle_stays_under_regression_ceilings(report: Any) -> None:
    duels = {label: gas for label, gas, _ in report.budgets if label.startswith("full duel")}
    assert duels["full duel, first (unanimous)"] <= FIRST_DUEL_CEILING
    steady = {label: gas for label, gas in duels.items() if "steady" in label}
    assert len(steady) == 4 and max(steady.values()) <= STEADY_DUEL_CEILING, steady


def test_drawing_cost_follows_node_count_not_tree_depth(c: Any) -> None:
    """With 8 nodes, a 14-level tree draws as cheaply as a 3-level one (boa gas; relative only)."""
    nodes = [make_node(c, f"n{i}", (i + 2) * MIN_STAKE) for i in range(8)]
    duel_id = open_duel(c, nodes[0].address, nodes[1].address, nodes[2].address)
    mine(TEST_PARAMS.seed_delay_blocks + 1)
    c.drawJudges(duel_id)
    deep = int(c._computation.get_gas_used())
    with boa.env.anchor():
        shallow_c = deploy(with_params(tree_depth=3))
        shallow = [make_node(shallow_c, f"n{i}", (i + 2) * MIN_STAKE) for i in range(8)]
        sid = open_duel(shallow_c, shallow[0].address, shallow[1].address, shallow[2].address)
        mine(TEST_PARAMS.seed_delay_blocks + 1)
        shallow_c.drawJudges(sid)
        shallow_gas = int(shallow_c._computation.get_gas_used())
    assert [str(j) for j in c.getJudges(duel_id)]  # a panel was drawn in both
    assert deep <= shallow_gas * 1.05, (deep, shallow_gas)
