"""WWWServe duels: opening over attested work, the drawn challenger (drawn from what the epoch froze,
whatever its free stake; both bonds are the smaller of DUEL_BOND and its free stake, and it pays its
bond when it never answers), answers and "no request" (both draw the first round's seats, which
exclude nobody), published requests, judges' commits and reveals, appeals, settlement with the
verdict weight, and cancellation, with exact amounts.

Most tests use a `Cast` in which only the origin, A and B serve the duel's model (so B is the only
node a challenger draw can pick) and three judges serve another model. Seats exclude nobody, so B
can hold seats in its own duel; `judging_duel` picks duels whose seats all went to the judges, and
the tests of a duelist's seat pick duels where one holds a seat. The seats are drawn with
replacement, so a judge may hold several; the expected amounts are computed per seat from the seats
the contract drew.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    A_VOTE,
    A_WON,
    ABSTAIN,
    APPEAL_FEE,
    AWAITING_ANSWER,
    AWAITING_REQUEST,
    B_VOTE,
    B_WON,
    BOND,
    CANCEL_NO_ANSWER,
    CANCEL_NO_CHALLENGER,
    CANCEL_REQUEST_WITHHELD,
    CANCELLED,
    DUELIST_FEE,
    ESCROW,
    JUDGE_FEE,
    JUDGE_PENALTY,
    JUDGING,
    MIN_STAKE,
    MODEL,
    NO_EVIDENCE,
    OTHER_MODEL,
    REWARD_APPEAL_REFUND,
    REWARD_DUELIST_FEE,
    REWARD_ESCROW_REFUND,
    REWARD_STAKE_WON,
    SETTLED,
    SILENT_PENALTY,
    SLASH_INCOHERENT_JUDGE,
    SLASH_LOST_DUEL,
    SLASH_NO_ANSWER,
    SLASH_SILENT_JUDGE,
    TIE,
    VOIDED,
    ZERO32,
    ZERO_ADDRESS,
    C,
    Cast,
    P,
    Storage,
    advance,
    answer,
    attest,
    block_number,
    chain_id,
    commit,
    commitment,
    contract_fixture,
    deployment_fixture,
    distinct,
    draw_challenger,
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
    now_s,
    open_args,
    open_duel,
    publish_args,
    reveal,
    reveal_end,
    seats,
    settle,
    to_seed,
    vote_round,
)
from eth_utils import keccak

from wwwserve.ledger.model import (
    SECP256K1N,
    SECP256K1N_HALF,
    SortitionTree,
    challenger_seed,
    panel_seed,
    vote_commitment,
)
from wwwserve.ledger.work import answer_hash, duel_id_of, inspect_commitment, model_hash, request_id_hash, work_digest

BPS = 10_000


def book(c: Any, *who: str) -> dict[str, tuple[int, int, int, int]]:
    """(credit, active stake, unbonding stake, reserved) of each address."""
    return {w: (c.credit(w), c.activeStake(w), c.unbondingStake(w), c.reserved(w)) for w in who}


def delta(before: dict[str, tuple[int, ...]], after: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {w: tuple(x - y for x, y in zip(after[w], before[w], strict=True)) for w in before}


def everyone(cast: Cast) -> list[str]:
    return [cast.origin.address, cast.a.address, cast.b.address, *(j.address for j in cast.judges)]


def held(c: Any, cast: Cast, open_escrows: int = 0) -> int:
    """What the contract owes the cast: credit + stake of each + registration bonds + open escrows + the
    reserve."""
    return sum(c.credit(w) + c.activeStake(w) + c.unbondingStake(w) + c.pendingWithdrawal(w)
               + c.REGISTRATION_BOND() * c.registeredOnce(w) for w in everyone(cast)) + open_escrows + c.reserve()


@pytest.fixture(name="cast")
def cast_fixture(c: Any) -> Cast:
    return make_cast(c)


# ---------------------------------------------------------------------------------------------
# opening


def test_open_duel_over_attested_work(c: Any, cast: Cast) -> None:
    o, a = cast.origin.address, cast.a.address
    job = attest(c, o, cast.a, "t")
    w = job.work
    assert c.workDigest(o, a, w.request_id, w.request_hash, w.model_hash, w.answer_hash, w.inspect,
                        w.issued_at) == work_digest(chain_id(), c.address, w)
    assert c.inspectCommitment(w.request_id, True, job.salt) == inspect_commitment(w.request_id, True, job.salt)
    assert c.duelIdOf(o, w.request_id) == duel_id_of(o, w.request_id) < 2**63
    before = book(c, o, a)
    duel_id = open_duel(c, o, job)
    assert duel_id == duel_id_of(o, w.request_id)
    seed = (block_number() // P.epoch_blocks + 1) * P.epoch_blocks
    (ev,) = logs_named(c, "DuelOpened")
    assert (ev.duelId, ev.origin, ev.a, ev.requestId, ev.requestHash, ev.modelHash, ev.answerAHash, ev.bond,
            ev.seedBlock, ev.answerDeadline, ev.escrow) == (
        duel_id, o, a, w.request_id, w.request_hash, model_hash(MODEL), w.answer_hash, BOND, seed,
        seed + P.answer_window_blocks, ESCROW)
    assert delta(before, book(c, o, a)) == {o: (-ESCROW, 0, 0, 0), a: (0, 0, 0, BOND)}
    assert duel(c, duel_id) == (o, a, ZERO_ADDRESS, seed, seed + P.answer_window_blocks, BOND, 0,
                                AWAITING_ANSWER, 0)
    assert c.DUEL_ESCROW() == ESCROW == P.duelist_fee_wei + 3 * JUDGE_FEE
    assert boa.env.get_balance(c.address) == held(c, cast, ESCROW)


def test_open_duel_needs_a_registered_origin(c: Any, cast: Cast) -> None:
    stranger = new_account("stranger")
    job = attest(c, stranger.address, cast.a, "t")
    with boa.env.prank(stranger.address), boa.reverts("Registry: not registered"):
        c.openDuel(*open_args(job))
    # an origin that left cannot open duels either
    job = attest(c, cast.origin.address, cast.a, "t")
    with boa.env.prank(cast.origin.address):
        c.leave()
        with boa.reverts("Registry: not registered"):
            c.openDuel(*open_args(job))


def test_origin_cannot_duel_its_own_work(c: Any, cast: Cast) -> None:
    job = attest(c, cast.origin.address, cast.origin, "t")
    with boa.env.prank(cast.origin.address), boa.reverts("Duel: origin cannot duel"):
        c.openDuel(*open_args(job))


def test_duelist_must_have_registered(c: Any, cast: Cast) -> None:
    outsider = new_account("outsider")
    job = attest(c, cast.origin.address, outsider, "t")
    with boa.env.prank(cast.origin.address), boa.reverts("Duel: duelist not registered"):
        c.openDuel(*open_args(job))


def test_attestation_expires_after_its_ttl(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    issued = now_s()
    old = attest(c, o, cast.a, "old", issued_at=issued)
    edge = attest(c, o, cast.a, "edge", issued_at=issued)
    advance(P.attestation_ttl_s)
    open_duel(c, o, edge)  # exactly at the end of the TTL: still fresh
    advance(1)
    with boa.env.prank(o), boa.reverts("Duel: attestation expired"):
        c.openDuel(*open_args(old))


def _with_sig(job: Any, sig: bytes) -> Any:
    return dataclasses.replace(job, work=dataclasses.replace(job.work, signature=sig))


def test_malformed_attestation_signatures_revert(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    job = attest(c, o, cast.a, "t")
    sig = job.work.signature
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    high_s = r + (SECP256K1N - s).to_bytes(32, "big") + bytes([55 - v])  # the same signature, malleated
    for bad in (sig[:64], r + (SECP256K1N_HALF + 1).to_bytes(32, "big") + bytes([v]), high_s,
                sig[:64] + bytes([29])):
        with boa.env.prank(o), boa.reverts("Duel: malformed attestation"):
            c.openDuel(*open_args(_with_sig(job, bad)))
    # v as 0/1 is accepted as 27/28
    open_duel(c, o, _with_sig(job, sig[:64] + bytes([v - 27])))


def test_work_signed_by_anyone_but_its_executor_is_refused(c: Any, cast: Cast) -> None:
    o, a = cast.origin.address, cast.a
    cases = {
        "another key": attest(c, o, a, "t", signer=cast.b),
        "the origin's key": attest(c, o, a, "t", signer=cast.origin),
        "r = 0": _with_sig(attest(c, o, a, "t"), ZERO32 + attest(c, o, a, "t").work.signature[32:]),
    }
    good = attest(c, o, a, "t")
    w = good.work
    altered = {
        "another request hash": dataclasses.replace(w, request_hash=keccak(b"other request")),
        "another answer": dataclasses.replace(w, answer_hash=answer_hash("a better answer")),
        "another model": dataclasses.replace(w, model_hash=model_hash(OTHER_MODEL)),
        "another request id": dataclasses.replace(w, request_id=keccak(b"other id")),
        "another issue time": dataclasses.replace(w, issued_at=w.issued_at - 1),
    }
    for name, work in altered.items():
        cases[name] = dataclasses.replace(good, work=work)
    for name, job in cases.items():
        with boa.env.prank(o), boa.reverts("Duel: bad attestation"):
            c.openDuel(*open_args(job))
        assert name
    # the wrong salt, or a commitment that said "no duel"
    with boa.env.prank(o), boa.reverts("Duel: bad attestation"):
        c.openDuel(*open_args(good, salt=keccak(b"guessed salt")))
    no_duel = attest(c, o, a, "t", wants_duel=False)
    with boa.env.prank(o), boa.reverts("Duel: bad attestation"):
        c.openDuel(*open_args(no_duel))
    # another origin's attestation: work A did for the cast's B-node as origin
    for_b = attest(c, cast.b.address, a, "t")
    with boa.env.prank(o), boa.reverts("Duel: bad attestation"):
        c.openDuel(*open_args(for_b))
    assert c.reserved(a.address) == 0


def test_unknown_model_reverts(c: Any, cast: Cast) -> None:
    job = attest(c, cast.origin.address, cast.a, "t", model="never-registered")
    with boa.env.prank(cast.origin.address), boa.reverts("Duel: unknown model"):
        c.openDuel(*open_args(job))


def test_each_piece_of_work_is_dueled_once(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    job = attest(c, o, cast.a, "t")
    open_duel(c, o, job)
    with boa.env.prank(o), boa.reverts("Duel: work already dueled"):
        c.openDuel(*open_args(job))
    # the same request id with another answer is the same work
    again = attest(c, o, cast.a, "t", answer="another answer")
    with boa.env.prank(o), boa.reverts("Duel: work already dueled"):
        c.openDuel(*open_args(again))


def test_duelist_needs_a_free_bond(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    # A stakes 80 credits: four 20-credit bonds take all of it, a fifth does not fit
    poor = make_node(c, "poor", BOND - 1)
    with boa.env.prank(o), boa.reverts("Duel: duelist stake too low"):
        c.openDuel(*open_args(attest(c, o, poor, "p")))
    assert c.activeStake(cast.a.address) == 4 * BOND
    full = 4
    for i in range(full):
        open_duel(c, o, attest(c, o, cast.a, f"n{i}"))
    assert c.reserved(cast.a.address) == full * BOND == c.activeStake(cast.a.address)
    with boa.env.prank(o), boa.reverts("Duel: duelist stake too low"):
        c.openDuel(*open_args(attest(c, o, cast.a, "one more")))


def test_origin_needs_the_escrow(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    with boa.env.prank(o):
        c.requestWithdrawal(c.credit(o) - ESCROW + 1)
        with boa.reverts("Bank: insufficient credit"):
            c.openDuel(*open_args(attest(c, o, cast.a, "t")))


def test_block_numbers_must_fit_the_packed_duel(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    job = attest(c, o, cast.a, "t")
    limit = 1 << 40
    span = c.DUEL_SPAN_BLOCKS()
    assert span == P.duel_span_blocks
    mine_to(limit - span - 2 * P.epoch_blocks)
    with boa.env.anchor():
        open_duel(c, o, job)  # still fits
    mine_to(limit - span - P.answer_window_blocks)
    with boa.env.prank(o), boa.reverts("Duel: field overflow"):
        c.openDuel(*open_args(job))


def test_unbonding_and_departed_executors_stay_liable(c: Any, cast: Cast) -> None:
    """A's bond may come from its unbonding stake, and leaving does not end liability."""
    o, a = cast.origin.address, cast.a.address
    job = attest(c, o, cast.a, "t")
    staked = c.activeStake(a)
    with boa.env.prank(a):
        c.requestUnstake(staked)
        c.leave()
    duel_id = open_duel(c, o, job)
    assert c.reserved(a) == BOND and c.activeStake(a) == 0
    b, drawn = answer(c, duel_id)
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    settle(c, duel_id)
    assert c.unbondingStake(a) == staked - BOND and c.reserved(a) == 0
    assert b == cast.b.address


