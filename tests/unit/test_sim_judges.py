"""Simulated judges as the live ones behave (issue 16): both A/B orders and the two-order rule, no-evidence
votes and missed reveals at set rates (sim.config.JudgeBehaviour, sim.duels.judging.honest_vote), and the
ties, voids and SILENT_PENALTY fines they cause decided by the contract's model (ledger.model) in the
simulator's ledger; the default rates against what the live network measured."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import replace

import pytest

from wwwserve.ledger.model import Outcome, Vote
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.sim.config import ONE_ORDER_JUDGE, REFERENCE_JUDGE, SMOLLM2_JUDGE, JudgeBehaviour, SimConfig
from wwwserve.sim.duels import ContractLedger, DuelChain, DuelRecord, honest_vote, run_duel
from wwwserve.sim.network import Simulation
from wwwserve.sim.scenarios import build

CR = WEI_PER_CREDIT


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def votes(behaviour: JudgeBehaviour, accuracy: float, n: int = 20_000, better: Vote = Vote.A) -> Counter[Vote]:
    rng = random.Random(7)
    return Counter(honest_vote(better, accuracy, behaviour, (rng.random(), rng.random(), rng.random(), rng.random()))
                   for _ in range(n))


def quality_run(judges: JudgeBehaviour, seed: int = 0, requests: int = 600, **config: object) -> ContractLedger:
    scenario = build("quality", seed)
    assert scenario.config is not None
    sim = Simulation(scenario.nodes, scenario.requests[:requests],
                     replace(scenario.config, seed=seed, judges=judges, **config))  # type: ignore[arg-type]
    sim.run()
    assert sim.ledger is not None
    model = sim.ledger.model
    assert model.balance_wei == model.liabilities_wei() and model.open_duel_ids() == []
    return sim.ledger


def judged(ledger: ContractLedger) -> list[DuelRecord]:
    return [d for d in ledger.duels if d.outcome != "cancelled"]


# ---- one seat's vote -----------------------------------------------------------------------------------------


def test_two_orders_abstain_when_the_replies_disagree() -> None:
    # Right with p per order, the orders drawn independently: right p², wrong (1 - p)², abstain 2p(1 - p).
    n, p = 20_000, 0.8
    counts = votes(JudgeBehaviour(silent=0.0), p, n)
    for vote, expected in ((Vote.A, p * p), (Vote.B, (1 - p) ** 2), (Vote.ABSTAIN, 2 * p * (1 - p))):
        assert abs(counts[vote] / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    # B's answer better: the same shares, mirrored (the rule is in terms of duelists, not positions)
    mirrored = votes(JudgeBehaviour(silent=0.0), p, n, better=Vote.B)
    assert abs(mirrored[Vote.B] / n - p * p) < 0.02


def test_a_judge_that_names_the_answer_shown_first_always_abstains() -> None:
    assert set(votes(JudgeBehaviour(position_bias=1.0), 1.0, 2_000)) == {Vote.ABSTAIN}
    # in one order the same judge always votes A, right or wrong
    assert set(votes(JudgeBehaviour(two_orders=False, position_bias=1.0), 0.0, 2_000)) == {Vote.A}


def test_one_order_is_a_coin_at_accuracy() -> None:
    counts = votes(ONE_ORDER_JUDGE, 0.9, 20_000)
    assert Vote.ABSTAIN not in counts and abs(counts[Vote.A] / 20_000 - 0.9) < 0.01


def test_rates_outside_zero_one_are_refused() -> None:
    with pytest.raises(ValueError, match="silent"):
        JudgeBehaviour(silent=1.5)
    with pytest.raises(ValueError, match="position_bias"):
        JudgeBehaviour(position_bias=-0.1)


# ---- on the contract's model -----------------------------------------------------------------------------


def test_the_attack_bench_chain_keeps_its_judges() -> None:
    """DuelChain's default is one order without misses: the attack bench's duels are the ones it measured."""
    assert DuelChain(DeploymentParams(), "x").judges == ONE_ORDER_JUDGE
    assert SimConfig().judges == REFERENCE_JUDGE


def test_position_bias_makes_every_duel_a_tie_that_pays_and_fines_no_seat() -> None:
    chain = DuelChain(DeploymentParams(), "bias", accuracy=1.0, judges=JudgeBehaviour(position_bias=1.0, silent=0.0))
    names = [chain.add(f"n{i}", stake_wei=1000 * CR, credit_wei=10_000 * CR).address for i in range(6)]
    for i in range(10):
        chain.mine_to(chain.block + 6 * chain.params.epoch_blocks)
        result = run_duel(chain, names[0], names[1 + i % 5], f"k{i}")
        assert result.outcome == "tie" and result.stake_moved_wei == 0 and result.slashes == []
        assert all(v == Vote.ABSTAIN for r in result.rounds for v in r.votes)


def test_ties_voids_and_fines_in_the_simulated_ledger_are_the_contracts() -> None:
    """Every verdict of a simulated run is the contract model's tally of the revealed votes (void when more
    than half the seats voted no evidence, else the majority of A and B, else a tie), and every missed
    reveal is one SILENT_PENALTY slash."""
    ledger = quality_run(JudgeBehaviour(position_bias=0.4, no_evidence=0.3, silent=0.2))
    model, penalty = ledger.model, ledger.model.params.silent_penalty_wei
    outcomes = Counter(d.outcome for d in judged(ledger))
    assert outcomes["tie"] > 0 and outcomes["voided"] > 0 and outcomes["a_won"] + outcomes["b_won"] > 0
    for d in judged(ledger):
        n = len(d.votes)
        n_a, n_b, n_no = d.votes.count("A"), d.votes.count("B"), d.votes.count("NO_EVIDENCE")
        rule = "voided" if 2 * n_no > n else "a_won" if n_a > n_b else "b_won" if n_b > n_a else "tie"
        assert d.outcome == rule == Outcome(model.duels[d.duel_id].outcome).name.lower()
        if d.round == 1:  # no appeals here: the fines are the one round's silent seats
            assert [a for _, why, a in d.slashes if why == "silent_judge"] == [penalty] * d.votes.count("none")


def test_no_evidence_everywhere_voids_every_duel() -> None:
    ledger = quality_run(JudgeBehaviour(no_evidence=1.0, silent=0.0), requests=300)
    assert judged(ledger) and {d.outcome for d in judged(ledger)} == {"voided"}
    assert all(d.stake_moved_wei == 0 and d.slashes == () for d in judged(ledger))


def test_missed_reveals_are_fined_silent_penalty_in_the_simulated_ledger() -> None:
    ledger = quality_run(JudgeBehaviour(silent=1.0), requests=300)
    penalty = ledger.model.params.silent_penalty_wei
    assert judged(ledger)
    for d in judged(ledger):
        assert d.outcome == "tie" and set(d.votes) == {"none"}
        # one fine per seat: a holder of two seats pays twice
        fined = Counter(who for who, why, amount in d.slashes if why == "silent_judge" and amount == penalty)
        assert fined == Counter(d.judges) and len(d.slashes) == len(d.judges)


# ---- the defaults against the live network's measurements --------------------------------------------------


def test_the_default_judges_reproduce_the_live_networks_shares() -> None:
    """bench/results/incentives/duels.csv (the reference judge): of 208 revealed seats in duels between
    answers of different classes 0 abstained and 0 disagreed with the intended order; after the decision
    loop 8 of 195 seats missed their reveal. Over three quality runs (about 500 duels) the simulated shares
    fall inside those measurements' 95 % intervals."""
    seats: Counter[str] = Counter()
    duels = 0
    for seed in (0, 1, 2):
        ledger = quality_run(REFERENCE_JUDGE, seed=seed, requests=2000, judge_accuracy=1.0)
        duels += len(judged(ledger))
        seats.update(v for d in judged(ledger) for v in d.votes)
    assert duels >= 300
    n = sum(seats.values())
    revealed = n - seats["none"]
    low, high = wilson(0, 208)
    assert low <= seats["ABSTAIN"] / revealed <= high
    low, high = wilson(8, 195)
    assert low <= seats["none"] / n <= high
    assert seats["NO_EVIDENCE"] == 0


