"""A6: an executor leaves right after answering (and re-registers later with the same stake), so its work
can no longer be dueled.

Today's defence: openDuel needs only that the executor registered once and holds the bond; unbonding
stake stays slashable; work can be dueled for ATTESTATION_TTL <= UNBONDING_PERIOD after it was signed,
and unbonding also lasts DUEL_SPAN_BLOCKS blocks, so everything attested before an unstake request is
still covered when the stake could leave; the bonded part never leaves while its duel is open.
"""

from __future__ import annotations

import pytest
from contract_fixtures import (
    B_VOTE,
    BOND,
    MIN_STAKE,
    OTHER_MODEL,
    RevertedError,
    Twin,
    advance,
    attest,
    block_number,
    distinct,
    mine,
    mine_to,
    next_epoch,
    now_s,
)
from eth_utils import keccak


@pytest.fixture(name="cast")
def cast_fixture(twin: Twin) -> dict:
    cast = {"origin": twin.node("origin", 0), "a": twin.node("a", 2 * MIN_STAKE, 0),
            "b": twin.node("b", 20 * MIN_STAKE)}
    cast["judges"] = [twin.node(f"j{i}", 2 * MIN_STAKE, models=(OTHER_MODEL,)) for i in range(3)]
    next_epoch()
    return cast


def test_work_outlives_leave_and_unstake(twin: Twin, cast: dict) -> None:
    c, o, a = twin.c, cast["origin"].address, cast["a"]
    job = attest(c, o, a, "answered then left")
    twin.leave(a.address)
    twin.request_unstake(a.address, 2 * MIN_STAKE)
    asked_s, asked_block = now_s(), block_number()
    # the origin opens the duel at the last second of the attestation's life
    advance(twin.p.attestation_ttl_s)
    duel_id = twin.open_duel(o, job)
    assert twin.c.reserved(a.address) == BOND
    # the executor cannot take the stake and run: not before the unbonding period...
    with pytest.raises(RevertedError) as info:
        twin.withdraw_stake(a.address)
    assert info.value.reason == "Bank: still unbonding"
    # ...and the duel runs its course; B's answer is judged better
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    b = twin.challenger_of(duel_id)
    drawn = twin.answer(duel_id, b, keccak(b"b"))
    twin.vote_round(duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    # the period is over, the blocks are not: still unbonding, and the bond is held anyway
    advance(asked_s + twin.p.unbonding_period_s - now_s())
    with pytest.raises(RevertedError) as info:
        twin.withdraw_stake(a.address)
    assert info.value.reason == "Bank: still unbonding"
    mine_to(asked_block + twin.p.duel_span_blocks + 1)
    assert twin.withdraw_stake(a.address) == 2 * MIN_STAKE - BOND  # all but the bond
    with pytest.raises(RevertedError) as info:
        twin.withdraw_stake(a.address)
    assert info.value.reason == "Bank: stake bonded by open duels"
    twin.settle(duel_id, o)
    assert twin.m.total_stake(a.address) == 0  # the bond went to B
    assert twin.event("StakeSlashed")[0] == {"duelId": duel_id, "node": a.address, "amount": BOND, "reason": 1}
    with pytest.raises(RevertedError) as info:
        twin.withdraw_stake(a.address)
    assert info.value.reason == "Bank: nothing unbonding"


def test_by_the_time_stake_can_leave_the_work_before_it_has_expired(twin: Twin, cast: dict) -> None:
    """TTL <= unbonding period: when an executor that unstaked right after answering can withdraw,
    no duel can be opened over that answer any more - and until then one can, and binds the bond."""
    assert twin.p.attestation_ttl_s <= twin.p.unbonding_period_s
    c, o, a = twin.c, cast["origin"].address, cast["a"]
    job = attest(c, o, a, "w")
    twin.request_unstake(a.address, 2 * MIN_STAKE)
    advance(twin.p.unbonding_period_s)
    mine(twin.p.duel_span_blocks + 1)
    with pytest.raises(RevertedError) as info:
        twin.open_duel(o, job)
    assert info.value.reason == "Duel: attestation expired"
    assert twin.withdraw_stake(a.address) == 2 * MIN_STAKE


def test_leaving_and_returning_keeps_the_leaf_and_the_liability(twin: Twin, cast: dict) -> None:
    c, o, a = twin.c, cast["origin"].address, cast["a"]
    job = attest(c, o, a, "w")
    leaf = twin.m.nodes[a.address].leaf
    twin.leave(a.address)
    twin.register(a, "a-again")
    assert twin.m.nodes[a.address].leaf == leaf == twin.c.nodes(a.address).leaf
    twin.open_duel(o, job)
    assert twin.c.reserved(a.address) == BOND
