"""WWWServe duels: opening, judge draw, commit-reveal windows, cancellation and settlement math."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    MIN_STAKE,
    SALT,
    TEST_PARAMS,
    block_number,
    commitment,
    contract_fixture,
    deploy,
    fresh_fixture,
    logs_named,
    make_node,
    mine,
    module_contract_fixture,
    new_account,
    open_and_draw,
    open_duel,
    with_params,
)
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from ledger.model import DuelInfo, DuelPanel, DuelStatus, Outcome, Vote

P = TEST_PARAMS
DF, JF = P.duelist_fee_wei, P.judge_fee_wei
ESCROW = P.duel_escrow_wei
A, B, ABSTAIN, NO_EVIDENCE = int(Vote.A), int(Vote.B), int(Vote.ABSTAIN), int(Vote.NO_EVIDENCE)
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass
class Net:
    """Judges registered first (so leaf 0 is a judge), then the origin and the two duelists."""

    judges: list[LocalAccount]
    origin: LocalAccount
    a: LocalAccount
    b: LocalAccount

    def everyone(self) -> list[str]:
        return [x.address for x in (*self.judges, self.origin, self.a, self.b)]


def network(c: Any, judge_stakes: Sequence[int] = (2 * MIN_STAKE, 3 * MIN_STAKE, 5 * MIN_STAKE + 5),
            a_stake: int = 10 * MIN_STAKE, b_stake: int = 4 * MIN_STAKE) -> Net:
    judges = [make_node(c, f"j{i}", s) for i, s in enumerate(judge_stakes)]
    return Net(judges, make_node(c, "o"), make_node(c, "a", a_stake), make_node(c, "b", b_stake))


def commit_all(c: Any, duel_id: int, votes: dict[str, int | None]) -> None:
    for judge, vote in votes.items():
        with boa.env.prank(judge):
            c.commitVote(duel_id, commitment(c, duel_id, judge, vote or A))


def reveal_all(c: Any, duel_id: int, votes: dict[str, int | None]) -> None:
    for judge, vote in votes.items():
        if vote is not None:
            with boa.env.prank(judge):
                c.revealVote(duel_id, vote, SALT)


def balances(c: Any, who: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    return {w: (c.credit(w), c.activeStake(w), c.unbondingStake(w)) for w in who}


@dataclass
class Settled:
    credit: dict[str, int]  # change of free credit
    stake: dict[str, int]  # change of active + unbonding stake
    event: Any
    logs: list[Any]


def run_to_settlement(c: Any, net: Net, votes_by_index: Sequence[int | None], *, wait: bool = False) -> Settled:
    """Open, draw, commit every judge, reveal the non-None votes (index = net.judges order), settle."""
    duel_id, drawn = open_and_draw(c, net.origin.address, net.a.address, net.b.address)
    assert sorted(drawn) == sorted(j.address for j in net.judges)
    votes = {j.address: v for j, v in zip(net.judges, votes_by_index, strict=True)}
    commit_all(c, duel_id, votes)
    mine(P.commit_window_blocks + 1)
    reveal_all(c, duel_id, votes)
    if wait:
        mine(P.reveal_window_blocks)
    before = balances(c, net.everyone())
    c.settleDuel(duel_id)
    logs = c.get_logs()
    after = balances(c, net.everyone())
    (event,) = [log for log in logs if type(log).__name__ == "DuelSettled"]
    return Settled(
        credit={w: after[w][0] - before[w][0] for w in before},
        stake={w: after[w][1] + after[w][2] - before[w][1] - before[w][2] for w in before},
        event=event,
        logs=logs,
    )


def paid(logs: list[Any], reason: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for log in logs:
        if type(log).__name__ == "DuelRewardPaid" and log.reason == reason:
            out[str(log.account)] = out.get(str(log.account), 0) + log.amount
    return out


# ---------------------------------------------------------------------------------------------
# opening


def test_open_duel_escrows_and_records(c: Any) -> None:
    net = network(c)
    escrow_before = c.credit(net.origin.address)
    duel_id = open_duel(c, net.origin.address, net.a.address, net.b.address, b"x")
    (ev,) = logs_named(c, "DuelOpened")  # before any other call: logs are the last call's
    assert duel_id == 1 == c.duelCount()
    seed_block = block_number() + P.seed_delay_blocks
    assert (ev.duelId, ev.origin, ev.a, ev.b, ev.seedBlock, ev.escrow) == (
        1, net.origin.address, net.a.address, net.b.address, seed_block, ESCROW)
    assert (ev.questionHash, ev.answerAHash, ev.answerBHash) == (keccak(b"qx"), keccak(b"ax"), keccak(b"bx"))
    assert c.credit(net.origin.address) == escrow_before - ESCROW
    assert tuple(c.getDuel(1)) == (net.origin.address, net.a.address, net.b.address, seed_block, 0, 0,
                                   int(DuelStatus.AWAITING_JUDGES), 0)
    # the packed storage word has the layout the model documents
    packed = c._storage.duelInfo.get()[1]
    assert packed == DuelInfo(DuelStatus.AWAITING_JUDGES, Outcome.NONE, 3, 4, 5, seed_block).pack()
    assert open_duel(c, net.origin.address, net.a.address, net.b.address) == 2


def test_open_duel_checks(c: Any) -> None:
    net = network(c)
    o, a, b = net.origin.address, net.a.address, net.b.address
    h = keccak(b"h")
    with boa.env.prank(o):
        with boa.reverts("Duel: duelists must differ"):
            c.openDuel(a, a, h, h, h)
        with boa.reverts("Duel: origin cannot duel"):
            c.openDuel(o, b, h, h, h)
        with boa.reverts("Duel: origin cannot duel"):
            c.openDuel(a, o, h, h, h)
        with boa.reverts("Duel: duelist not registered"):
            c.openDuel(a, new_account("stranger").address, h, h, h)
    with boa.env.prank(new_account("stranger").address), boa.reverts("Registry: not registered"):
        c.openDuel(a, b, h, h, h)
    with boa.env.prank(a):
        c.leave()
    with boa.env.prank(o), boa.reverts("Duel: duelist not registered"):
        c.openDuel(a, b, h, h, h)
    poor = make_node(c, "poor", MIN_STAKE, 0)
    with boa.env.prank(poor.address), boa.reverts("Bank: insufficient credit"):
        c.openDuel(net.judges[0].address, b, h, h, h)


def test_unknown_duel(c: Any) -> None:
    with boa.reverts("Duel: unknown duel"):
        c.getDuel(1)
    assert list(c.getJudges(1)) == [] and list(c.getVotes(1)) == []


def test_packed_block_numbers_must_fit_40_bits(c: Any) -> None:
    net = network(c)
    boa.env.evm.patch.block_number = 2**40 - 1
    with boa.reverts("Duel: field overflow"):  # seed block 2**40
        open_duel(c, net.origin.address, net.a.address, net.b.address)
    boa.env.evm.patch.block_number = 2**40 - 3
    duel_id = open_duel(c, net.origin.address, net.a.address, net.b.address)
    mine(2)
    with boa.reverts("Duel: field overflow"):  # commit end beyond 2**40
        c.drawJudges(duel_id)


# ---------------------------------------------------------------------------------------------
# drawing judges


def test_draw_judges_sets_panel_windows_and_event(c: Any) -> None:
    net = network(c)
    duel_id = open_duel(c, net.origin.address, net.a.address, net.b.address)
    with boa.reverts("Duel: seed block not mined yet"):
        c.drawJudges(duel_id)
    mine(P.seed_delay_blocks)
    with boa.reverts("Duel: seed block not mined yet"):
        c.drawJudges(duel_id)  # the seed block is the current one: its hash is not known yet
    mine(1)
    c.drawJudges(duel_id)
    (ev,) = logs_named(c, "JudgesDrawn")
    commit_end = block_number() + P.commit_window_blocks
    reveal_end = commit_end + P.reveal_window_blocks
    assert (ev.duelId, ev.commitEnd, ev.revealEnd) == (duel_id, commit_end, reveal_end)
    judges = [str(j) for j in ev.judges]
    assert judges == [str(j) for j in c.getJudges(duel_id)]
    assert sorted(judges) == sorted(j.address for j in net.judges)
    assert list(c.getVotes(duel_id)) == [0, 0, 0]
    duel = c.getDuel(duel_id)
    assert (duel[4], duel[5], duel[6]) == (commit_end, reveal_end, int(DuelStatus.VOTING))
    leaves = [c.nodes(j).leaf for j in judges]
    assert c._storage.duelPanel.get()[duel_id] == DuelPanel(leaves, [Vote.NONE] * 3).pack()
    with boa.reverts("Duel: not awaiting judges"):
        c.drawJudges(duel_id)
    with boa.reverts("Duel: not awaiting judges"):
        c.drawJudges(duel_id + 1)


def test_draw_window_is_bounded(c: Any) -> None:
    net = network(c)
    duel_id = open_duel(c, net.origin.address, net.a.address, net.b.address)
    seed_block = block_number() + P.seed_delay_blocks
    mine(seed_block + P.draw_window_blocks + 1 - block_number())
    with boa.reverts("Duel: draw window over"):
        c.drawJudges(duel_id)


def test_too_few_eligible_judges_cancels_and_pays_duelists(c: Any) -> None:
    # the third candidate is below MIN_STAKE, so it is not eligible
    net = network(c, judge_stakes=(MIN_STAKE, MIN_STAKE, MIN_STAKE - 1))
    assert c.totalWeight() == (2 + 1 + 10 + 4) * MIN_STAKE
    duel_id = open_duel(c, net.origin.address, net.a.address, net.b.address)
    before = balances(c, net.everyone())
    mine(P.seed_delay_blocks + 1)
    c.drawJudges(duel_id)
    logs = c.get_logs()
    (cancelled,) = [log for log in logs if type(log).__name__ == "DuelCancelled"]
    assert (cancelled.duelId, cancelled.reason) == (duel_id, 1)
    assert paid(logs, 3) == {net.a.address: DF, net.b.address: DF}
    assert paid(logs, 5) == {net.origin.address: P.k_judges * JF}
    after = balances(c, net.everyone())
    assert after[net.a.address][0] - before[net.a.address][0] == DF
    assert after[net.origin.address][0] - before[net.origin.address][0] == P.k_judges * JF
    assert c.getDuel(duel_id)[6] == int(DuelStatus.CANCELLED)
    assert list(c.getJudges(duel_id)) == []
    with boa.reverts("Duel: not awaiting judges"):
        c.drawJudges(duel_id)


def test_cancel_undrawn_duel_after_the_draw_window(c: Any) -> None:
    net = network(c)
    duel_id = open_duel(c, net.origin.address, net.a.address, net.b.address)
    seed_block = block_number() + P.seed_delay_blocks
    mine(seed_block + P.draw_window_blocks - block_number())
    with boa.reverts("Duel: draw window not over"):
        c.cancelUndrawnDuel(duel_id)
    mine(1)
    origin_before = c.credit(net.origin.address)
    with boa.env.prank(new_account("anyone").address):
        c.cancelUndrawnDuel(duel_id)
    logs = c.get_logs()
    assert [(log.duelId, log.reason) for log in logs if type(log).__name__ == "DuelCancelled"] == [(duel_id, 2)]
    assert paid(logs, 3) == {net.a.address: DF, net.b.address: DF}
    assert c.credit(net.origin.address) == origin_before + P.k_judges * JF
    assert c.getDuel(duel_id)[6] == int(DuelStatus.CANCELLED)
    with boa.reverts("Duel: not awaiting judges"):
        c.cancelUndrawnDuel(duel_id)


def test_drawn_duel_cannot_be_cancelled(c: Any) -> None:
    net = network(c)
    duel_id, _ = open_and_draw(c, net.origin.address, net.a.address, net.b.address)
    mine(P.draw_window_blocks + 5)
    with boa.reverts("Duel: not awaiting judges"):
        c.cancelUndrawnDuel(duel_id)


# ---------------------------------------------------------------------------------------------
# commit and reveal


def test_commit_and_reveal_happy_path(c: Any) -> None:
    net = network(c)
    duel_id, judges = open_and_draw(c, net.origin.address, net.a.address, net.b.address)
    judge = judges[1]
    com = commitment(c, duel_id, judge, B)
    assert c.voteCommitment(duel_id, judge, B, SALT) == com
    with boa.env.prank(judge):
        c.commitVote(duel_id, com)
        (ev,) = logs_named(c, "VoteCommitted")
        assert (ev.duelId, ev.judge, ev.commitment) == (duel_id, judge, com)
        assert c.commitments(duel_id, judge) == com
        mine(P.commit_window_blocks + 1)
        c.revealVote(duel_id, B, SALT)
        (ev,) = logs_named(c, "VoteRevealed")
        assert (ev.duelId, ev.judge, ev.vote) == (duel_id, judge, B)
    assert c.commitments(duel_id, judge) == b"\x00" * 32
    assert list(c.getVotes(duel_id)) == [0, B, 0]


def test_commit_checks(c: Any) -> None:
    net = network(c)
    duel_id = open_duel(c, net.origin.address, net.a.address, net.b.address)
    j0 = net.judges[0].address
    with boa.env.prank(j0), boa.reverts("Duel: not in voting"):
        c.commitVote(duel_id, commitment(c, duel_id, j0, A))
    mine(P.seed_delay_blocks + 1)
    c.drawJudges(duel_id)
    assert c.nodes(j0).leaf == 0
    # an address that never registered reads leaf 0 from storage; leaf 0 is on the panel
    for outsider in (new_account("never-registered").address, net.origin.address, net.a.address):
        with boa.env.prank(outsider), boa.reverts("Duel: not a judge of this duel"):
            c.commitVote(duel_id, commitment(c, duel_id, outsider, A))
    with boa.env.prank(j0):
        with boa.reverts("Duel: empty commitment"):
            c.commitVote(duel_id, b"\x00" * 32)
        c.commitVote(duel_id, commitment(c, duel_id, j0, A))
        with boa.reverts("Duel: already committed"):
            c.commitVote(duel_id, commitment(c, duel_id, j0, B))
    mine(P.commit_window_blocks + 1)
    with boa.env.prank(net.judges[1].address), boa.reverts("Duel: commit window over"):
        c.commitVote(duel_id, commitment(c, duel_id, net.judges[1].address, A))


def test_reveal_checks(c: Any) -> None:
    net = network(c)
    duel_id, _ = open_and_draw(c, net.origin.address, net.a.address, net.b.address)
    j0, j1, j2 = (j.address for j in net.judges)
    with boa.env.prank(j0):
        c.commitVote(duel_id, commitment(c, duel_id, j0, A))
        with boa.reverts("Duel: reveal window not open"):
            c.revealVote(duel_id, A, SALT)
    with boa.env.prank(j1):
        c.commitVote(duel_id, commitment(c, duel_id, j1, B))
    mine(P.commit_window_blocks + 1)
    with boa.env.prank(j0):
        with boa.reverts("Duel: invalid vote"):
            c.revealVote(duel_id, 0, SALT)
        with boa.reverts("Duel: invalid vote"):
            c.revealVote(duel_id, 5, SALT)
        with boa.reverts("Duel: reveal does not match commitment"):
            c.revealVote(duel_id, A, keccak(b"wrong salt"))
        with boa.reverts("Duel: reveal does not match commitment"):
            c.revealVote(duel_id, B, SALT)
        c.revealVote(duel_id, A, SALT)
        with boa.reverts("Duel: already revealed"):
            c.revealVote(duel_id, A, SALT)
    with boa.env.prank(j2), boa.reverts("Duel: no commitment"):
        c.revealVote(duel_id, A, SALT)
    with boa.env.prank(new_account("never-registered").address), boa.reverts("Duel: not a judge of this duel"):
        c.revealVote(duel_id, A, SALT)
    with boa.env.prank(net.b.address), boa.reverts("Duel: not a judge of this duel"):
        c.revealVote(duel_id, A, SALT)
    mine(P.reveal_window_blocks)
    with boa.env.prank(j1), boa.reverts("Duel: reveal window over"):
        c.revealVote(duel_id, B, SALT)
    with boa.env.prank(j1), boa.reverts("Duel: not in voting"):
        c.revealVote(duel_id + 1, B, SALT)


def test_commitment_is_bound_to_judge(c: Any) -> None:
    """A judge cannot copy another judge's commitment and reveal it as its own."""
    net = network(c)
    duel_id, _ = open_and_draw(c, net.origin.address, net.a.address, net.b.address)
    j0, j1 = net.judges[0].address, net.judges[1].address
    copied = commitment(c, duel_id, j0, A)
    for judge in (j0, j1):
        with boa.env.prank(judge):
            c.commitVote(duel_id, copied)
    mine(P.commit_window_blocks + 1)
    with boa.env.prank(j1), boa.reverts("Duel: reveal does not match commitment"):
        c.revealVote(duel_id, A, SALT)