def test_simulated_135m_judges_abstain_as_measured() -> None:
    """bench/results/incentives/judge_accuracy.json: SmolLM2-135M named a letter in 3 of 24 single-order
    replies, always the answer shown first, and abstained on 24 of 24 questions in both orders: its
    duels are ties. In one order the simulated letter share falls in 3/24's 95 % interval, all A."""
    ledger = quality_run(SMOLLM2_JUDGE, requests=2000)
    assert judged(ledger) and {d.outcome for d in judged(ledger)} == {"tie"}
    one_order = quality_run(replace(SMOLLM2_JUDGE, two_orders=False), requests=2000)
    cast = Counter(v for d in judged(one_order) for v in d.votes)
    low, high = wilson(3, 24)
    assert cast["B"] == 0 and low <= cast["A"] / sum(cast.values()) <= high


def test_a_node_judges_by_its_own_settings() -> None:
    """NodeSpec.judges / judge_accuracy override the network's: one class of weaker judges."""
    scenario = build("quality", 0)
    assert scenario.config is not None
    nodes = [replace(n, judges=SMOLLM2_JUDGE) if n.name in ("node5", "node6") else n for n in scenario.nodes]
    sim = Simulation(nodes, scenario.requests[:600], replace(scenario.config, seed=0,
                                                             judges=JudgeBehaviour(silent=0.0), judge_accuracy=1.0))
    sim.run()
    assert sim.ledger is not None
    by_judge: dict[str, Counter[str]] = {}
    for d in judged(sim.ledger):
        for judge, vote in zip(d.judges, d.votes, strict=True):
            by_judge.setdefault(judge, Counter())[vote] += 1
    weak = by_judge["node5"] + by_judge["node6"]
    strong = sum((c for j, c in by_judge.items() if j not in ("node5", "node6")), Counter())
    assert weak and set(weak) == {"ABSTAIN"}
    assert strong and "ABSTAIN" not in strong and "none" not in strong
