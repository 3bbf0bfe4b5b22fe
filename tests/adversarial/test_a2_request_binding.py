"""A2: the origin picks the duelists, sees both answers before opening, and sends the victim a crippled
request (`max_tokens=1`) that the evidence then misrepresents.

Today's defence: A signs the hash of the whole request (sampling parameters included), so the duel is
over exactly the request A got, and B (and the judges) get the request whose hash is on-chain; the
origin committed to duel before any answer existed; B is the contract's draw and answers after the
duel is opened, so there is no second answer to peek at.
"""

from __future__ import annotations

import dataclasses

import pytest
from contract_fixtures import (
    MIN_STAKE,
    ZERO32,
    RevertedError,
    Twin,
    attest,
    block_number,
    chat_request,
    mine_to,
    new_account,
    next_epoch,
)
from eth_utils import keccak

from wwwserve.ledger.work import parse_request_bytes, request_hash


@pytest.fixture(name="nodes")
def nodes_fixture(twin: Twin) -> list:
    nodes = [twin.node("origin", 0), twin.node("victim", 5 * MIN_STAKE)]
    nodes += [twin.node(f"h{i}", (i + 2) * MIN_STAKE) for i in range(4)]
    next_epoch()
    return nodes


def test_the_request_hash_covers_sampling_parameters(twin: Twin, nodes: list) -> None:
    c, o, victim = twin.c, nodes[0].address, nodes[1]
    crippled = chat_request("q", max_tokens=1)
    honest = chat_request("q", max_tokens=64)
    assert keccak(crippled) != keccak(honest)
    assert parse_request_bytes(crippled)[1]["max_tokens"] == 1
    assert request_hash("chat", parse_request_bytes(honest)[1]) == keccak(honest)
    # the victim answered the crippled request and signed its hash
    job = attest(c, o, victim, "q", request=crippled)
    # the origin cannot present that work as an answer to the full request
    as_honest = dataclasses.replace(job, work=dataclasses.replace(job.work, request_hash=keccak(honest)))
    with pytest.raises(RevertedError) as info:
        twin.open_duel(o, as_honest)
    assert info.value.reason == "Duel: bad attestation"
    # dueled as what it was, the on-chain hash is the crippled request's: B and the judges see it
    duel_id = twin.open_duel(o, job)
    assert twin.event("DuelOpened")[0]["requestHash"] == keccak(crippled)
    # if B says it could not get the request, only bytes hashing to that hash can be published
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    b = twin.challenger_of(duel_id)
    twin.answer(duel_id, b, ZERO32)
    with pytest.raises(RevertedError) as info:
        twin.publish(duel_id, job, o, request=honest)
    assert info.value.reason == "Duel: request does not match its hash"
    twin.publish(duel_id, job, new_account("anyone").address)
    assert twin.event("RequestPublished")[0]["request"] == crippled


def test_the_origin_commits_to_duel_before_the_answer(twin: Twin, nodes: list) -> None:
    """The victim signs the origin's commitment with its answer; a commitment to 'no duel' cannot be
    turned into a duel afterwards, and another salt does not open it."""
    c, o, victim = twin.c, nodes[0].address, nodes[1]
    job = attest(c, o, victim, "q", wants_duel=False)
    for salt in (job.salt, keccak(b"guess"), ZERO32):
        with pytest.raises(RevertedError) as info:
            twin.open_duel(o, job, salt=salt)
        assert info.value.reason == "Duel: bad attestation"
    # the commitment is bound to the request id too: the salt of one request opens no other
    other = attest(c, o, victim, "r")
    with pytest.raises(RevertedError) as info:
        twin.open_duel(o, other, salt=job.salt)
    assert info.value.reason == "Duel: bad attestation"
    twin.open_duel(o, other)  # its own salt opens it


def test_the_origin_cannot_choose_b_nor_see_its_answer_first(twin: Twin, nodes: list) -> None:
    """At opening there is no B; it is drawn from a block hash mined after the opening, and answers
    after that. Every duel's B is the model's prediction from the seed block's hash."""
    c, o, victim = twin.c, nodes[0].address, nodes[1]
    opened = block_number()
    duel_id = twin.open_duel(o, attest(c, o, victim, "q"))
    assert twin.c.getDuel(duel_id)[2] == "0x0000000000000000000000000000000000000000"
    assert twin.c.challengerOf(duel_id) == "0x0000000000000000000000000000000000000000"
    seed = twin.m.duels[duel_id].seed_block
    assert seed > opened  # its hash did not exist when the origin opened the duel
    mine_to(seed + 1)
    b = twin.challenger_of(duel_id)
    assert b in {n.address for n in nodes[2:]}
    with pytest.raises(RevertedError):
        twin.answer(duel_id, o, keccak(b"the origin's own answer"))
    twin.answer(duel_id, b, keccak(b"b"))
    assert twin.event("DuelAnswered")[0]["b"] == b
