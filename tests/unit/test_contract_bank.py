"""WWWServe credits and stake: deposit, withdrawal notice, stake, unbonding (a period in seconds and
DUEL_SPAN_BLOCKS blocks), bonded stake that never leaves while its duel is open, and exits."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    A_VOTE,
    B_VOTE,
    BOND,
    MIN_STAKE,
    TEST_PARAMS,
    Cast,
    advance,
    attest,
    block_number,
    contract_fixture,
    deployment_fixture,
    deposit,
    distinct,
    judging_duel,
    logs_named,
    make_cast,
    make_node,
    mine,
    mine_to,
    module_deployment_fixture,
    new_account,
    now_s,
    open_duel,
    settle,
    vote_round,
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
    assert c.totalWeight() == 4 * MIN_STAKE == c.leafWeight(c.nodes(node.address).leaf)


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
    with boa.env.prank(node.address):
        c.leave()
        with boa.reverts("Registry: not registered"):
            c.stake(1)


def test_stake_fits_its_packed_field(c: Any) -> None:
    """Active and unbonding stake are 96-bit fields of one word: a stake past 2**96 - 1 reverts."""
    top = (1 << 96) - 1
    whale = make_node(c, "whale", 0, 0)
    boa.env.set_balance(whale.address, 2 * top + 10**18)
    deposit(c, whale.address, top + 1)
    with boa.env.prank(whale.address):
        c.stake(top)
        assert c.activeStake(whale.address) == top
        with boa.reverts("Bank: stake overflow"):
            c.stake(1)
        c.requestUnstake(top)
    deposit(c, whale.address, top)
    with boa.env.prank(whale.address):
        c.stake(top)
        with boa.reverts("Bank: stake overflow"):
            c.requestUnstake(1)  # the unbonding field is full


UNBONDING_BLOCKS = TEST_PARAMS.duel_span_blocks


def test_unstake_waits_for_the_period_and_the_duel_span(c: Any) -> None:
    node = make_node(c, "n", 5 * MIN_STAKE, 0)
    with boa.env.prank(node.address):
        c.requestUnstake(2 * MIN_STAKE)
        (ev,) = logs_named(c, "UnstakeRequested")
        asked = block_number()
        assert (ev.node, ev.amount, ev.unbondingEnd) == (node.address, 2 * MIN_STAKE, now_s() + UNBONDING_S)
        assert (c.unbondingEnd(node.address), c.unbondingBlock(node.address)) == (now_s() + UNBONDING_S, asked)
        # unbonding stake is no longer drawable
        assert c.totalWeight() == 3 * MIN_STAKE
        assert (c.activeStake(node.address), c.unbondingStake(node.address)) == (3 * MIN_STAKE, 2 * MIN_STAKE)
        # the period is over, the blocks are not
        advance(UNBONDING_S)
        mine(UNBONDING_BLOCKS)
        with boa.reverts("Bank: still unbonding"):
            c.withdrawStake()
        mine(1)
        with boa.env.anchor():
            c.withdrawStake()
        # the blocks are over, the period is not
        advance(-1)
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
        mine(10)
        c.requestUnstake(MIN_STAKE)
        assert c.unbondingEnd(node.address) == now_s() + UNBONDING_S
        assert c.unbondingBlock(node.address) == block_number()
        assert c.unbondingStake(node.address) == 2 * MIN_STAKE
        advance(5)
        mine(UNBONDING_BLOCKS - 9)
        with boa.reverts("Bank: still unbonding"):
            c.withdrawStake()


def test_request_unstake_checks(c: Any) -> None:
    node = make_node(c, "n", MIN_STAKE, 0)
    with boa.env.prank(node.address):
        with boa.reverts("Bank: zero amount"):
            c.requestUnstake(0)
        with boa.reverts("Bank: insufficient stake"):
            c.requestUnstake(MIN_STAKE + 1)


def _wait_out_unbonding() -> None:
    advance(UNBONDING_S)
    mine(UNBONDING_BLOCKS + 1)


@pytest.fixture(name="cast")
def cast_fixture(c: Any) -> Cast:
    return make_cast(c, a_stake=2 * MIN_STAKE)  # A unstakes and withdraws more than a bond here


def test_bonded_stake_never_leaves_while_its_duel_is_open(c: Any, cast: Cast) -> None:
    """Withdrawable = unbonding minus what open duels bond (bonds are backed by active stake first)."""
    o, a = cast.origin.address, cast.a.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    assert c.reserved(a) == BOND
    with boa.env.prank(a):
        c.requestUnstake(MIN_STAKE)  # half of it: the other half still covers the bond
        _wait_out_unbonding()
        with boa.env.anchor():
            c.withdrawStake()
            assert logs_named(c, "StakeWithdrawn")[0].amount == MIN_STAKE
        c.requestUnstake(MIN_STAKE)  # all of it: the bond is held back
        _wait_out_unbonding()
        c.withdrawStake()
        assert logs_named(c, "StakeWithdrawn")[0].amount == 2 * MIN_STAKE - BOND
        assert (c.unbondingStake(a), c.reserved(a)) == (BOND, BOND)
        with boa.reverts("Bank: stake bonded by open duels"):
            c.withdrawStake()
    settle(c, duel_id)  # nobody drew a challenger: cancelled, the bond is free
    assert c.reserved(a) == 0
    with boa.env.prank(a):
        c.withdrawStake()
        assert logs_named(c, "StakeWithdrawn")[0].amount == BOND
    assert c.activeStake(a) + c.unbondingStake(a) == 0


def test_unbonding_stake_stays_slashable(c: Any, cast: Cast) -> None:
    """A duelist that unstakes after its work was dueled still pays its bond from unbonding stake."""
    a = cast.a.address
    duel_id, drawn = judging_duel(c, cast)
    with boa.env.prank(a):
        c.requestUnstake(2 * MIN_STAKE)
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    settle(c, duel_id)
    assert (c.activeStake(a), c.unbondingStake(a), c.reserved(a)) == (0, 2 * MIN_STAKE - BOND, 0)
    _wait_out_unbonding()
    with boa.env.prank(a):
        c.withdrawStake()
    assert c.credit(a) == 10**18 + 2 * MIN_STAKE - BOND


def test_a_drawn_judge_cannot_leave_before_its_duel_ends(c: Any, cast: Cast) -> None:
    """Unbonding lasts DUEL_SPAN_BLOCKS blocks: a judge that asks to leave right after it was drawn
    is still slashable when the duel settles."""
    duel_id, drawn = judging_duel(c, cast)
    judge = drawn[0]
    with boa.env.prank(judge):
        c.requestUnstake(c.activeStake(judge))
        advance(UNBONDING_S)
        mine_to(c.getDuel(duel_id)[4] + TEST_PARAMS.reveal_window_blocks + TEST_PARAMS.appeal_window_blocks + 1)
        with boa.reverts("Bank: still unbonding"):
            c.withdrawStake()
    stake_before = c.unbondingStake(judge)
    settle(c, duel_id)  # the judge never revealed: silent
    assert c.unbondingStake(judge) == stake_before - drawn.count(judge) * TEST_PARAMS.silent_penalty_wei


def test_every_staker_can_exit_after_the_delays(c: Any, cast: Cast) -> None:
    """Liveness: even with a duel open over its work, a node gets all its money out once the duel
    ends (within DUEL_SPAN_BLOCKS) and the unbonding delays pass."""
    a = cast.a.address
    duel_id, drawn = judging_duel(c, cast)
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), A_VOTE))
    with boa.env.prank(a):
        c.leave()
        c.requestUnstake(c.activeStake(a))
        advance(UNBONDING_S)
        mine(UNBONDING_BLOCKS + 1)
    c.settleDuel(duel_id)  # the duel's windows are all over by now
    with boa.env.prank(a):
        c.withdrawStake()
        c.requestWithdrawal(c.credit(a))
        advance(NOTICE_S)
        before = boa.env.get_balance(a)
        c.withdraw()
    assert boa.env.get_balance(a) == before + 10**18 + 2 * MIN_STAKE
    assert (c.credit(a), c.activeStake(a), c.unbondingStake(a), c.reserved(a), c.pendingWithdrawal(a)) == (
        0, 0, 0, 0, 0)
