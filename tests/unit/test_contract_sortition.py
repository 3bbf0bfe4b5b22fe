"""Stake-weighted sortition with weights frozen per epoch: no stake change inside an epoch changes
that epoch's draws, the result does not depend on who draws or when, the contract's draw (covered
subtree only) equals ledger.model's full-tree draw, seats follow stake, and slashes reach the draw
weight lazily (syncWeight)."""

from __future__ import annotations

import math
from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    B_VOTE,
    BOND,
    MIN_STAKE,
    MODEL,
    OTHER_MODEL,
    TEST_PARAMS,
    ZERO_ADDRESS,
    Storage,
    Twin,
    attest,
    contract_fixture,
    deploy,
    deployment_fixture,
    distinct,
    duel,
    fake_blockhash,
    fresh_fixture,
    judging_duel,
    logs_named,
    make_cast,
    make_node,
    mine,
    mine_to,
    module_deployment_fixture,
    new_account,
    next_epoch,
    open_duel,
    pubkey_of,
    seats,
    settle,
    stake,
    to_seed,
    vote_round,
)
from eth_utils import keccak

from wwwserve.ledger.model import SortitionTree, panel_seed

P = TEST_PARAMS


def mirror_tree(c: Any) -> SortitionTree:
    """ledger.model's full sum tree loaded with the contract's live leaf weights (as of epoch 0, so
    a draw in any later epoch reads them)."""
    tree = SortitionTree(c.DEPTH())
    for leaf in range(c.leafCount()):
        tree.allocate(c.leafOwner(leaf), block_number=0, reuse_before=0)
        tree.set(leaf, c.leafWeight(leaf), 0)
    assert tree.total_weight() == c.totalWeight()
    return tree


@pytest.fixture(name="net")
def net_fixture(c: Any) -> list[Any]:
    """Six nodes serving the model (n0 is the origin, n1 the executor) and three judges."""
    nodes = [make_node(c, f"n{i}", (i + 1) * MIN_STAKE) for i in range(6)]
    nodes += [make_node(c, f"j{i}", 2 * MIN_STAKE, models=(OTHER_MODEL,)) for i in range(3)]
    next_epoch()
    return nodes


def test_stake_changes_inside_an_epoch_never_change_its_draws(c: Any, net: list[Any]) -> None:
    origin, a = net[0].address, net[1].address
    duel_id = open_duel(c, origin, attest(c, origin, net[1], "t"))
    to_seed(c, duel_id)
    b = str(c.challengerOf(duel_id))
    assert b not in (ZERO_ADDRESS, origin, a)
    with boa.env.anchor():
        with boa.env.prank(b):
            c.answerDuel(duel_id, keccak(b"x"))
        untouched = seats(c, duel_id, 1)
    # everything that changes the live tree, inside the seed epoch
    live = c.totalWeight()
    whale = make_node(c, "whale", 100 * MIN_STAKE)  # a newcomer with most of the stake
    stake(c, b, 1)  # one wei
    with boa.env.prank(untouched[0]):
        c.requestUnstake(MIN_STAKE)
    leaver = next(n.address for n in net[2:6] if n.address not in (b, untouched[0]))
    with boa.env.prank(leaver):
        c.leave()
    with boa.env.prank(b):
        c.updateNode(pubkey_of("b-new"), "http://b", [OTHER_MODEL], "{}")  # stops serving the model
    c.syncWeight(b)
    assert c.totalWeight() != live  # the live tree moved
    assert c.challengerOf(duel_id) == b
    mine(P.answer_window_blocks - 1)
    assert c.challengerOf(duel_id) == b
    with boa.env.prank(b):
        c.answerDuel(duel_id, keccak(b"x"))
    assert seats(c, duel_id, 1) == untouched
    assert whale.address not in untouched


def test_draws_do_not_depend_on_who_draws_or_when(c: Any, net: list[Any]) -> None:
    origin = net[0].address
    duel_id = open_duel(c, origin, attest(c, origin, net[1], "t"))
    view = duel(c, duel_id)
    results = set()
    for block in (view.seed_block + 1, view.seed_block + 3, view.deadline):
        for caller in (origin, net[2].address, new_account("stranger").address):
            with boa.env.anchor():
                mine_to(block)
                with boa.env.prank(caller):
                    c.drawChallenger(duel_id)
                b = duel(c, duel_id).b
                with boa.env.prank(b):
                    c.answerDuel(duel_id, keccak(b"x"))
                results.add((b, tuple(seats(c, duel_id, 1))))
    assert len(results) == 1


def test_contract_draws_equal_the_models_full_tree_draws(fresh: None) -> None:
    """Nodes join between duels (leaf counts cross 2, 4, 8 and 16, so the contract's covered subtree
    grows), stake moves inside epochs; the model predicts every challenger and every seat. Seats
    exclude nobody: the duel's own origin, A and B hold some of them."""
    c = deploy()
    twin = Twin(c)
    nodes = [twin.node(f"n{i}", (i + 1) * MIN_STAKE) for i in range(3)]
    next_epoch()
    parties_seated = 0
    for k in range(18):
        if k % 2 == 0:
            nodes.append(twin.node(f"late{k}", (k % 5 + 1) * MIN_STAKE,
                                   models=(MODEL,) if k % 4 else (OTHER_MODEL,)))
        origin, a = nodes[k % len(nodes)], nodes[(k + 1) % len(nodes)]
        job = attest(c, origin.address, a, f"d{k}")
        duel_id = twin.open_duel(origin.address, job)
        mine_to(twin.m.duels[duel_id].seed_block + 1)
        twin.stake(nodes[k % 3].address, 1)  # a stake change inside the seed epoch
        b = twin.challenger_of(duel_id)
        if b == ZERO_ADDRESS:  # no server of the model among the 8 picks: cancelled
            assert twin.draw_challenger(duel_id, origin.address) == ZERO_ADDRESS
            drawn = []
        else:
            drawn = twin.answer(duel_id, b, keccak(b"b"))
            assert len(drawn) == P.k_judges
        parties_seated += sum(s in (origin.address, a.address, b) for s in drawn)
        next_epoch()
    assert c.leafCount() == 12
    assert parties_seated > 0


