"""The simulator's money moves as the live node's (issue 16): auto-stake through the live stake loop's look
(`node.policy.stake_look_wei`, held back by `StakeHysteresis`), unstaking on the contract through
`requestUnstake` and `withdrawStake`, and delegation fees as vouchers the payee claims on the contract's
model, bounded by the origin's free credit."""

from __future__ import annotations

import heapq
import math
import random

from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.node.policy import DefaultPolicy, LoadSnapshot, ModelLoad, PolicyConfig, StakeHysteresis, stake_look_wei
from wwwserve.sim.engine import EngineProfile
from wwwserve.sim.network import LatencyModel, NodeSpec, RequestSpec, SimConfig, Simulation
from wwwserve.sim.network_core import STAKE, VISIBLE

PLAIN = EngineProfile("plain", kv_capacity_tokens=1000, max_num_seqs=8, prefill_tokens_per_s=1000.0,
                      prefill_overhead_s=0.0, step_base_s=0.01, step_per_seq_s=0.0, step_per_kv_token_s=0.0)
NO_DELAY = LatencyModel(default_s=0.0)
MIN_STAKE = DeploymentParams().min_stake_wei
SETTLE = 5
AUTO = PolicyConfig(auto_stake=True, auto_stake_settle_intervals=SETTLE, auto_stake_interval_s=1.0)
BLOCK_S = SimConfig().block_time_s


def _one_node(contract: bool = False) -> Simulation:
    sim = Simulation([NodeSpec("n1", PLAIN, ("m",), AUTO)], [], SimConfig(latency=NO_DELAY, contract=contract))
    sim._on_join(0)  # there from the start: staked where its idle load puts it
    return sim


def _drive(sim: Simulation, changes: list[tuple[float, int]], end_s: float) -> list[tuple[float, int]]:
    """Run `sim`'s ledger events, setting the node's user queue to q at each (t, q) of `changes` (the only
    thing that changes what its policy sees: its engine stays idle); the stake moves it made, (time, wei)."""
    node = sim.nodes[0]
    moves: list[tuple[float, int]] = []
    move = sim._move_stake

    def recorded(n: object, delta: int) -> bool:
        moves.append((sim.now, delta))
        return move(node, delta)

    sim._move_stake = recorded  # type: ignore[method-assign,assignment]
    handlers = {STAKE: sim._on_stake, VISIBLE: sim._on_visible}

    def run_until(t: float) -> None:
        while sim._heap and sim._heap[0][0] < t:
            entry = heapq.heappop(sim._heap)
            sim.now = entry[0]
            handlers[entry[2]](*entry[3:])

    for t, queue in changes:
        run_until(t)
        sim.now = t
        node.queued_user = queue
        sim._auto_stake(node)
    run_until(end_s)
    return moves


def _live_loop(start_stake: int, start_credit: int, changes: list[tuple[float, int]],
               end_s: float) -> list[tuple[float, int]]:
    """The live stake loop (node.managers.ledger.stake) over the same loads: a look every interval, the
    next one an interval after a move's transaction is mined (the next block)."""
    policy = DefaultPolicy(AUTO, random.Random(0))
    gate = StakeHysteresis(SETTLE)
    stake, credit = start_stake, start_credit
    moves: list[tuple[float, int]] = []
    t = AUTO.auto_stake_interval_s
    while t < end_s:
        queue = next((q for at, q in reversed(changes) if at <= t), 0)
        snapshot = LoadSnapshot(models={"m": ModelLoad(kv_usage=0.0)}, user_queue=queue, credit_wei=credit)
        delta = stake_look_wei(policy, snapshot, stake, gate, min_stake_wei=MIN_STAKE)
        if delta:
            moves.append((t, delta))
            stake, credit = stake + delta, credit - delta
            t = (math.floor(t / BLOCK_S) + 1) * BLOCK_S + AUTO.auto_stake_interval_s
        else:
            t += AUTO.auto_stake_interval_s
    return moves


