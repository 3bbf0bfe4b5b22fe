"""The duel engine (sim/duels.py) and the attack bench (bench/attacks.py) on a few duels: the contract's
lifecycle on its model, money conserved after every duel, each duel's ledger of gains and losses equal to
the balance changes, the same seed giving the same duels, and the bench's cells built from them."""

from __future__ import annotations

import random
from types import ModuleType

import pytest
from bench_scripts import load_bench_script

from wwwserve.ledger.model import Vote
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.sim.duels import (
    DuelChain,
    DuelResult,
    DuelRun,
    Evidence,
    abstain,
    answer_score,
    appeal_always,
    head_to_head,
    run_duel,
    silent,
)

PARAMS = DeploymentParams()
CR = WEI_PER_CREDIT
STRIDE = 6 * PARAMS.epoch_blocks


def _bench() -> ModuleType:
    return load_bench_script("attacks.py", "bench_attacks")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _bench()


def network(seed: str = "t", accuracy: float = 0.9, nodes: int = 8) -> tuple[DuelChain, list[str]]:
    chain = DuelChain(PARAMS, seed, accuracy=accuracy)
    addresses = [chain.add(f"n{i}", stake_wei=1000 * CR, credit_wei=10_000 * CR).address for i in range(nodes)]
    return chain, addresses


def duels(chain: DuelChain, addresses: list[str], count: int, first: int = 0,
          before: list[tuple[int, int, int]] | None = None, **kwargs: object) -> list[DuelResult]:
    """`count` duels one after the other; `before` (if given) gets, per duel, the contract's verdict
    counts (A, B) and its reserve as the duel opened."""
    out = []
    for i in range(first, first + count):
        chain.mine_to(2 * PARAMS.epoch_blocks + i * STRIDE)
        origin = random.Random(f"{chain.seed}/{i}").choice(addresses)
        a = chain.route(origin, f"d{i}")
        assert a is not None
        balances = chain.balances()
        model = chain.model
        reserve = model.reserve
        if before is not None:
            before.append((model.verdicts_a, model.verdicts_b, reserve))
        result = run_duel(chain, origin, a, f"d{i}", **kwargs)  # type: ignore[arg-type]
        after = chain.balances()
        assert model.liabilities_wei() == model.balance_wei  # conservation after every duel
        for address in chain.members:  # the duel's own ledger is exactly the balance changes
            change = [after[address][0] - balances[address][0], after[address][1] - balances[address][1]]
            assert result.delta.get(address, [0, 0]) == change
        assert result.reserve_change_wei == model.reserve - reserve
        chain.restore_stakes()
        out.append(result)
    return out


def verdict_scale(outcome: str, verdicts_a: int, verdicts_b: int) -> tuple[int, int]:
    """docs/duels.md: a seat's fee and reserve share, or its penalty, are scaled by 1 / (2p) within [1/4, 4], p
    the (Laplace-smoothed) share of past verdicts that went its recount's way; 1 for an even recount."""
    if outcome not in ("a_won", "b_won"):
        return 1, 1
    same = verdicts_a if outcome == "a_won" else verdicts_b
    num, den = verdicts_a + verdicts_b + 2, 2 * (same + 1)
    return (4, 1) if num > 4 * den else (1, 4) if 4 * num < den else (num, den)


