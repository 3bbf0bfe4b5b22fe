"""The duel engine (sim/duels.py) and the attack bench (bench/attacks.py) on a few duels: the contract's
lifecycle on its model, money conserved after every duel, each duel's ledger of gains and losses equal to
the balance changes, the same seed giving the same duels, and the bench's cells built from them."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ledger.model import Vote
from ledger.params import WEI_PER_CREDIT, DeploymentParams
from sim.duels import (
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
    path = Path(__file__).resolve().parents[2] / "bench" / "attacks.py"
    spec = importlib.util.spec_from_file_location("bench_attacks", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_attacks"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _bench()


def network(seed: str = "t", accuracy: float = 0.9, nodes: int = 8) -> tuple[DuelChain, list[str]]:
    chain = DuelChain(PARAMS, seed, accuracy=accuracy)
    addresses = [chain.add(f"n{i}", stake_wei=1000 * CR, credit_wei=10_000 * CR).address for i in range(nodes)]
    return chain, addresses


def duels(chain: DuelChain, addresses: list[str], count: int, first: int = 0, **kwargs: object) -> list[DuelResult]:
    out = []
    for i in range(first, first + count):
        chain.mine_to(2 * PARAMS.epoch_blocks + i * STRIDE)
        origin = random.Random(f"{chain.seed}/{i}").choice(addresses)
        a = chain.route(origin, f"d{i}")
        assert a is not None
        before = chain.balances()
        reserve = chain.model.reserve
        result = run_duel(chain, origin, a, f"d{i}", **kwargs)  # type: ignore[arg-type]
        after = chain.balances()
        model = chain.model
        assert model.liabilities_wei() == model.balance_wei  # conservation after every duel
        for address in chain.members:  # the duel's own ledger is exactly the balance changes
            change = [after[address][0] - before[address][0], after[address][1] - before[address][1]]
            assert result.delta.get(address, [0, 0]) == change
        assert result.reserve_change_wei == model.reserve - reserve
        chain.restore_stakes()
        out.append(result)
    return out


def test_a_duel_runs_the_contracts_lifecycle_and_conserves_money() -> None:
    chain, addresses = network()
    results = duels(chain, addresses, 12)
    for r in results:
        assert r.outcome in ("a_won", "b_won")
        assert r.b and r.b not in (r.origin, r.a)  # B is the model's draw: never the origin or A
        seats = r.rounds[0].seats
        assert len(seats) == PARAMS.k_judges and not {r.origin, r.a, r.b} & set(seats)
        assert r.stake_moved_wei == PARAMS.duel_bond_wei
        # The origin paid B's fee and the first panel's earned fees (4 credits per coherent seat).
        coherent = sum(v == (Vote.A if r.outcome == "a_won" else Vote.B) for v in r.rounds[0].votes)
        assert r.change_wei(r.origin) == -(PARAMS.duelist_fee_wei + coherent * PARAMS.judge_fee_wei)
        if r.outcome == "b_won":  # A's bond to B; A never gains
            assert r.change_wei(r.a) == -PARAMS.duel_bond_wei
        else:
            assert r.change_wei(r.a) == 0 and r.change_wei(r.b) == PARAMS.duelist_fee_wei - PARAMS.duel_bond_wei


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
    chain, addresses = network(nodes=6)
    chain.members[addresses[0]].judge = silent
    chain.members[addresses[1]].judge = abstain
    results = duels(chain, addresses, 20)
    silent_seats = [(r, r.rounds[0].seats.count(addresses[0])) for r in results]
    assert any(k for _, k in silent_seats)
    for r, k in silent_seats:
        if k:
            assert r.delta[addresses[0]][0] == -k * PARAMS.silent_penalty_wei
    for r in results:
        if addresses[1] in r.rounds[0].seats and addresses[1] not in (r.origin, r.a, r.b):
            assert r.change_wei(addresses[1]) == 0  # an abstaining seat gets and pays nothing


def test_an_appeal_draws_a_final_panel_of_2k_plus_1_seats() -> None:
    chain, addresses = network()
    for address in addresses:
        chain.members[address].appeal = appeal_always
    for r in duels(chain, addresses, 4):
        assert r.appealed_by in (r.a, r.b) and r.final_round == 2
        assert len(r.rounds[1].seats) == 2 * PARAMS.k_judges + 1
        assert not {r.origin, r.a, r.b} & set(r.rounds[1].seats)


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
    assert abs(bench.t975(19) - 2.093) < 0.002
    share = bench.wilson(0, 1000)
    assert share.mean == 0 and share.lo == 0 and 0.003 < share.hi < 0.005
    rng = random.Random(3)
    stat = bench.batch_stat([rng.random() for _ in range(1000)])
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
