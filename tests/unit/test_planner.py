"""node.planner: the one dispatch procedure, stepped by the live Dispatcher and by the simulator.

The planner is driven here by hand (pure: no sockets, no clock); then each drift the two copies had
before it existed is pinned, and both drivers are shown to fail when the planner is replaced, so neither
can decide on its own again.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import pytest

from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.node import planner
from wwwserve.node.planner import (
    AskPolicy,
    Delegated,
    DispatchLimits,
    Offer,
    OfferResult,
    PlanRequest,
    Refused,
    RunHere,
    Wait,
)
from wwwserve.node.policy import Action, Decision, PolicyConfig
from wwwserve.node.settings import load_settings
from wwwserve.sim.engine import EngineProfile
from wwwserve.sim.network import LatencyModel, NodeSpec, RequestSpec, SimConfig, Simulation

MODEL = "m"


@dataclass
class View:
    """A PeerView over a fixed list of peer addresses (all routable, serving MODEL)."""

    peers: list[str] = field(default_factory=lambda: ["0xA", "0xB", "0xC", "0xD"])
    draws: list[tuple[tuple[str, ...], frozenset[str]]] = field(default_factory=list)

    def any_routable(self, model: str, exclude: frozenset[str]) -> bool:
        return any(p.lower() not in exclude for p in self.peers)

    def draw(self, model: str, route: Sequence[str], seed: bytes, k: int, exclude: frozenset[str]) -> list[str]:
        self.draws.append((tuple(route), exclude))
        return [p for p in self.peers if p.lower() not in exclude and p not in route][: k + 2]

    def block_hash(self) -> bytes:
        return b"\x01" * 32


def request(serves: bool = True, route: tuple[str, ...] = (), network_serves: bool = True,
            attempt: int = 0, networked: bool = True) -> PlanRequest:
    return PlanRequest("r1", MODEL, route, serves, network_serves, networked, attempt)


def start(req: PlanRequest, view: View | None = None, limits: DispatchLimits | None = None,
          avoid: set[str] | None = None) -> tuple[Generator[planner.Step, object, planner.Outcome], object]:
    steps = planner.plan(req, view or View(), limits or DispatchLimits(), 0.0, set() if avoid is None else avoid)
    try:
        return steps, next(steps)
    except StopIteration as stop:
        return steps, stop.value


def send(steps: Generator[planner.Step, object, planner.Outcome], answer: object) -> object:
    try:
        return steps.send(answer)
    except StopIteration as stop:
        return stop.value


# ---- the procedure ----------------------------------------------------------------------------------------


def test_a_request_at_its_last_hop_or_without_peers_runs_here_or_is_not_found() -> None:
    limits = DispatchLimits(max_hops=2)
    assert start(request(route=("0x1", "0x2")), limits=limits)[1] == RunHere(queued=False)
    assert start(request(serves=False, route=("0x1", "0x2")), limits=limits)[1] == Refused("model_not_found")
    assert start(request(networked=False))[1] == RunHere(queued=False)
    assert start(request(serves=False, network_serves=False))[1] == Refused("model_not_found")


def test_local_and_queue_decisions_end_the_plan() -> None:
    steps, step = start(request())
    assert step == AskPolicy(fallback=False)
    assert send(steps, Decision(Action.LOCAL, MODEL)) == RunHere(queued=False)
    steps, _ = start(request())
    assert send(steps, Decision(Action.QUEUE, MODEL)) == RunHere(queued=True)


def test_an_offload_offers_the_drawn_candidates_and_a_taker_ends_it() -> None:
    view = View()
    steps, _ = start(request(route=("0xO",)), view)
    offer = send(steps, Decision(Action.OFFLOAD))
    assert isinstance(offer, Offer) and offer.candidates == ("0xA", "0xB", "0xC")
    assert send(steps, OfferResult("0xB", now_s=0.2)) == Delegated("0xB")


def test_nobody_taking_it_asks_the_fallback_and_a_retry_waits_then_asks_again() -> None:
    steps, _ = start(request(), limits=DispatchLimits(retry_delay_s=0.5))
    send(steps, Decision(Action.OFFLOAD))
    assert send(steps, OfferResult(None, now_s=1.0)) == AskPolicy(fallback=True)
    assert send(steps, Decision(Action.RETRY)) == Wait(1.5)  # after the offer's answers, retry_delay_s
    assert send(steps, 1.5) == AskPolicy(fallback=False)


def test_failed_candidates_are_avoided_from_then_on() -> None:
    view = View()
    avoid: set[str] = set()
    steps, _ = start(request(), view, avoid=avoid)
    send(steps, Decision(Action.OFFLOAD))
    send(steps, OfferResult(None, failed=("0xA",), now_s=0.1))
    send(steps, Decision(Action.RETRY))
    send(steps, 0.2)
    offer = send(steps, Decision(Action.OFFLOAD))
    assert avoid == {"0xa"} and isinstance(offer, Offer) and "0xA" not in offer.candidates


def test_with_no_other_server_an_offload_queues_here_at_once() -> None:
    steps, _ = start(request(), View(peers=[]))
    assert send(steps, Decision(Action.OFFLOAD)) == RunHere(queued=True)
    # ... and so does one whose every server failed this request
    steps, _ = start(request(), View(peers=["0xA"]), avoid={"0xa"})
    assert send(steps, Decision(Action.OFFLOAD)) == RunHere(queued=True)


def test_waiting_for_the_network_ends_at_the_deadline() -> None:
    limits = DispatchLimits(retry_delay_s=1.0, request_timeout_s=5.0, no_peer_wait_s=2.0)
    # a model served here: retries until the request timeout, then takes the local queue
    steps, step = start(request(), View(peers=["0xA"]), limits)
    now = 0.0
    while isinstance(step, AskPolicy | Offer | Wait):
        if isinstance(step, AskPolicy):
            step = send(steps, Decision(Action.RETRY) if step.fallback else Decision(Action.OFFLOAD))
        elif isinstance(step, Offer):
            step = send(steps, OfferResult(None, now_s=now))
        else:
            now = step.until_s
            step = send(steps, now)
    assert step == RunHere(queued=True) and now == 5.0
    # a model served only elsewhere: gives up after no_peer_wait_s with 503
    steps, step = start(request(serves=False), View(peers=["0xA"]), limits)
    now = 0.0
    while isinstance(step, Offer | Wait):
        if isinstance(step, Offer):
            step = send(steps, OfferResult(None, now_s=now))
        else:
            now = step.until_s
            step = send(steps, now)
    assert step == Refused("overloaded") and now == 2.0


def test_after_max_redispatches_failures_the_user_gets_the_error() -> None:
    limits = DispatchLimits(max_redispatches=3)
    assert start(request(attempt=2), limits=limits)[1] == AskPolicy(fallback=False)
    assert start(request(attempt=3), limits=limits)[1] == Refused("peers_failed")


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="k_exec"):
        DispatchLimits(k_exec=0)
    with pytest.raises(ValueError, match="retry_delay_s"):
        DispatchLimits(retry_delay_s=0)


# ---- one source for units and limits (the drift between the node and the simulator) --------------------


def test_node_and_simulator_take_limits_and_units_from_one_place() -> None:
    peers = load_settings(None, {}).peers
    sim, limits = SimConfig(), DispatchLimits()
    assert (sim.max_hops, sim.no_peer_wait_s, sim.max_redispatches) == (
        peers.max_hops, peers.no_peer_wait_s, peers.max_redispatches) == (
        limits.max_hops, limits.no_peer_wait_s, limits.max_redispatches)
    # One credit is the ledger's: the simulated fee is the live default fee (it was 1,000 credits).
    assert sim.fee_wei == peers.fee_wei == WEI_PER_CREDIT
    import wwwserve.sim.config as sim_config

    assert sim_config.WEI_PER_CREDIT is WEI_PER_CREDIT


PROFILE = EngineProfile("p", kv_capacity_tokens=2000, max_num_seqs=4, prefill_tokens_per_s=2000.0)
ALWAYS_OFFLOAD = PolicyConfig(target_token_usage=-1.0, offload_frequency=1.0, queue_frequency=0.0,
                              accept_frequency=1.0, auto_stake=False, fixed_stake_wei=0)


def _executor(name: str, stake_wei: int, accept: float = 1.0) -> NodeSpec:
    policy = PolicyConfig(target_token_usage=0.99, offload_frequency=0.0, queue_frequency=1.0,
                          accept_frequency=accept, auto_stake=False, fixed_stake_wei=stake_wei)
    return NodeSpec(name, PROFILE, (MODEL,), policy)


def test_the_simulator_routes_only_to_the_contracts_minimum_stake() -> None:
    """Live, a stake below MIN_STAKE is not routable; the simulator routed to any stake above 1 wei."""
    min_stake = DeploymentParams().min_stake_wei
    nodes = [NodeSpec("origin", PROFILE, ("other",), ALWAYS_OFFLOAD),
             _executor("rich", min_stake), _executor("poor", min_stake - 1)]
    requests = [RequestSpec(1.0 + i, "origin", 50, 20, MODEL) for i in range(40)]
    records = Simulation(nodes, requests, SimConfig(latency=LatencyModel(default_s=0.0))).run()
    executors = {r.executor for r in records}
    assert executors == {"rich"}


def test_a_request_for_a_model_served_only_elsewhere_gives_up_after_no_peer_wait_s() -> None:
    """Live: 503 after peers.no_peer_wait_s; the simulator waited until the request timed out."""
    min_stake = DeploymentParams().min_stake_wei
    nodes = [NodeSpec("origin", PROFILE, ("other",), ALWAYS_OFFLOAD), _executor("never", min_stake, accept=0.0)]
    config = SimConfig(latency=LatencyModel(default_s=0.0), no_peer_wait_s=7.0, request_timeout_s=600.0)
    (record,) = Simulation(nodes, [RequestSpec(1.0, "origin", 50, 20, MODEL)], config).run()
    # it failed (a 503), not timed out, after retrying every retry_delay_s (0.1 s) for 7 s
    assert record.status == "failed" and 69 <= record.retries <= 71


def test_a_request_waiting_for_a_retry_counts_in_the_user_queue_as_live() -> None:
    """`LoadSnapshot.user_queue`: requests waiting here before the engine. In the simulator a RETRY's wait;
    live, a RETRY's wait too (and a slot's)."""
    min_stake = DeploymentParams().min_stake_wei
    retrying = PolicyConfig(target_token_usage=-1.0, offload_frequency=1.0, queue_frequency=0.0,
                            accept_frequency=1.0, auto_stake=False, fixed_stake_wei=min_stake)
    nodes = [NodeSpec("origin", PROFILE, (MODEL,), retrying), _executor("never", min_stake, accept=0.0)]
    sim = Simulation(nodes, [RequestSpec(1.0, "origin", 50, 20, MODEL)],
                     SimConfig(latency=LatencyModel(default_s=0.0), request_timeout_s=3.0))
    seen: list[int] = []
    original = sim._snapshot

    def spy(node: object) -> object:
        snapshot = original(node)  # type: ignore[arg-type]
        seen.append(snapshot.user_queue)
        return snapshot

    sim._snapshot = spy  # type: ignore[method-assign]
    (record,) = sim.run()
    assert record.retries > 0 and 1 in seen


def test_the_live_request_manager_counts_a_retry_wait_in_the_user_queue() -> None:
    from wwwserve.node.backends.fake import FakeBackend
    from wwwserve.node.managers.model import ModelManager
    from wwwserve.node.managers.request import RequestManager

    requests = RequestManager(ModelManager([FakeBackend([MODEL])]), max_concurrent=1, queue_limit=4)
    assert requests.waiting_from("user") == 0
    with requests.retrying("user"):
        assert requests.waiting_from("user") == 1 and requests.waiting_from("node") == 0
    assert requests.waiting_from("user") == 0


# ---- neither driver decides on its own ------------------------------------------------------------------


def test_the_simulator_and_the_node_both_step_the_one_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    import wwwserve.node.managers.dispatch as dispatch
    import wwwserve.sim.network as network

    assert dispatch.planner is planner and network.planner is planner

    def replaced(*args: object, **kwargs: object) -> object:
        raise RuntimeError("planner replaced")

    monkeypatch.setattr(planner, "plan", replaced)
    nodes = [NodeSpec("origin", PROFILE, (MODEL,), ALWAYS_OFFLOAD)]
    with pytest.raises(RuntimeError, match="planner replaced"):
        Simulation(nodes, [RequestSpec(1.0, "origin", 50, 20, MODEL)], SimConfig()).run()


@pytest.mark.anyio
async def test_the_live_dispatcher_steps_the_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    from wwwserve.node.backends.base import GenerationRequest
    from wwwserve.node.backends.fake import FakeBackend
    from wwwserve.node.managers.dispatch import Dispatcher
    from wwwserve.node.managers.model import ModelManager
    from wwwserve.node.managers.policy import PolicyManager
    from wwwserve.node.managers.request import RequestManager
    from wwwserve.node.policy import DefaultPolicy

    models = ModelManager([FakeBackend([MODEL])])
    requests = RequestManager(models, max_concurrent=1, queue_limit=4)
    policy = PolicyManager(DefaultPolicy(PolicyConfig(), __import__("random").Random(1)), models, requests)
    dispatcher = Dispatcher(my_address="0x" + "11" * 20, chain_id=31337, requests=requests, policy=policy)
    greq = GenerationRequest("r1", MODEL, prompt="hi")
    assert await dispatcher.plan(greq, "completion", {"model": MODEL, "prompt": "hi"}) == Action.LOCAL
    monkeypatch.setattr(planner, "plan", lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("replaced")))
    with pytest.raises(RuntimeError, match="replaced"):
        await dispatcher.plan(greq, "completion", {"model": MODEL, "prompt": "hi"})