def test_a_flapping_load_sends_no_stake_change() -> None:
    sim = _one_node()
    staked = sim.nodes[0].stake_wei
    assert staked == 4 * AUTO.stake_unit_wei  # idle: the policy's top target
    # A queue every other 2 s: 2 looks in a row call for unstaking, never the 5 the hold needs.
    changes = [(0.5 + 2 * i, i % 2) for i in range(1, 100)]
    assert _drive(sim, changes, 200.0) == []
    assert sim.nodes[0].stake_wei == staked


def test_a_steady_load_moves_stake_after_the_settle_looks_and_back() -> None:
    sim = _one_node()
    unit = AUTO.stake_unit_wei
    # A queue from 10.5 s: looks at 11..15 call for 2 units less; the 5th moves (down to MIN_STAKE's unit
    # count at most 2 per step: 4 -> 2 units). It ends at 40.5 s: looks 41.. call for 2 more; the 5th moves.
    moves = _drive(sim, [(10.5, 1), (40.5, 0)], 80.0)
    assert moves == [(15.0, -2 * unit), (45.0, 2 * unit)]


def test_the_simulated_stake_loop_makes_the_live_loops_moves_on_any_load_sequence() -> None:
    rng = random.Random(16)
    for _ in range(20):
        changes, t = [], 0.0
        while t < 300.0:
            t += rng.uniform(0.25, 12.0)
            changes.append((round(t, 2) + 0.001, rng.choice((0, 0, 1))))  # never on a look or a block
        sim = _one_node()
        node = sim.nodes[0]
        expected = _live_loop(node.stake_wei, node.credit_wei, changes, 320.0)
        assert _drive(sim, changes, 320.0) == expected


def test_unstaking_on_the_contract_unbonds_and_returns_credit_only_after_the_unbonding_period() -> None:
    sim = _one_node(contract=True)
    ledger, node = sim.ledger, sim.nodes[0]
    assert ledger is not None
    unit = AUTO.stake_unit_wei
    stake0, credit0 = ledger.stake_wei(node), ledger.credit_wei(node)
    assert stake0 == node.stake_wei == 4 * unit  # the warm start staked on the model
    moves = _drive(sim, [(10.5, 1)], 16.0)
    assert moves == [(15.0, -2 * unit)]
    # requestUnstake: out of the active stake (and the draw) at once, into unbonding; no credit yet
    assert ledger.stake_wei(node) == node.stake_wei == 2 * unit
    assert ledger.unbonding_wei(node) == 2 * unit and ledger.credit_wei(node) == credit0
    due_s = ledger.withdrawable_s(node)
    params = sim.config.contract_params
    assert due_s >= 15.0 - BLOCK_S + params.unbonding_period_s
    _drive(sim, [], due_s - 0.5)
    assert ledger.unbonding_wei(node) == 2 * unit and ledger.credit_wei(node) == credit0
    _drive(sim, [], due_s + 0.5)  # withdrawStake at the first block it passes
    assert ledger.unbonding_wei(node) == 0 and ledger.credit_wei(node) == credit0 + 2 * unit
    assert ledger.model.balance_wei == ledger.model.liabilities_wei()


def _dispatcher_and_executor(dispatcher_credit_wei: int, fee_wei: int, n: int) -> Simulation:
    dispatcher = PolicyConfig(target_token_usage=-1.0, offload_frequency=1.0, queue_frequency=1.0,
                              accept_frequency=0.0, p_inspect=0.0, fixed_stake_wei=0)
    executor = PolicyConfig(target_token_usage=0.6, offload_frequency=0.0, queue_frequency=1.0,
                            accept_frequency=1.0, p_inspect=0.0, fixed_stake_wei=MIN_STAKE)
    nodes = [NodeSpec("n1", PLAIN, ("m",), dispatcher, initial_credit_wei=dispatcher_credit_wei),
             NodeSpec("n2", PLAIN, ("m",), executor)]
    # One short request every 5 s: each answer (and its fee) is back before the next arrives.
    requests = [RequestSpec(5.0 * i, "n1", 100, 100, "m") for i in range(n)]
    return Simulation(nodes, requests, SimConfig(latency=NO_DELAY, contract=True, fee_wei=fee_wei))