def test_seats_follow_stake_with_replacement(c: Any) -> None:
    """Each seat is an independent draw with probability stake / total drawable stake, nobody excluded
    (the duel's A and B hold seats like anyone; the origin, with no stake, never does); over 60 panels
    each node's share of the 180 seats is within 4 sigma of it."""
    stakes = [1, 2, 3, 4, 6]
    # A bonds one DUEL_BOND per duel and B one per answer: 60 each, 12 x MIN_STAKE, all drawable
    cast = make_cast(c, judge_stakes=[s * MIN_STAKE for s in stakes], a_stake=60 * BOND, b_stake=60 * BOND)
    o = cast.origin.address
    jobs = [attest(c, o, cast.a, f"s{i}") for i in range(60)]
    ids = [open_duel(c, o, job) for job in jobs]  # one block: one seed block for all
    to_seed(c, ids[0])
    tree = mirror_tree(c)
    seed_hash = fake_blockhash(duel(c, ids[0]).seed_block)
    weights = {j.address: s * MIN_STAKE for j, s in zip(cast.judges, stakes, strict=True)}
    weights |= {cast.a.address: 60 * BOND, cast.b.address: 60 * BOND}
    assert tree.total_weight() == sum(weights.values())
    counts = dict.fromkeys(weights, 0)
    repeats = 0
    for duel_id in ids:
        with boa.env.prank(cast.b.address):
            c.answerDuel(duel_id, keccak(b"x"))
        assert logs_named(c, "ChallengerDrawn")[0].bond == BOND
        drawn = seats(c, duel_id, 1)
        leaves = tree.draw(panel_seed(seed_hash, duel_id, 1), P.k_judges, [], 10**6)
        assert drawn == [tree.owner(leaf) for leaf in leaves]
        repeats += len(set(drawn)) < len(drawn)
        for j in drawn:
            counts[j] += 1
    total = sum(weights.values())
    n = P.k_judges * len(ids)
    for who, w in weights.items():
        p = w / total
        assert abs(counts[who] / n - p) <= 4 * math.sqrt(p * (1 - p) / n), (counts, weights)
    assert counts[cast.a.address] > 0 and counts[cast.b.address] > 0
    assert repeats > 0  # with replacement: some judge held two seats somewhere


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
    assert c.leafCount() == 9


def test_slashes_reach_the_draw_weight_lazily(c: Any) -> None:
    cast = make_cast(c, a_stake=MIN_STAKE + BOND // 2)
    a = cast.a.address
    leaf = c.nodes(a).leaf
    total = c.totalWeight()
    duel_id, drawn = judging_duel(c, cast)
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    settle(c, duel_id)
    assert c.activeStake(a) == MIN_STAKE - BOND // 2  # below the minimum now
    assert (c.leafWeight(leaf), c.totalWeight()) == (MIN_STAKE + BOND // 2, total)  # not yet
    with boa.env.prank(new_account("anyone").address):
        c.syncWeight(a)
    assert (c.leafWeight(leaf), c.totalWeight()) == (0, total - MIN_STAKE - BOND // 2)
    c.syncWeight(new_account("never-registered").address)  # a no-op
    assert c.totalWeight() == total - MIN_STAKE - BOND // 2


def test_a_node_that_left_is_never_drawn_from_the_next_epoch(c: Any, net: list[Any]) -> None:
    leaver = net[5].address  # the heaviest server of the model
    with boa.env.prank(leaver):
        c.leave()
    next_epoch()
    origin = net[0].address
    for i in range(6):
        duel_id = open_duel(c, origin, attest(c, origin, net[1 + i % 2], f"l{i}"))
        to_seed(c, duel_id)
        assert c.challengerOf(duel_id) not in (leaver, ZERO_ADDRESS)


def test_tree_words_guard_their_112_bit_values(c: Any) -> None:
    """A stake is at most 2**96 - 1 and the tree at most 2**20 leaves, so a sum past 2**112 - 1 needs
    more than 2**16 maximal stakes: not reachable in a test. The guard is checked by writing a root
    close to the limit straight into storage, then staking on top of it."""
    node = make_node(c, "n", 0, 0)
    other = make_node(c, "m", MIN_STAKE, 0)  # two leaves: the root is a word above the leaves' level
    st = Storage(c)
    root = st.get("sortition.tree", 1)
    near_full = ((1 << 112) - 1 - MIN_STAKE + 1) | (root & ~((1 << 112) - 1))
    boa.env.set_storage(st.address, st.slot("sortition.tree", 1), near_full)
    with boa.env.prank(node.address):
        c.deposit(value=MIN_STAKE)
        with boa.reverts("Sortition: weight overflow"):
            c.stake(MIN_STAKE)
        c.stake(MIN_STAKE - 1)  # below the minimum: no weight, nothing to add
    assert c.leafWeight(c.nodes(other.address).leaf) == MIN_STAKE
