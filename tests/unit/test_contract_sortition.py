"""Stake-weighted judge sortition: exclusions, bit-for-bit agreement with ledger.model, draw statistics."""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import permutations
from typing import Any

import boa
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    MIN_STAKE,
    TEST_PARAMS,
    block_number,
    contract_fixture,
    deposit,
    fake_blockhash,
    make_node,
    mine,
    module_contract_fixture,
    open_duel,
)

from ledger.model import SortitionTree, draw_seed


def mirror_tree(c: Any) -> SortitionTree:
    """The model's full sum tree, loaded with the contract's leaf weights."""
    tree = SortitionTree(c.DEPTH())
    for leaf in range(c.leafCount()):
        tree.allocate(c.leafOwner(leaf))
        tree.set(leaf, c.leafWeight(leaf))
    assert tree.total_weight() == c.totalWeight()
    return tree


def predicted_judges(c: Any, tree: SortitionTree, duel_id: int) -> list[str]:
    origin, a, b, seed_block, *_ = c.getDuel(duel_id)
    excluded = [c.nodes(x).leaf for x in (origin, a, b)]
    leaves = tree.draw(draw_seed(fake_blockhash(seed_block), duel_id), TEST_PARAMS.k_judges, excluded)
    return [tree.owner(leaf) for leaf in leaves]


def inclusion_probabilities(weights: dict[str, int], k: int) -> dict[str, Fraction]:
    """Exact P(candidate is among k sequential weighted draws without replacement)."""
    probs = dict.fromkeys(weights, Fraction(0))
    for order in permutations(weights, k):
        p, left = Fraction(1), sum(weights.values())
        for who in order:
            p *= Fraction(weights[who], left)
            left -= weights[who]
        for who in order:
            probs[who] += p
    return probs


def test_draws_match_model_and_never_pick_duel_parties(c: Any) -> None:
    """Rotate origin and duelists over many duels: the model predicts every panel exactly, and no
    panel holds a duplicate, the origin or a duelist. Nodes join between duels, so the covered
    subtree of the contract's tree grows past several powers of two."""
    nodes = [make_node(c, f"n{i}", (i + 1) * MIN_STAKE, 10**18) for i in range(6)]
    for round_ in range(40):
        if round_ in (5, 12, 20):  # 7, 8 then 9 leaves: the covered subtree grows from 8 to 16 leaves
            nodes.append(make_node(c, f"late{round_}", (round_ % 7 + 1) * MIN_STAKE, 10**18))
        origin, a, b = (nodes[(round_ * 3 + i) % len(nodes)].address for i in range(3))
        duel_id = open_duel(c, origin, a, b, round_.to_bytes(2, "big"))
        mine(TEST_PARAMS.seed_delay_blocks + 1)
        tree = mirror_tree(c)
        c.drawJudges(duel_id)
        judges = [str(j) for j in c.getJudges(duel_id)]
        assert judges == predicted_judges(c, tree, duel_id), f"round {round_}"
        assert len(judges) == TEST_PARAMS.k_judges == len(set(judges))
        assert not {origin, a, b} & set(judges)


def test_draw_frequencies_follow_stake(c: Any) -> None:
    """Over 200 draws each candidate's frequency is within 4 sigma of its exact inclusion
    probability; the heavily staked origin and duelists are never drawn."""
    k = TEST_PARAMS.k_judges
    stakes = [1, 2, 3, 4, 6]
    candidates = [make_node(c, f"cand{i}", s * MIN_STAKE, 0) for i, s in enumerate(stakes)]
    origin = make_node(c, "o", 20 * MIN_STAKE, 0)
    a, b = make_node(c, "a", 20 * MIN_STAKE, 0), make_node(c, "b", 20 * MIN_STAKE, 0)
    draws = 200
    deposit(c, origin.address, draws * TEST_PARAMS.duel_escrow_wei)
    first = c.duelCount() + 1
    for i in range(draws):
        open_duel(c, origin.address, a.address, b.address, i.to_bytes(2, "big"))
    mine(TEST_PARAMS.seed_delay_blocks + 1)
    tree = mirror_tree(c)  # drawing changes no weight: one mirror serves every duel
    seed_hash = fake_blockhash(c.getDuel(first)[3])  # all opened in one block: one seed block
    excluded = [c.nodes(x.address).leaf for x in (origin, a, b)]
    counts = {cand.address: 0 for cand in candidates}
    for duel_id in range(first, first + draws):
        c.drawJudges(duel_id)
        (drawn,) = [log for log in c.get_logs() if type(log).__name__ == "JudgesDrawn"]
        judges = [str(j) for j in drawn.judges]
        predicted = tree.draw(draw_seed(seed_hash, duel_id), k, excluded)
        assert judges == [tree.owner(leaf) for leaf in predicted]
        for j in judges:
            counts[j] += 1
    assert sum(counts.values()) == k * draws
    exact = inclusion_probabilities({cand.address: s for cand, s in zip(candidates, stakes, strict=True)}, k)
    for cand in candidates:
        p = float(exact[cand.address])
        freq = counts[cand.address] / draws
        assert abs(freq - p) <= 4 * math.sqrt(p * (1 - p) / draws), (cand.address, freq, p)
    # heavier stake, more draws (the ranking of the extremes is far beyond noise)
    assert counts[candidates[-1].address] > counts[candidates[0].address]


def test_total_weight_tracks_eligible_stake_as_the_tree_grows(c: Any) -> None:
    """The contract keeps only the covered subtree and the root; root and leaves stay exact."""
    expected = 0
    for i in range(9):  # crosses 1, 2, 4 and 8 leaves
        stake_wei = (i + 1) * MIN_STAKE if i % 3 else MIN_STAKE - 1  # every third is ineligible
        node = make_node(c, f"n{i}", stake_wei, 0)
        expected += stake_wei if stake_wei >= MIN_STAKE else 0
        assert c.totalWeight() == expected
        assert c.leafWeight(c.nodes(node.address).leaf) == (stake_wei if stake_wei >= MIN_STAKE else 0)
    with boa.env.prank(c.leafOwner(1)):
        c.leave()
    assert c.totalWeight() == expected - 2 * MIN_STAKE
    assert block_number() >= 1