def test_settle_timing(c: Any) -> None:
    net = network(c)
    with boa.reverts("Duel: not in voting"):
        c.settleDuel(1)
    duel_id, judges = open_and_draw(c, net.origin.address, net.a.address, net.b.address)
    votes: dict[str, int | None] = {judges[0]: A, judges[1]: A, judges[2]: A}
    commit_all(c, duel_id, votes)
    mine(P.commit_window_blocks + 1)
    reveal_all(c, duel_id, {judges[0]: A, judges[1]: A})
    with boa.reverts("Duel: reveal window not over"):
        c.settleDuel(duel_id)
    # once every judge has revealed there is nothing to wait for
    reveal_all(c, duel_id, {judges[2]: A})
    with boa.env.prank(new_account("anyone").address):
        c.settleDuel(duel_id)
    assert tuple(c.getDuel(duel_id))[6:] == (int(DuelStatus.SETTLED), int(Outcome.A_WON))
    with boa.reverts("Duel: not in voting"):
        c.settleDuel(duel_id)
    with boa.env.prank(judges[0]), boa.reverts("Duel: not in voting"):
        c.commitVote(duel_id, commitment(c, duel_id, judges[0], A))


# ---------------------------------------------------------------------------------------------
# settlement math


def test_unanimous_verdict_moves_the_losers_stake(c: Any) -> None:
    net = network(c)
    total_before = c.totalWeight()
    s = run_to_settlement(c, net, [A, A, A])
    a, b, o = net.a.address, net.b.address, net.origin.address
    assert (s.event.outcome, s.event.votesA, s.event.votesB, s.event.stakeMoved, s.event.judgePool) == (
        int(Outcome.A_WON), 3, 0, 4 * MIN_STAKE, 0)
    assert s.stake[b] == -4 * MIN_STAKE and s.credit[b] == DF
    assert s.credit[a] == 4 * MIN_STAKE + DF and s.stake[a] == 0
    for j in net.judges:
        assert (s.credit[j.address], s.stake[j.address]) == (JF, 0)
    assert s.credit[o] == 0  # every judge revealed: no refund
    slashed = [(log.node, log.amount, log.reason) for log in s.logs if type(log).__name__ == "StakeSlashed"]
    assert slashed == [(b, 4 * MIN_STAKE, 1)]
    assert paid(s.logs, 1) == {a: 4 * MIN_STAKE}
    assert c.totalWeight() == total_before - 4 * MIN_STAKE
    assert c.leafWeight(c.nodes(b).leaf) == 0


