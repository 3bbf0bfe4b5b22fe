"""Why the simulator's offers were refused more often than the live network's (bench/sim_vs_live.py).

The simulated judges' model calls held a slot of their engine for the whole `judge.max_tokens` budget (16
tokens: 1.05 s on a 20 words/s fake backend), while the live fake backend's scripted judge answers one word
(0.3 s): the simulated candidates were busier when probed. `JudgeBehaviour.reply_tokens` says how long a
judge's reply is; the benchmark's scripted judges answer one token, as the live fake backend does.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

from wwwserve.judge.feature import scripted_judge
from wwwserve.judge.manager import model_asker
from wwwserve.judge.prompt import build_prompt
from wwwserve.judge.runner import JUDGE_MAX_TOKENS
from wwwserve.node.backends.fake import FakeBackend
from wwwserve.sim.config import JudgeBehaviour
from wwwserve.sim.engine import EngineRequest, SlotEngine
from wwwserve.sim.network import Simulation
from wwwserve.sim.records import InFlightRequest, SimNode

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from sim_vs_live.scenario import SCRIPTED_JUDGE, Scenario, node_specs, sim_config, workload


def judge_calls(judges: JudgeBehaviour) -> list[tuple[SimNode, EngineRequest, float]]:
    """Every judge model call of a short run of the benchmark's scenario (fake-backend engines, `SlotEngine`):
    its node, its engine request and when it finished."""
    scenario = Scenario(requests=200)
    sim = Simulation(node_specs(scenario), workload(scenario, 0), replace(sim_config(scenario, 0), judges=judges))
    done: list[tuple[SimNode, EngineRequest, float]] = []
    finished = sim._finished

    def record(node: SimNode, req: InFlightRequest, engine_req: EngineRequest) -> None:
        assert isinstance(node.engine, SlotEngine)
        if req.request_id.endswith("/judge"):
            done.append((node, engine_req, sim.now))
        finished(node, req, engine_req)

    sim._finished = record  # type: ignore[method-assign]
    sim.run()
    return done


def slots(node: SimNode) -> SlotEngine:
    assert isinstance(node.engine, SlotEngine)
    return node.engine


def test_a_judge_call_holds_its_slot_only_as_long_as_its_reply() -> None:
    short = judge_calls(JudgeBehaviour(silent=0.0, reply_tokens=1))
    budget = judge_calls(JudgeBehaviour(silent=0.0))
    assert len(short) >= 20 and len(budget) >= 20
    for node, engine_req, finished_s in short:  # one token: the slot is free once the first token is out
        assert engine_req.output_tokens == 1 and engine_req.admitted_at_s is not None
        assert abs(finished_s - engine_req.admitted_at_s - slots(node).duration_s(1)) < 1e-9
    for node, engine_req, finished_s in budget:  # unset: the whole judge.max_tokens budget
        assert engine_req.output_tokens == JUDGE_MAX_TOKENS and engine_req.admitted_at_s is not None
        assert finished_s - engine_req.admitted_at_s >= slots(node).duration_s(JUDGE_MAX_TOKENS) - 1e-9
    assert min(slots(node).duration_s(JUDGE_MAX_TOKENS) - slots(node).duration_s(1) for node, _, _ in budget) > 0.4


def test_the_live_scripted_judge_answers_as_many_tokens_as_the_benchmark_simulates() -> None:
    # The live judge asks its fake backend (node/backends/fake.py, with the duel feature's script) in both
    # orders; each reply is one word, the simulated scripted judge's reply_tokens.
    backend = FakeBackend(["m"], judge_rule="longer")
    backend.scripted = scripted_judge("longer")
    prompts = build_prompt("the question", "same answer", "same answer")
    results: list[str] = []

    async def generate(req: object) -> object:
        result = await backend.generate(req)  # type: ignore[arg-type]
        assert result.completion_tokens == SCRIPTED_JUDGE.reply_tokens
        return result

    ask = model_asker(generate, "m")
    for prompt in (prompts.in_order, prompts.swapped):
        results.append(asyncio.run(ask(prompt, JUDGE_MAX_TOKENS)))
    assert results == ["#", "#"]
    assert SCRIPTED_JUDGE.reply_tokens == 1
    assert sim_config(Scenario(), 0).judges is SCRIPTED_JUDGE


def test_reply_tokens_must_be_positive() -> None:
    try:
        JudgeBehaviour(reply_tokens=0)
    except ValueError as exc:
        assert "reply_tokens" in str(exc)
    else:
        raise AssertionError("reply_tokens=0 was accepted")
