"""A8 (split identities colluding as judges) and A9 (lazy judging): the payoff rules they run into.

Contract side only: a seat that votes with the final verdict earns JUDGE_FEE plus a share of the
reserve, both scaled by how rare that verdict has been (1 / (2p), within [1/4, 4]; 1 for the
deployment's first verdict); a seat against it pays JUDGE_PENALTY; a silent seat pays
SILENT_PENALTY; abstaining and no-evidence seats neither earn nor pay; an appeal whose larger panel
overturns round 1 refunds the appellant and makes every round-1 majority seat pay. So honest judging
strictly beats every lazy strategy per seat, voting for the usual winner earns less than reading
the answers, and a colluding majority that an appeal overturns loses money. The Monte Carlo
economics (judge accuracy, collusion shares, the price of a model call) are bench/attacks.py's.
"""

from __future__ import annotations

import pytest
from contract_fixtures import (
    A_VOTE,
    ABSTAIN,
    APPEAL_FEE,
    B_VOTE,
    BOND,
    JUDGE_FEE,
    JUDGE_PENALTY,
    MIN_STAKE,
    NO_EVIDENCE,
    OTHER_MODEL,
    SILENT_PENALTY,
    Twin,
    distinct,
    mine_to,
    next_epoch,
)


def _balances(twin: Twin) -> dict[str, int]:
    return {x: twin.m.credit.get(x, 0) + twin.m.total_stake(x) for x in twin.addresses}


@pytest.fixture(name="cast")
def cast_fixture(twin: Twin) -> dict:
    cast = {"origin": twin.node("origin", 0), "a": twin.node("a", 2 * MIN_STAKE),
            "b": twin.node("b", 40 * MIN_STAKE, 2 * 10**18)}
    cast["judges"] = [twin.node(f"j{i}", 2 * MIN_STAKE, models=(OTHER_MODEL,)) for i in range(6)]
    next_epoch()
    return cast


LAZY = {"always A": A_VOTE, "never reveal": None, "abstain": ABSTAIN, "always no-evidence": NO_EVIDENCE}
LAZY_PAYOFF = {"always A": -JUDGE_PENALTY, "never reveal": -SILENT_PENALTY, "abstain": 0, "always no-evidence": 0}


@pytest.mark.parametrize("lazy", list(LAZY))
def test_honest_judging_beats_every_lazy_strategy_per_seat(twin: Twin, cast: dict, lazy: str) -> None:
    """B's answer is the better one: two judges vote B (honest), the third plays a lazy strategy, one
    seat each. The honest seats earn the fee and a reserve share; the lazy one earns nothing or pays.
    (A coin flip is the average of 'always A' and honest: still below honest.)"""
    o = cast["origin"].address
    duel_id, _, drawn = twin.judging_where(o, cast["a"], lambda d: len(set(d)) == 3, lazy)
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


def test_a_colluding_majority_overturned_on_appeal_pays(twin: Twin, cast: dict) -> None:
    """Round 1: every seat votes A (a colluding panel; B's answer was the better one). B appeals; the
    seven seats of round 2 vote B. Every round-1 seat pays the penalty, the appellant gets its fee
    back from the reserve the penalties fed (as far as it reaches), A's bond goes to B."""
    o, a = cast["origin"].address, cast["a"].address
    duel_id, b, drawn1 = twin.judging(o, cast["a"], "collusion")
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
    slashed = {}
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


def test_voting_for_the_usual_winner_earns_less_than_reading_the_answers(twin: Twin, cast: dict) -> None:
    """A's answer was the better one in three duels (every seat voted A). Then B's is better: two
    seats read the answers and vote B, the third always votes A. The B verdict is rare (scale 5/2),
    so the readers earn 2.5 fees and shares; 'always A' pays the penalty. The next A verdict is
    common (scale 3/4): every seat earns less than a fee. Over the two duels 'always A' is behind
    each reader by the rare verdict's pay and the penalty."""
    o = cast["origin"].address
    for i in range(3):
        duel_id, _, drawn = twin.judging_where(o, cast["a"], lambda d: len(set(d)) == 3, f"usual{i}")
        twin.vote_round(duel_id, dict.fromkeys(drawn, A_VOTE))
        twin.settle(duel_id, o)
    assert twin.c.verdicts() == 3
    totals: dict[str, int] = {}
    pay: dict[str, int] = {}
    for tag, better, scale in (("rare", B_VOTE, (5, 2)), ("common", A_VOTE, (6, 8))):
        duel_id, _, drawn = twin.judging_where(o, cast["a"], lambda d: len(set(d)) == 3, tag)
        readers, lazy = drawn[:2], drawn[2]
        twin.vote_round(duel_id, {readers[0]: better, readers[1]: better, lazy: A_VOTE})
        reserve = twin.m.reserve + (BOND if better == A_VOTE else 0)  # B's lost bond comes in first
        before = _balances(twin)
        twin.settle(duel_id, o)
        after = _balances(twin)
        num, den = scale
        earned = JUDGE_FEE * num // den + reserve * twin.p.reserve_payout_bps // 10_000 * num // den
        assert [after[j] - before[j] for j in readers] == [earned] * 2, tag
        assert after[lazy] - before[lazy] == (earned if better == A_VOTE else -JUDGE_PENALTY), tag
        totals["reader"] = totals.get("reader", 0) + earned
        totals["lazy"] = totals.get("lazy", 0) + after[lazy] - before[lazy]
        pay[tag] = earned
    assert twin.c.verdicts() == 4 | (1 << 128)
    assert pay["rare"] > 2 * JUDGE_FEE and pay["common"] < JUDGE_FEE
    assert totals["reader"] - totals["lazy"] == pay["rare"] + JUDGE_PENALTY
