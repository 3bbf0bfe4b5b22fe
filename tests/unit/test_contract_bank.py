"""WWWServe credits and stake: deposit, withdrawal notice, stake, unbonding and duel locks."""

from __future__ import annotations

from typing import Any

import boa
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    MIN_STAKE,
    TEST_PARAMS,
    advance,
    block_number,
    contract_fixture,
    deposit,
    logs_named,
    make_node,
    mine,
    module_contract_fixture,
    new_account,
    now_s,
    open_and_draw,
    open_duel,
)

ETH = 10**18
NOTICE_S = TEST_PARAMS.withdrawal_notice_s
UNBONDING_S = TEST_PARAMS.unbonding_period_s


def test_deposit_credits_sender(c: Any) -> None:
    user = new_account("u").address
    deposit(c, user, 3 * ETH)
    (ev,) = logs_named(c, "CreditDeposited")
    assert (ev.account, ev.amount) == (user, 3 * ETH)
    deposit(c, user, 1)
    assert c.credit(user) == 3 * ETH + 1
    assert boa.env.get_balance(c.address) == 3 * ETH + 1


def test_deposit_zero_reverts(c: Any) -> None:
    with boa.env.prank(new_account("u").address), boa.reverts("Bank: zero amount"):
        c.deposit(value=0)


def test_withdrawal_waits_for_notice(c: Any) -> None:
    user = new_account("u").address
    deposit(c, user, 5 * ETH)
    before = boa.env.get_balance(user)
    with boa.env.prank(user):
        c.requestWithdrawal(2 * ETH)
        (ev,) = logs_named(c, "WithdrawalRequested")
        assert (ev.account, ev.amount, ev.availableAt) == (user, 2 * ETH, now_s() + NOTICE_S)
        assert (c.credit(user), c.pendingWithdrawal(user), c.withdrawableAt(user)) == (
            3 * ETH, 2 * ETH, now_s() + NOTICE_S)
        advance(NOTICE_S - 1)
        with boa.reverts("Bank: withdrawal notice not over"):
            c.withdraw()
        advance(1)
        c.withdraw()
        (ev,) = logs_named(c, "CreditWithdrawn")
        assert (ev.account, ev.amount) == (user, 2 * ETH)
    assert boa.env.get_balance(user) == before + 2 * ETH
    assert c.pendingWithdrawal(user) == 0 and c.credit(user) == 3 * ETH
    assert boa.env.get_balance(c.address) == 3 * ETH
    with boa.env.prank(user), boa.reverts("Bank: no pending withdrawal"):
        c.withdraw()


def test_new_request_adds_and_restarts_notice(c: Any) -> None:
    user = new_account("u").address
    deposit(c, user, 5 * ETH)
    with boa.env.prank(user):
        c.requestWithdrawal(ETH)
        advance(NOTICE_S - 10)
        c.requestWithdrawal(ETH)
        assert c.pendingWithdrawal(user) == 2 * ETH
        assert c.withdrawableAt(user) == now_s() + NOTICE_S
        advance(10)
        with boa.reverts("Bank: withdrawal notice not over"):
            c.withdraw()


def test_request_withdrawal_checks(c: Any) -> None:
    user = new_account("u").address
    deposit(c, user, ETH)
    with boa.env.prank(user):
        with boa.reverts("Bank: zero amount"):
            c.requestWithdrawal(0)
        with boa.reverts("Bank: insufficient credit"):
            c.requestWithdrawal(ETH + 1)


def test_cancel_withdrawal_returns_credit(c: Any) -> None:
    user = new_account("u").address
    deposit(c, user, 5 * ETH)
    with boa.env.prank(user):
        with boa.reverts("Bank: no pending withdrawal"):
            c.cancelWithdrawal()
        c.requestWithdrawal(2 * ETH)
        c.requestWithdrawal(ETH)
        c.cancelWithdrawal()
        (ev,) = logs_named(c, "WithdrawalCancelled")
        assert (ev.account, ev.amount) == (user, 3 * ETH)
    assert (c.credit(user), c.pendingWithdrawal(user)) == (5 * ETH, 0)