def test_b_can_win(c: Any) -> None:
    net = network(c)
    s = run_to_settlement(c, net, [B, B, A])
    assert (s.event.outcome, s.event.votesA, s.event.votesB) == (int(Outcome.B_WON), 1, 2)
    assert s.stake[net.a.address] == -10 * MIN_STAKE
    assert s.credit[net.b.address] == 10 * MIN_STAKE + DF


def test_two_to_one_minority_judge_loses_its_share_to_the_majority(c: Any) -> None:
    net = network(c)  # j2 holds 5 * MIN_STAKE + 5
    s = run_to_settlement(c, net, [A, A, B])
    j0, j1, j2 = (j.address for j in net.judges)
    cut = (5 * MIN_STAKE + 5) * P.minority_slash_bps // 10_000
    assert cut == MIN_STAKE + 1  # odd: one wei of dust
    assert (s.event.outcome, s.event.votesA, s.event.votesB, s.event.judgePool) == (int(Outcome.A_WON), 2, 1, cut)
    assert s.stake[j2] == -cut and s.credit[j2] == JF
    # the pool is split equally; the first majority judge on the panel takes the dust
    panel = [str(j) for j in c.getJudges(1)]
    first, second = sorted((j0, j1), key=panel.index)
    assert paid(s.logs, 2) == {first: cut // 2 + 1, second: cut // 2}
    assert s.credit[first] == cut // 2 + 1 + JF and s.credit[second] == cut // 2 + JF
    slashed = {(log.node, log.reason) for log in s.logs if type(log).__name__ == "StakeSlashed"}
    assert slashed == {(net.b.address, 1), (j2, 2)}


def test_silent_judge_loses_abstain_share_and_fee(c: Any) -> None:
    net = network(c)
    s = run_to_settlement(c, net, [A, A, None], wait=True)
    j0, j1, j2 = (j.address for j in net.judges)
    cut = (5 * MIN_STAKE + 5) * P.abstain_slash_bps // 10_000
    assert s.event.judgePool == cut and s.stake[j2] == -cut
    assert s.credit[j2] == 0  # no fee for a judge that never revealed
    assert s.credit[j0] + s.credit[j1] == cut + 2 * JF
    assert s.credit[net.origin.address] == JF  # its fee goes back to the origin
    assert [log.reason for log in s.logs if type(log).__name__ == "StakeSlashed" and log.node == j2] == [3]


@pytest.mark.parametrize("odd_vote", [ABSTAIN, NO_EVIDENCE])
def test_abstaining_judge_is_slashed_but_paid_its_fee(c: Any, odd_vote: int) -> None:
    net = network(c)
    s = run_to_settlement(c, net, [A, A, odd_vote])
    j2 = net.judges[2].address
    cut = (5 * MIN_STAKE + 5) * P.abstain_slash_bps // 10_000
    assert s.event.outcome == int(Outcome.A_WON)
    assert s.stake[j2] == -cut and s.credit[j2] == JF
    assert s.credit[net.origin.address] == 0


def test_tie_moves_nothing(c: Any) -> None:
    net = network(c)
    s = run_to_settlement(c, net, [A, B, ABSTAIN])
    assert (s.event.outcome, s.event.votesA, s.event.votesB, s.event.stakeMoved, s.event.judgePool) == (
        int(Outcome.TIE), 1, 1, 0, 0)
    assert all(v == 0 for v in s.stake.values())
    assert s.credit[net.a.address] == DF == s.credit[net.b.address]
    assert all(s.credit[j.address] == JF for j in net.judges)
    assert not [log for log in s.logs if type(log).__name__ == "StakeSlashed"]


def test_nobody_reveals_is_a_tie_and_refunds_the_judge_fees(c: Any) -> None:
    net = network(c)
    s = run_to_settlement(c, net, [None, None, None], wait=True)
    assert (s.event.outcome, s.event.votesA, s.event.votesB) == (int(Outcome.TIE), 0, 0)
    assert all(v == 0 for v in s.stake.values())
    assert s.credit[net.origin.address] == P.k_judges * JF


def test_no_evidence_majority_voids_the_duel(c: Any) -> None:
    net = network(c)
    s = run_to_settlement(c, net, [NO_EVIDENCE, NO_EVIDENCE, A])
    assert (s.event.outcome, s.event.votesA, s.event.votesB, s.event.stakeMoved, s.event.judgePool) == (
        int(Outcome.VOIDED), 1, 0, 0, 0)
    assert all(v == 0 for v in s.stake.values())
    assert s.credit[net.a.address] == DF == s.credit[net.b.address]
    assert all(s.credit[j.address] == JF for j in net.judges)
    assert c.getDuel(1)[7] == int(Outcome.VOIDED)


def test_loser_without_stake_moves_nothing(c: Any) -> None:
    net = network(c, b_stake=0)
    s = run_to_settlement(c, net, [A, A, A])
    assert s.event.stakeMoved == 0 and s.credit[net.a.address] == DF
    assert not [log for log in s.logs if type(log).__name__ == "StakeSlashed"]


def test_partial_gamma_takes_active_stake_first_then_unbonding(fresh: None) -> None:
    c = deploy(with_params(gamma_bps=5_000))
    net = network(c, b_stake=4 * MIN_STAKE)
    with boa.env.prank(net.b.address):
        c.requestUnstake(3 * MIN_STAKE)  # active 1, unbonding 3
    s = run_to_settlement(c, net, [A, A, A])
    assert s.event.stakeMoved == 2 * MIN_STAKE
    assert (c.activeStake(net.b.address), c.unbondingStake(net.b.address)) == (0, 2 * MIN_STAKE)
    assert s.credit[net.a.address] == 2 * MIN_STAKE + DF


def test_settlement_conserves_money(c: Any) -> None:
    net = network(c)
    run_to_settlement(c, net, [A, B, None], wait=True)
    held = sum(c.credit(w) + c.pendingWithdrawal(w) + c.activeStake(w) + c.unbondingStake(w)
               for w in net.everyone())
    assert held == boa.env.get_balance(c.address)
