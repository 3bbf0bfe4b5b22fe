"""Gas: bounded by construction, and bench/gas.py's budgets.

Bounded: a structural check (every loop in the contract sources is bounded by a small constant:
models per node, seats, draws, excluded parties, tree depth, challenger tries) and a measured one (a
duel's steps cost about the same in a network eight times larger: the sum tree adds a few levels
per draw, a loop over nodes would multiply the cost), with boa's per-call gas (it keeps storage
warm across calls, so it is only good for comparisons).

Budgets: bench/gas.py's receipts (real transactions on py-evm) on 8 and 128 nodes, each budget it
prints checked against its target; a budget over its target is a strict xfail that names the
measured figure. The chain's clock and its blocks' mix hashes are fixed here, so the seed hashes
(and the draws, and the gas) are the same every run; `python bench/gas.py` uses the wall clock and
prints figures a few thousand gas apart from run to run.
"""

from __future__ import annotations

import itertools
import re
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boa
import eth._utils.headers
import eth_tester.backends.pyevm.main as pyevm_backend
import pytest
from bench_scripts import load_bench_script
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    B_VOTE,
    MIN_STAKE,
    MODEL,
    OTHER_MODEL,
    attest,
    commitment,
    deploy,
    distinct,
    fresh_fixture,
    make_node,
    mine_to,
    next_epoch,
    open_duel,
    reveal_end,
    seats,
    to_seed,
)
from eth_utils import keccak

from wwwserve.ledger.params import DeploymentParams

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"
BOUNDS = {"MAX_MODELS", "MAX_SEATS", "MAX_DRAW", "MAX_EXCLUDED", "MAX_DEPTH", "MAX_CHALLENGER_TRIES",
          "MAX_DEPTH + 1", "MAX_K"}
# loops over a DynArray: the array's declared bound (a small constant) bounds the loop
ARRAY_LOOPS = {
    "for m: String[64] in new:": "MAX_MODELS",
    "for m: String[64] in old:": "MAX_MODELS",
    "for mid: uint256 in new_ids:": "MAX_MODELS",
    "for leaf: uint256 in leaves:": "MAX_DRAW",
    "for leaf: uint256 in excluded:": "MAX_EXCLUDED",
}


def test_every_loop_is_bounded_by_a_small_constant() -> None:
    loops = []
    for path in sorted(CONTRACTS.glob("*.vy")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0].strip()
            if code.startswith("for "):
                loops.append((path.name, number, code))
    assert len(loops) >= 15  # not vacuous
    for name, number, code in loops:
        if code in ARRAY_LOOPS:
            continue
        match = re.search(r"range\((.*)\):$", code)
        assert match, f"{name}:{number}: unbounded loop form: {code}"
        args = match.group(1)
        bound = re.search(r"bound=([A-Z_ +0-9]+)$", args)
        limit = bound.group(1) if bound else args
        assert limit in BOUNDS, f"{name}:{number}: loop not bounded by a small constant: {code}"


def _duel_gas(c: Any, n_nodes: int) -> dict[str, int]:
    """Gas of one duel's steps (boa, relative) in a network of `n_nodes` judges. Every node serves the
    duel's model with a bond's worth of free stake, so the challenger is the first draw: answerDuel
    draws 1 + K_JUDGES times whatever the seed."""
    origin = make_node(c, "origin", 0)
    a = make_node(c, "a", 2 * MIN_STAKE)
    for i in range(n_nodes):
        make_node(c, f"judge{i}", MIN_STAKE + i, 0, models=(MODEL, OTHER_MODEL))
    next_epoch()
    gas = {}
    job = attest(c, origin.address, a, "g")
    duel_id = open_duel(c, origin.address, job)
    gas["openDuel"] = c._computation.get_gas_used()
    to_seed(c, duel_id)
    b = str(c.challengerOf(duel_id))
    with boa.env.prank(b):
        c.answerDuel(duel_id, keccak(b"b"))
    gas["answerDuel"] = c._computation.get_gas_used()
    judges = distinct(seats(c, duel_id, 1))
    for j in judges:
        with boa.env.prank(j):
            c.commitVote(duel_id, commitment(c, duel_id, 1, j, B_VOTE))
    mine_to(c.getDuel(duel_id)[4] + 1)
    for j in judges:
        with boa.env.prank(j):
            c.revealVote(duel_id, B_VOTE, keccak(b"salt"))
    mine_to(reveal_end(c, duel_id) + 4)
    c.settleDuel(duel_id)
    gas["settleDuel"] = c._computation.get_gas_used()
    return gas


def _depth(leaves: int) -> int:
    """Levels a draw walks in the contract's tree (the smallest subtree covering the leaves)."""
    return max(leaves - 1, 1).bit_length()


# A draw reads one tree word per level: at most a cold SLOAD (2,100) and the arithmetic around it
# (measured: 12.4k for the 4 x 3 extra levels below, where draws share warm words near the root).
GAS_PER_LEVEL = 2_600