def test_stake_moves_credit_into_weight(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    deposit(c, node.address, 10 * MIN_STAKE)
    with boa.env.prank(node.address):
        c.stake(4 * MIN_STAKE)
        (ev,) = logs_named(c, "Staked")
    assert (ev.node, ev.amount) == (node.address, 4 * MIN_STAKE)
    assert (c.credit(node.address), c.activeStake(node.address)) == (6 * MIN_STAKE, 4 * MIN_STAKE)
    assert c.totalWeight() == 4 * MIN_STAKE == c.leafWeight(0)


def test_stake_checks(c: Any) -> None:
    user = new_account("u").address
    deposit(c, user, ETH)
    with boa.env.prank(user):
        with boa.reverts("Bank: zero amount"):
            c.stake(0)
        with boa.reverts("Registry: not registered"):
            c.stake(1)
    node = make_node(c, "n", 0, MIN_STAKE)
    with boa.env.prank(node.address), boa.reverts("Bank: insufficient credit"):
        c.stake(MIN_STAKE + 1)


def test_unstake_waits_for_unbonding(c: Any) -> None:
    node = make_node(c, "n", 5 * MIN_STAKE, 0)
    with boa.env.prank(node.address):
        c.requestUnstake(2 * MIN_STAKE)
        (ev,) = logs_named(c, "UnstakeRequested")
        assert (ev.node, ev.amount, ev.unbondingEnd) == (node.address, 2 * MIN_STAKE, now_s() + UNBONDING_S)
        # unbonding stake is no longer routable
        assert c.totalWeight() == 3 * MIN_STAKE
        assert (c.activeStake(node.address), c.unbondingStake(node.address)) == (3 * MIN_STAKE, 2 * MIN_STAKE)
        advance(UNBONDING_S - 1)
        with boa.reverts("Bank: still unbonding"):
            c.withdrawStake()
        advance(1)
        c.withdrawStake()
        (ev,) = logs_named(c, "StakeWithdrawn")
        assert (ev.node, ev.amount) == (node.address, 2 * MIN_STAKE)
        with boa.reverts("Bank: nothing unbonding"):
            c.withdrawStake()
    assert (c.credit(node.address), c.unbondingStake(node.address)) == (2 * MIN_STAKE, 0)


def test_unstake_below_min_stake_drops_all_weight(c: Any) -> None:
    node = make_node(c, "n", 2 * MIN_STAKE, 0)
    with boa.env.prank(node.address):
        c.requestUnstake(MIN_STAKE + 1)
    assert c.activeStake(node.address) == MIN_STAKE - 1
    assert c.totalWeight() == 0


def test_new_unstake_restarts_unbonding(c: Any) -> None:
    node = make_node(c, "n", 5 * MIN_STAKE, 0)
    with boa.env.prank(node.address):
        c.requestUnstake(MIN_STAKE)
        advance(UNBONDING_S - 5)
        c.requestUnstake(MIN_STAKE)
        assert c.unbondingEnd(node.address) == now_s() + UNBONDING_S
        assert c.unbondingStake(node.address) == 2 * MIN_STAKE
        advance(5)
        with boa.reverts("Bank: still unbonding"):
            c.withdrawStake()


def test_request_unstake_checks(c: Any) -> None:
    node = make_node(c, "n", MIN_STAKE, 0)
    with boa.env.prank(node.address):
        with boa.reverts("Bank: zero amount"):
            c.requestUnstake(0)
        with boa.reverts("Bank: insufficient stake"):
            c.requestUnstake(MIN_STAKE + 1)


def test_open_duel_locks_duelists_stake(c: Any) -> None:
    origin = make_node(c, "o")
    a, b = make_node(c, "a", 3 * MIN_STAKE), make_node(c, "b")
    open_duel(c, origin.address, a.address, b.address)
    p = TEST_PARAMS
    locked_until = (block_number() + p.seed_delay_blocks + p.draw_window_blocks + p.commit_window_blocks
                    + p.reveal_window_blocks + p.settle_window_blocks)
    assert c.lockedUntil(a.address) == locked_until == c.lockedUntil(b.address)
    assert c.lockedUntil(origin.address) == 0
    with boa.env.prank(a.address):
        c.requestUnstake(3 * MIN_STAKE)  # unbonding may start, withdrawal must wait
        advance(UNBONDING_S)
        mine(locked_until - block_number())
        with boa.reverts("Bank: stake locked by an open duel"):
            c.withdrawStake()
        mine(1)
        c.withdrawStake()
    assert c.credit(a.address) == 3 * MIN_STAKE + 10**18


def test_drawn_judges_are_locked_until_settlement_can_no_longer_be_delayed(c: Any) -> None:
    judges = [make_node(c, f"j{i}") for i in range(3)]
    origin, a, b = make_node(c, "o"), make_node(c, "a"), make_node(c, "b")
    duel_id, drawn = open_and_draw(c, origin.address, a.address, b.address)
    assert sorted(drawn) == sorted(j.address for j in judges)
    _, _, _, _, _, reveal_end, _, _ = c.getDuel(duel_id)
    for j in judges:
        assert c.lockedUntil(j.address) == reveal_end + TEST_PARAMS.settle_window_blocks
    # a node that was not drawn is not locked
    assert c.lockedUntil(origin.address) == 0


def test_every_staker_can_exit_after_the_delays(c: Any) -> None:
    """Liveness: with no duel open, unbonding + notice always get a node's money out."""
    node = make_node(c, "n", 7 * MIN_STAKE, 2 * 10**18)
    with boa.env.prank(node.address):
        c.leave()
        c.requestUnstake(7 * MIN_STAKE)
        advance(UNBONDING_S)
        c.withdrawStake()
        c.requestWithdrawal(c.credit(node.address))
        advance(NOTICE_S)
        c.withdraw()
    assert boa.env.get_balance(c.address) == 0

