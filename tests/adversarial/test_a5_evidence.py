"""A5: the origin controls the evidence. Serving it to one judge of three voided the duel; a colluder and
one honest judge forced a tie; a withheld honest judge was taxed.

Today's defence (contract side): a duel is void only when a majority of seats say "no evidence" (which
judges say only when nobody, chain included, could give them the request); a no-evidence or abstaining
seat is neither paid nor penalised, so a judge is never taxed for what it could not get; a side whose
answer nobody can produce loses (judges vote for the other side), and the bonds move accordingly; an
origin that withholds the request from the challenger pays for the cancelled duel. Which vote an honest
judge casts for which evidence is the judge's rule (judge/evidence.py), tested there.

Seats exclude nobody, so a duelist may judge its own duel; these tests pick duels whose seats all
went to the three judges (A holds less than MIN_STAKE and is never seated; B may be), so each
settlement shows what the evidence rule moves and nothing a duelist's seat adds.
"""

from __future__ import annotations

import pytest
from contract_fixtures import (
    A_VOTE,
    B_VOTE,
    BOND,
    ESCROW,
    MIN_STAKE,
    NO_EVIDENCE,
    OTHER_MODEL,
    VOIDED,
    ZERO32,
    RevertedError,
    Twin,
    attest,
    mine_to,
    next_epoch,
)

P_FEE = 4 * 10**15  # JUDGE_FEE


@pytest.fixture(name="cast")
def cast_fixture(twin: Twin) -> dict:
    """Only the origin, A and B serve the model: B is the challenger whenever one of the draw's eight
    tries lands on it (3 in 10 each). A's four bonds' worth is under MIN_STAKE (no seats); B holds 3 x
    MIN_STAKE of drawable stake, the judges 2, 2 and 3."""
    cast = {"origin": twin.node("origin", 0), "a": twin.node("a", MIN_STAKE - BOND),
            "b": twin.node("b", 3 * MIN_STAKE)}
    cast["judges"] = [twin.node(f"j{i}", s * MIN_STAKE, models=(OTHER_MODEL,)) for i, s in enumerate((2, 2, 3))]
    next_epoch()
    return cast


def _judges_only(twin: Twin, cast: dict, tag: str, *, distinct: bool = False) -> tuple[int, str, list[str]]:
    """A judging duel whose seats all went to the cast's judges (one each when `distinct`): the first
    over request ids tag0, tag1, ... (tries are rolled back; one with no challenger does not fit)."""
    o, a, judges = cast["origin"].address, cast["a"], {j.address for j in cast["judges"]}
    for i in range(100):
        with twin.sandbox():
            try:
                drawn = twin.judging(o, a, f"{tag}{i}")[2]
            except RevertedError as exc:
                assert exc.reason == "Duel: no challenger"
                drawn = []
            fits = bool(drawn) and set(drawn) <= judges and (not distinct or len(set(drawn)) == 3)
        if fits:
            return twin.judging(o, a, f"{tag}{i}")
    raise AssertionError(f"no duel's seats fit in 100 request ids ({tag!r})")


def _three_judges(twin: Twin, cast: dict, tag: str) -> tuple[int, str, list[str]]:
    """A judging duel whose three seats are the three judges (one each)."""
    return _judges_only(twin, cast, tag, distinct=True)


def _settle(twin: Twin, duel_id: int, who: str) -> dict[str, tuple[int, int]]:
    """Settle; (credit change, stake change) of everyone the Twin knows."""
    before = {x: (twin.m.credit.get(x, 0), twin.m.total_stake(x)) for x in twin.addresses}
    twin.settle(duel_id, who)
    return {x: (twin.m.credit.get(x, 0) - c, twin.m.total_stake(x) - s) for x, (c, s) in before.items()}


