"""bench/sim_vs_live.py's pure parts: the simulator's fake-backend engine (sim/engine.py `SlotEngine`) against
the live fake backend's arithmetic, the workload both sides replay, the policy both sides run, the KS
distance and the summary of a run; and the scenario simulated end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import pytest

from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.sim.engine import PROFILES, EngineModel, EngineRequest, SlotEngine, fake_backend_profile
from wwwserve.sim.network import Simulation

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # bench/ is scripts, not a package
from sim_vs_live import compare, scenario


def _slots(capacity: int = 2, latency_s: float = 0.3, tokens_per_s: float = 20.0) -> EngineModel:
    return EngineModel(fake_backend_profile("f", capacity=capacity, latency_s=latency_s, tokens_per_s=tokens_per_s))


# ---- the slot engine ---------------------------------------------------------------------------------


def test_a_slots_profile_builds_a_slot_engine_and_a_vllm_profile_the_batching_model() -> None:
    assert type(_slots()) is SlotEngine
    assert type(EngineModel(PROFILES["qwen3-8b-a100"])) is EngineModel


def test_a_request_takes_the_fakes_latency_then_a_word_per_step() -> None:
    # FakeBackend._produce: the first word after latency_s, every later one 1 / tokens_per_s after the last.
    engine = _slots(latency_s=0.3, tokens_per_s=20.0)
    req = EngineRequest(10, 41)
    assert engine.submit(5.0, req) == []
    assert req.first_token_s == pytest.approx(5.3)
    assert engine.next_event_s() == pytest.approx(5.0 + 0.3 + 40 / 20.0)
    assert engine.run_until(7.2) == []
    assert engine.run_until(7.3 + 1e-6) == [req]
    assert engine.next_event_s() is None


def test_requests_beyond_capacity_wait_in_order_and_start_as_slots_free() -> None:
    engine = _slots(capacity=2, latency_s=1.0, tokens_per_s=10.0)
    short, long_, first_waiter, second_waiter = EngineRequest(0, 1), EngineRequest(0, 21), EngineRequest(0, 1), \
        EngineRequest(0, 1)
    for r in (short, long_, first_waiter, second_waiter):
        engine.submit(0.0, r)
    assert engine.load() == (1.0, 2, 2)
    # the short one ends at 1 s and its slot goes to the first waiter, which ends at 2 s, then the second
    assert engine.run_until(2.5) == [short, first_waiter]
    assert second_waiter.admitted_at_s == pytest.approx(2.0)
    assert engine.run_until(3.0) == [long_, second_waiter]
    assert engine.load() == (0.0, 0, 0)


def test_an_abort_frees_its_slot_for_the_next_waiter() -> None:
    engine = _slots(capacity=1, latency_s=1.0, tokens_per_s=10.0)
    running, waiting = EngineRequest(0, 50), EngineRequest(0, 1)
    engine.submit(0.0, running)
    engine.submit(0.0, waiting)
    assert engine.abort(0.5, running) == []
    assert waiting.admitted_at_s == 0.5
    assert engine.next_event_s() == pytest.approx(1.5)


def test_the_slot_engine_reports_the_load_the_fake_backend_reports() -> None:
    """Three requests on a two-slot FakeBackend: kv_usage = running / capacity, one waiting; the same three
    submitted to the slot engine report the same."""

    async def live_load() -> tuple[float, int, int]:
        backend = FakeBackend(["m"], latency_s=3600.0, capacity=2)
        reqs = [GenerationRequest(request_id=f"r{i}", model="m", prompt="a b c", max_tokens=2)
                for i in range(3)]
        tasks = [asyncio.create_task(backend.generate(r)) for r in reqs]
        while backend.running + backend.waiting < 3:  # until all three are inside the backend
            await asyncio.sleep(0)
        load = await backend.load()
        for r in reqs:
            await backend.abort(r.request_id)
        await asyncio.gather(*tasks, return_exceptions=True)
        return load.kv_usage, load.running, load.waiting

    engine = _slots(capacity=2)
    for _ in range(3):
        engine.submit(0.0, EngineRequest(3, 2))
    assert asyncio.run(live_load()) == engine.load() == (1.0, 2, 1)


# ---- the workload and the policy both sides get ---------------------------------------------------------


def test_the_workload_is_the_same_for_the_same_seed_and_in_range() -> None:
    s = scenario.Scenario(requests=200)
    first, again, other = scenario.workload(s, 3), scenario.workload(s, 3), scenario.workload(s, 4)
    assert first == again and first != other
    assert len(first) == 200 and all(a.arrival_s <= b.arrival_s for a, b in itertools.pairwise(first))
    names = {n for n, _ in s.nodes}
    assert {r.source for r in first} <= names and len({r.source for r in first}) == len(names)
    assert all(20 <= r.output_tokens <= 60 and r.prompt_tokens >= r.output_tokens for r in first)
    assert all(r.model == scenario.MODEL for r in first)


def test_the_live_prompt_makes_the_fake_backend_answer_the_simulated_length() -> None:
    """The live user sends `prompt_text` with max_tokens = the answer length; the fake backend's answer then
    has exactly as many words as the simulator's request has output tokens."""
    s = scenario.Scenario(requests=50)
    backend = FakeBackend([scenario.MODEL])
    for i, spec in enumerate(scenario.workload(s, 0)):
        text = scenario.prompt_text(0, i, spec)
        assert text == scenario.prompt_text(0, i, spec) and len(text.split()) == spec.prompt_tokens
        req = GenerationRequest(request_id=f"r{i}", model=scenario.MODEL, max_tokens=spec.output_tokens,
                                messages=[{"role": "user", "content": text}])  # as bench/sim_vs_live/live.py sends it
        answer, _ = backend.answer(req)
        assert len(answer.split()) == spec.output_tokens


