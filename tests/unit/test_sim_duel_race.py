"""The duel race as the live node runs it (issue 16): in the simulator a judge's two model calls run on its own
engine, competing with its other work (sim.network_duels), and a seat whose decision is not ready when the
commit window closes stays silent, as a live judge still waiting for its model does; an offline judge is
silent; runs stay deterministic per seed. On the bench (`run_duel`) judges still commit at once."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from wwwserve.judge.runner import JUDGE_MAX_TOKENS
from wwwserve.ledger.model import SlashReason
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.sim.config import JudgeBehaviour, RequestSpec
from wwwserve.sim.duels import DuelChain, DuelRecord, DuelRun
from wwwserve.sim.network import Simulation
from wwwserve.sim.network_duels import JUDGE_TEMPLATE_TOKENS
from wwwserve.sim.records import InFlightRequest, SimNode
from wwwserve.sim.scenarios import build

CR = WEI_PER_CREDIT
NO_MISSES = JudgeBehaviour(silent=0.0)  # no failures of the judges' own: every silent seat is the race's


def quality_sim(requests: int = 600, extra: list[RequestSpec] | None = None, seed: int = 0,
                **node_changes: Any) -> Simulation:
    scenario = build("quality", seed)
    assert scenario.config is not None
    nodes = [replace(n, **node_changes[n.name]) if n.name in node_changes else n for n in scenario.nodes]
    work = sorted([*scenario.requests[:requests], *(extra or [])], key=lambda r: r.arrival_s)
    return Simulation(nodes, work, replace(scenario.config, seed=seed, judges=NO_MISSES))


def judged(sim: Simulation) -> list[DuelRecord]:
    assert sim.ledger is not None
    model = sim.ledger.model
    assert model.balance_wei == model.liabilities_wei() and model.open_duel_ids() == []
    return [d for d in sim.ledger.duels if d.outcome != "cancelled" and d.judges]


def test_a_judge_whose_engine_is_saturated_misses_its_seats_while_idle_ones_vote() -> None:
    # node6 (an executor like the others) also serves a flood of its own users' long requests, spread over the
    # whole run: its engine's queue never empties, so its judge calls wait behind it past every commit window.
    flood = [RequestSpec(i * 2.0, "node6", 400, 8000) for i in range(450)]
    sim = quality_sim(extra=flood)
    sim.run()
    duels = judged(sim)
    busy = [(d, v) for d in duels for j, v in zip(d.judges, d.votes, strict=True) if j == "node6"]
    idle = [v for d in duels for j, v in zip(d.judges, d.votes, strict=True) if j != "node6"]
    assert len(busy) >= 10 and len(idle) >= 50
    assert all(v == "none" for _, v in busy)  # every seat of the saturated judge is silent...
    assert all(v != "none" for v in idle)  # ...and every idle judge's seat voted
    for d in {d.duel_id: d for d, _ in busy}.values():  # the contract fined each of those seats
        assert sum(s == ("node6", "silent_judge") for s in (x[:2] for x in d.slashes)) == d.judges.count("node6")

    # Without the flood the same node judges like the others.
    calm = quality_sim()
    calm.run()
    assert all(v != "none" for d in judged(calm) for v in d.votes)


def test_judge_calls_run_on_the_judges_engines() -> None:
    sim = quality_sim(requests=300)
    ran: list[tuple[int, InFlightRequest]] = []
    run_here = sim._run_here

    def record(req: InFlightRequest, node: SimNode) -> None:
        ran.append((node.index, req))
        run_here(req, node)

    sim._run_here = record  # type: ignore[method-assign]
    records = sim.run()
    assert len(records) == 300  # the judges' calls never reach a user
    calls = [(i, r) for i, r in ran if r.request_id.endswith("/judge")]
    duels = judged(sim)
    assert duels
    # Two calls (both A/B orders) per seat holder and round, on the seat holder's own engine, each a prompt
    # of the request and both answers in the template, answered in JUDGE_MAX_TOKENS.
    expected: dict[str, int] = {}
    for d in duels:
        for judge in set(d.judges):
            expected[judge] = expected.get(judge, 0) + 2
    got: dict[str, int] = {}
    for index, req in calls:
        got[sim.nodes[index].address] = got.get(sim.nodes[index].address, 0) + 1
        assert req.spec.output_tokens == JUDGE_MAX_TOKENS
        assert req.record.status == "done"
        assert req.engine_req is not None and req.engine_req.admitted_at_s is not None
    assert got == expected
    served = {r.rid: r for r in records}
    for _, req in calls:
        user = served[req.record.rid]
        assert req.spec.prompt_tokens == user.prompt_tokens + 2 * user.output_tokens + JUDGE_TEMPLATE_TOKENS


def test_an_offline_judge_is_silent() -> None:
    sim = quality_sim(requests=600, node5={"leave_s": 300.0})
    sim.run()
    assert sim.ledger is not None
    late = [d for d in judged(sim) if d.opened_s > 300.0]
    gone = [v for d in late for j, v in zip(d.judges, d.votes, strict=True) if j == "node5"]
    assert gone and all(v == "none" for v in gone)
    assert all(v != "none" for d in late for j, v in zip(d.judges, d.votes, strict=True) if j != "node5")


def test_the_race_is_deterministic_per_seed() -> None:
    flood = [RequestSpec(i * 4.0, "node3", 400, 6000) for i in range(100)]

    def duels(seed: int) -> list[DuelRecord]:
        sim = quality_sim(requests=400, extra=flood, seed=seed)
        sim.run()
        return judged(sim)

    first = duels(0)
    assert any("none" in d.votes for d in first)  # the busy judge missed some seats
    assert first == duels(0)
    assert first != duels(1)


def test_a_duel_run_commits_only_the_decisions_that_are_ready() -> None:
    """`DuelRun.judge_work`: each seat holder starts when its round's seats are drawn; at the last block of
    the commit window only the ready ones commit, the others are silent and the contract fines them."""
    params = DeploymentParams()
    chain = DuelChain(params, "race", judges=NO_MISSES)
    names = [chain.add(f"n{i}", stake_wei=1000 * CR, credit_wei=10_000 * CR).address for i in range(6)]
    chain.mine_to(2 * params.epoch_blocks)
    run = DuelRun(chain, names[0], names[1], "q")
    started: list[tuple[str, int, bool]] = []

    def work(r: DuelRun, judge: str, asks_model: bool) -> Any:
        started.append((judge, r.chain.block, asks_model))
        slow = judge == started[0][0]  # the first seat holder is still waiting for its model at the deadline
        return lambda: not slow

    run.judge_work = work
    assert run.open()
    while not run.done:
        chain.mine_to(max(chain.block, run.due_block))
        run.advance()
    slow = started[0][0]
    first = run.result.rounds[0]
    assert {j for j, _, _ in started} == set(first.seats) and len(started) == len(set(first.seats))
    assert all(asks for _, _, asks in started)  # every piece of evidence is there: each asks its model
    assert len({block for _, block, _ in started}) == 1  # all start when the seats are drawn
    assert first.late == [slow]
    for judge, vote in zip(first.seats, first.votes, strict=True):
        assert (vote is None) == (judge == slow)
    fined = {who for who, why, _ in run.result.slashes if why == SlashReason.SILENT_JUDGE}
    assert fined == {slow}
    assert chain.model.balance_wei == chain.model.liabilities_wei()