def _held_wei(sim: Simulation) -> int:
    ledger = sim.ledger
    assert ledger is not None
    return sum(ledger.credit_wei(n) + ledger.stake_wei(n) + ledger.unbonding_wei(n) for n in sim.nodes)


def test_fees_move_from_origin_to_executor_on_the_contract_and_conserve_wei() -> None:
    fee = 3 * WEI_PER_CREDIT
    sim = _dispatcher_and_executor(1_000 * WEI_PER_CREDIT, fee, 40)
    ledger = sim.ledger
    assert ledger is not None
    origin, executor = sim.nodes
    credits0 = {n.address: ledger.credit_wei(n) for n in sim.nodes}
    held0 = _held_wei(sim)
    records = sim.run()
    assert all(r.status == "done" and r.executor == "n2" and r.hops == 1 for r in records)
    paid = fee * len(records)
    assert ledger.fees_promised_wei == paid and ledger.fees_refused == 0
    assert ledger.credit_wei(origin) == credits0["n1"] - paid
    # the executor's stake came out of its credit at the start (MIN_STAKE), the fees went in
    assert ledger.credit_wei(executor) + ledger.stake_wei(executor) == credits0["n2"] + paid
    assert ledger.owed_wei(executor) == 0 and ledger.unclaimed == {ledger.address["n1"]: 0}
    # one claimVoucher per 30 s claim interval while fees came in (~200 s), and one at the end
    assert 2 <= ledger.claims <= 9
    assert _held_wei(sim) == held0  # every wei moved from one node to another
    assert ledger.model.balance_wei == ledger.model.liabilities_wei()


def test_a_promised_fee_is_spent_at_once_and_a_node_without_free_credit_does_not_offload() -> None:
    fee = WEI_PER_CREDIT
    sim = _dispatcher_and_executor(3 * fee, fee, 10)
    ledger = sim.ledger
    assert ledger is not None
    records = sim.run()
    # three fees promised (before any claim: the free credit is gone when the vouchers are signed); then
    # the policy sees no credit, never offloads, and queues at home
    assert [r.executor for r in records] == ["n2"] * 3 + ["n1"] * 7
    assert sim.decisions["offload"] == 3 and sim.delegations == 3
    assert ledger.fees_refused == 0
    origin = sim.nodes[0]
    assert ledger.credit_wei(origin) == 0 and ledger.free_credit_wei(origin) == 0
    assert ledger.model.claimed_wei(ledger.address["n1"], ledger.address["n2"]) == 3 * fee


def test_fees_past_the_free_credit_go_unpaid_as_the_live_record_fee_refuses_them() -> None:
    fee = WEI_PER_CREDIT
    sim = _dispatcher_and_executor(3 * fee, fee, 1)
    # ten requests at once: each is offloaded while no fee is owed yet (a fee is owed when its answer is
    # back) until the executor is full, and their answers owe more fees than the three it can promise
    sim.requests = [RequestSpec(0.001 * i, "n1", 100, 100, "m") for i in range(10)]
    records = sim.run()
    ledger = sim.ledger
    assert ledger is not None
    delegated = sum(r.executor == "n2" for r in records)
    assert delegated == sim.delegations > 3
    assert ledger.fees_promised_wei == 3 * fee and ledger.fees_refused == delegated - 3
    assert ledger.credit_wei(sim.nodes[0]) == 0
    assert ledger.model.claimed_wei(ledger.address["n1"], ledger.address["n2"]) == 3 * fee