def test_a_no_evidence_majority_voids_and_slashes_nobody(twin: Twin, cast: dict) -> None:
    o, a = cast["origin"].address, cast["a"].address
    duel_id, b, drawn = _three_judges(twin, cast, "void")
    votes = dict(zip(drawn, (NO_EVIDENCE, NO_EVIDENCE, A_VOTE), strict=True))
    twin.vote_round(duel_id, votes)
    d = _settle(twin, duel_id, o)
    assert twin.m.duels[duel_id].outcome == VOIDED
    assert d[a] == (0, 0) and d[b] == (twin.p.duelist_fee_wei, 0)  # no bond moves
    assert all(d[j] == (0, 0) for j in drawn)  # no seat is paid, none penalised
    assert d[o] == (3 * P_FEE, 0)  # the judge fees go back to the origin
    assert not twin.event("StakeSlashed")


def test_withholding_from_one_judge_neither_voids_nor_taxes_it(twin: Twin, cast: dict) -> None:
    """The origin serves the evidence to two judges: they decide; the third says 'no evidence' and
    neither earns nor pays. No tie can be forced either: 'no evidence' is not a vote for a side."""
    o, a = cast["origin"].address, cast["a"].address
    duel_id, b, drawn = _three_judges(twin, cast, "one withheld")
    votes = dict(zip(drawn, (B_VOTE, B_VOTE, NO_EVIDENCE), strict=True))
    twin.vote_round(duel_id, votes)
    d = _settle(twin, duel_id, o)
    assert twin.m.duels[duel_id].outcome == 2  # B won
    assert d[drawn[2]] == (0, 0)
    assert d[a] == (0, -BOND) and d[b][0] == BOND + twin.p.duelist_fee_wei
    # a colluder voting A against one honest judge and one withheld judge forces a tie: nobody's
    # bond moves, so the origin's ally A is not saved from anything it would have lost; the colluder
    # and the honest judge are paid alike
    duel_id, b, drawn = _three_judges(twin, cast, "collude")
    twin.vote_round(duel_id, dict(zip(drawn, (A_VOTE, B_VOTE, NO_EVIDENCE), strict=True)))
    d = _settle(twin, duel_id, o)
    assert twin.m.duels[duel_id].outcome == 3 and d[a] == (0, 0) and d[b] == (twin.p.duelist_fee_wei, 0)


@pytest.mark.parametrize(("missing", "vote"), [("a", B_VOTE), ("b", A_VOTE)])
def test_the_side_whose_answer_nobody_can_produce_loses(twin: Twin, cast: dict, missing: str, vote: int) -> None:
    """A duelist that withholds its own answer: the judges vote for the other side (judge rule);
    settlement moves that side's bond (A's to B; B's to the reserve: A never profits)."""
    o, a = cast["origin"].address, cast["a"].address
    duel_id, b, drawn = _judges_only(twin, cast, f"missing {missing}")
    twin.vote_round(duel_id, {j: vote for j in set(drawn)})
    reserve = twin.m.reserve
    d = _settle(twin, duel_id, o)
    if missing == "a":
        assert d[a] == (0, -BOND) and d[b] == (BOND + twin.p.duelist_fee_wei, 0)
    else:
        assert d[b] == (twin.p.duelist_fee_wei, -BOND) and d[a] == (0, 0)
        share = (reserve + BOND) * twin.p.reserve_payout_bps // 10_000  # each coherent seat's share
        assert twin.m.reserve == reserve + BOND - len(drawn) * share


def test_an_origin_that_withholds_the_request_from_b_pays_for_it(twin: Twin, cast: dict) -> None:
    o, a = cast["origin"].address, cast["a"].address
    job = attest(twin.c, o, cast["a"], "withheld")
    duel_id = twin.open_duel(o, job)
    mine_to(twin.m.duels[duel_id].seed_block + 1)
    b = twin.challenger_of(duel_id)
    twin.answer(duel_id, b, ZERO32)  # "I could not get the request"
    credit_o = twin.m.credit[o]
    d = _settle(twin, duel_id, a)  # nobody published it
    assert twin.event("DuelCancelled")[0]["reason"] == 3
    assert d[b] == (twin.p.duelist_fee_wei, 0) and d[a] == (0, 0)
    assert twin.m.credit[o] == credit_o  # its escrow is gone: the fee to B, the rest to the reserve
    assert twin.m.reserve == ESCROW - twin.p.duelist_fee_wei
