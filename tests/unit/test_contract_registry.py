"""WWWServe constructor checks and node registry: register, update, leave, re-register, key ownership."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    MIN_STAKE,
    TEST_PARAMS,
    contract_fixture,
    deploy,
    deploy_raw,
    fresh_fixture,
    logs_named,
    make_node,
    module_contract_fixture,
    new_account,
    pubkey_of,
    register,
    stake,
    with_params,
)

# constructor argument positions (DeploymentParams field order)
MIN_STAKE_ARG, K_ARG, SEED_DELAY_ARG, DRAW_WINDOW_ARG = 0, 3, 4, 5
COMMIT_ARG, REVEAL_ARG, SETTLE_ARG = 6, 7, 8
GAMMA_ARG, MINORITY_ARG, ABSTAIN_ARG, DEPTH_ARG = 9, 10, 11, 14


@pytest.mark.parametrize(
    ("position", "value", "reason"),
    [
        (MIN_STAKE_ARG, 0, "Params: min_stake must be > 0"),
        (K_ARG, 0, "Params: k_judges out of range"),
        (K_ARG, 9, "Params: k_judges out of range"),
        (SEED_DELAY_ARG, 0, "Params: seed_delay must be >= 1"),
        (DRAW_WINDOW_ARG, 0, "Params: draw_window out of range"),
        (DRAW_WINDOW_ARG, 251, "Params: draw_window out of range"),
        (COMMIT_ARG, 0, "Params: windows must be >= 1"),
        (REVEAL_ARG, 0, "Params: windows must be >= 1"),
        (SETTLE_ARG, 0, "Params: windows must be >= 1"),
        (DEPTH_ARG, 25, "Sortition: depth out of range"),
        (GAMMA_ARG, 10_001, "Params: bps > 10000"),
        (MINORITY_ARG, 10_001, "Params: bps > 10000"),
        (ABSTAIN_ARG, 10_001, "Params: bps > 10000"),
        (DEPTH_ARG, 0, "Sortition: depth out of range"),
        (DEPTH_ARG, 21, "Sortition: depth out of range"),
    ],
)
def test_constructor_rejects_bad_params(fresh: None, position: int, value: int, reason: str) -> None:
    args = TEST_PARAMS.constructor_args()
    args[position] = value
    with boa.reverts(reason):
        deploy_raw(args)


def test_constructor_sets_immutables(fresh: None) -> None:
    p = with_params(k_judges=5, duelist_fee_wei=7, judge_fee_wei=11, tree_depth=6)
    w = deploy(p)
    assert w.MIN_STAKE() == p.min_stake_wei
    assert w.K_JUDGES() == 5
    assert w.DUEL_ESCROW() == 2 * 7 + 5 * 11 == p.duel_escrow_wei
    assert w.DEPTH() == 6
    assert (w.SEED_DELAY(), w.DRAW_WINDOW(), w.COMMIT_WINDOW(), w.REVEAL_WINDOW(), w.SETTLE_WINDOW()) == (
        p.seed_delay_blocks, p.draw_window_blocks, p.commit_window_blocks, p.reveal_window_blocks,
        p.settle_window_blocks)
    assert (w.GAMMA_BPS(), w.MINORITY_SLASH_BPS(), w.ABSTAIN_SLASH_BPS()) == (
        p.gamma_bps, p.minority_slash_bps, p.abstain_slash_bps)
    assert (w.UNBONDING_PERIOD(), w.WITHDRAWAL_NOTICE()) == (p.unbonding_period_s, p.withdrawal_notice_s)
    assert w.totalWeight() == 0 and w.leafCount() == 0 and w.duelCount() == 0


def test_register_stores_node_and_emits(c: Any) -> None:
    node = new_account("n")
    with boa.env.prank(node.address):
        c.register(pubkey_of("n"), "http://n.example:8000", ["llama", "qwen"], '{"gpu":"H100"}')
    (ev,) = logs_named(c, "NodeRegistered")
    assert (ev.node, ev.pubkey, ev.endpoint, list(ev.models), ev.metadata, ev.leaf) == (
        node.address, pubkey_of("n"), "http://n.example:8000", ["llama", "qwen"], '{"gpu":"H100"}', 0)
    rec = c.nodes(node.address)
    assert (rec.pubkey, rec.endpoint, list(rec.models), rec.metadata, rec.active, rec.leaf) == (
        pubkey_of("n"), "http://n.example:8000", ["llama", "qwen"], '{"gpu":"H100"}', True, 0)
    assert list(c.getModels(node.address)) == ["llama", "qwen"]
    assert c.registeredOnce(node.address)
    assert c.pubkeyOwner(pubkey_of("n")) == node.address
    assert c.activeNodeCount() == 1
    assert c.leafCount() == 1 and c.leafOwner(0) == node.address
    # registration alone gives no routable weight
    assert c.totalWeight() == 0


def test_leaves_are_allocated_in_order(c: Any) -> None:
    nodes = [make_node(c, f"n{i}", 0, 0) for i in range(3)]
    assert [c.nodes(n.address).leaf for n in nodes] == [0, 1, 2]
    assert [c.leafOwner(i) for i in range(3)] == [n.address for n in nodes]
    assert c.activeNodeCount() == 3


def test_register_twice_reverts(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address), boa.reverts("Registry: already registered"):
        c.register(pubkey_of("other"), "http://x", ["m"], "")


def test_register_empty_pubkey_reverts(c: Any) -> None:
    with boa.env.prank(new_account("n").address), boa.reverts("Registry: empty public key"):
        c.register(b"\x00" * 32, "http://x", ["m"], "")


def test_register_without_models_reverts(c: Any) -> None:
    with boa.env.prank(new_account("n").address), boa.reverts("Registry: no models"):
        c.register(pubkey_of("n"), "http://x", [], "")


def test_pubkey_is_unique(c: Any) -> None:
    make_node(c, "n1", 0, 0)
    with boa.env.prank(new_account("n2").address), boa.reverts("Registry: public key already registered"):
        c.register(pubkey_of("n1"), "http://x", ["m"], "")


def test_tree_full_reverts(fresh: None) -> None:
    small = deploy(with_params(tree_depth=1))  # two leaves
    register(small, new_account("n0"), "n0")
    register(small, new_account("n1"), "n1")
    with boa.env.prank(new_account("n2").address), boa.reverts("Sortition: tree full"):
        small.register(pubkey_of("n2"), "http://x", ["m"], "")
    # a returning node reuses its own leaf, so it is not blocked by a full tree
    with boa.env.prank(new_account("n0").address):
        small.leave()
        small.register(pubkey_of("n0"), "http://x", ["m"], "")


def test_update_node_changes_fields_and_releases_old_key(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n-rotated"), "http://new", ["a", "b"], "meta")
    (ev,) = logs_named(c, "NodeUpdated")
    assert (ev.node, ev.pubkey, ev.endpoint, list(ev.models), ev.metadata) == (
        node.address, pubkey_of("n-rotated"), "http://new", ["a", "b"], "meta")
    rec = c.nodes(node.address)
    assert (rec.pubkey, rec.endpoint, list(rec.models), rec.metadata, rec.active, rec.leaf) == (
        pubkey_of("n-rotated"), "http://new", ["a", "b"], "meta", True, 0)
    assert c.pubkeyOwner(pubkey_of("n")) == "0x0000000000000000000000000000000000000000"
    assert c.pubkeyOwner(pubkey_of("n-rotated")) == node.address
    # the released key is free for someone else
    register(c, new_account("other"), "n")
    assert c.pubkeyOwner(pubkey_of("n")) == new_account("other").address


def test_update_node_keeping_the_key(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://moved", ["m"], "")
    assert c.pubkeyOwner(pubkey_of("n")) == node.address
    assert c.nodes(node.address).endpoint == "http://moved"


def test_update_node_checks(c: Any) -> None:
    make_node(c, "other", 0, 0)
    with boa.env.prank(new_account("stranger").address), boa.reverts("Registry: not registered"):
        c.updateNode(pubkey_of("stranger"), "http://x", ["m"], "")
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address):
        with boa.reverts("Registry: public key already registered"):
            c.updateNode(pubkey_of("other"), "http://x", ["m"], "")
        with boa.reverts("Registry: empty public key"):
            c.updateNode(b"\x00" * 32, "http://x", ["m"], "")
        with boa.reverts("Registry: no models"):
            c.updateNode(pubkey_of("n"), "http://x", [], "")


def test_leave_releases_key_and_weight(c: Any) -> None:
    node = make_node(c, "n", 3 * MIN_STAKE, 0)
    assert c.totalWeight() == 3 * MIN_STAKE
    with boa.env.prank(node.address):
        c.leave()
    (ev,) = logs_named(c, "NodeLeft")
    assert ev.node == node.address
    assert not c.nodes(node.address).active
    assert c.pubkeyOwner(pubkey_of("n")) == "0x0000000000000000000000000000000000000000"
    assert c.activeNodeCount() == 0
    assert c.totalWeight() == 0 and c.leafWeight(0) == 0
    # stake stays put until unstaked
    assert c.activeStake(node.address) == 3 * MIN_STAKE
    with boa.env.prank(node.address), boa.reverts("Registry: not registered"):
        c.leave()


def test_reregister_reuses_leaf_and_restores_weight(c: Any) -> None:
    make_node(c, "first", 0, 0)
    node = make_node(c, "n", 2 * MIN_STAKE, 0)
    with boa.env.prank(node.address):
        c.leave()
        c.register(pubkey_of("n-again"), "http://back", ["m"], "")
    (ev,) = logs_named(c, "NodeRegistered")
    assert ev.leaf == 1
    assert c.nodes(node.address).leaf == 1 and c.leafCount() == 2
    assert c.leafWeight(1) == 2 * MIN_STAKE == c.totalWeight()
    assert c.activeNodeCount() == 2


def test_staking_requires_registration_and_min_stake_for_weight(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    stake(c, node.address, MIN_STAKE - 1)
    # below MIN_STAKE: staked but not routable and never drawn as a judge
    assert c.activeStake(node.address) == MIN_STAKE - 1
    assert c.leafWeight(0) == 0 and c.totalWeight() == 0
    stake(c, node.address, 1)
    assert c.leafWeight(0) == MIN_STAKE == c.totalWeight()
