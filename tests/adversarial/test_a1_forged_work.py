"""A1: an origin names a victim in a duel against its own zero-stake identity.

Today's defence: a duel is over work the victim signed for this origin (EIP-712 Work attestation,
ecrecover on-chain), with the origin's pre-answer commitment to duel it; the challenger is drawn by
the contract from frozen stake, so a zero-stake identity is never drawn and the origin never names B.
"""

from __future__ import annotations

import dataclasses

import pytest
from contract_fixtures import (
    BOND,
    MIN_STAKE,
    TEST_PARAMS,
    ZERO_ADDRESS,
    RevertedError,
    Twin,
    advance,
    attest,
    chain_id,
    deploy,
    mine_to,
    new_account,
    next_epoch,
    now_s,
    sign_work,
)
from eth_account import Account

from wwwserve.ledger.work import request_id_hash


@pytest.fixture(name="world")
def world_fixture(twin: Twin) -> dict[str, object]:
    """An origin with a zero-stake sock puppet, a victim, and honest nodes serving the model."""
    nodes = {
        "origin": twin.node("origin", 0),
        "sock": twin.node("sock", 0),  # the attacker's second identity: registered, no stake
        "victim": twin.node("victim", 10 * MIN_STAKE),
        "zero": twin.node("zero-stake", 0),
    }
    for i in range(4):
        nodes[f"h{i}"] = twin.node(f"h{i}", (i + 1) * MIN_STAKE)
    next_epoch()
    return nodes


def _refused(twin: Twin, origin: str, job: object, reason: str, **kw: object) -> None:
    with pytest.raises(RevertedError) as info:
        twin.open_duel(origin, job, **kw)  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_work_the_victim_did_not_sign_cannot_be_dueled(twin: Twin, world: dict) -> None:
    c, o, victim = twin.c, world["origin"].address, world["victim"]
    sock = world["sock"]
    # the attacker signs "the victim's work" with its own keys
    _refused(twin, o, attest(c, o, victim, "forged", signer=sock), "Duel: bad attestation")
    _refused(twin, o, attest(c, o, victim, "forged", signer=world["origin"]), "Duel: bad attestation")
    # real work the victim did for someone else, or for another request, or another deployment
    for_other = attest(c, world["h0"].address, victim, "other origin")
    _refused(twin, o, for_other, "Duel: bad attestation")
    real = attest(c, o, victim, "real")
    relabelled = dataclasses.replace(real, work=dataclasses.replace(real.work, request_id=request_id_hash("x")))
    _refused(twin, o, relabelled, "Duel: bad attestation")
    elsewhere = deploy()  # the same chain, another WWWServe: another EIP-712 domain
    cross = dataclasses.replace(real, work=sign_work(victim, chain_id(), str(elsewhere.address),
                                                      dataclasses.replace(real.work, signature=b"")))
    assert cross.work.signature != real.work.signature
    _refused(twin, o, cross, "Duel: bad attestation")
    # an attestation whose inspect commitment said "no duel", or a guessed salt
    _refused(twin, o, attest(c, o, victim, "no duel", wants_duel=False), "Duel: bad attestation")
    _refused(twin, o, real, "Duel: bad attestation", salt=b"\x01" * 32)
    # stale work
    old = attest(c, o, victim, "old", issued_at=now_s() - TEST_PARAMS.attestation_ttl_s - 1)
    _refused(twin, o, old, "Duel: attestation expired")
    # work by a node with nothing at stake cannot be dueled at all (nothing to bond)
    _refused(twin, o, attest(c, o, world["zero"], "zero"), "Duel: duelist stake too low")
    # and an outsider's "work" (never registered)
    stranger = Account.from_key(b"\x42" * 32)
    _refused(twin, o, attest(c, o, stranger, "stranger"), "Duel: duelist not registered")
    assert twin.m.duels == {} and twin.m.bonded.get(victim.address, 0) == 0


def test_the_origin_never_names_the_challenger(twin: Twin, world: dict) -> None:
    """Over many real duels the challenger is always the contract's draw, never the origin's zero-stake
    sock puppet, never the origin or A; it varies with the seed."""
    c, o, victim = twin.c, world["origin"].address, world["victim"]
    challengers = []
    for i in range(12):
        duel_id = twin.open_duel(o, attest(c, o, victim, f"d{i}"))
        mine_to(twin.m.duels[duel_id].seed_block + 1)
        b = twin.challenger_of(duel_id)  # the contract's and the model's draw agree
        assert b not in (ZERO_ADDRESS, o, victim.address, world["sock"].address, world["zero"].address)
        challengers.append(b)
        # the sock puppet cannot step in: it is not the challenger
        with pytest.raises(RevertedError) as info:
            twin.answer(duel_id, world["sock"].address, b"\x11" * 32)
        assert info.value.reason == "Duel: not the challenger"
        twin.settle(duel_id, o)  # lapses: nobody answered (recorded by nobody)
        advance(1)
    assert len(set(challengers)) >= 3, challengers
    # the sock puppet holds no weight, in the frozen tree or the live one
    assert twin.c.leafWeight(twin.c.nodes(world["sock"].address).leaf) == 0


def test_a_zero_stake_identity_is_never_drawn_even_as_the_only_other_server(twin: Twin) -> None:
    """The origin's sock puppet is the only other node serving the model: no challenger at all, the
    duel is cancelled and the victim's bond released; the sock puppet gains nothing."""
    c = twin.c
    origin, sock = twin.node("origin", 0), twin.node("sock", 0)
    victim = twin.node("victim", 2 * MIN_STAKE)
    twin.node("judge", 5 * MIN_STAKE, models=("other",))
    next_epoch()
    duel_id = twin.open_duel(origin.address, attest(c, origin.address, victim, "t"))
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    assert twin.challenger_of(duel_id) == ZERO_ADDRESS
    assert twin.draw_challenger(duel_id, sock.address) == ZERO_ADDRESS  # cancelled
    assert twin.event("DuelCancelled")[0]["reason"] == 1
    assert twin.m.credit[sock.address] == twin.c.credit(sock.address)
    assert (twin.c.reserved(victim.address), twin.c.activeStake(victim.address)) == (0, 2 * MIN_STAKE)


def test_a_real_duel_bonds_the_signer_and_its_challenger_is_the_draw(twin: Twin, world: dict) -> None:
    c, o, victim = twin.c, world["origin"].address, world["victim"]
    job = attest(c, o, victim, "real")
    duel_id = twin.open_duel(o, job)
    assert twin.c.reserved(victim.address) == BOND
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    b = twin.challenger_of(duel_id)
    twin.draw_challenger(duel_id, new_account("anyone").address)
    assert twin.c.getDuel(duel_id)[2] == b
    assert b in {world[f"h{i}"].address for i in range(4)}