def settled_round_one(r: DuelResult, verdicts_a: int, verdicts_b: int, reserve: int) -> dict[str, int]:
    """What docs/duels.md's settlement gives everyone in a duel decided in round 1 (no appeal): the origin
    escrows B's fee and K judge fees and gets back what no seat earned; the loser's bond goes to B (B won)
    or to the reserve (A won), B always gets its fee; each seat is held against the verdict recounted
    without its judge's seats: with it (an even recount: either side) it is paid the scaled fee from the
    budget, the rest and the scaled reserve share from the reserve; against it, it pays the scaled
    JUDGE_PENALTY; a silent seat pays SILENT_PENALTY; nothing else moves. Seats may be held by anyone, the
    origin, A and B included: a party's change is the sum."""
    p = PARAMS
    change: dict[str, int] = {}

    def add(who: str, amount: int) -> None:
        change[who] = change.get(who, 0) + amount

    add(r.origin, -p.duel_escrow_wei)
    add(r.b, p.duelist_fee_wei)
    if r.outcome == "a_won":
        add(r.b, -r.bond_wei)
        reserve += r.bond_wei
    elif r.outcome == "b_won":
        add(r.a, -r.bond_wei)
        add(r.b, r.bond_wei)
    budget = p.k_judges * p.judge_fee_wei
    bonus = reserve * p.reserve_payout_bps // 10_000
    paid = 0
    (panel,) = r.rounds
    n_a, n_b = panel.votes.count(Vote.A), panel.votes.count(Vote.B)
    for seat, vote in zip(panel.seats, panel.votes, strict=True):
        # the verdict recounted without this judge's seats (its vote fills all of them)
        held = panel.seats.count(seat)
        a = n_a - (held if vote == Vote.A else 0)
        b = n_b - (held if vote == Vote.B else 0)
        ref = "voided" if r.outcome == "voided" else "a_won" if a > b else "b_won" if b > a else "tie"
        num, den = verdict_scale(ref, verdicts_a, verdicts_b)
        win = {"a_won": (Vote.A,), "b_won": (Vote.B,), "tie": (Vote.A, Vote.B)}.get(ref, ())
        lose = {"a_won": Vote.B, "b_won": Vote.A}.get(ref)
        if vote in win:
            fee = p.judge_fee_wei * num // den
            from_budget = min(fee, budget - paid)
            from_reserve = min(fee - from_budget + bonus * num // den, reserve)
            paid += from_budget
            reserve -= from_reserve
            add(seat, from_budget + from_reserve)
        elif vote is None or vote == lose:
            cut = p.silent_penalty_wei if vote is None else p.judge_penalty_wei * num // den
            add(seat, -cut)
            reserve += cut
    add(r.origin, budget - paid)
    return change


def test_a_duel_runs_the_contracts_lifecycle_and_conserves_money() -> None:
    """Every duel settles as docs/duels.md says, to the wei, for every member: the challenger is the model's
    draw (never the origin or A), the seats are drawn from everybody's stake (the duel's own parties hold
    seats too), and a coherent seat is paid at the verdict's weight."""
    chain, addresses = network()
    before: list[tuple[int, int, int]] = []
    results = duels(chain, addresses, 12, before=before)
    for r, (v_a, v_b, reserve) in zip(results, before, strict=True):
        assert r.outcome in ("a_won", "b_won")
        assert r.b and r.b not in (r.origin, r.a)  # B is the model's draw: never the origin or A
        seats = r.rounds[0].seats
        assert len(seats) == PARAMS.k_judges and seats == chain.model.get_judges(r.duel_id, 1)
        assert r.bond_wei == r.stake_moved_wei == PARAMS.duel_bond_wei  # B's free stake covers a full bond
        expected = settled_round_one(r, v_a, v_b, reserve)
        assert {a: r.change_wei(a) for a in addresses} == {a: expected.get(a, 0) for a in addresses}
        if r.a not in seats:  # A never gains from a duel (its seats may earn, as anyone's)
            assert r.change_wei(r.a) == (-r.bond_wei if r.outcome == "b_won" else 0)
    # nobody is excluded from the seats: the duel's own parties are drawn onto its panel, by their stake
    assert any({r.origin, r.a, r.b} & set(r.rounds[0].seats) for r in results)
    assert any(set(r.rounds[0].seats) - {r.origin, r.a, r.b} for r in results)
    # the verdict weight is in play: some coherent seats were paid other than the plain fee
    scales = [verdict_scale(r.outcome, v_a, v_b) for r, (v_a, v_b, _) in zip(results, before, strict=True)]
    assert any(num != den for num, den in scales)


def test_the_same_seed_gives_the_same_duels_and_another_seed_others() -> None:
    def signature(seed: str) -> list[tuple[object, ...]]:
        chain, addresses = network(seed)
        return [(r.b, r.better, r.outcome, tuple(r.rounds[0].seats), tuple(sorted((k, tuple(v))
                 for k, v in r.delta.items()))) for r in duels(chain, addresses, 6)]

    assert signature("s1") == signature("s1")
    assert signature("s1") != signature("s2")


def test_the_better_answer_follows_the_log5_head_to_head() -> None:
    rng = random.Random(7)
    for q_a, q_b in ((0.57, 0.39), (0.5, 0.5), (0.9, 0.5)):
        n = 20_000
        wins = sum(answer_score(q_a, rng.random()) > answer_score(q_b, rng.random()) for _ in range(n))
        p = head_to_head(q_a, q_b)
        assert abs(wins / n - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_lazy_and_silent_seats_are_paid_as_the_contract_says() -> None:
    """A silent judge pays SILENT_PENALTY of stake per seat, an abstaining one neither earns nor pays; each
    also duels (seats exclude nobody), and then its seat money comes on top of its duel money."""
    chain, addresses = network(nodes=6)
    quiet, abstainer = addresses[0], addresses[1]
    chain.members[quiet].judge = silent
    chain.members[abstainer].judge = abstain
    before: list[tuple[int, int, int]] = []
    results = duels(chain, addresses, 20, before=before)
    for r, (v_a, v_b, reserve) in zip(results, before, strict=True):
        expected = settled_round_one(r, v_a, v_b, reserve)
        assert {a: r.change_wei(a) for a in addresses} == {a: expected.get(a, 0) for a in addresses}
    silent_seats = [(r, r.rounds[0].seats.count(quiet)) for r in results]
    assert any(k for _, k in silent_seats)
    for r, k in silent_seats:
        lost_bond = (r.a == quiet and r.outcome == "b_won") or (r.b == quiet and r.outcome == "a_won")
        assert r.delta.get(quiet, [0, 0])[0] == -k * PARAMS.silent_penalty_wei - lost_bond * r.bond_wei
    abstained = [r for r in results if abstainer in r.rounds[0].seats and abstainer not in (r.origin, r.a, r.b)]
    assert abstained
    for r in abstained:
        assert r.change_wei(abstainer) == 0  # an abstaining seat gets and pays nothing


def test_an_appeal_draws_a_final_panel_of_2k_plus_1_seats() -> None:
    chain, addresses = network()
    for address in addresses:
        chain.members[address].appeal = appeal_always
    results = duels(chain, addresses, 4)
    for r in results:
        assert r.appealed_by in (r.a, r.b) and r.final_round == 2
        seats = r.rounds[1].seats
        assert len(seats) == 2 * PARAMS.k_judges + 1 and seats == chain.model.get_judges(r.duel_id, 2)
    # drawn from everybody's stake, the duel's own parties included
    assert any({r.origin, r.a, r.b} & set(r.rounds[1].seats) for r in results)


def test_a_request_nobody_gives_the_challenger_cancels_the_duel() -> None:
    chain, addresses = network()
    withheld = Evidence(origin_serves_request=False, a_serves_request=False, origin_publishes=False)
    for r in duels(chain, addresses, 3, evidence=lambda run: withheld):
        assert (r.outcome, r.cancel_reason) == ("cancelled", "request_withheld") and not r.rounds
        assert r.change_wei(r.b) == PARAMS.duelist_fee_wei and r.change_wei(r.a) == 0
        assert r.reserve_change_wei == PARAMS.duel_escrow_wei - PARAMS.duelist_fee_wei
    published = Evidence(origin_serves_request=False, a_serves_request=False)
    for r in duels(chain, addresses, 2, first=3, evidence=lambda run: published):  # the origin publishes it on-chain
        assert r.outcome in ("a_won", "b_won")


def test_the_contract_refuses_work_its_executor_did_not_sign() -> None:
    chain, addresses = network()
    chain.mine_to(2 * PARAMS.epoch_blocks)
    run = DuelRun(chain, addresses[0], addresses[1], "x")
    assert not run.open(wants_duel=False)
    assert run.result.refused == "Duel: bad attestation"
    assert chain.model.liabilities_wei() == chain.model.balance_wei


def test_bench_statistics(bench: ModuleType) -> None:
    from duel_attacks import stats  # bench/duel_attacks/stats.py (loading bench/attacks.py put bench/ on sys.path)

    assert abs(stats.t975(19) - 2.093) < 0.002
    share = stats.wilson(0, 1000)
    assert share.mean == 0 and share.lo == 0 and 0.003 < share.hi < 0.005
    rng = random.Random(3)
    stat = stats.batch_stat([rng.random() for _ in range(1000)])
    assert stat.lo < 0.5 < stat.hi and stat.half < 0.05


def test_bench_cells_are_deterministic_and_well_formed(bench: ModuleType) -> None:
    first = bench.job_a1([1], 0.9, 24, 2)
    again = bench.job_a1([1], 0.9, 24, 2)
    assert [c.to_json() | {"seconds": 0} for c in first] == [c.to_json() | {"seconds": 0} for c in again]
    (cell,) = first
    assert cell.attack == "A1" and cell.duels == 24 and cell.verdict in ("PASS", "FAIL")
    assert cell.attacker is not None and cell.attacker.lo <= cell.attacker.mean <= cell.attacker.hi
    refusals = dict(cell.data["refusals"])
    assert "accepted (!)" not in refusals.values()
    assert set(refusals.values()) >= {"Duel: bad attestation", "Duel: duelist stake too low",
                                      "Duel: origin cannot duel", "Duel: work already dueled",
                                      "Duel: attestation expired"}
    assert "A1" in bench.table(first)


def test_bench_panel_grinding_changes_no_panel(bench: ModuleType) -> None:
    (cell,) = bench.job_a3([1], 0.9, 20, 2)
    same, total = cell.data["identical_panels"]
    assert total > 0 and same == total


def test_bench_lazy_judging_cells_pair_the_same_seats(bench: ModuleType) -> None:
    (cell,) = bench.job_a9([1], 0.9, 30, 2, False)
    lazy = cell.data["per_seat_wei"]
    assert lazy["abstain"]["mean"] == 0 and lazy["no_evidence"]["mean"] == 0
    assert lazy["never_reveal"]["mean"] == -PARAMS.silent_penalty_wei