# ---------------------------------------------------------------------------------------------
# the challenger


def test_challenger_is_drawn_after_the_seed_block(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    view = duel(c, duel_id)
    mine_to(view.seed_block)
    assert c.challengerOf(duel_id) == ZERO_ADDRESS  # the seed block's hash is not known yet
    with boa.reverts("Duel: seed block not mined yet"):
        c.drawChallenger(duel_id)
    mine(1)
    assert c.challengerOf(duel_id) == cast.b.address
    before = book(c, cast.a.address, cast.b.address)
    with boa.env.prank(new_account("anyone").address):
        c.drawChallenger(duel_id)
    (ev,) = logs_named(c, "ChallengerDrawn")
    assert (ev.duelId, ev.b, ev.bond) == (duel_id, cast.b.address, BOND)
    assert delta(before, book(c, cast.a.address, cast.b.address)) == {
        cast.a.address: (0, 0, 0, 0), cast.b.address: (0, 0, 0, BOND)}
    assert duel(c, duel_id).b == cast.b.address and duel(c, duel_id).status == AWAITING_ANSWER
    with boa.reverts("Duel: challenger already drawn"):
        c.drawChallenger(duel_id)
    # once recorded, the challenger is the recorded one, at any time
    mine(50)
    assert c.challengerOf(duel_id) == cast.b.address


def test_challenger_cannot_be_drawn_after_the_answer_window(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    mine_to(duel(c, duel_id).deadline + 1)
    assert c.challengerOf(duel_id) == ZERO_ADDRESS
    with boa.reverts("Duel: answer window over"):
        c.drawChallenger(duel_id)
    with boa.env.prank(cast.b.address), boa.reverts("Duel: answer window over"):
        c.answerDuel(duel_id, keccak(b"late"))


def test_draw_challenger_needs_an_open_duel(c: Any, cast: Cast) -> None:
    with boa.reverts("Duel: not awaiting an answer"):
        c.drawChallenger(12345)
    duel_id, _ = judging_duel(c, cast)
    with boa.reverts("Duel: not awaiting an answer"):
        c.drawChallenger(duel_id)


def test_challenger_serves_the_model_from_an_epoch_before(c: Any, cast: Cast) -> None:
    """A node that starts serving the model (or staking) in the seed epoch is not drawn in it."""
    o = cast.origin.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    to_seed(c, duel_id)
    late = make_node(c, "late", 50 * MIN_STAKE)  # would win almost every draw if it counted
    with boa.env.prank(cast.judges[0].address):
        c.updateNode(keccak(b"j0-new-key"), "http://j0", [MODEL, OTHER_MODEL], "{}")
    assert not c.servesModel(late.address, model_hash(MODEL))
    assert not c.servesModel(cast.judges[0].address, model_hash(MODEL))
    assert draw_challenger(c, duel_id) == cast.b.address


def test_no_node_serving_the_model_cancels_with_a_refund(c: Any) -> None:
    origin = make_node(c, "origin", 0)
    a = make_node(c, "a")
    judges = [make_node(c, f"j{i}", models=(OTHER_MODEL,)) for i in range(3)]
    next_epoch()
    o = origin.address
    duel_id = open_duel(c, o, attest(c, o, a, "t"))
    to_seed(c, duel_id)
    assert c.challengerOf(duel_id) == ZERO_ADDRESS
    with boa.env.prank(a.address), boa.reverts("Duel: no challenger"):
        c.answerDuel(duel_id, keccak(b"x"))
    before = book(c, o, a.address)
    c.drawChallenger(duel_id)
    assert [type(log).__name__ for log in c.get_logs()] == ["DuelCancelled", "DuelRewardPaid"]
    (cancelled,) = logs_named(c, "DuelCancelled")
    assert (cancelled.duelId, cancelled.reason) == (duel_id, CANCEL_NO_CHALLENGER)
    (refund,) = logs_named(c, "DuelRewardPaid")
    assert (refund.account, refund.amount, refund.reason) == (o, ESCROW, REWARD_ESCROW_REFUND)
    assert delta(before, book(c, o, a.address)) == {o: (ESCROW, 0, 0, 0), a.address: (0, 0, 0, -BOND)}
    assert duel(c, duel_id).status == CANCELLED
    assert judges


def test_a_duel_nobody_could_answer_lapses_with_a_refund(c: Any) -> None:
    """No node but the origin and A serves the model: after the answer window, anyone cancels."""
    origin, a = make_node(c, "origin", 0), make_node(c, "a")
    make_node(c, "judge", models=(OTHER_MODEL,))
    next_epoch()
    o = origin.address
    duel_id = open_duel(c, o, attest(c, o, a, "t"))
    mine_to(duel(c, duel_id).deadline)
    with boa.reverts("Duel: answer window not over"):
        c.settleDuel(duel_id)
    mine(1)
    before = book(c, o, a.address)
    c.settleDuel(duel_id)
    (ev,) = logs_named(c, "DuelCancelled")
    assert ev.reason == CANCEL_NO_CHALLENGER
    assert delta(before, book(c, o, a.address)) == {o: (ESCROW, 0, 0, 0), a.address: (0, 0, 0, -BOND)}


def test_a_recorded_challenger_that_never_answers_loses_its_bond(c: Any, cast: Cast) -> None:
    o, a, b = cast.origin.address, cast.a.address, cast.b.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    assert draw_challenger(c, duel_id) == b
    mine_to(duel(c, duel_id).deadline)
    with boa.reverts("Duel: answer window not over"):
        c.settleDuel(duel_id)
    mine(1)
    before = book(c, o, a, b)
    reserve = c.reserve()
    stake_b = c.activeStake(b)
    c.settleDuel(duel_id)
    names = [type(log).__name__ for log in c.get_logs()]
    assert names == ["StakeSlashed", "ReserveChanged", "DuelCancelled", "DuelRewardPaid"]
    (slash,) = logs_named(c, "StakeSlashed")
    assert (slash.node, slash.amount, slash.reason) == (b, BOND, SLASH_NO_ANSWER)
    assert logs_named(c, "DuelCancelled")[0].reason == CANCEL_NO_ANSWER
    assert delta(before, book(c, o, a, b)) == {o: (ESCROW, 0, 0, 0), a: (0, 0, 0, -BOND), b: (0, -BOND, 0, -BOND)}
    assert c.reserve() == reserve + BOND
    # the weight is lazy: the slash shows in the draw tree only after a sync
    leaf = c.nodes(b).leaf
    assert c.leafWeight(leaf) == stake_b
    c.syncWeight(b)
    assert c.leafWeight(leaf) == stake_b - BOND
    with boa.reverts("Duel: not open"):
        c.settleDuel(duel_id)


def test_an_unrecorded_challenger_that_never_answers_is_slashed_within_the_seed_epoch(c: Any, cast: Cast) -> None:
    """Nobody called drawChallenger and B stayed silent: settled in the seed block's epoch (the answer
    window ends with blocks to spare in it), the draw still stands and B pays its bond."""
    o, a, b = cast.origin.address, cast.a.address, cast.b.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    view = duel(c, duel_id)
    last = view.seed_block + P.epoch_blocks - 1  # the seed epoch's last block
    assert view.deadline < last
    mine_to(view.seed_block + 1)
    assert c.challengerOf(duel_id) == b  # what B (and anyone) saw in the window
    for block in (view.deadline + 1, last):
        with boa.env.anchor():
            mine_to(block)
            assert c.challengerOf(duel_id) == ZERO_ADDRESS  # the window is over
            before = book(c, o, a, b)
            reserve = c.reserve()
            c.settleDuel(duel_id)
            assert [type(log).__name__ for log in c.get_logs()] == [
                "StakeSlashed", "ReserveChanged", "DuelCancelled", "DuelRewardPaid"]
            (slash,) = logs_named(c, "StakeSlashed")
            assert (slash.duelId, slash.node, slash.amount, slash.reason) == (duel_id, b, BOND, SLASH_NO_ANSWER)
            assert logs_named(c, "ReserveChanged")[0].amount == reserve + BOND
            assert logs_named(c, "DuelCancelled")[0].reason == CANCEL_NO_ANSWER
            (refund,) = logs_named(c, "DuelRewardPaid")
            assert (refund.account, refund.amount, refund.reason) == (o, ESCROW, REWARD_ESCROW_REFUND)
            assert c.reserve() == reserve + BOND
            # B was never bonded: the bond comes out of its free stake
            assert delta(before, book(c, o, a, b)) == {
                o: (ESCROW, 0, 0, 0), a: (0, 0, 0, -BOND), b: (0, -BOND, 0, 0)}
            assert duel(c, duel_id)[2] == ZERO_ADDRESS and duel(c, duel_id).status == CANCELLED
            assert boa.env.get_balance(c.address) == held(c, cast)


def test_an_unrecorded_no_show_settled_after_the_seed_epoch_is_cancelled_without_a_slash(c: Any,
                                                                                      cast: Cast) -> None:
    """Once the seed epoch is over its frozen stake is gone, so nobody can work out the challenger:
    the duel lapses as if nobody could have answered (the origin's escrow back, A's bond released)."""
    o, a, b = cast.origin.address, cast.a.address, cast.b.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    mine_to(duel(c, duel_id).seed_block + P.epoch_blocks)  # the next epoch's first block
    before = book(c, o, a, b)
    reserve = c.reserve()
    c.settleDuel(duel_id)
    assert [type(log).__name__ for log in c.get_logs()] == ["DuelCancelled", "DuelRewardPaid"]
    assert logs_named(c, "DuelCancelled")[0].reason == CANCEL_NO_CHALLENGER
    assert delta(before, book(c, o, a, b)) == {o: (ESCROW, 0, 0, 0), a: (0, 0, 0, -BOND), b: (0, 0, 0, 0)}
    assert c.reserve() == reserve


def _server_with_free_stake(c: Any, label: str, free_wei: int) -> Any:
    """A node serving MODEL with MIN_STAKE and change staked, bonded as A in duels other origins
    opened over its work until exactly `free_wei` of its stake is free."""
    change = free_wei % BOND
    node = make_node(c, label, MIN_STAKE + change)
    n = (MIN_STAKE + change - free_wei) // BOND
    for i in range(n):
        user = make_node(c, f"{label}-user{i}", 0)
        open_duel(c, user.address, attest(c, user.address, node, f"{label}-{i}"))
    assert c.activeStake(node.address) - c.reserved(node.address) == free_wei
    return node


GWEI = 10**9
# both duelists' bond is min(DUEL_BOND, B's free stake), kept in 1023rds of DUEL_BOND, in whole gwei
BOND_WEI_SHORT = 19_980_449 * GWEI  # free stake a wei short of a bond: 1022/1023 of it
BOND_HALF = 9_990_224 * GWEI  # half a bond free: 511/1023 of it


def test_a_challenger_is_drawn_whatever_its_free_stake_and_both_bonds_are_what_it_has(c: Any) -> None:
    """The challenger draw reads only what the epoch froze (stake and models): a node with less free
    stake than DUEL_BOND is drawn like any other. Both duelists' bond is the smaller of DUEL_BOND and
    B's free stake when B is recorded (in 1023rds of DUEL_BOND, whole gwei); A's is lowered to match."""
    origin, a = make_node(c, "origin", 0), make_node(c, "a", 5 * MIN_STAKE)
    make_node(c, "judge", 2 * MIN_STAKE, models=(OTHER_MODEL,))
    o = origin.address
    assert BOND * 1022 // 1023 // GWEI * GWEI == BOND_WEI_SHORT < BOND - 1
    assert BOND * 511 // 1023 // GWEI * GWEI == BOND_HALF < BOND // 2

    def recorded(b: Any, tag: str) -> int:
        duel_id = open_duel(c, o, attest(c, o, a, tag))
        assert c.reserved(a.address) == BOND  # A bonds a full DUEL_BOND until B is drawn
        to_seed(c, duel_id)
        assert c.challengerOf(duel_id) == b.address
        c.drawChallenger(duel_id)
        return duel_id

    with boa.env.anchor():  # exactly a bond's worth: bonded for all of it
        b = _server_with_free_stake(c, "b", BOND)
        next_epoch()
        duel_id = recorded(b, "t")
        (drawn,) = logs_named(c, "ChallengerDrawn")
        assert (drawn.b, drawn.bond) == (b.address, BOND)
        assert (c.reserved(a.address), c.reserved(b.address)) == (BOND, MIN_STAKE)
        assert duel(c, duel_id).bond == BOND
    with boa.env.anchor():  # a wei short, the only server: drawn all the same, with a smaller bond
        b = _server_with_free_stake(c, "b", BOND - 1)
        next_epoch()
        reserved_b = c.reserved(b.address)
        duel_id = recorded(b, "t")
        (drawn,) = logs_named(c, "ChallengerDrawn")
        assert (drawn.b, drawn.bond) == (b.address, BOND_WEI_SHORT)
        assert c.reserved(a.address) == BOND_WEI_SHORT  # lowered from DUEL_BOND
        assert c.reserved(b.address) == reserved_b + BOND_WEI_SHORT
        assert duel(c, duel_id).bond == BOND_WEI_SHORT
        # B stays silent: it pays that bond, and both bonds are released
        mine_to(duel(c, duel_id).deadline + 1)
        stake_b = c.activeStake(b.address)
        c.settleDuel(duel_id)
        (slash,) = logs_named(c, "StakeSlashed")
        assert (slash.node, slash.amount, slash.reason) == (b.address, BOND_WEI_SHORT, SLASH_NO_ANSWER)
        assert c.reserve() == BOND_WEI_SHORT
        assert c.activeStake(b.address) == stake_b - BOND_WEI_SHORT
        assert (c.reserved(a.address), c.reserved(b.address)) == (0, reserved_b)
    with boa.env.anchor():  # half a bond free: B answers and wins, and takes A's lowered bond
        b = _server_with_free_stake(c, "b", BOND // 2)
        next_epoch()
        duel_id = recorded(b, "t")
        assert logs_named(c, "ChallengerDrawn")[0].bond == BOND_HALF == duel(c, duel_id).bond
        assert c.reserved(a.address) == BOND_HALF
        with boa.env.prank(b.address):
            c.answerDuel(duel_id, keccak(b"b"))
        drawn_seats = seats(c, duel_id, 1)
        vote_round(c, duel_id, dict.fromkeys(distinct(drawn_seats), B_VOTE))  # every seat, B's too
        before = book(c, a.address, b.address)
        settle(c, duel_id)
        (settled,) = logs_named(c, "DuelSettled")
        assert (settled.outcome, settled.stakeMoved) == (B_WON, BOND_HALF)
        # the first verdict ever, an empty reserve: each seat earns JUDGE_FEE; B's seats pay B as well
        fees = {w: JUDGE_FEE * drawn_seats.count(w) for w in (a.address, b.address)}
        assert delta(before, book(c, a.address, b.address)) == {
            a.address: (fees[a.address], -BOND_HALF, 0, -BOND_HALF),
            b.address: (DUELIST_FEE + BOND_HALF + fees[b.address], 0, 0, -BOND_HALF)}
    with boa.env.anchor():  # no free stake at all: still drawn; neither duelist bonds anything
        b = _server_with_free_stake(c, "b", 0)
        next_epoch()
        reserved_b = c.reserved(b.address)
        duel_id = recorded(b, "t")
        assert logs_named(c, "ChallengerDrawn")[0].bond == 0 == duel(c, duel_id).bond
        assert (c.reserved(a.address), c.reserved(b.address)) == (0, reserved_b)
    with boa.env.anchor():  # a wei short, and another server: B is not skipped for it
        b = _server_with_free_stake(c, "b", BOND - 1)
        other = make_node(c, "other", MIN_STAKE)
        next_epoch()
        bonds = {}
        for i in range(20):  # until each of the two was drawn
            duel_id = open_duel(c, o, attest(c, o, a, f"t{i}"))
            to_seed(c, duel_id)
            drawn_b = _predicted_challenger(c, duel_id, {b.address, other.address})
            assert c.challengerOf(duel_id) == drawn_b
            c.drawChallenger(duel_id)
            bonds.setdefault(drawn_b, logs_named(c, "ChallengerDrawn")[0].bond)  # B's first bond
            if len(bonds) == 2:
                break
        assert bonds == {b.address: BOND_WEI_SHORT, other.address: BOND}


def _predicted_challenger(c: Any, duel_id: int, servers: set[str]) -> str:
    """The challenger as the model's full-tree draws over the contract's leaves (none of them changed in
    the seed epoch) work it out: the owner of the first of up to 8 tries (origin and A excluded) that
    is in `servers`, whatever its free stake."""
    view = duel(c, duel_id)
    tree = SortitionTree(P.tree_depth)
    for leaf in range(c.leafCount()):
        tree.allocate(c.leafOwner(leaf), block_number=0, reuse_before=0)
        tree.set(leaf, c.leafWeight(leaf), 0)
    excluded = [c.nodes(x).leaf for x in (view.origin, view.a)]
    seed = challenger_seed(fake_blockhash(view.seed_block), duel_id)
    for i in range(8):
        (leaf,) = tree.draw(bytes(keccak(seed + i.to_bytes(32, "big"))), 1, excluded, 1)
        if tree.owner(leaf) in servers:
            return tree.owner(leaf)
    return ZERO_ADDRESS


# ---------------------------------------------------------------------------------------------
# the answer, and a request the challenger could not get


def _full_tree_panel(c: Any, duel_id: int, seed_block: int, round_: int = 1) -> list[str]:
    """A round's seats as the model's full-tree draw from `seed_block`'s hash, nobody excluded, over the
    contract's leaves as they stand (none changed since)."""
    tree = SortitionTree(P.tree_depth)
    for leaf in range(c.leafCount()):
        tree.allocate(c.leafOwner(leaf), block_number=0, reuse_before=0)
        tree.set(leaf, c.leafWeight(leaf), 0)
    seats = P.k_judges if round_ == 1 else 2 * P.k_judges + 1
    return [tree.owner(leaf) for leaf in tree.draw(panel_seed(fake_blockhash(seed_block), duel_id, round_),
                                                   seats, [], 1)]


def _duel_id(o: str, tag: str) -> int:
    """The id of the duel `o` would open over `attest(c, o, ..., tag)`."""
    return duel_id_of(o, request_id_hash(f"{o}-{tag}"))


def test_answer_draws_the_first_panel(c: Any, cast: Cast) -> None:
    o, b = cast.origin.address, cast.b.address
    seed = (block_number() // P.epoch_blocks + 1) * P.epoch_blocks
    # a request whose seats include B: the duel's own challenger may judge it (nobody is excluded)
    tag = next(t for t in (f"t{i}" for i in range(20)) if b in _full_tree_panel(c, _duel_id(o, t), seed))
    duel_id = open_duel(c, o, attest(c, o, cast.a, tag))
    to_seed(c, duel_id)
    assert duel(c, duel_id).seed_block == seed
    with boa.env.prank(cast.a.address), boa.reverts("Duel: not the challenger"):
        c.answerDuel(duel_id, keccak(b"x"))
    with boa.env.prank(b):
        c.answerDuel(duel_id, keccak(b"b answer"))
    names = [type(log).__name__ for log in c.get_logs()]
    assert names == ["ChallengerDrawn", "DuelAnswered", "JudgesDrawn"]
    commit_end = block_number() + P.commit_window_blocks
    (answered,) = logs_named(c, "DuelAnswered")
    assert (answered.duelId, answered.b, answered.answerBHash, answered.commitEnd) == (
        duel_id, b, keccak(b"b answer"), commit_end)
    (drawn,) = logs_named(c, "JudgesDrawn")
    got = [str(s) for s in drawn.seats]
    assert (drawn.round, drawn.commitEnd, drawn.revealEnd) == (1, commit_end, commit_end + P.reveal_window_blocks)
    assert got == seats(c, duel_id, 1) and len(got) == P.k_judges
    # the seats are the model's full-tree draw from the seed block's hash, nobody excluded: B holds
    # one here; A (under MIN_STAKE) and the origin (no stake) have no draw weight
    assert got == _full_tree_panel(c, duel_id, seed)
    assert b in got and set(got) <= {b, *(j.address for j in cast.judges)}
    assert duel(c, duel_id)[3:] == (seed, commit_end, BOND, 1, JUDGING, 0)
    assert list(c.getVotes(duel_id, 1)) == [0, 0, 0]
    assert list(c.getJudges(duel_id, 2)) == []
    # B's seat votes like any other
    commit(c, duel_id, b, B_VOTE)
    with boa.env.prank(b), boa.reverts("Duel: not awaiting an answer"):
        c.answerDuel(duel_id, keccak(b"again"))


def test_answer_reverts_outside_its_window(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    with boa.env.prank(cast.b.address), boa.reverts("Duel: seed block not mined yet"):
        c.answerDuel(duel_id, keccak(b"x"))
    draw_challenger(c, duel_id)
    mine_to(duel(c, duel_id).deadline + 1)
    with boa.env.prank(cast.b.address), boa.reverts("Duel: answer window over"):
        c.answerDuel(duel_id, keccak(b"x"))
    with boa.env.prank(cast.b.address), boa.reverts("Duel: not awaiting an answer"):
        c.answerDuel(424242, keccak(b"x"))


def test_with_no_other_stake_the_challenger_fills_every_seat(c: Any) -> None:
    """Seats exclude nobody, and B was drawn from the same frozen stake as the seats, so a first panel
    is never empty (the "no judges" cancellation cannot happen in round 1): with A under MIN_STAKE and
    no judges, B holds every seat of its own duel, and its vote decides it."""
    origin, a, b = make_node(c, "origin", 0), make_node(c, "a", MIN_STAKE - BOND), make_node(c, "b")
    next_epoch()
    o = origin.address
    duel_id = open_duel(c, o, attest(c, o, a, "t"))
    to_seed(c, duel_id)
    with boa.env.prank(b.address):
        c.answerDuel(duel_id, keccak(b"x"))
    assert [type(log).__name__ for log in c.get_logs()] == ["ChallengerDrawn", "DuelAnswered", "JudgesDrawn"]
    assert seats(c, duel_id, 1) == [b.address] * P.k_judges
    assert duel(c, duel_id).status == JUDGING
    vote_round(c, duel_id, {b.address: B_VOTE})
    before = book(c, o, a.address, b.address)
    settle(c, duel_id)
    assert logs_named(c, "DuelSettled")[0].outcome == B_WON
    # the first verdict ever, an empty reserve: B takes A's bond, its fee, and a judge fee per seat
    assert delta(before, book(c, o, a.address, b.address)) == {
        o: (0, 0, 0, 0), a.address: (0, -BOND, 0, -BOND),
        b.address: (BOND + DUELIST_FEE + P.k_judges * JUDGE_FEE, 0, 0, -BOND)}
    assert c.reserve() == 0


def test_missing_request_published_then_answered(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    # B says "no request" and the request is published right after the seed block, so B answers
    # after the next epoch's seed; a request whose two seeds draw different seats shows which is used
    first_seed = (block_number() // P.epoch_blocks + 1) * P.epoch_blocks
    next_seed = first_seed + P.epoch_blocks
    tag = next(t for t in (f"t{i}" for i in range(20))
               if _full_tree_panel(c, _duel_id(o, t), first_seed) != _full_tree_panel(c, _duel_id(o, t), next_seed))
    job = attest(c, o, cast.a, tag)
    duel_id = open_duel(c, o, job)
    to_seed(c, duel_id)
    assert duel(c, duel_id).seed_block == first_seed
    with boa.env.prank(cast.b.address):
        c.answerDuel(duel_id, ZERO32)
    # "no request" records B and draws the first round's seats from the seed block, as an answer would
    # (the JudgesDrawn event waits for the answer that opens the commit window)
    assert [type(log).__name__ for log in c.get_logs()] == ["ChallengerDrawn", "RequestMissing"]
    (missing,) = logs_named(c, "RequestMissing")
    deadline = block_number() + P.publish_window_blocks
    assert (missing.duelId, missing.b, missing.publishDeadline) == (duel_id, cast.b.address, deadline)
    assert duel(c, duel_id).status == AWAITING_REQUEST and duel(c, duel_id).deadline == deadline
    drawn = seats(c, duel_id, 1)
    assert drawn == _full_tree_panel(c, duel_id, first_seed) and len(drawn) == P.k_judges
    assert list(c.getVotes(duel_id, 1)) == [0] * P.k_judges
    with boa.env.prank(cast.b.address), boa.reverts("Duel: not awaiting an answer"):
        c.answerDuel(duel_id, keccak(b"x"))
    with boa.env.prank(drawn[0]), boa.reverts("Duel: not judging"):
        c.commitVote(duel_id, commitment(c, duel_id, 1, drawn[0], A_VOTE))
    anyone = new_account("anyone").address
    with boa.env.prank(anyone):
        with boa.reverts("Duel: request does not match its hash"):
            c.publishRequest(duel_id, *publish_args(job, job.request + b" "))
        with boa.reverts("Duel: bad attestation"):
            c.publishRequest(duel_id, *open_args(job, salt=keccak(b"wrong"))[1:], job.request)
        with boa.reverts("Duel: malformed attestation"):
            c.publishRequest(duel_id, *publish_args(_with_sig(job, job.work.signature[:64])))
        other = attest(c, o, cast.a, "other")
        with boa.reverts("Duel: not this duel's work"):
            c.publishRequest(duel_id, *publish_args(other))
        c.publishRequest(duel_id, *publish_args(job))
    (pub,) = logs_named(c, "RequestPublished")
    seed = (block_number() // P.epoch_blocks + 1) * P.epoch_blocks
    assert seed == next_seed
    assert (pub.duelId, pub.request, pub.seedBlock, pub.answerDeadline) == (
        duel_id, job.request, seed, seed + P.answer_window_blocks)
    assert duel(c, duel_id)[2:] == (cast.b.address, seed, seed + P.answer_window_blocks, BOND, 0,
                                    AWAITING_ANSWER, 0)
    assert seats(c, duel_id, 1) == drawn  # publication draws nothing
    with boa.reverts("Duel: request not missing"):
        c.publishRequest(duel_id, *publish_args(job))
    # B answers in the new window (not before its seed block), and cannot say "no request" again
    with boa.env.prank(cast.b.address), boa.reverts("Duel: seed block not mined yet"):
        c.answerDuel(duel_id, keccak(b"x"))
    mine_to(seed + 1)
    assert c.challengerOf(duel_id) == cast.b.address
    with boa.env.prank(cast.b.address), boa.reverts("Duel: request already published"):
        c.answerDuel(duel_id, ZERO32)
    with boa.env.prank(cast.b.address):
        c.answerDuel(duel_id, keccak(b"x"))
    # the seats are the ones drawn from the first seed, not a draw from the new one
    assert [type(log).__name__ for log in c.get_logs()] == ["DuelAnswered", "JudgesDrawn"]
    commit_end = block_number() + P.commit_window_blocks
    (judges_drawn,) = logs_named(c, "JudgesDrawn")
    assert ([str(j) for j in judges_drawn.seats], judges_drawn.round, judges_drawn.commitEnd) == (drawn, 1, commit_end)
    assert duel(c, duel_id).status == JUDGING and seats(c, duel_id, 1) == drawn
    assert _full_tree_panel(c, duel_id, seed) != drawn


def test_no_request_with_no_other_stake_seats_the_challenger(c: Any) -> None:
    """The seats are drawn with "no request" too, and exclude nobody: with no other drawable stake they
    are all B's, and the duel waits for the request (it is not cancelled for want of judges)."""
    origin, a, b = make_node(c, "origin", 0), make_node(c, "a", MIN_STAKE - BOND), make_node(c, "b")
    next_epoch()
    o = origin.address
    duel_id = open_duel(c, o, attest(c, o, a, "t"))
    to_seed(c, duel_id)
    before = book(c, o, a.address, b.address)
    with boa.env.prank(b.address):
        c.answerDuel(duel_id, ZERO32)
    assert [type(log).__name__ for log in c.get_logs()] == ["ChallengerDrawn", "RequestMissing"]
    assert seats(c, duel_id, 1) == [b.address] * P.k_judges
    assert duel(c, duel_id).status == AWAITING_REQUEST
    assert delta(before, book(c, o, a.address, b.address)) == {
        o: (0, 0, 0, 0), a.address: (0, 0, 0, 0), b.address: (0, 0, 0, BOND)}


def test_request_published_too_late(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    job = attest(c, o, cast.a, "t")
    duel_id = open_duel(c, o, job)
    answer(c, duel_id, ZERO32)
    mine_to(duel(c, duel_id).deadline + 1)
    with boa.reverts("Duel: publish window over"):
        c.publishRequest(duel_id, *publish_args(job))


def test_withheld_request_cancels_at_the_origins_expense(c: Any, cast: Cast) -> None:
    o, a, b = cast.origin.address, cast.a.address, cast.b.address
    duel_id = open_duel(c, o, attest(c, o, cast.a, "t"))
    answer(c, duel_id, ZERO32)
    mine_to(duel(c, duel_id).deadline)
    with boa.reverts("Duel: publish window not over"):
        c.settleDuel(duel_id)
    mine(1)
    before = book(c, o, a, b)
    c.settleDuel(duel_id)
    assert logs_named(c, "DuelCancelled")[0].reason == CANCEL_REQUEST_WITHHELD
    assert delta(before, book(c, o, a, b)) == {o: (0, 0, 0, 0), a: (0, 0, 0, -BOND), b: (DUELIST_FEE, 0, 0, -BOND)}
    assert c.reserve() == ESCROW - DUELIST_FEE
    assert not logs_named(c, "StakeSlashed")


# ---------------------------------------------------------------------------------------------
# commits and reveals


def test_commit_and_reveal(c: Any, cast: Cast) -> None:
    duel_id, drawn = judging_duel(c, cast)
    judge = drawn[0]
    com = commitment(c, duel_id, 1, judge, B_VOTE)
    assert c.voteCommitment(duel_id, 1, judge, B_VOTE, keccak(b"salt")) == vote_commitment(
        chain_id(), c.address, duel_id, 1, judge, B_VOTE, keccak(b"salt")) == com
    assert c.commitmentOf(duel_id, 1, judge) == b"\x00" * 16
    with boa.env.prank(judge):
        c.commitVote(duel_id, com)
        (ev,) = logs_named(c, "VoteCommitted")
        assert (ev.duelId, ev.judge, ev.round, ev.commitment) == (duel_id, judge, 1, com)
        assert c.commitmentOf(duel_id, 1, judge) == com[:16]
        with boa.reverts("Duel: already committed"):
            c.commitVote(duel_id, commitment(c, duel_id, 1, judge, A_VOTE))
        with boa.reverts("Duel: reveal window not open"):
            c.revealVote(duel_id, B_VOTE, keccak(b"salt"))
    mine_to(duel(c, duel_id).deadline + 1)
    with boa.env.prank(judge):
        c.revealVote(duel_id, B_VOTE, keccak(b"salt"))
        (ev,) = logs_named(c, "VoteRevealed")
        assert (ev.duelId, ev.judge, ev.round, ev.vote) == (duel_id, judge, 1, B_VOTE)
        with boa.reverts("Duel: already revealed"):
            c.revealVote(duel_id, B_VOTE, keccak(b"salt"))
    # the vote counts on every seat the judge holds
    assert list(c.getVotes(duel_id, 1)) == [B_VOTE if s == judge else 0 for s in drawn]


def test_commit_reverts(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    pending = open_duel(c, o, attest(c, o, cast.a, "pending"))
    with boa.env.prank(cast.judges[0].address), boa.reverts("Duel: not judging"):
        c.commitVote(pending, keccak(b"c"))
    duel_id, drawn = judging_duel(c, cast)
    outsiders = [o, cast.a.address, cast.b.address, new_account("never-registered").address]
    outsiders += [j.address for j in cast.judges if j.address not in drawn]
    for who in outsiders:
        with boa.env.prank(who), boa.reverts("Duel: not a judge of this duel"):
            c.commitVote(duel_id, commitment(c, duel_id, 1, who, A_VOTE))
    with boa.env.prank(drawn[0]), boa.reverts("Duel: empty commitment"):
        c.commitVote(duel_id, b"\x00" * 16 + b"\x01" * 16)
    mine_to(duel(c, duel_id).deadline + 1)
    with boa.env.prank(drawn[0]), boa.reverts("Duel: commit window over"):
        c.commitVote(duel_id, commitment(c, duel_id, 1, drawn[0], A_VOTE))


def test_reveal_reverts(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    pending = open_duel(c, o, attest(c, o, cast.a, "pending"))
    with boa.env.prank(cast.judges[0].address), boa.reverts("Duel: not judging"):
        c.revealVote(pending, A_VOTE, keccak(b"salt"))
    duel_id, drawn = judging_duel(c, cast)
    judges = distinct(drawn)
    commit(c, duel_id, judges[0], A_VOTE)
    mine_to(duel(c, duel_id).deadline + 1)
    with boa.env.prank(judges[0]):
        for bad in (0, 5):
            with boa.reverts("Duel: invalid vote"):
                c.revealVote(duel_id, bad, keccak(b"salt"))
        with boa.reverts("Duel: reveal does not match commitment"):
            c.revealVote(duel_id, B_VOTE, keccak(b"salt"))
        with boa.reverts("Duel: reveal does not match commitment"):
            c.revealVote(duel_id, A_VOTE, keccak(b"other salt"))
    with boa.env.prank(cast.a.address), boa.reverts("Duel: not a judge of this duel"):
        c.revealVote(duel_id, A_VOTE, keccak(b"salt"))
    if len(judges) > 1:
        with boa.env.prank(judges[1]), boa.reverts("Duel: no commitment"):
            c.revealVote(duel_id, A_VOTE, keccak(b"salt"))
    mine_to(reveal_end(c, duel_id) + 1)
    with boa.env.prank(judges[0]), boa.reverts("Duel: reveal window over"):
        c.revealVote(duel_id, A_VOTE, keccak(b"salt"))


def test_no_commitment_for_a_lone_judge_seat(c: Any) -> None:
    """With one judge holding every seat, 'no commitment' is its own uncommitted seat."""
    cast = make_cast(c, judge_stakes=(MIN_STAKE,))
    duel_id, drawn = judging_duel(c, cast)
    assert drawn == [cast.judges[0].address] * P.k_judges
    mine_to(duel(c, duel_id).deadline + 1)
    with boa.env.prank(drawn[0]), boa.reverts("Duel: no commitment"):
        c.revealVote(duel_id, A_VOTE, keccak(b"salt"))


# ---------------------------------------------------------------------------------------------
# settlement: exact amounts


def _weight(verdicts: int, final: int) -> tuple[int, int]:
    """The pay scale (numerator, denominator) of a seat coherent with `final`, from the verdict counts
    before this one (`verdicts()`: A won low 128 bits, B won high): 1 / (2p), p = (same + 1) / (all + 2),
    within [1/4, 4]; 1 for a tie or a void."""
    if final not in (A_WON, B_WON):
        return 1, 1
    won_a, won_b = verdicts & (2**128 - 1), verdicts >> 128
    same = won_a if final == A_WON else won_b
    num, den = won_a + won_b + 2, 2 * (same + 1)
    if num > 4 * den:
        return 4, 1
    if 4 * num < den:
        return 1, 4
    return num, den


def _judge_deltas(drawn: list[str], votes: dict[str, int | None], final: int, reserve: int, budget: int,
                  verdicts: int = 0, final_drawn: list[str] | None = None,
                  final_votes: dict[str, int | None] | None = None) -> tuple[dict[str, tuple[int, int]], int, int]:
    """Per judge (credit, stake) change, fees paid from `budget`, and the reserve after, as the
    contract's rules say (every seat separately): each seat is held against the final round's verdict
    recounted without its judge's own seats there (`final_drawn`/`final_votes`, this round's when
    omitted); a seat that voted with its recount (an even recount: either side) earns JUDGE_FEE and a
    share of the reserve as it stood before the round, one that voted against it pays JUDGE_PENALTY,
    both scaled by the recount's pay scale (`_weight(verdicts, recount)`, `verdicts` the counts before
    this settlement), the fee from the budget first and what the budget lacks from the reserve."""
    if final_drawn is None:
        final_drawn, final_votes = drawn, votes
    assert final_votes is not None
    n_a = sum(final_votes.get(s) == A_VOTE for s in final_drawn)
    n_b = sum(final_votes.get(s) == B_VOTE for s in final_drawn)
    out = {j: (0, 0) for j in drawn}
    bonus = reserve * P.reserve_payout_bps // BPS
    paid = 0
    for j in drawn:
        v = votes.get(j) or 0
        ref = None
        if final != VOIDED:
            mine = final_votes.get(j) if j in final_drawn else None
            a = n_a - (final_drawn.count(j) if mine == A_VOTE else 0)
            b = n_b - (final_drawn.count(j) if mine == B_VOTE else 0)
            ref = A_WON if a > b else B_WON if b > a else TIE
        num, den = _weight(verdicts, ref) if ref is not None else (1, 1)
        credit, stake_ = out[j]
        if v in (A_VOTE, B_VOTE) and (ref == TIE or (ref, v) in ((A_WON, A_VOTE), (B_WON, B_VOTE))):
            fee = JUDGE_FEE * num // den
            from_budget = min(fee, budget - paid)
            from_reserve = min(fee - from_budget + bonus * num // den, reserve)
            paid += from_budget
            reserve -= from_reserve
            credit += from_budget + from_reserve
        elif v == 0 or (v in (A_VOTE, B_VOTE) and ref in (A_WON, B_WON)):
            cut = SILENT_PENALTY if v == 0 else JUDGE_PENALTY * num // den
            stake_ -= cut
            reserve += cut
        out[j] = (credit, stake_)
    return out, paid, reserve


def _duel_where(c: Any, cast: Cast, fits: Any, tag: str) -> tuple[int, list[str]]:
    """A judging duel whose first-round seats satisfy `fits` (tried over request ids; each try is
    rolled back, then the one that fits is replayed)."""
    for i in range(40):
        with boa.env.anchor():
            _, drawn = judging_duel(c, cast, f"{tag}{i}")
            ok = fits(drawn)
        if ok:
            return judging_duel(c, cast, f"{tag}{i}")
    raise AssertionError(f"no panel fits in 40 duels ({tag})")


@pytest.mark.parametrize(
    ("label", "pattern", "final"),
    [
        ("B wins unanimously", [B_VOTE, B_VOTE, B_VOTE], B_WON),
        ("A wins, one judge silent", [A_VOTE, A_VOTE, None], A_WON),
        ("B wins against one incoherent seat", [B_VOTE, A_VOTE, B_VOTE], B_WON),
        ("tie with an abstention", [A_VOTE, B_VOTE, ABSTAIN], TIE),
        ("void by no-evidence majority", [NO_EVIDENCE, NO_EVIDENCE, A_VOTE], VOIDED),
        ("nobody reveals", [None, None, None], TIE),
        ("a no-evidence minority", [NO_EVIDENCE, A_VOTE, A_VOTE], A_WON),
    ],
)
def test_settlement_moves_exact_amounts(c: Any, label: str, pattern: list[int | None], final: int) -> None:
    """Judges j0..j2 (one seat each) vote by `pattern`; each seat is paid or penalised for its vote."""
    cast = make_cast(c, judge_stakes=(MIN_STAKE, 2 * MIN_STAKE, 3 * MIN_STAKE))
    # a reserve to share: a first duel that A wins puts B's bond in it
    first, first_seats = judging_duel(c, cast, "seed the reserve")
    vote_round(c, first, dict.fromkeys(distinct(first_seats), A_VOTE))
    settle(c, first)
    # B's bond, less the coherent seats' shares of it (1% each, computed once per round; the first
    # verdict ever is paid at scale 1)
    assert c.reserve() == BOND - P.k_judges * (BOND * P.reserve_payout_bps // BPS)
    assert c.verdicts() == 1  # one A win
    o, a, b = cast.origin.address, cast.a.address, cast.b.address
    duel_id, drawn = _duel_where(c, cast, lambda d: len(set(d)) == 3, label)
    votes = {j.address: v for j, v in zip(cast.judges, pattern, strict=True)}
    vote_round(c, duel_id, {j: votes[j] for j in drawn})
    mine_to(reveal_end(c, duel_id) + P.appeal_window_blocks)
    with boa.reverts("Duel: appeal window not over"):
        c.settleDuel(duel_id)
    mine(1)
    a_loss = BOND if final == B_WON else 0
    b_loss = BOND if final == A_WON else 0
    reserve = c.reserve()
    before = book(c, o, a, b, *(j.address for j in cast.judges))
    balance = boa.env.get_balance(c.address)
    c.settleDuel(duel_id)
    (settled,) = logs_named(c, "DuelSettled")
    to_b = [(p.amount, p.reason) for p in logs_named(c, "DuelRewardPaid") if p.account == b]
    reserve_logs = [log.amount for log in logs_named(c, "ReserveChanged")]
    d = delta(before, book(c, o, a, b, *(j.address for j in cast.judges)))
    # B's bond (when A won) reaches the reserve before the judges take their share of it; after one
    # A win, a second one pays 3/4, a first B win 3/2
    scale = _weight(1, final)
    assert scale == {A_WON: (3, 4), B_WON: (3, 2)}.get(final, (1, 1))
    judge_d, paid, reserve_after = _judge_deltas(drawn, votes, final, reserve + b_loss, P.k_judges * JUDGE_FEE,
                                                 verdicts=1)
    assert d[a] == (0, -a_loss, 0, -BOND), label
    assert d[b] == (DUELIST_FEE + a_loss, -b_loss, 0, -BOND), label
    # B is paid once: A's bond with its fee when it won, else its fee alone
    assert to_b == [(BOND + DUELIST_FEE, REWARD_STAKE_WON) if final == B_WON else (DUELIST_FEE, REWARD_DUELIST_FEE)]
    assert d[o] == (P.k_judges * JUDGE_FEE - paid, 0, 0, 0), label
    for j in cast.judges:
        assert d[j.address][:2] == judge_d[j.address], (label, j.address)
    assert c.reserve() == reserve_after, label
    # one ReserveChanged for the whole settlement, when the reserve changed at all
    assert reserve_logs == ([reserve_after] if reserve_after != reserve else []), label
    assert c.verdicts() == 1 + {A_WON: 1, B_WON: 1 << 128}.get(final, 0), label
    counts = Counter(votes[j] for j in drawn)
    assert (settled.outcome, settled.round, settled.votesA, settled.votesB, settled.stakeMoved) == (
        final, 1, counts[A_VOTE], counts[B_VOTE], a_loss + b_loss), label
    assert duel(c, duel_id)[6:] == (1, SETTLED, final)
    # the duel's money only moved inside the contract; the escrow left the open-duel pot
    assert boa.env.get_balance(c.address) == balance == held(c, cast)
    with boa.reverts("Duel: not open"):
        c.settleDuel(duel_id)


def _double_seat(drawn: list[str]) -> bool:
    return sorted(Counter(drawn).values()) == [1, 2]


def test_a_judge_is_never_paid_for_a_verdict_its_own_seats_made(c: Any, cast: Cast) -> None:
    """Each seat is held against the verdict recounted without its judge's seats: a judge whose two seats
    outvote the third is not paid for the verdict it made alone; it pays a penalty per seat for
    disagreeing with its only peer, and the peer pays one for disagreeing with it."""
    duel_id, drawn = _duel_where(c, cast, _double_seat, "double")
    double = next(j for j in drawn if drawn.count(j) == 2)
    single = next(j for j in drawn if j != double)
    # the double judge commits and reveals once; the vote fills both its seats
    vote_round(c, duel_id, {double: A_VOTE, single: B_VOTE})
    assert list(c.getVotes(duel_id, 1)) == [A_VOTE if s == double else B_VOTE for s in drawn]
    before = book(c, double, single, cast.a.address, cast.b.address, cast.origin.address)
    settle(c, duel_id)
    slashes = [(s.node, s.amount, s.reason) for s in logs_named(c, "StakeSlashed")]
    d = delta(before, book(c, double, single, cast.a.address, cast.b.address, cast.origin.address))
    # A wins 2 seats to 1 (B's bond enters the reserve), but the double judge's recount is the single
    # judge's B, and the single judge's is A: every seat pays, no fee is earned (first verdict: scale 1)
    assert duel(c, duel_id).outcome == A_WON
    assert d[double] == (0, -2 * JUDGE_PENALTY, 0, 0)
    assert d[single] == (0, -JUDGE_PENALTY, 0, 0)
    assert d[cast.origin.address][0] == P.k_judges * JUDGE_FEE  # every first-round fee comes back
    assert sorted(slashes) == sorted([(cast.b.address, BOND, SLASH_LOST_DUEL), (single, JUDGE_PENALTY,
                                      SLASH_INCOHERENT_JUDGE)] + [(double, JUDGE_PENALTY, SLASH_INCOHERENT_JUDGE)] * 2)
    assert c.reserve() == BOND + 3 * JUDGE_PENALTY


def test_a_double_seat_that_loses_pays_twice(c: Any, cast: Cast) -> None:
    duel_id, drawn = _duel_where(c, cast, _double_seat, "double")
    double = next(j for j in drawn if drawn.count(j) == 2)
    single = next(j for j in drawn if j != double)
    vote_round(c, duel_id, {double: None, single: B_VOTE})  # the double judge never reveals
    before = book(c, double, single)
    settle(c, duel_id)
    silent = [(s.node, s.amount, s.reason) for s in logs_named(c, "StakeSlashed") if s.reason == SLASH_SILENT_JUDGE]
    d = delta(before, book(c, double, single))
    assert d[double] == (0, -2 * SILENT_PENALTY, 0, 0)
    assert d[single] == (JUDGE_FEE, 0, 0, 0)
    assert silent == [(double, SILENT_PENALTY, SLASH_SILENT_JUDGE)] * 2
    assert c.reserve() == 2 * SILENT_PENALTY


def test_judge_penalties_take_active_then_unbonding_stake(c: Any) -> None:
    """A judge's penalties come from its active stake first, then from its unbonding stake."""
    cast = make_cast(c, judge_stakes=(MIN_STAKE,))
    j = cast.judges[0].address
    o = cast.origin.address

    def judged(tag: str) -> tuple[int, list[str]]:
        duel_id = open_duel(c, o, attest(c, o, cast.a, tag))
        to_seed(c, duel_id)
        with boa.env.prank(j):
            c.requestUnstake(MIN_STAKE - 5 * C)  # inside the seed epoch: the judge is still drawn
        assert c.leafWeight(c.nodes(j).leaf) == 0  # its live weight is gone, its frozen weight is not
        return duel_id, answer(c, duel_id)[1]

    # B may hold seats too (nobody is excluded): a request whose three seats are all the judge's
    for i in range(100):
        with boa.env.anchor():
            fits = judged(f"t{i}")[1] == [j] * P.k_judges
        if fits:
            break
    duel_id, drawn = judged(f"t{i}")
    assert drawn == [j] * P.k_judges
    vote_round(c, duel_id, {j: None})
    settle(c, duel_id)
    # three silent seats: 3 x 4 credits, 5 from active stake, 7 from unbonding stake
    assert (c.activeStake(j), c.unbondingStake(j)) == (0, MIN_STAKE - 5 * C - 7 * C)
    assert c.reserve() == 3 * SILENT_PENALTY


# ---------------------------------------------------------------------------------------------
# settlement: the verdict weight


def _set_verdicts(c: Any, won_a: int, won_b: int) -> None:
    """Write the decayed verdict counts directly (a unit test cannot settle a thousand duels); they
    only scale judges' pay, so no other state depends on them."""
    boa.env.set_storage(c.address, Storage(c).slot("verdicts"), won_a | (won_b << 128))
    assert c.verdicts() == won_a | (won_b << 128)


def _ready_unanimous(c: Any, cast: Cast, vote: int, tag: str) -> int:
    """A duel whose three seats went to three distinct judges, all voting `vote`, past its appeal
    window: settleDuel may run."""
    duel_id, drawn = _duel_where(c, cast, lambda d: len(set(d)) == 3, tag)
    vote_round(c, duel_id, dict.fromkeys(drawn, vote))
    mine_to(reveal_end(c, duel_id) + P.appeal_window_blocks + 1)
    return duel_id


def _settle_and_pay(c: Any, cast: Cast, duel_id: int) -> tuple[dict[str, int], int, int]:
    """Settle; (each judge's credit change, the origin's credit change, the reserve after)."""
    judges = [j.address for j in cast.judges]
    before = {w: c.credit(w) for w in (*judges, cast.origin.address)}
    reserve_before = c.reserve()
    c.settleDuel(duel_id)
    changed = [log.amount for log in logs_named(c, "ReserveChanged")]
    reserve = c.reserve()
    # one ReserveChanged per settlement, with the reserve after it, and none when it did not change
    assert changed == ([reserve] if reserve != reserve_before else [])
    return ({j: c.credit(j) - before[j] for j in judges}, c.credit(cast.origin.address) - before[cast.origin.address],
            reserve)


def test_a_rare_verdict_pays_more_and_a_common_one_less(c: Any) -> None:
    """A coherent seat's fee and reserve share are scaled by (n + 2) / (2 (same + 1)): n decided verdicts
    so far, `same` of them like this one."""
    cast = make_cast(c)

    def share(reserve: int) -> int:
        return reserve * P.reserve_payout_bps // BPS

    # the first verdict ever (A): scale 2/2
    paid, origin_back, reserve = _settle_and_pay(c, cast, _ready_unanimous(c, cast, A_VOTE, "first"))
    assert paid == dict.fromkeys(paid, JUDGE_FEE + share(BOND)) and origin_back == 0
    assert reserve == BOND - 3 * share(BOND) and c.verdicts() == 1
    # a second A win: common, scale 3/4; the origin gets back the fees nobody earned
    duel_id = _ready_unanimous(c, cast, A_VOTE, "second")
    before = c.reserve() + BOND  # B's bond reaches the reserve before the judges are paid
    paid, origin_back, reserve = _settle_and_pay(c, cast, duel_id)
    bonus = share(before) * 3 // 4
    assert paid == dict.fromkeys(paid, 3 * C + bonus) and JUDGE_FEE == 4 * C
    assert origin_back == 3 * JUDGE_FEE - 3 * 3 * C
    assert reserve == before - 3 * bonus and c.verdicts() == 2
    # then a B win: rare, scale 4/2; the budget (3 fees) pays 1.5 seats, the reserve the rest
    duel_id = _ready_unanimous(c, cast, B_VOTE, "third")
    before = c.reserve()  # A's bond goes to B, not to the reserve
    paid, origin_back, reserve = _settle_and_pay(c, cast, duel_id)
    bonus = share(before) * 2
    assert paid == dict.fromkeys(paid, 2 * JUDGE_FEE + bonus) and origin_back == 0
    assert reserve == before - 3 * bonus - 3 * JUDGE_FEE
    assert c.verdicts() == 2 | (1 << 128)
    assert boa.env.get_balance(c.address) == held(c, cast)


def test_the_scale_is_capped_at_four(c: Any) -> None:
    """After seven A wins a B win would pay 9/2; it pays 4 (the reserve tops up the budget)."""
    cast = make_cast(c)
    for i in range(7):
        c.settleDuel(_ready_unanimous(c, cast, A_VOTE, f"a{i}-"))
    assert c.verdicts() == 7
    duel_id = _ready_unanimous(c, cast, B_VOTE, "b")
    before = c.reserve()
    paid, origin_back, reserve = _settle_and_pay(c, cast, duel_id)
    bonus = before * P.reserve_payout_bps // BPS * 4
    assert paid == dict.fromkeys(paid, 4 * JUDGE_FEE + bonus) and origin_back == 0
    assert reserve == before - 3 * bonus - (12 - 3) * JUDGE_FEE > 0


def test_a_common_verdict_still_pays_about_half(c: Any) -> None:
    """The scale is 1 / (2p) with p <= 1, so it never falls below one half (the [1/4, 4] bound's lower
    end is never reached): 1021 A wins, then another one."""
    cast = make_cast(c)
    _set_verdicts(c, 1021, 0)
    duel_id = _ready_unanimous(c, cast, A_VOTE, "a")
    paid, origin_back, reserve = _settle_and_pay(c, cast, duel_id)
    fee, bonus = JUDGE_FEE * 1023 // 2044, BOND * P.reserve_payout_bps // BPS * 1023 // 2044
    assert JUDGE_FEE // 2 < fee < JUDGE_FEE
    assert paid == dict.fromkeys(paid, fee + bonus) and origin_back == 3 * (JUDGE_FEE - fee)
    assert reserve == BOND - 3 * bonus and c.verdicts() == 1022


def test_the_reserve_pays_only_what_it_holds(c: Any) -> None:
    """A rare verdict's fees beyond the budget come from the reserve; an empty reserve pays nothing, so
    the seats first in seat order take the budget and the others get nothing."""
    cast = make_cast(c)
    _set_verdicts(c, 7, 0)
    assert c.reserve() == 0
    duel_id, drawn = _duel_where(c, cast, lambda d: len(set(d)) == 3, "b")
    vote_round(c, duel_id, dict.fromkeys(drawn, B_VOTE))
    mine_to(reveal_end(c, duel_id) + P.appeal_window_blocks + 1)
    paid, origin_back, reserve = _settle_and_pay(c, cast, duel_id)
    assert [paid[j] for j in drawn] == [3 * JUDGE_FEE, 0, 0] and origin_back == 0
    assert reserve == 0 and c.verdicts() == 7 | (1 << 128)


@pytest.mark.parametrize(("counts", "vote", "after"), [
    ((1000, 23), A_VOTE, (500, 11)),  # the 1024th verdict halves both counts
    ((1000, 23), B_VOTE, (500, 12)),
    ((1000, 22), A_VOTE, (1001, 22)),  # the 1023rd does not
])
def test_verdict_counts_halve_at_1024(c: Any, counts: tuple[int, int], vote: int, after: tuple[int, int]) -> None:
    cast = make_cast(c)
    _set_verdicts(c, *counts)
    c.settleDuel(_ready_unanimous(c, cast, vote, "v"))
    assert c.verdicts() == after[0] | (after[1] << 128)


def test_ties_and_voids_are_not_counted_and_an_even_recount_pays_at_scale_one(c: Any) -> None:
    cast = make_cast(c)
    _set_verdicts(c, 5, 0)  # A's scale is 7/12, B's 7/2: an even recount would pay either if weighed
    # A, A, B: A wins, but each A seat's recount (the other two seats) is even, so it earns a fee at
    # scale 1; the B seat's recount is A, so it pays the penalty at A's scale
    duel_id, drawn = _duel_where(c, cast, lambda d: len(set(d)) == 3, "even")
    vote_round(c, duel_id, dict(zip(drawn, (A_VOTE, A_VOTE, B_VOTE), strict=True)))
    mine_to(reveal_end(c, duel_id) + P.appeal_window_blocks + 1)
    stakes = {j: c.activeStake(j) for j in drawn}
    share = (c.reserve() + BOND) * P.reserve_payout_bps // BPS  # B's bond enters the reserve first
    paid, origin_back, _ = _settle_and_pay(c, cast, duel_id)
    assert [paid[j] for j in drawn] == [JUDGE_FEE + share, JUDGE_FEE + share, 0] and origin_back == JUDGE_FEE
    assert [stakes[j] - c.activeStake(j) for j in drawn] == [0, 0, JUDGE_PENALTY * 7 // 12]
    assert duel(c, duel_id).outcome == A_WON and c.verdicts() == 6
    _set_verdicts(c, 5, 0)
    # A, B, abstain: a tie, not counted; each sided seat's recount is the other's side, so both pay, each
    # at the scale of the side it voted against, and the origin gets every fee back
    duel_id, drawn = _duel_where(c, cast, lambda d: len(set(d)) == 3, "tie")
    vote_round(c, duel_id, dict(zip(drawn, (A_VOTE, B_VOTE, ABSTAIN), strict=True)))
    mine_to(reveal_end(c, duel_id) + P.appeal_window_blocks + 1)
    stakes = {j: c.activeStake(j) for j in drawn}
    paid, origin_back, _ = _settle_and_pay(c, cast, duel_id)
    assert paid == dict.fromkeys(paid, 0) and origin_back == 3 * JUDGE_FEE
    assert [stakes[j] - c.activeStake(j) for j in drawn] == [JUDGE_PENALTY * 7 // 2, JUDGE_PENALTY * 7 // 12, 0]
    assert duel(c, duel_id).outcome == TIE and c.verdicts() == 5
    duel_id, drawn = _duel_where(c, cast, lambda d: len(set(d)) == 3, "void")
    vote_round(c, duel_id, dict(zip(drawn, (NO_EVIDENCE, NO_EVIDENCE, A_VOTE), strict=True)))
    mine_to(reveal_end(c, duel_id) + P.appeal_window_blocks + 1)
    stakes = {j: c.activeStake(j) for j in drawn}
    paid, origin_back, _ = _settle_and_pay(c, cast, duel_id)
    assert paid == dict.fromkeys(paid, 0) and origin_back == 3 * JUDGE_FEE
    assert all(c.activeStake(j) == stakes[j] for j in drawn)  # a void pays and takes nothing
    assert duel(c, duel_id).outcome == VOIDED and c.verdicts() == 5


# ---------------------------------------------------------------------------------------------
# appeals


def _round_one(c: Any, cast: Cast, vote: int, tag: str = "") -> tuple[int, list[str]]:
    duel_id, drawn = judging_duel(c, cast, tag)
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), vote))
    mine_to(reveal_end(c, duel_id) + 1)
    return duel_id, drawn


def _both_rounds(d1: dict[str, tuple[int, int]], d2: dict[str, tuple[int, int]], who: str) -> tuple[int, int]:
    """(credit, stake) change of `who`'s seats over both rounds, from `_judge_deltas`."""
    x1, x2 = d1.get(who, (0, 0)), d2.get(who, (0, 0))
    return x1[0] + x2[0], x1[1] + x2[1]


def test_appeal_that_overturns_refunds_the_appellant(c: Any) -> None:
    """B may hold appeal seats (nobody is excluded): it votes for itself there, is outvoted, and pays
    a penalty per seat like any seat against the verdict."""
    cast = make_cast(c, judge_stakes=(MIN_STAKE,) * 5, b_stake=MIN_STAKE)
    o, a, b = cast.origin.address, cast.a.address, cast.b.address
    # a reserve: a first duel A wins (B's bond)
    first, _ = _round_one(c, cast, A_VOTE, "reserve")
    mine(P.appeal_window_blocks)
    c.settleDuel(first)
    duel_id, drawn1 = _round_one(c, cast, B_VOTE, "t")
    with boa.env.prank(b), boa.reverts("Duel: only the losing duelist appeals"):
        c.appeal(duel_id)
    with boa.env.prank(o), boa.reverts("Duel: only the losing duelist appeals"):
        c.appeal(duel_id)
    credit_a = c.credit(a)
    with boa.env.prank(a):
        c.appeal(duel_id)
    (ev,) = logs_named(c, "DuelAppealed")
    seed2 = (block_number() // P.epoch_blocks + 1) * P.epoch_blocks
    assert (ev.duelId, ev.appellant, ev.deposit, ev.seedBlock, ev.commitEnd) == (
        duel_id, a, APPEAL_FEE, seed2, seed2 + P.commit_window_blocks)
    assert c.credit(a) == credit_a - APPEAL_FEE and APPEAL_FEE == 7 * JUDGE_FEE
    assert duel(c, duel_id)[3:] == (seed2, seed2 + P.commit_window_blocks, BOND, 2, JUDGING, 0)
    with boa.env.prank(a), boa.reverts("Duel: not appealable"):
        c.appeal(duel_id)
    with boa.reverts("Duel: seed block not mined yet"):
        c.drawJudges(duel_id)
    with boa.env.prank(cast.judges[0].address), boa.reverts("Duel: seed block not mined yet"):
        c.commitVote(duel_id, keccak(b"c"))
    mine_to(seed2)
    mine(1)
    preview = _full_tree_panel(c, duel_id, seed2, 2)
    assert len(preview) == 2 * P.k_judges + 1
    votes2 = {j: (B_VOTE if j == b else A_VOTE) for j in preview}  # B votes for itself
    first_judge = preview[0]
    commit(c, duel_id, first_judge, votes2[first_judge])  # the first commit draws the panel
    assert [type(log).__name__ for log in c.get_logs()] == ["JudgesDrawn", "VoteCommitted"]
    assert logs_named(c, "JudgesDrawn")[0].round == 2
    drawn2 = seats(c, duel_id, 2)
    assert drawn2 == preview
    b_seats = drawn2.count(b)
    assert 0 < b_seats < P.k_judges + 1  # B holds appeal seats, not a majority of them
    with boa.reverts("Duel: judges already drawn"):
        c.drawJudges(duel_id)
    for j in distinct(drawn2)[1:]:
        commit(c, duel_id, j, votes2[j])
    mine_to(duel(c, duel_id).deadline + 1)
    for j in distinct(drawn2)[:-1]:
        reveal(c, duel_id, j, votes2[j])
    assert list(c.getVotes(duel_id, 1)) == [B_VOTE] * P.k_judges
    with boa.reverts("Duel: reveal window not over"):
        c.settleDuel(duel_id)
    last = distinct(drawn2)[-1]
    reveal(c, duel_id, last, votes2[last])
    reserve = c.reserve()
    # the second A win in a row: both rounds' coherent seats are paid 3/4 of a fee and of a share
    assert c.verdicts() == 1
    scale = _weight(c.verdicts(), A_WON)
    assert scale == (3, 4)
    judges = [j.address for j in cast.judges]
    before = book(c, o, a, b, *judges)
    c.settleDuel(duel_id)  # every seat revealed: no need to wait for the window's end
    refund = [p for p in logs_named(c, "DuelRewardPaid") if p.reason == REWARD_APPEAL_REFUND]
    (settled,) = logs_named(c, "DuelSettled")
    d = delta(before, book(c, o, a, b, *judges))
    # round 1 (B voters) is incoherent with the final verdict (A): each of its seats pays a penalty
    # B's bond goes to the reserve before the judges are paid
    d1, paid1, reserve1 = _judge_deltas(drawn1, dict.fromkeys(drawn1, B_VOTE), A_WON, reserve + BOND,
                                        P.k_judges * JUDGE_FEE, 1, drawn2, votes2)
    d2, paid2, reserve2 = _judge_deltas(drawn2, votes2, A_WON, reserve1, APPEAL_FEE, 1)
    covered = min(paid2, reserve2)
    assert a not in drawn1 + drawn2 and b not in drawn1  # A is under MIN_STAKE
    assert paid1 == 0 and paid2 == (7 - b_seats) * (JUDGE_FEE * 3 // 4) < APPEAL_FEE
    # B's seats, outvoted by every other seat, pay the penalty at the A-win scale (3/4)
    assert _both_rounds(d1, d2, b) == (0, -b_seats * (JUDGE_PENALTY * 3 // 4))
    assert d[a] == (APPEAL_FEE - paid2 + covered, 0, 0, -BOND)
    assert d[b] == (DUELIST_FEE, -BOND - b_seats * (JUDGE_PENALTY * 3 // 4), 0, -BOND)
    assert d[o] == (P.k_judges * JUDGE_FEE, 0, 0, 0)
    for j in judges:
        assert d[j][:2] == _both_rounds(d1, d2, j), j
    assert c.reserve() == reserve2 - covered
    assert [(p.account, p.amount) for p in refund] == [(a, APPEAL_FEE - paid2 + covered)]
    assert (settled.outcome, settled.round, settled.votesA, settled.votesB, settled.stakeMoved) == (
        A_WON, 2, 7 - b_seats, b_seats, BOND)


def test_appeal_that_upholds_pays_the_panel_and_the_reserve(c: Any) -> None:
    cast = make_cast(c, judge_stakes=(MIN_STAKE,) * 4)
    o, a, b = cast.origin.address, cast.a.address, cast.b.address
    duel_id, drawn1 = _round_one(c, cast, B_VOTE)
    with boa.env.prank(a):
        c.appeal(duel_id)
    mine_to(duel(c, duel_id).seed_block + 1)
    c.drawJudges(duel_id)
    drawn2 = seats(c, duel_id, 2)
    judges = [j for j in distinct(drawn2) if j != b]
    # all but one judge uphold B, and so do B's own seats (nobody is excluded, B holds one here);
    # the last judge votes A and pays per seat
    votes = {j: (A_VOTE if j == judges[-1] else B_VOTE) for j in distinct(drawn2)}
    vote_round(c, duel_id, votes)
    before = book(c, o, a, b, *(j.address for j in cast.judges))
    assert c.verdicts() == 0  # the deployment's first verdict: its seats are paid at scale 1
    c.settleDuel(duel_id)
    d = delta(before, book(c, o, a, b, *(j.address for j in cast.judges)))
    final = B_WON if sum(votes[s] == B_VOTE for s in drawn2) * 2 > len(drawn2) else A_WON
    assert final == B_WON
    d1, paid1, r1 = _judge_deltas(drawn1, dict.fromkeys(drawn1, B_VOTE), B_WON, 0, P.k_judges * JUDGE_FEE, 0,
                                  drawn2, votes)
    d2, paid2, r2 = _judge_deltas(drawn2, {s: votes[s] for s in drawn2}, B_WON, r1, APPEAL_FEE)
    assert a not in drawn1 + drawn2 and b not in drawn1  # A is under MIN_STAKE
    assert drawn2.count(b) == 1 and _both_rounds(d1, d2, b) == (JUDGE_FEE, 0)
    assert d[a] == (0, -BOND, 0, -BOND)  # no refund
    assert d[b] == (BOND + DUELIST_FEE + JUDGE_FEE, 0, 0, -BOND)
    for j in cast.judges:
        assert d[j.address][:2] == _both_rounds(d1, d2, j.address), j.address
    assert c.reserve() == r2 + APPEAL_FEE - paid2
    assert paid1 == P.k_judges * JUDGE_FEE


def test_appeal_panel_never_drawn_leaves_the_first_verdict(c: Any) -> None:
    cast = make_cast(c)
    a, b = cast.a.address, cast.b.address
    duel_id, _ = _round_one(c, cast, A_VOTE)
    with boa.env.prank(b):
        c.appeal(duel_id)
    mine_to(duel(c, duel_id).deadline)
    with boa.reverts("Duel: commit window not over"):
        c.settleDuel(duel_id)
    mine(1)
    with boa.reverts("Duel: commit window over"):
        c.drawJudges(duel_id)
    before = book(c, a, b)
    c.settleDuel(duel_id)
    d = delta(before, book(c, a, b))
    assert d[b] == (APPEAL_FEE + DUELIST_FEE, -BOND, 0, -BOND)  # the deposit comes back; B still lost
    assert d[a] == (0, 0, 0, -BOND)
    assert duel(c, duel_id)[6:] == (2, SETTLED, A_WON)


def test_appeal_reverts(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    pending = open_duel(c, o, attest(c, o, cast.a, "pending"))
    with boa.env.prank(cast.a.address), boa.reverts("Duel: not appealable"):
        c.appeal(pending)
    duel_id, drawn = judging_duel(c, cast, "t")
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    with boa.env.prank(cast.a.address):
        with boa.reverts("Duel: reveal window not over"):
            c.appeal(duel_id)
        mine_to(reveal_end(c, duel_id) + 1)
        c.requestWithdrawal(c.credit(cast.a.address) - APPEAL_FEE + 1)
        with boa.reverts("Bank: insufficient credit"):
            c.appeal(duel_id)
        mine(P.appeal_window_blocks)
        with boa.reverts("Duel: appeal window over"):
            c.appeal(duel_id)
    tie, tie_seats = judging_duel(c, cast, "tie")
    vote_round(c, tie, dict.fromkeys(distinct(tie_seats), ABSTAIN))
    mine_to(reveal_end(c, tie) + 1)
    with boa.env.prank(cast.b.address), boa.reverts("Duel: no verdict to appeal"):
        c.appeal(tie)


def test_no_judges_for_the_appeal_round(c: Any) -> None:
    """Seats exclude nobody, so the appeal round has no seats only when nobody at all holds drawable
    stake in its epoch: every judge leaves, and so does B (A holds less than MIN_STAKE)."""
    cast = make_cast(c)
    duel_id, _ = _round_one(c, cast, B_VOTE)
    with boa.env.prank(cast.a.address):
        c.appeal(duel_id)
    for j in cast.judges:  # every judge leaves before the appeal round's epoch
        with boa.env.prank(j.address):
            c.leave()
    with boa.env.anchor():  # B, still staked, would hold every seat of the appeal round
        mine_to(duel(c, duel_id).seed_block + 1)
        assert _full_tree_panel(c, duel_id, duel(c, duel_id).seed_block, 2) == [cast.b.address] * (2 * P.k_judges + 1)
    with boa.env.prank(cast.b.address):
        c.leave()
    mine_to(duel(c, duel_id).seed_block + 1)
    assert _full_tree_panel(c, duel_id, duel(c, duel_id).seed_block, 2) == []
    with boa.reverts("Duel: no judges"):
        c.drawJudges(duel_id)
    with boa.env.prank(cast.judges[0].address), boa.reverts("Duel: no judges"):
        c.commitVote(duel_id, keccak(b"c"))
    mine_to(duel(c, duel_id).deadline + 1)
    c.settleDuel(duel_id)  # the first verdict stands, the appeal fee comes back
    refunds = [(p.account, p.amount) for p in logs_named(c, "DuelRewardPaid") if p.reason == REWARD_APPEAL_REFUND]
    assert refunds == [(cast.a.address, APPEAL_FEE)]
    assert duel(c, duel_id)[6:] == (2, SETTLED, B_WON)


def test_draw_judges_reverts(c: Any, cast: Cast) -> None:
    o = cast.origin.address
    pending = open_duel(c, o, attest(c, o, cast.a, "pending"))
    with boa.reverts("Duel: not judging"):
        c.drawJudges(pending)
    duel_id, _ = judging_duel(c, cast)
    with boa.reverts("Duel: judges already drawn"):
        c.drawJudges(duel_id)


# ---------------------------------------------------------------------------------------------
# views and the end of a duel


def test_views_of_an_unknown_duel_revert(c: Any) -> None:
    for view in (c.getDuel, c.challengerOf):
        with boa.reverts("Duel: unknown duel"):
            view(777)
    assert list(c.getJudges(777, 1)) == [] and list(c.getVotes(777, 2)) == []


def test_settle_reverts_on_a_closed_or_unknown_duel(c: Any, cast: Cast) -> None:
    with boa.reverts("Duel: not open"):
        c.settleDuel(99)
    duel_id, drawn = judging_duel(c, cast)
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    settle(c, duel_id)
    with boa.reverts("Duel: not open"):
        c.settleDuel(duel_id)
    with boa.env.prank(drawn[0]), boa.reverts("Duel: not judging"):
        c.commitVote(duel_id, keccak(b"c"))


def test_every_duel_ends_within_its_span(c: Any, cast: Cast) -> None:
    """The longest path (request withheld and published, appeal, panels drawn late) still settles
    by DUEL_SPAN_BLOCKS after the duel opened, and the bonded stake is free then."""
    o, a = cast.origin.address, cast.a.address
    opened = block_number() + P.epoch_blocks - 1  # open on the last block of an epoch
    mine_to(opened)
    job = attest(c, o, cast.a, "long")
    duel_id = open_duel(c, o, job)
    mine_to(duel(c, duel_id).deadline)  # B answers at the last moment: "no request"
    with boa.env.prank(str(c.challengerOf(duel_id))):
        c.answerDuel(duel_id, ZERO32)
    mine_to(duel(c, duel_id).deadline)
    c.publishRequest(duel_id, *publish_args(job))
    mine_to(duel(c, duel_id).deadline)
    with boa.env.prank(cast.b.address):
        c.answerDuel(duel_id, keccak(b"b"))
    drawn = seats(c, duel_id, 1)
    vote_round(c, duel_id, dict.fromkeys(distinct(drawn), B_VOTE))
    mine_to(reveal_end(c, duel_id) + P.appeal_window_blocks)
    with boa.env.prank(a):
        c.appeal(duel_id)
    mine_to(duel(c, duel_id).deadline)
    c.drawJudges(duel_id)
    mine_to(reveal_end(c, duel_id) + 1)
    assert block_number() <= opened + c.DUEL_SPAN_BLOCKS()
    c.settleDuel(duel_id)
    assert c.reserved(a) == 0 == c.reserved(cast.b.address)
