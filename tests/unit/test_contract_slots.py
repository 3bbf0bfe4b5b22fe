"""Registry slots (issue 13, finding 4): a slot costs a refundable bond, `releaseSlot` gives it back, a
released slot goes to a later node after SLOT_COOLDOWN_BLOCKS, and a duel left unsettled past that
names nobody by the reused leaf (it never pays or slashes the new owner for the old owner's work).
Every call runs on the contract and the model in lockstep (`Twin`)."""

from __future__ import annotations

from typing import Any

import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    B_VOTE,
    MIN_STAKE,
    MODEL,
    TEST_PARAMS,
    RevertedError,
    Twin,
    advance,
    block_number,
    deploy,
    distinct,
    fresh_fixture,
    mine_to,
    new_account,
    next_epoch,
    pubkey_of,
    with_params,
)

from wwwserve.ledger.model import ZERO_ADDRESS

BOND = TEST_PARAMS.registration_bond_wei
COOLDOWN = TEST_PARAMS.slot_cooldown_blocks


def register_with(twin: Twin, who: str, label: str, value: int) -> None:
    """register() sending exactly `value` wei (what the contract asks for or not)."""
    pk, ep = pubkey_of(label), f"http://{label}.example"
    twin.tx(who, "register", (pk, ep, [MODEL], "{}"),
            lambda: twin.m.register(who, pk, ep, [MODEL], "{}", block_number=block_number(), value_wei=value),
            value=value)


def leave_and_withdraw_everything(twin: Twin, who: str) -> None:
    twin.leave(who)
    twin.request_unstake(who, twin.m.active_stake.get(who, 0))
    advance(twin.p.unbonding_period_s + 1)
    mine_to(twin.m.unbonding_block[who] + twin.p.duel_span_blocks + 1)
    twin.withdraw_stake(who)


def test_registration_takes_the_bond_once(fresh: None) -> None:
    twin = Twin(deploy())
    n = new_account("n").address
    for wrong in (0, BOND - 1, BOND + 1):
        with pytest.raises(RevertedError, match="Registry: send the registration bond"):
            register_with(twin, n, "n", wrong)
    register_with(twin, n, "n", BOND)  # the Twin checks the contract now holds the bond too
    assert twin.c.registeredOnce(n) and twin.m.balance_wei == BOND
    twin.leave(n)
    with pytest.raises(RevertedError, match="Registry: slot held, send no bond"):
        register_with(twin, n, "n", BOND)
    register_with(twin, n, "n", 0)  # a returning node keeps its slot and sends nothing
    assert twin.c.nodes(n).leaf == 0 and twin.c.leafCount() == 1


def test_release_slot_reverts_until_the_node_left_and_holds_no_stake(fresh: None) -> None:
    twin = Twin(deploy())
    with pytest.raises(RevertedError, match="Registry: no slot held"):
        twin.release_slot(new_account("stranger").address)
    n = twin.node("n", 2 * MIN_STAKE).address
    with pytest.raises(RevertedError, match="Registry: leave first"):
        twin.release_slot(n)
    twin.leave(n)
    with pytest.raises(RevertedError, match="Registry: withdraw the stake first"):
        twin.release_slot(n)  # active stake
    twin.request_unstake(n, 2 * MIN_STAKE)
    with pytest.raises(RevertedError, match="Registry: withdraw the stake first"):
        twin.release_slot(n)  # unbonding stake
    advance(twin.p.unbonding_period_s + 1)
    mine_to(twin.m.unbonding_block[n] + twin.p.duel_span_blocks + 1)
    twin.withdraw_stake(n)
    credit = twin.c.credit(n)
    twin.release_slot(n)
    assert twin.event("SlotReleased") == [{"node": n, "leaf": 0, "bond": BOND}]
    assert twin.c.credit(n) == credit + BOND and not twin.c.registeredOnce(n)
    assert twin.c.nodes(n).leaf == 0 and twin.c.freeLeafCount() == 1
    with pytest.raises(RevertedError, match="Registry: no slot held"):
        twin.release_slot(n)


def test_a_full_tree_gets_released_slots_back_after_the_cooldown(fresh: None) -> None:
    params = with_params(tree_depth=1)  # two leaves
    twin = Twin(deploy(params), params)
    n0, n1, n2 = (new_account(f"n{i}").address for i in range(3))
    register_with(twin, n0, "n0", BOND)
    register_with(twin, n1, "n1", BOND)
    with pytest.raises(RevertedError, match="Sortition: tree full"):
        register_with(twin, n2, "n2", BOND)
    twin.leave(n0)
    twin.release_slot(n0)
    released_at = block_number()
    with pytest.raises(RevertedError, match="Sortition: tree full"):
        register_with(twin, n2, "n2", BOND)  # still cooling down: a duel may yet name n0 by it
    mine_to(released_at + COOLDOWN)
    with pytest.raises(RevertedError, match="Sortition: tree full"):
        register_with(twin, n2, "n2", BOND)  # the last block of the cooldown
    mine_to(released_at + COOLDOWN + 1)
    register_with(twin, n2, "n2", BOND)
    assert twin.event("NodeRegistered")[0]["leaf"] == 0
    assert twin.c.leafOwner(0) == n2 and twin.c.leafSince(0) == block_number()
    assert twin.c.freeLeafCount() == 0 and twin.c.leafCount() == 2
    # n0 gave its slot up: coming back takes a new slot and a new bond, and there is none left
    with pytest.raises(RevertedError, match="Sortition: tree full"):
        register_with(twin, n0, "n0-again", BOND)


def test_a_duel_left_unsettled_names_nobody_by_a_leaf_that_changed_hands(fresh: None) -> None:
    """A judge votes, leaves, withdraws, releases its slot; nobody settles the duel until a newcomer
    holds the judge's old leaf. The settlement pays the judge's seat to the zero address and takes
    nothing from the newcomer."""
    twin = Twin(deploy())
    nodes = [twin.node(f"n{i}", (i + 2) * MIN_STAKE) for i in range(8)]
    next_epoch()
    origin, a = nodes[0].address, nodes[1]
    def fits(seats: list[str]) -> bool:  # two single seats besides the duelists: one is not B's
        return sum(seats.count(j) == 1 and j not in (origin, a.address) for j in seats) >= 2

    duel_id, b, drawn = twin.judging_where(origin, a, fits, "stale")
    twin.vote_round(duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    judge = next(j for j in drawn if drawn.count(j) == 1 and j not in (origin, a.address, b))
    leaf = twin.c.nodes(judge).leaf
    leave_and_withdraw_everything(twin, judge)
    twin.release_slot(judge)
    mine_to(block_number() + COOLDOWN + 1)
    newcomer = twin.node("newcomer", 3 * MIN_STAKE).address
    assert twin.c.nodes(newcomer).leaf == leaf and twin.c.leafOwner(leaf) == newcomer
    judges: list[Any] = [str(j) for j in twin.c.getJudges(duel_id, 1)]
    assert judges == [ZERO_ADDRESS if j == judge else j for j in drawn]  # nobody holds that seat now
    stake, credit = twin.c.activeStake(newcomer), twin.c.credit(newcomer)
    twin.settle(duel_id, origin)
    paid = {e["account"]: e["amount"] for e in twin.event("DuelRewardPaid") if e["reason"] == 4}  # JUDGE_FEE
    assert paid.get(ZERO_ADDRESS, 0) > 0 and newcomer not in paid
    assert (twin.c.activeStake(newcomer), twin.c.credit(newcomer)) == (stake, credit)
