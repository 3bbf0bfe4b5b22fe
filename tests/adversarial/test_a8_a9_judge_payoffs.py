"""A8 (split identities colluding as judges) and A9 (lazy judging): the payoff rules they run into.

Contract side only: a seat that votes with the final verdict earns JUDGE_FEE plus a share of the
reserve, both scaled by how rare that verdict has been (1 / (2p), within [1/4, 4]; 1 for the
deployment's first verdict); a seat against it pays JUDGE_PENALTY; a silent seat pays
SILENT_PENALTY; abstaining and no-evidence seats neither earn nor pay; an appeal whose larger panel
overturns round 1 refunds the appellant and makes every round-1 majority seat pay. Seats exclude
nobody: a duelist drawn onto its own panel is paid per seat like any judge. So honest judging
strictly beats every lazy strategy per seat, voting for the usual winner earns less than reading
the answers, and a colluding majority that an appeal overturns loses money. The Monte Carlo
economics (judge accuracy, collusion shares, the price of a model call) are bench/attacks.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from contract_fixtures import (
    A_VOTE,
    ABSTAIN,
    APPEAL_FEE,
    B_VOTE,
    BOND,
    DUELIST_FEE,
    JUDGE_FEE,
    JUDGE_PENALTY,
    MIN_STAKE,
    NO_EVIDENCE,
    OTHER_MODEL,
    SILENT_PENALTY,
    RevertedError,
    Twin,
    distinct,
    mine_to,
    next_epoch,
)


def _balances(twin: Twin) -> dict[str, int]:
    return {x: twin.m.credit.get(x, 0) + twin.m.total_stake(x) for x in twin.addresses}


@pytest.fixture(name="cast")
def cast_fixture(twin: Twin) -> dict[str, Any]:
    """Seats exclude nobody, so the cast is sized for the panels these tests need: A holds four bonds'
    worth, below MIN_STAKE (never drawn, never seated); B 2 x MIN_STAKE (ten bonds: it can lose several
    and still bond a full one), the only node besides A serving the model, so the challenger whenever a
    challenger is drawn; six judges 2 x MIN_STAKE each, serving another model."""
    cast = {"origin": twin.node("origin", 0), "a": twin.node("a", MIN_STAKE - BOND),
            "b": twin.node("b", 2 * MIN_STAKE)}
    cast["judges"] = [twin.node(f"j{i}", 2 * MIN_STAKE, models=(OTHER_MODEL,)) for i in range(6)]
    next_epoch()
    return cast


def judging_on(twin: Twin, cast: dict[str, Any], tag: str, fits: Callable[[list[str]], bool],
               tries: int = 60) -> tuple[int, str, list[str]]:
    """`twin.judging` over the first request id (tag + n) in which B was drawn and whose first-round
    seats satisfy `fits`; every try that does not fit is rolled back."""
    origin = cast["origin"].address
    for i in range(tries):
        with twin.sandbox():
            try:
                drawn = twin.judging(origin, cast["a"], f"{tag}{i}")[2]
            except RevertedError as exc:  # no draw of MAX_CHALLENGER_TRIES hit B: nobody can answer
                if str(exc) != "Duel: no challenger":
                    raise
                continue
            ok = fits(drawn)
        if ok:
            duel_id, b, seats = twin.judging(origin, cast["a"], f"{tag}{i}")
            return duel_id, b, seats
    raise AssertionError(f"no panel fits in {tries} duels ({tag})")


def judging_on_judges(twin: Twin, cast: dict[str, Any], tag: str, *,
                      distinct_seats: bool = True) -> tuple[int, str, list[str]]:
    """A duel whose first-round seats all went to the cast's judges (three different ones if
    `distinct_seats`). The contract seats anybody by stake, the duelists included (docs/duels.md); the
    tests that look at what a seat earns take panels where no seat holder is also paid or slashed as a
    duelist."""
    judges = {j.address for j in cast["judges"]}
    return judging_on(twin, cast, tag,
                      lambda d: set(d) <= judges and (len(set(d)) == len(d) or not distinct_seats))


LAZY = {"always A": A_VOTE, "never reveal": None, "abstain": ABSTAIN, "always no-evidence": NO_EVIDENCE}
LAZY_PAYOFF = {"always A": -JUDGE_PENALTY, "never reveal": -SILENT_PENALTY, "abstain": 0, "always no-evidence": 0}


@pytest.mark.parametrize("lazy", list(LAZY))
def test_honest_judging_beats_every_lazy_strategy_per_seat(twin: Twin, cast: dict[str, Any], lazy: str) -> None:
    """B's answer is the better one: two judges vote B (honest), the third plays a lazy strategy, one
    seat each. The honest seats earn the fee and a reserve share; the lazy one earns nothing or pays.
    (A coin flip is the average of 'always A' and honest: still below honest.)"""
    o = cast["origin"].address
    duel_id, _, drawn = judging_on_judges(twin, cast, lazy)
    plan = dict(zip(drawn, (B_VOTE, B_VOTE, LAZY[lazy]), strict=True))
    twin.vote_round(duel_id, plan)
    reserve = twin.m.reserve
    before = _balances(twin)
    twin.settle(duel_id, o)
    after = _balances(twin)
    assert twin.m.duels[duel_id].outcome == 2  # B won
    share = reserve * twin.p.reserve_payout_bps // 10_000
    honest = [after[j] - before[j] for j in drawn[:2]]
    assert honest == [JUDGE_FEE + share] * 2
    assert after[drawn[2]] - before[drawn[2]] == LAZY_PAYOFF[lazy] < honest[0]


def test_a_duelist_seated_on_its_own_duel_is_paid_per_seat_like_any_judge(twin: Twin, cast: dict[str, Any]) -> None:
    """Seats exclude nobody: B holds one of the three seats (its stake drew it) and votes for itself, as
    do the two judges. B gets what it wins as a duelist (its fee and A's bond) plus exactly what each
    judge's coherent seat earns, no more: a seat pays the same whoever holds it, and a duelist's seat
    counts once, like any other."""
    o, a = cast["origin"].address, cast["a"].address
    b_addr, judges = cast["b"].address, {j.address for j in cast["judges"]}
    duel_id, b, drawn = judging_on(
        twin, cast, "own-seat",
        lambda d: d.count(b_addr) == 1 and len(set(d) - {b_addr}) == 2 and set(d) - {b_addr} <= judges)
    assert b == b_addr and b in drawn
    twin.vote_round(duel_id, dict.fromkeys(drawn, B_VOTE))
    reserve = twin.m.reserve
    before = _balances(twin)
    twin.settle(duel_id, o)
    after = _balances(twin)
    assert twin.m.duels[duel_id].outcome == 2  # B won
    seat = JUDGE_FEE + reserve * twin.p.reserve_payout_bps // 10_000  # the first verdict: scale 1
    assert [after[j] - before[j] for j in drawn if j != b] == [seat] * 2
    assert after[b] - before[b] == DUELIST_FEE + BOND + seat
    assert after[a] - before[a] == -BOND


def test_a_colluding_majority_overturned_on_appeal_pays(twin: Twin, cast: dict[str, Any]) -> None:
    """Round 1: every seat votes A (a colluding panel; B's answer was the better one). B appeals; the
    seven seats of round 2 vote B. Every round-1 seat pays the penalty, the appellant gets its fee
    back from the reserve the penalties fed (as far as it reaches), A's bond goes to B."""
    o, a = cast["origin"].address, cast["a"].address
    duel_id, b, drawn1 = judging_on_judges(twin, cast, "collusion", distinct_seats=False)
    twin.vote_round(duel_id, dict.fromkeys(distinct(drawn1), A_VOTE))
    mine_to(twin.m.reveal_end(duel_id) + 1)
    twin.appeal(duel_id, b)
    assert twin.event("DuelAppealed")[0]["deposit"] == APPEAL_FEE
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    drawn2 = twin.draw_judges(duel_id, o)
    twin.vote_round(duel_id, dict.fromkeys(distinct(drawn2), B_VOTE))
    before, reserve = _balances(twin), twin.m.reserve
    twin.settle(duel_id, o, wait=False)  # every seat revealed
    after = _balances(twin)
    assert twin.m.duels[duel_id].outcome == 2
    change = {x: after[x] - before[x] for x in before}
    assert change[a] == -BOND
    slashed: dict[str, int] = {}
    for ev in twin.event("StakeSlashed"):
        slashed[ev["node"]] = slashed.get(ev["node"], 0) + ev["amount"]
    for j in distinct(drawn1):
        assert slashed[j] == drawn1.count(j) * JUDGE_PENALTY
    # the reserve (fed by the round-1 penalties, less the round-2 seats' shares) pays the appeal panel
    # back to the appellant as far as it reaches
    r1 = reserve + len(drawn1) * JUDGE_PENALTY
    r2 = r1 - len(drawn2) * (r1 * twin.p.reserve_payout_bps // 10_000)
    refund = [ev for ev in twin.event("DuelRewardPaid") if ev["reason"] == 6]
    assert [(ev["account"], ev["amount"]) for ev in refund] == [(b, min(APPEAL_FEE, r2))]
    assert twin.m.reserve == r2 - min(APPEAL_FEE, r2)
    # the colluders, net of everything in this duel, lost money; the honest appeal judges earned
    for j in set(drawn1) - set(drawn2):
        assert change[j] < 0
    for j in set(drawn2) - set(drawn1):
        assert change[j] > 0


def test_voting_for_the_usual_winner_earns_less_than_reading_the_answers(twin: Twin, cast: dict[str, Any]) -> None:
    """A's answer was the better one in three duels (every seat voted A). Then B's is better: two
    seats read the answers and vote B, the third always votes A. Each seat is held against the other
    seats' votes: a reader's recount (the other reader and 'always A') is even, so it earns a fee and a
    share at scale 1; 'always A' is outvoted on a rare verdict and pays the penalty at that verdict's
    scale (5/2). The next A verdict is common (scale 3/4): every seat earns less than a fee. Over the
    two duels 'always A' is behind each reader by the even pay and the scaled penalty."""
    o = cast["origin"].address
    for i in range(3):
        duel_id, _, drawn = judging_on_judges(twin, cast, f"usual{i}")
        twin.vote_round(duel_id, dict.fromkeys(drawn, A_VOTE))
        twin.settle(duel_id, o)
    assert twin.c.verdicts() == 3
    totals: dict[str, int] = {}
    pay: dict[str, int] = {}
    for tag, better in (("rare", B_VOTE), ("common", A_VOTE)):
        duel_id, _, drawn = judging_on_judges(twin, cast, tag)
        readers, lazy = drawn[:2], drawn[2]
        twin.vote_round(duel_id, {readers[0]: better, readers[1]: better, lazy: A_VOTE})
        reserve = twin.m.reserve + (BOND if better == A_VOTE else 0)  # B's lost bond comes in first
        before = _balances(twin)
        twin.settle(duel_id, o)
        after = _balances(twin)
        num, den = (1, 1) if better == B_VOTE else (6, 8)  # an even recount; a common A verdict
        earned = JUDGE_FEE * num // den + reserve * twin.p.reserve_payout_bps // 10_000 * num // den
        assert [after[j] - before[j] for j in readers] == [earned] * 2, tag
        assert after[lazy] - before[lazy] == (earned if better == A_VOTE else -JUDGE_PENALTY * 5 // 2), tag
        totals["reader"] = totals.get("reader", 0) + earned
        totals["lazy"] = totals.get("lazy", 0) + after[lazy] - before[lazy]
        pay[tag] = earned
    assert twin.c.verdicts() == 4 | (1 << 128)
    assert pay["rare"] > JUDGE_FEE > pay["common"]
    assert totals["reader"] - totals["lazy"] == pay["rare"] + JUDGE_PENALTY * 5 // 2


def test_seats_that_make_the_verdict_alone_earn_nothing_for_it(twin: Twin, cast: dict[str, Any]) -> None:
    """A9's self-agreement payoff, closed: one judge holds two of the three seats and votes B whatever the
    answers say (a coin flip or a colluder), the third seat reads the answers and votes A. Its two seats
    decide the verdict, but each seat is held against the verdict recounted without its own judge's
    seats, here the reader's A: the two seats pay the penalty instead of earning two fees for agreeing
    with themselves (and the reader pays one for disagreeing with them: scored against its only peer)."""
    o = cast["origin"].address
    duel_id, _, drawn = judging_on_judges(twin, cast, "self", distinct_seats=False)
    for i in range(40):  # judging_on_judges may give three distinct seats: look for a double one
        if len(set(drawn)) == 2:
            break
        duel_id, _, drawn = judging_on_judges(twin, cast, f"self{i}", distinct_seats=False)
    assert sorted(drawn.count(j) for j in set(drawn)) == [1, 2], drawn
    double = next(j for j in drawn if drawn.count(j) == 2)
    reader = next(j for j in drawn if j != double)
    twin.vote_round(duel_id, {double: B_VOTE, reader: A_VOTE})
    before = _balances(twin)
    twin.settle(duel_id, o)
    after = _balances(twin)
    assert twin.m.duels[duel_id].outcome == 2  # its two seats made B win
    assert after[double] - before[double] == -2 * JUDGE_PENALTY
    assert after[reader] - before[reader] == -JUDGE_PENALTY
