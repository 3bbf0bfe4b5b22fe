"""The simulator's network (sim/network.py), workloads, reports and `wwwserve sim`: baselines on tiny
hand-computed scenarios, conservation, determinism, join/leave, and the shared-code rule (the simulator
decides through the live node's policy and routing functions, not copies)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wwwserve.cli import app
from wwwserve.node import routing as node_routing
from wwwserve.node.policy import DefaultPolicy, PolicyConfig
from wwwserve.sim.engine import EngineProfile
from wwwserve.sim.metrics import mean_latency, slo_attainment, write_records
from wwwserve.sim.network import LatencyModel, NodeSpec, RequestSpec, SimConfig, Simulation
from wwwserve.sim.report import reproduce
from wwwserve.sim.scenarios import build, run_modes
from wwwserve.sim.workloads import (
    WorkloadError,
    azure_time_zones,
    load_swing,
    read_azure_trace,
    schedule,
    synthetic_schedule,
)

# 10 ms per step, 1000 prompt tokens/s, a 1000-token cache: timings are easy to work out.
PLAIN = EngineProfile("plain", kv_capacity_tokens=1000, max_num_seqs=8, prefill_tokens_per_s=1000.0,
                      prefill_overhead_s=0.0, step_base_s=0.01, step_per_seq_s=0.0, step_per_kv_token_s=0.0)
NO_DELAY = LatencyModel(default_s=0.0)
BUSY_SENDER = PolicyConfig(target_token_usage=0.3, offload_frequency=1.0, queue_frequency=0.0, accept_frequency=1.0,
                           auto_stake=True, stake_unit_wei=10**18)


def nodes(n: int, policy: PolicyConfig = BUSY_SENDER, profile: EngineProfile = PLAIN) -> list[NodeSpec]:
    return [NodeSpec(f"n{i}", profile, ("m",), policy) for i in range(1, n + 1)]


def req(t: float, source: str = "n1", prompt: int = 400, output: int = 100) -> RequestSpec:
    return RequestSpec(t, source, prompt, output, "m")


# ---- baselines, by hand --------------------------------------------------------------------------


def test_single_node_serves_only_its_own_users() -> None:
    records = Simulation(nodes(2), [req(0.0), req(0.0)], SimConfig(mode="single", latency=NO_DELAY)).run()
    assert [r.executor for r in records] == ["n1", "n1"]
    # Both fit the cache (800 of 1000 tokens): 0.8 s of prefill back to back, then 100 shared steps.
    assert [r.latency_s for r in records] == [pytest.approx(0.8 + 1.0)] * 2


def test_centralized_keeps_a_request_home_until_its_node_is_busy() -> None:
    # The first request puts n1 at 40 % KV (< 0.6): the second stays home (80 %); the third goes to the
    # least loaded node, n3 (n2 and n3 tie at 0 %, so by index... n2 first).
    records = Simulation(nodes(3), [req(0.0), req(0.001), req(0.002)],
                         SimConfig(mode="centralized", latency=NO_DELAY)).run()
    assert [r.executor for r in records] == ["n1", "n1", "n2"]
    assert [r.hops for r in records] == [0, 0, 1]


def test_decentralized_offloads_when_busy_and_pays_the_executor() -> None:
    specs = nodes(2)
    sim = Simulation(specs, [req(0.0), req(0.001)], SimConfig(latency=NO_DELAY, fee_wei=7))
    records = sim.run()
    # n1's target is 30 % KV: the first (40 %) runs there; then it is busy and offloads to n2, idle, which
    # accepts (accept_frequency 1) and runs it.
    assert [r.executor for r in records] == ["n1", "n2"] and records[1].hops == 1
    start = specs[0].initial_credit_wei
    assert [n.credit_wei + n.stake_wei for n in sim.nodes] == [start - 7, start + 7]  # one fee, n1 to n2
    assert sim.delegations == 1 and sim.decisions["offload"] == 1


def test_no_routable_peer_queues_at_home() -> None:
    config = PolicyConfig(target_token_usage=0.3, offload_frequency=1.0, queue_frequency=0.0, accept_frequency=1.0,
                          auto_stake=False, fixed_stake_wei=0)  # nobody stakes
    specs = [NodeSpec("n1", PLAIN, ("m",), config), NodeSpec("n2", PLAIN, ("m",), config)]
    records = Simulation(specs, [req(0.0), req(0.001)], SimConfig(latency=NO_DELAY)).run()
    assert [r.executor for r in records] == ["n1", "n1"]  # stake-less peers are not routable


# ---- conservation, determinism, join/leave ----------------------------------------------------------------


def random_requests(seed: int, count: int, sources: list[str]) -> list[RequestSpec]:
    rng = random.Random(seed)
    return [RequestSpec(rng.uniform(0, 60), rng.choice(sources), rng.randint(50, 300), rng.randint(20, 400), "m")
            for _ in range(count)]


def test_every_request_ends_exactly_once_under_churn_and_timeouts() -> None:
    specs = nodes(5, PolicyConfig(offload_frequency=0.8, queue_frequency=0.2, accept_frequency=0.8,
                                  stake_unit_wei=10**18))
    specs[1] = NodeSpec("n2", PLAIN, ("m",), specs[1].policy, leave_s=20.0)
    specs[4] = NodeSpec("n5", PLAIN, ("m",), specs[4].policy, join_s=30.0)
    requests = random_requests(3, 400, ["n1", "n2", "n3", "n4"])
    sim = Simulation(specs, requests, SimConfig(request_timeout_s=25.0, seed=3))
    records = sim.run()
    statuses = Counter(r.status for r in records)
    assert len(records) == 400 and set(statuses) <= {"done", "timeout", "failed"} and sum(statuses.values()) == 400
    assert statuses["timeout"] > 0 and statuses["failed"] > 0 and statuses["done"] > 0  # every path was taken
    for r in records:
        assert (r.finish_s is not None) == (r.status == "done")
        if r.status == "done":
            assert r.finish_s >= r.arrival_s and r.executor in {"n1", "n2", "n3", "n4", "n5"}
    # The node that left: its own users' requests after it left fail; work it ran for others was redone.
    assert all(r.status == "failed" for r in records if r.source == "n2" and r.arrival_s > 20.0)
    assert not any(r.executor == "n5" and r.finish_s is not None and r.finish_s < 30.0 for r in records)


def test_work_on_a_node_that_leaves_is_redispatched_by_its_sender() -> None:
    specs = nodes(3)
    specs[1] = NodeSpec("n2", PLAIN, ("m",), BUSY_SENDER, leave_s=0.5)
    # n1 keeps the first (40 % KV) and offloads the second; PoS sends it to n2 or n3, by seed. Where n2 had
    # it when it left at 0.5 s, n1 sends it again, to n3.
    moved = 0
    for seed in range(8):
        records = Simulation(specs, [req(0.0), req(0.001, output=300)], SimConfig(latency=NO_DELAY, seed=seed)).run()
        assert [r.status for r in records] == ["done", "done"]
        if records[1].redispatches:
            moved += 1
            assert records[1].executor == "n3" and records[1].finish_s > 0.5
    assert moved > 0


def test_a_seed_replays_exactly(tmp_path: Path) -> None:
    specs = nodes(4, PolicyConfig(offload_frequency=0.8, queue_frequency=0.2, accept_frequency=0.8,
                                  stake_unit_wei=10**18))
    requests = random_requests(5, 300, ["n1", "n2"])
    paths = []
    for run, seed in enumerate((11, 11, 12)):
        records = Simulation(specs, requests, SimConfig(seed=seed)).run()
        paths.append(tmp_path / f"run{run}.csv")
        write_records(records, paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()  # the seed feeds the policies' draws and routing


# ---- the shared-code rule --------------------------------------------------------------------------------


def test_the_simulator_decides_through_the_live_nodes_policy_and_routing(monkeypatch: pytest.MonkeyPatch) -> None:
    import wwwserve.node.managers.offers as live_dispatch

    # The live offer's candidate draw is the very function the simulator calls.
    assert live_dispatch.candidates_for_delegation is node_routing.candidates_for_delegation
    calls: Counter[str] = Counter()
    originals = {name: getattr(DefaultPolicy, name) for name in ("decide_dispatch", "accept_probe", "decide_fallback")}
    for name, original in originals.items():
        def spy(self: DefaultPolicy, *args: object, _name: str = name, _original: object = original) -> object:
            calls[_name] += 1
            return _original(self, *args)  # type: ignore[operator]

        monkeypatch.setattr(DefaultPolicy, name, spy)
    real_candidates = node_routing.candidates_for_delegation

    def candidates(*args: object, **kwargs: object) -> object:
        calls["candidates_for_delegation"] += 1
        return real_candidates(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(node_routing, "candidates_for_delegation", candidates)
    sim = Simulation(nodes(3), random_requests(1, 60, ["n1"]), SimConfig(seed=1))
    sim.run()
    decided = sum(sim.decisions.values())
    assert calls["decide_dispatch"] > 0 and calls["candidates_for_delegation"] > 0 and calls["accept_probe"] > 0
    # Every dispatch decision the simulator counted came from the live policy's methods, and every offload
    # drew its candidates through node_routing.
    assert calls["decide_dispatch"] + calls["decide_fallback"] >= decided - calls["candidates_for_delegation"]
    assert calls["candidates_for_delegation"] == sim.decisions["offload"]

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("routing replaced")

    monkeypatch.setattr(node_routing, "candidates_for_delegation", broken)
    with pytest.raises(RuntimeError, match="routing replaced"):
        Simulation(nodes(3), random_requests(1, 60, ["n1"]), SimConfig(seed=1)).run()


# ---- workloads -------------------------------------------------------------------------------------------


def test_load_swing_rates_swap_at_half_time() -> None:
    requests = load_swing(["a", "b", "c", "d"], seed=0, high_per_s=1.0, low_per_s=0.25, half_s=400.0)
    count = Counter((r.source, r.arrival_s >= 400.0) for r in requests)
    for source, first_high in (("a", True), ("b", True), ("c", False), ("d", False)):
        high, low = (count[(source, False)], count[(source, True)]) if first_high else \
            (count[(source, True)], count[(source, False)])
        assert 320 < high < 480 and 60 < low < 140  # 400 and 100 expected


def test_the_papers_schedule_is_replayed_exactly(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps([{"idx": 0, "problem": "x" * 360, "target": "node2", "delay": 3.5},
                                {"idx": 1, "problem": "What is 1+1?", "target": "node1", "delay": 1.25}]))
    requests = schedule(path, seed=0)
    assert [(r.arrival_s, r.source) for r in requests] == [(1.25, "node1"), (3.5, "node2")]
    assert requests[1].prompt_tokens == 120  # 360 characters / 3.6 + the chat template's 20
    assert schedule(path, seed=0) == requests
    path.write_text(json.dumps([{"problem": "p", "target": "node1"}]))
    with pytest.raises(WorkloadError, match="entry 0"):
        schedule(path, seed=0)
    with pytest.raises(WorkloadError, match="cannot read"):
        schedule(tmp_path / "missing.json", seed=0)
    stand_in = synthetic_schedule(0)
    assert Counter(r.source for r in stand_in) == {"node1": 43, "node2": 9, "node3": 47, "node4": 13}


def test_azure_time_zones_rotate_each_nodes_hour(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    # 2024 format (6 digits and a zone) and 2023 format (7 digits) both parse.
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2024-05-10 00:00:00.000000+00:00,10,1\n"
                     "2024-05-10 00:00:10.0000000,20,2\n"
                     "2024-05-10 00:00:20.000000+00:00,30,3\n"
                     "2024-05-10 00:00:30.000000+00:00,40,4\n")
    rows = read_azure_trace(trace)
    assert [r.t_s for r in rows] == [0.0, 10.0, 20.0, 30.0]
    requests = azure_time_zones(rows, ["a", "b"], scale=1, cap=100)
    a = sorted((r.arrival_s, r.prompt_tokens) for r in requests if r.source == "a")
    b = sorted((round(r.arrival_s, 3), r.prompt_tokens) for r in requests if r.source == "b")
    assert a == [(0.0, 10), (10.0, 20), (20.0, 30), (30.0, 40)]
    assert b == [(5.0, 30), (15.0, 10), (15.0, 40), (25.0, 20)]  # shifted by half the 30 s span, wrapped
    assert len(azure_time_zones(rows, ["a", "b"], scale=1, cap=3)) == 3
    bundled = read_azure_trace()
    assert len(bundled) == 1937 and 3400 < bundled[-1].t_s < 3510
    trace.write_text("TIMESTAMP,ContextTokens\n2024-05-10 00:00:00,1\n")
    with pytest.raises(WorkloadError, match="row 2"):
        read_azure_trace(trace)


# ---- scenarios, the report and the CLI -----------------------------------------------------------------------------


def test_intercontinental_links_slow_every_delegation_down() -> None:
    from wwwserve.sim.scenarios import intercontinental

    scenario = build("load-swing", 0)
    far = intercontinental(scenario)
    assert [n.region for n in far.nodes] == ["us", "eu", "asia", "us"]
    near_records = run_modes(scenario, 0, ("decentralized",))["decentralized"]
    far_records = run_modes(far, 0, ("decentralized",))["decentralized"]
    assert far.config is not None and far.config.latency.one_way("us", "asia") == 0.09
    # Results come back over the links: a delegated answer is later by at least a one-way delay.
    assert mean_latency(far_records) != mean_latency(near_records)
    assert any(r.hops for r in far_records)


def test_scenarios_run_in_every_mode_and_the_network_beats_single_nodes() -> None:
    scenario = build("load-swing", 0)
    results = run_modes(scenario, 0)
    assert set(results) == {"single", "centralized", "decentralized"}
    assert all(len(records) == len(scenario.requests) for records in results.values())
    # Sharing load lowers latency against each node serving alone (the paper's headline direction).
    assert mean_latency(results["decentralized"]) < mean_latency(results["single"])
    at_least = [slo_attainment(results["decentralized"], t) >= slo_attainment(results["single"], t)
                for t in scenario.thresholds_s]
    assert sum(at_least) >= 0.7 * len(at_least)


def test_reproduce_writes_results_and_reruns_identically(tmp_path: Path) -> None:
    first = reproduce(tmp_path / "a", scenarios=["schedule", "join-leave"])
    second = reproduce(tmp_path / "b", scenarios=["schedule", "join-leave"])
    assert (tmp_path / "a" / "summary.json").read_text() == (tmp_path / "b" / "summary.json").read_text()
    assert first == second
    for name in ("schedule", "join-leave"):
        for mode in ("single", "centralized", "decentralized"):
            assert (tmp_path / "a" / name / f"{mode}.csv").stat().st_size > 0
    markdown = (tmp_path / "a" / "summary.md").read_text()
    assert "1.5x" in markdown and "| schedule |" in markdown
    if first["plots"]:
        assert (tmp_path / "a" / "slo_schedule.png").stat().st_size > 0
        assert (tmp_path / "a" / "windowed_latency_join-leave.png").stat().st_size > 0


def test_cli_sim_run_and_its_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["sim", "run", "load-swing", "--mode", "single", "--mode", "decentralized",
                                 "--json", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert set(summary["modes"]) == {"single", "decentralized"}
    assert (tmp_path / "load-swing_single.csv").exists()
    spread = runner.invoke(app, ["sim", "run", "load-swing", "-m", "decentralized", "--network", "intercontinental"])
    assert spread.exit_code == 0 and "us / eu / asia" in spread.output, spread.output
    bad = runner.invoke(app, ["sim", "run", "load-swing", "--network", "moon"])
    assert bad.exit_code == 1 and "unknown network 'moon'" in bad.output
    bad = runner.invoke(app, ["sim", "run", "nowhere"])
    assert bad.exit_code == 1 and "unknown scenario 'nowhere'" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["sim", "run", "schedule", "--schedule", str(tmp_path / "missing.json")])
    assert bad.exit_code == 1 and "cannot read the schedule" in bad.output
    bad = runner.invoke(app, ["sim", "run", "hetero", "--mode", "fast"])
    assert bad.exit_code == 1 and "unknown mode 'fast'" in bad.output


# ---- large networks and duels ------------------------------------------------------------------------------


def test_the_stake_tree_routes_like_the_full_scan() -> None:
    scenario = build("load-swing", 0)
    full = Simulation(scenario.nodes, scenario.requests, SimConfig(seed=0, selection="full"))
    tree = Simulation(scenario.nodes, scenario.requests, SimConfig(seed=0, selection="tree"))
    full_records, tree_records = full.run(), tree.run()
    assert all(r.status == "done" for r in full_records + tree_records)
    assert full.delegations > 0 and tree.delegations > 0
    # Different random streams, same distribution: the network behaves alike.
    assert abs(mean_latency(tree_records) / mean_latency(full_records) - 1) < 0.15


def test_duels_follow_the_contracts_lifecycle_and_quality_earns_credit() -> None:
    from dataclasses import replace

    from wwwserve.ledger.model import DuelStatus

    scenario = build("quality", 0)
    assert scenario.config is not None
    # One round per duel (no appeals: the default "split" is test_a_simulated_loser_appeals_by_its_policy's)
    sim = Simulation(scenario.nodes, scenario.requests, replace(scenario.config, seed=0, appeal="never"))
    records = sim.run()
    ledger = sim.ledger
    assert ledger is not None and all(r.status == "done" for r in records)
    assert len(records) == len(scenario.requests)  # the challenger's copies never reach a user
    assert {r.executor for r in records} <= {f"node{i}" for i in range(1, 7)}
    model = ledger.model
    assert model.balance_wei == model.liabilities_wei()  # the contract's conservation invariant holds
    assert model.open_duel_ids() == []  # the run went on until every duel ended
    settled = [d for d in ledger.duels if d.outcome in ("a_won", "b_won")]
    assert len(settled) >= 100
    bond = model.params.duel_bond_wei
    for d in ledger.duels:
        assert d.origin == "node0" and d.a != d.b
        final = 2 if model.get_judges(d.duel_id, 2) else 1  # the seats are the contract's draw (its last round)
        assert d.judges == tuple(ledger.name[j] for j in model.get_judges(d.duel_id, final))
        assert model.duels[d.duel_id].status in (DuelStatus.SETTLED, DuelStatus.CANCELLED)
        if d.outcome == "cancelled":
            assert d.cancel_reason in ("no_answer", "no_challenger")
    # seats are drawn by stake excluding nobody: the duel's own origin, A or B sit on some of its panels
    assert any({d.origin, d.a, d.b} & set(d.judges) for d in settled)
    for d in settled:  # one bond moves (B's to the reserve, or A's to B), and the verdict is the seat majority
        assert d.stake_moved_wei == d.bond_wei <= bond and len(d.judges) == 3
        assert (d.outcome == "a_won") == (d.votes.count("A") > d.votes.count("B"))
    # Executors hold the minimum stake (5 bonds) and duels overlap: a challenger drawn while its stake is all
    # bonded duels for less (the contract matches A's bond to B's free stake), but most duels risk a full bond.
    assert sum(d.bond_wei == bond for d in settled) > len(settled) / 2
    quality = {n.name: n.quality for n in scenario.nodes}
    wins = Counter(quality[d.a if d.outcome == "a_won" else d.b] for d in settled)
    losses = Counter(quality[d.b if d.outcome == "a_won" else d.a] for d in settled)
    assert wins[0.57] / (wins[0.57] + losses[0.57]) > wins[0.39] / (wins[0.39] + losses[0.39])
    start, end = ledger.samples[0][1], ledger.samples[-1][1]

    def gained(*names: str) -> int:
        return sum(sum(end[n]) - sum(start[n]) for n in names)

    assert gained("node1", "node2") > gained("node5", "node6")  # better answers earn: class A gains more than C
    assert gained("node0") < 0  # the origin pays for the duels it opens


def test_a_simulated_loser_appeals_by_its_policy() -> None:
    from dataclasses import replace

    scenario = build("quality", 0)
    assert scenario.config is not None
    sim = Simulation(scenario.nodes, scenario.requests[:600], replace(scenario.config, seed=0, appeal="always"))
    sim.run()
    ledger = sim.ledger
    assert ledger is not None
    decided = [d for d in ledger.duels if d.outcome in ("a_won", "b_won")]
    assert decided and all(d.round == 2 and len(d.judges) == 7 for d in decided)  # every loser appealed
    assert ledger.model.balance_wei == ledger.model.liabilities_wei()
    # The default is the live judge.appeal default: appeal when round 1's revealed votes were split.
    assert SimConfig().appeal == "split"
    sim = Simulation(scenario.nodes, scenario.requests[:600], replace(scenario.config, seed=0))
    sim.run()
    assert sim.ledger is not None
    rounds = Counter(d.round for d in sim.ledger.duels if d.outcome in ("a_won", "b_won"))
    assert rounds[1] > 0 and rounds[2] > 0  # unanimous round-1 verdicts stand, split ones went to appeal
    assert sim.ledger.model.balance_wei == sim.ledger.model.liabilities_wei()


def test_simulated_duels_are_over_the_requests_model() -> None:
    """A network serving a model other than the duel chain's default one still duels: the work attestation
    names the request's model, which the contract checks its challenger draw against."""
    from dataclasses import replace

    scenario = build("quality", 0)
    assert scenario.config is not None
    nodes = [replace(n, models=("bench-model",)) for n in scenario.nodes]
    requests = [replace(r, model="bench-model") for r in scenario.requests[:400]]
    sim = Simulation(nodes, requests, replace(scenario.config, seed=0))
    sim.run()
    assert sim.ledger is not None
    assert "Duel: unknown model" not in sim.ledger.refused
    assert any(d.outcome in ("a_won", "b_won") for d in sim.ledger.duels)
