"""A4: Sybil splitting. Today's attack split one stake into many identities: the loser paid a share of its
own stake, the winner took the opponent's whole stake, and split identities sat on their own panels.

Today's defence: a duel puts a fixed DUEL_BOND at risk on each side, whatever either side's stake; seats
are drawn with replacement by stake, so one stake split into k identities holds the same expected seats
(and votes) as the whole; the challenger draw is by stake too. The assertions here are exact
properties of the contract's state (the draw picks a seat with probability frozen leaf weight / eligible
weight), checked for k = 1, 2 and 10 on fresh deployments, the same on the model.
"""

from __future__ import annotations

from fractions import Fraction

import boa
import pytest
from contract_fixtures import (
    BOND,
    MIN_STAKE,
    OTHER_MODEL,
    Twin,
    attest,
    deploy,
    distinct,
    mine_to,
    next_epoch,
    sync_blockhashes,
)
from eth_utils import keccak

SPLIT_STAKE = 10 * MIN_STAKE


def _network(twin: Twin, k: int) -> tuple[list, list]:
    """An operator's 10 * MIN_STAKE split over k identities, and the same honest network each time."""
    honest = [twin.node(f"h{i}", (i + 2) * MIN_STAKE) for i in range(5)]
    split = [twin.node(f"op{k}-{i}", SPLIT_STAKE // k) for i in range(k)]
    next_epoch()
    return honest, split


@pytest.mark.parametrize("k", [1, 2, 10])
def test_splitting_changes_neither_seat_odds_nor_bonds(k: int) -> None:
    with boa.env.anchor():
        sync_blockhashes()
        twin = Twin(deploy())
        honest, split = _network(twin, k)
        c, m = twin.c, twin.m
        weights = [c.leafWeight(c.nodes(s.address).leaf) for s in split]
        # every identity holds at least MIN_STAKE, so its whole stake is weight: nothing lost or gained
        assert sum(weights) == SPLIT_STAKE == sum(m.sortition.leaf_weight(m.nodes[s.address].leaf) for s in split)
        total = c.totalWeight()
        assert total == sum(h for h in range(2, 7)) * MIN_STAKE + SPLIT_STAKE
        # a seat (and a challenger pick) lands on the operator with probability (its weight) / (eligible
        # weight); the origin and the duelists' weights are taken out, the same for any k
        origin, a = honest[0], honest[1]
        eligible = total - c.leafWeight(c.nodes(origin.address).leaf) - c.leafWeight(c.nodes(a.address).leaf)
        share = Fraction(sum(weights), eligible)
        assert share == Fraction(SPLIT_STAKE, 25 * MIN_STAKE)  # independent of k
        # a duel over any one identity's work bonds DUEL_BOND, and a duel against it bonds DUEL_BOND
        job = attest(c, origin.address, split[0], "w")
        duel_id = twin.open_duel(origin.address, job)
        assert twin.event("DuelOpened")[0]["bond"] == BOND == c.reserved(split[0].address)
        mine_to(m.duels[duel_id].seed_block + 1)
        b = twin.challenger_of(duel_id)
        drawn = twin.answer(duel_id, b, keccak(b"b"))
        assert c.getDuel(duel_id)[5] == BOND == c.reserved(b)
        # with replacement: each seat is one vote; k identities holding seats vote k times at most
        assert len(drawn) == twin.p.k_judges
        assert len(distinct(drawn)) <= len(drawn)


def test_what_a_duelist_risks_does_not_grow_with_its_stake(twin: Twin) -> None:
    """One rich and one poor executor lose exactly the same bond in a lost duel: splitting a stake
    into small identities neither lowers what each risks per duel nor raises what a win pays."""
    origin = twin.node("origin", 0)
    rich, poor = twin.node("rich", 50 * MIN_STAKE), twin.node("poor", MIN_STAKE)
    servers = [twin.node(f"s{i}", 20 * MIN_STAKE) for i in range(2)]  # challengers for either
    judges = [twin.node(f"j{i}", 3 * MIN_STAKE, models=(OTHER_MODEL,)) for i in range(3)]
    next_epoch()
    lost = {}
    for executor in (rich, poor):
        duel_id, b, drawn = twin.judging(origin.address, executor, executor.address)
        twin.vote_round(duel_id, dict.fromkeys(distinct(drawn), 2))
        before = twin.m.total_stake(executor.address)
        credit_b = twin.m.credit.get(b, 0)
        twin.settle(duel_id, origin.address)
        lost[executor.address] = before - twin.m.total_stake(executor.address)
        assert twin.m.credit[b] - credit_b == BOND + twin.p.duelist_fee_wei  # what B wins: A's bond
    assert set(lost.values()) == {BOND}
    assert len(judges) == 3 and len(servers) == 2