def test_a_duel_costs_about_the_same_in_a_network_eight_times_larger(fresh: None) -> None:
    with boa.env.anchor():
        small = _duel_gas(deploy(), 8)
    with boa.env.anchor():
        large = _duel_gas(deploy(), 64)
    # the tree of 66 leaves is three levels deeper than the one of 10: each draw reads three more
    # words; answerDuel draws the challenger and three seats (at most 31k gas more). A loop over
    # nodes would add at least a cold read per extra node: 56 x 2,100 = 118k
    extra_levels = _depth(66) - _depth(10)
    assert extra_levels == 3
    draws = {"openDuel": 0, "answerDuel": 1 + 3, "settleDuel": 0}
    assert large["answerDuel"] - small["answerDuel"] <= draws["answerDuel"] * extra_levels * GAS_PER_LEVEL, (
        small, large)
    assert large["answerDuel"] > small["answerDuel"]  # the deeper tree is really read
    # settlement draws nothing: it depends on the seats' owners (cold accounts), not on the network
    assert large["settleDuel"] <= small["settleDuel"] * 1.5, (small, large)
    assert large["openDuel"] == small["openDuel"]  # no draw, no node count


# ---------------------------------------------------------------------------------------------
# bench/gas.py's budgets

DUEL_TARGET_GAS = 600_000
VOUCHER_TARGET_GAS = 80_000
BUDGETS = {  # every budget bench/gas.py prints (K = 3), and its target
    "first duel: issue's list": DUEL_TARGET_GAS,
    "first duel: whole duel": DUEL_TARGET_GAS,
    "steady, unanimous: issue's list": DUEL_TARGET_GAS,
    "steady, unanimous: whole duel": DUEL_TARGET_GAS,
    "steady, 2-1 split: issue's list": DUEL_TARGET_GAS,
    "steady, 2-1 split: whole duel": DUEL_TARGET_GAS,
    "steady, 1 silent seat: issue's list": DUEL_TARGET_GAS,
    "steady, 1 silent seat: whole duel": DUEL_TARGET_GAS,
    "voucher claim, first": VOUCHER_TARGET_GAS,
    "voucher claim, again": VOUCHER_TARGET_GAS,
}
NODE_COUNTS = (8, 128)
# Over target, as measured (fixed clock): the whole duel with B's answer at 128 nodes, where the
# deeper tree makes the challenger and seat draws dearer. Since seats exclude nobody (23f8950) the
# draws are cheaper: the steady unanimous duel measures 595,836 here and passes, 4,164 gas under the
# target (wall-clock runs of bench/gas.py: 595k to 600k); the leave-one-out judge pay made the 2-1
# split's settlement dearer (607,633 here, over).
OVER = {
    (128, "first duel: whole duel"): 625_581,
    (128, "steady, unanimous: whole duel"): 605_444,
    (128, "steady, 2-1 split: whole duel"): 609_958,
}


def _load_bench() -> types.ModuleType:
    return load_bench_script("gas.py", "wwwserve_bench_gas")


@pytest.fixture(scope="module", name="budgets")
def budgets_fixture() -> Iterator[dict[tuple[int, str], tuple[int, int]]]:
    """{(nodes, label): (gas used, target)} from bench/gas.py's `measure`, on a fixed clock and fixed
    block mix hashes (eth-tester takes both from the wall clock and os.urandom)."""
    bench = _load_bench()
    counter = itertools.count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(eth._utils.headers, "eth_now", lambda: 1_800_000_000)
        mp.setattr(pyevm_backend, "time", types.SimpleNamespace(time=lambda: 1_800_000_000))
        mp.setattr(pyevm_backend, "os", types.SimpleNamespace(
            urandom=lambda n: bytes(keccak(b"mix-hash" + next(counter).to_bytes(8, "big")))[:n]))
        out = {}
        for nodes in NODE_COUNTS:
            report = bench.measure(DeploymentParams(), nodes)
            out.update({(nodes, label): (gas, target) for label, gas, target in report.budgets})
        yield out


def test_every_budget_bench_gas_prints_is_checked(budgets: dict[tuple[int, str], tuple[int, int]]) -> None:
    assert {(n, label): target for (n, label), (_, target) in budgets.items()} == {
        (n, label): target for n in NODE_COUNTS for label, target in BUDGETS.items()}


@pytest.mark.parametrize(("nodes", "label"), [
    pytest.param(n, label, id=f"{n} nodes, {label}", marks=[pytest.mark.xfail(
        strict=True, reason=f"measured {OVER[n, label]:,} gas > {BUDGETS[label]:,} (bench/gas.py)")]
        if (n, label) in OVER else [])
    for n in NODE_COUNTS for label in BUDGETS
])
def test_bench_gas_budget(budgets: dict[tuple[int, str], tuple[int, int]], nodes: int, label: str) -> None:
    gas, target = budgets[nodes, label]
    assert gas <= target, f"{label} at {nodes} nodes: {gas:,} gas > {target:,}"
