"""A7: exit griefing. Naming a node as a duelist and never drawing locked its whole unbonding stake for
1,580 blocks, for 5 credits.

Today's defence: an open duel bonds DUEL_BOND of the duelist's stake, nothing more; every duel ends
within DUEL_SPAN_BLOCKS of its opening, and anyone may settle or cancel it once its windows are over;
and each duel needs a piece of work the node itself signed for the griefer.
"""

from __future__ import annotations

import pytest
from contract_fixtures import (
    BOND,
    MIN_STAKE,
    OTHER_MODEL,
    RevertedError,
    Twin,
    advance,
    attest,
    block_number,
    mine,
    mine_to,
    new_account,
    next_epoch,
)
from eth_utils import keccak


def test_open_duels_bond_only_their_bonds(twin: Twin) -> None:
    griefer = twin.node("griefer", 0)
    victim = twin.node("victim", 10 * MIN_STAKE, 0)
    twin.node("b", 20 * MIN_STAKE)
    for i in range(3):
        twin.node(f"j{i}", 2 * MIN_STAKE, models=(OTHER_MODEL,))
    next_epoch()
    c, g, v = twin.c, griefer.address, victim.address
    opened_at = block_number()
    ids = [twin.open_duel(g, attest(c, g, victim, f"grief{i}")) for i in range(3)]
    assert twin.c.reserved(v) == 3 * BOND
    # the victim leaves and unstakes everything; after the delays all but the three bonds come out
    twin.leave(v)
    twin.request_unstake(v, 10 * MIN_STAKE)
    asked = block_number()
    advance(twin.p.unbonding_period_s)
    mine_to(asked + twin.p.duel_span_blocks + 1)
    assert twin.withdraw_stake(v) == 10 * MIN_STAKE - 3 * BOND
    # the griefer never drew, never answered, never settled: anyone ends its duels, within the span
    stranger = new_account("stranger").address
    assert block_number() <= opened_at + twin.p.duel_span_blocks + twin.p.epoch_blocks + 1
    for duel_id in ids:
        twin.settle(duel_id, stranger, wait=False)
        assert twin.event("DuelCancelled")[0]["reason"] == 1  # nobody drew the challenger in time
    assert twin.withdraw_stake(v) == 3 * BOND
    assert twin.m.total_stake(v) == 0 == twin.c.reserved(v)


def test_every_kind_of_duel_can_be_ended_by_anyone_within_its_span(twin: Twin) -> None:
    """Open five duels in one block and leave each at a different stage; DUEL_SPAN_BLOCKS later a
    stranger settles every one of them."""
    origin = twin.node("origin", 0, 2 * 10**18)
    a = twin.node("a", 10 * MIN_STAKE)
    twin.node("b", 20 * MIN_STAKE)
    for i in range(3):
        twin.node(f"j{i}", 2 * MIN_STAKE, models=(OTHER_MODEL,))
    next_epoch()
    c, o = twin.c, origin.address
    mine(twin.p.epoch_blocks - 1)  # the last block of an epoch: the longest wait for a seed
    opened = block_number()
    jobs = {stage: attest(c, o, a, stage) for stage in ("lapsed", "no-show", "no request", "judged", "appealed")}
    ids = {stage: twin.open_duel(o, job) for stage, job in jobs.items()}
    mine_to(twin.m.duels[ids["lapsed"]].seed_block + 1)
    b = twin.challenger_of(ids["no-show"])
    twin.draw_challenger(ids["no-show"], o)
    twin.answer(ids["no request"], twin.challenger_of(ids["no request"]), b"\x00" * 32)
    for stage in ("judged", "appealed"):
        twin.answer(ids[stage], twin.challenger_of(ids[stage]), keccak(stage.encode()))
    seats = twin.seats(ids["appealed"])
    twin.vote_round(ids["appealed"], dict.fromkeys(seats, 2))
    mine_to(twin.m.reveal_end(ids["appealed"]) + 1)
    twin.appeal(ids["appealed"], a.address)
    mine_to(opened + twin.p.duel_span_blocks + 1)
    stranger = new_account("stranger").address
    for stage, duel_id in ids.items():
        twin.settle(duel_id, stranger, wait=False)
        assert twin.m.duels[duel_id].status in (4, 5), stage
    assert twin.c.reserved(a.address) == 0 == twin.c.reserved(b)


def test_a_challenger_cannot_keep_a_duel_open_past_its_span(twin: Twin) -> None:
    """B answers "no request" at the last block of its window, the origin publishes at the last block
    of its own, and B tries "no request" again (the request is on-chain by then): refused, so the
    stalling ends there. B stays silent and pays its bond; anyone ends the duel well within
    DUEL_SPAN_BLOCKS (A's and the judges' unbonding stake is only held that long)."""
    origin = twin.node("origin", 0)
    a = twin.node("a", 10 * MIN_STAKE)
    b = twin.node("b", 20 * MIN_STAKE)
    for i in range(3):
        twin.node(f"j{i}", 2 * MIN_STAKE, models=(OTHER_MODEL,))
    next_epoch()
    c, o = twin.c, origin.address
    opened = block_number()
    job = attest(c, o, a, "stalled")
    duel_id = twin.open_duel(o, job)
    d = twin.m.duels[duel_id]
    mine_to(d.deadline)
    twin.answer(duel_id, b.address, b"\x00" * 32)
    mine_to(d.deadline)  # the publish deadline
    twin.publish(duel_id, job, o)
    mine_to(d.deadline)  # the new answer deadline
    with pytest.raises(RevertedError, match="Duel: request already published"):
        twin.answer(duel_id, b.address, b"\x00" * 32)
    mine(1)
    stake_b = twin.m.total_stake(b.address)
    twin.settle(duel_id, new_account("stranger").address, wait=False)
    assert twin.event("DuelCancelled")[0]["reason"] == 2  # no answer: B pays its bond
    assert twin.m.total_stake(b.address) == stake_b - BOND
    assert block_number() <= opened + twin.p.duel_span_blocks
    assert twin.c.reserved(a.address) == 0 == twin.c.reserved(b.address)
