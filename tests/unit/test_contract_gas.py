"""Bounded gas by construction: no contract function loops over nodes.

Two checks: a structural one (every loop in the contract sources is bounded by a small constant:
models per node, seats, draws, excluded parties, tree depth, challenger tries) and a measured one (a
duel's steps cost about the same in a network eight times larger: the sum tree adds a few levels
per draw, a loop over nodes would multiply the cost). Absolute receipts and the per-duel budget are
bench/gas.py's job (real transactions: boa's per-call gas keeps storage warm across calls, so it
is only good for comparisons like the one here).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import boa
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    B_VOTE,
    MIN_STAKE,
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

CONTRACTS = Path(__file__).resolve().parents[2] / "contracts"
BOUNDS = {"MAX_MODELS", "MAX_SEATS", "MAX_DRAW", "MAX_EXCLUDED", "MAX_DEPTH", "MAX_CHALLENGER_TRIES",
          "MAX_DEPTH + 1"}
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
    """Gas of one duel's steps (boa, relative) in a network of `n_nodes` judges."""
    origin = make_node(c, "origin", 0)
    a, b = make_node(c, "a", 2 * MIN_STAKE), make_node(c, "b", 50 * MIN_STAKE)
    for i in range(n_nodes):
        make_node(c, f"judge{i}", MIN_STAKE + i, 0, models=(OTHER_MODEL,))
    next_epoch()
    gas = {}
    job = attest(c, origin.address, a, "g")
    duel_id = open_duel(c, origin.address, job)
    gas["openDuel"] = c._computation.get_gas_used()
    to_seed(c, duel_id)
    with boa.env.prank(b.address):
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


def test_a_duel_costs_about_the_same_in_a_network_eight_times_larger(fresh: None) -> None:
    with boa.env.anchor():
        small = _duel_gas(deploy(), 8)
    with boa.env.anchor():
        large = _duel_gas(deploy(), 64)
    for step in small:
        # the tree of 67 leaves is three levels deeper than the one of 11: each draw reads three
        # more words (one challenger pick and three seats in answerDuel: about 26k gas); a loop over
        # nodes would cost eight times as much
        assert large[step] <= small[step] * 1.5, (step, small[step], large[step])
    assert large["openDuel"] == small["openDuel"]  # no draw, no node count