def test_live_nodes_get_the_simulated_nodes_policy_and_engine() -> None:
    s = scenario.Scenario()
    for spec in scenario.node_specs(s):
        sets = dict(item.split("=", 1) for item in scenario.live_sets(s, spec.name))
        for key, value in sets.items():
            if key.startswith("policy."):
                assert value == str(getattr(spec.policy, key.removeprefix("policy.")))
        fake = dict(s.nodes)[spec.name]
        assert spec.profile.max_num_seqs == fake.capacity == int(sets["backend.fake.capacity"])
        assert spec.profile.prefill_overhead_s == fake.latency_s == float(sets["backend.fake.latency_s"])
        assert spec.profile.step_base_s == pytest.approx(1 / float(sets["backend.fake.tokens_per_s"]))
        assert sets["backend.kind"] == "fake" and sets["backend.fake.judge_rule"] == "longer"
    assert spec.policy.p_inspect == 0.2 and spec.policy.reoffer_interval_s == 0.0
    config = scenario.sim_config(s, 7)
    assert config.contract and config.seed == 7 and config.block_time_s == s.block_time_s


def test_a_stored_scenario_reads_back_as_it_was() -> None:
    s = scenario.Scenario(requests=7, rate_per_s=1.5)
    assert scenario.scenario_from_dict(json.loads(json.dumps(dataclasses.asdict(s)))) == s


# ---- comparing ----------------------------------------------------------------------------------------


def test_ks_distance() -> None:
    assert compare.ks_distance([1, 2, 3], [1, 2, 3]) == 0.0
    assert compare.ks_distance([1, 2], [5, 6, 7]) == 1.0
    # at 2: F1 = 2/3, F2 = 0
    assert compare.ks_distance([1, 2, 3], [2.5, 4]) == pytest.approx(2 / 3)
    assert compare.ks_critical(100, 100) == pytest.approx(1.358 * (2 / 100) ** 0.5, rel=1e-3)
    with pytest.raises(ValueError):
        compare.ks_distance([], [1])


def test_summarize_counts_shares_delegations_and_duels() -> None:
    rows = [compare.RequestRow("a", "a", 1.0, "done"), compare.RequestRow("a", "b", 3.0, "done"),
            compare.RequestRow("b", "b", 2.0, "done"), compare.RequestRow("b", "", None, "http 503")]
    duels = [compare.DuelRow("tie", "", ("ABSTAIN",) * 3), compare.DuelRow("cancelled", "no_answer"),
             compare.DuelRow("open")]
    s = compare.summarize(rows, duels, ["a", "b", "c"])
    assert s["shares"] == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3), "c": 0.0}
    assert s["delegation_rate"] == pytest.approx(1 / 3) and s["failed"] == 1
    assert (s["latency_mean_s"], s["latency_p50_s"], s["latency_p90_s"]) == (2.0, 2.0, pytest.approx(2.8))
    assert s["duels_opened"] == 3 and s["duels_settled"] == 1
    assert s["duel_outcomes"]["tie"] == 1 and s["duel_outcomes"]["cancelled"] == 1 and s["duel_outcomes"]["open"] == 1
    assert s["cancel_reasons"] == {"no_answer": 1} and s["votes"] == {"ABSTAIN": 3}
    assert s["decisions"] is None  # not counted
    counted = compare.summarize(rows, duels, ["a", "b"], {"local": 3, "offload": 1, "other": 9})
    assert counted["decisions"] == {"local": 3.0, "offload": 1.0, "queue": 0.0, "retry": 0.0}


def test_the_scenario_runs_in_the_simulator_on_slot_engines_with_duels() -> None:
    s = scenario.Scenario(requests=150)
    sim = Simulation(scenario.node_specs(s), scenario.workload(s, 0), scenario.sim_config(s, 0))
    records = sim.run()
    assert all(type(n.engine) is SlotEngine for n in sim.nodes)
    assert len(records) == 150 and all(r.status == "done" for r in records)
    # nobody waits less than a fake answer takes: latency_s + (words - 1) / tokens_per_s, plus two link delays
    rates = {name: p for name, p in s.nodes}
    for r in records:
        p = rates[r.executor]
        assert r.latency_s is not None and r.latency_s >= p.latency_s + (r.output_tokens - 1) / p.tokens_per_s - 1e-9
    assert sum(r.executor != r.source for r in records) > 0
    assert sim.ledger is not None and sim.ledger.duels
    # the scripted judges see two identical answers: every seat abstains, every settled duel is a tie
    assert all(d.outcome == "tie" and set(d.votes) == {"ABSTAIN"} for d in sim.ledger.duels)
