"""The simulated network: nodes, links, the ledger's block clock, and the event loop that drives them.

One implementation, two drivers. Every decision a node makes here is made by the live node's own code,
called the same way the live node calls it:

- dispatch (`Policy.decide_dispatch`), the fallback after no peer accepted (`Policy.decide_fallback`),
  probe acceptance (`Policy.accept_probe`), auto-stake (`node.policy.stake_change_wei`) — the policy
  object comes from `node.policy.load_policy` with the node's `PolicyConfig`, seeded per node;
- what the policy is told about an engine (`node.policy.observed_load`);
- PoS candidates (`node.routing.candidates_for_delegation` with `node.routing.selection_seed` over a
  block hash), and which stake is routable (`node.routing.routable_stake_wei`).

The procedure around those calls is not copied: it is `node.planner.plan`, the generator the live
`Dispatcher.plan` steps on asyncio, stepped here in the event loop (`Simulation._step`). A node that
serves the model asks its policy; OFFLOAD draws `k_exec + 2` candidates; the first gets the request with
its probe folded in (it runs it only if it would accept); if it declines, the others are probed in
parallel and the first acceptor in candidate order gets it; nobody → the policy's fallback (QUEUE here,
or RETRY after `retry_delay_s`, until the request's deadline; a request for a model served only
elsewhere gives up after `no_peer_wait_s`). A delegated request is dispatched again at the node it reaches
(multi-hop, never back onto its route, at most `max_hops`). Units are the ledger's (`WEI_PER_CREDIT`),
the routable minimum stake the contract's; fees (`fee_wei` per delegation) go hop by hop when the answer
comes back, and an OFFLOAD needs free credit, as live.

Simplifications (each one says what it changes):
- A QUEUE decision commits the request to the node's engine. The live node offers a queued request to
  peers again every `reoffer_interval_s` until its first output (`Dispatcher.run_queued`); not modelled
  here, so a busy node's backlog stays with it and a node joining later gets none of it.
- A probe's answer is decided from the candidate's load when the probe is sent, and arrives a round
  trip later (the live candidate looks at its load half a round trip later; sub-second staleness).
- Stake changes are visible to other nodes from the next block (a transaction is mined, indexers see
  it); auto-stake ticks only while the stake is off its target or the node's load changes. Nodes online
  from time 0 start with the stake their idle load calls for (the network was running before); a node
  joining later starts from none.
- Duels (with `SimConfig.contract`; sim.duels runs them on the contract's model): the origin draws its
  blind commitment (`Policy.should_inspect`) when it delegates, and opens the duel once the answer is
  back, over work delegated straight from it (a multi-hop answer is attested to the last hop). The user
  gets A's answer only. B, the contract's draw, fetches the request from the origin one link delay after
  the seed block and runs it on its own engine (it competes with its other work); an answer not done
  by the end of the answer window is no answer (B pays its bond). Judges vote at once (their two model
  calls are not run on their engines) and reveal when the commit window ends; steps follow the
  contract's windows at the simulated block height, and the run goes on until every duel has ended.
- A node that leaves drops its work at once: requests it was executing for others are re-dispatched by
  the node that sent them one link delay later (the live sender sees the connection fail); requests of
  its own users fail. Peers stop routing to it at once (connection refused; the live node bans it).
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.node import planner, routing
from wwwserve.node import policy as policy_module
from wwwserve.node.policy import Action, LoadSnapshot, ModelLoad, PolicyConfig
from wwwserve.sim.engine import EngineModel, EngineProfile, EngineRequest

if TYPE_CHECKING:
    from wwwserve.sim.duels import ContractLedger, DuelRun

__all__ = ["LatencyModel", "Mode", "NodeSpec", "RequestRecord", "RequestSpec", "SimConfig", "Simulation"]

Mode = Literal["decentralized", "single", "centralized"]

@dataclass(frozen=True)
class NodeSpec:
    """One provider: its engine, the models it serves, its policy knobs, when it is online."""

    name: str
    profile: EngineProfile
    models: tuple[str, ...] = ("qwen3-8b",)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    region: str = "default"
    join_s: float = 0.0
    leave_s: float | None = None
    initial_credit_wei: int = 10_000 * WEI_PER_CREDIT  # 10 ETH: 100 minimum stakes, 10,000 delegation fees
    policy_path: str = policy_module.DEFAULT_POLICY_PATH
    quality: float = 0.5  # win rate against the field, for duels (sim.duels)


@dataclass(frozen=True)
class RequestSpec:
    """One user request of a workload: when, at which node, how long its prompt and answer are."""

    arrival_s: float
    source: str
    prompt_tokens: int
    output_tokens: int
    model: str = "qwen3-8b"


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request (one CSV row). `status`: done, timeout or failed."""

    rid: int
    source: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    status: str = "pending"
    executor: str = ""
    hops: int = 0
    redispatches: int = 0
    retries: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    preemptions: int = 0

    @property
    def latency_s(self) -> float | None:
        """End to end: submitted → the whole answer back at the user's node."""
        return None if self.finish_s is None else self.finish_s - self.arrival_s


@dataclass(frozen=True)
class LatencyModel:
    """One-way link delays: `default_s` inside a region, `between[(a, b)]` (seconds, one way) across."""

    default_s: float = 0.005
    between: tuple[tuple[str, str, float], ...] = ()

    def one_way(self, a: str, b: str) -> float:
        if a == b:
            return self.default_s
        for x, y, s in self.between:
            if (x == a and y == b) or (x == b and y == a):
                return s
        return self.default_s


@dataclass(frozen=True)
class SimConfig:
    """Network-wide settings of one run."""

    mode: Mode = "decentralized"
    seed: int = 0
    latency: LatencyModel = LatencyModel()
    block_time_s: float = 2.0
    request_timeout_s: float = 600.0  # the live node's user timeout (reference: 600 s)
    fee_wei: int = WEI_PER_CREDIT  # per delegation, paid to the next hop (the live peers.fee_wei default)
    max_hops: int = 3
    no_peer_wait_s: float = 30.0  # the live node's peers.no_peer_wait_s
    max_redispatches: int = 8  # the live node's peers.max_redispatches
    centralized_kv_threshold: float = 0.6  # the reference centralized dispatcher's "source node is idle"
    # PoS candidates: "full" hashes every routable peer per selection (`routing.candidates_for_delegation`,
    # what a live node does, O(N)); "tree" draws from a sum tree of the stakes (`routing.StakeIndex`,
    # O(log N), the same distribution) for networks of thousands of nodes.
    selection: Literal["full", "tree"] = "full"
    # Stake, credit and duels on the contract's reference model (sim.duels); delegation fees are then
    # not charged (vouchers are not modelled), duel fees and slashing are.
    contract: bool = False
    contract_params: DeploymentParams = field(default_factory=DeploymentParams)
    judge_accuracy: float = 1.0  # chance a judge votes for the better answer
    appeal: str = "never"  # when a duelist that lost round 1 appeals: never, split (a seat voted for it), always
    sample_every_s: float = 30.0  # stake and credit samples (contract only)


# Event kinds, in the order ties are broken at one instant (heap entries are (time, seq, kind, ...)).
_ARRIVE, _ENGINE, _RETRY, _TIMEOUT, _JOIN, _LEAVE, _STAKE, _RETURN, _VISIBLE, _USER, _DUEL, _SAMPLE = range(12)


class _Req:
    """A request in flight (the engine's payload)."""

    __slots__ = ("attempt", "avoid", "duel_of", "duel_origin", "engine_req", "executor", "model", "node_at", "plan",
                 "record", "request_id", "route", "spec")

    def __init__(self, record: RequestRecord, spec: RequestSpec) -> None:
        self.record = record
        self.spec = spec
        self.model = spec.model
        self.request_id = f"sim-{record.rid}"
        self.route: list[int] = []  # nodes it passed through before the one holding it
        self.node_at = -1
        self.executor = -1
        self.attempt = 0  # bumps on every re-dispatch, so stale events are ignored
        self.engine_req: EngineRequest | None = None
        self.duel_origin = -1  # the origin committed to duel this request's answer (its node index)
        self.duel_of: DuelRun | None = None  # on the challenger's copy of a request: its duel
        self.plan: Generator[planner.Step, object, planner.Outcome] | None = None  # waiting in a RETRY
        self.avoid: set[str] = set()  # peers that dropped it (the live sender bans them)


class _Node:
    __slots__ = ("address", "credit_wei", "engine", "engine_version", "index", "models", "next_stake_tick",
                 "online", "peer", "pending_stake", "policy", "queued_node", "queued_user", "snapshot",
                 "snapshot_key", "spec", "stake_scheduled", "stake_wei", "visible_stake_wei")

    def __init__(self, index: int, spec: NodeSpec, seed: int) -> None:
        self.index = index
        self.spec = spec
        self.address = spec.name
        self.models = frozenset(spec.models)
        self.engine = EngineModel(spec.profile)
        self.engine_version = 0
        # One seeded rng per node: a node's decisions replay exactly, whatever the others do.
        rng = random.Random(f"{seed}/{spec.name}")
        self.policy = policy_module.load_policy(spec.policy_path, spec.policy, rng)
        self.online = False
        self.credit_wei = spec.initial_credit_wei  # free (unstaked) credit
        self.stake_wei = 0  # this node's own view of its stake
        self.visible_stake_wei = 0  # what the chain shows the others
        self.pending_stake: tuple[float, int] | None = None  # (visible from, stake)
        self.next_stake_tick = 0.0
        self.stake_scheduled = False
        self.queued_user = 0  # requests waiting here for a RETRY
        self.queued_node = 0
        self.peer: routing.Peer | None = None
        self.snapshot: LoadSnapshot | None = None
        self.snapshot_key: tuple[Any, ...] | None = None


class _SimPeers:
    """The planner's `PeerView` at one simulated node: the other online nodes with routable stake (every
    one hashed, as a live node does), or the stake tree with the same distribution (`selection="tree"`)."""

    __slots__ = ("node", "sim")

    def __init__(self, sim: Simulation, node: _Node) -> None:
        self.sim = sim
        self.node = node

    def any_routable(self, model: str, exclude: frozenset[str]) -> bool:
        sim, node = self.sim, self.node
        if sim._indexes is None:
            return any(p.address.lower() not in exclude for p in sim._routable_peers(node, model))
        index = sim._indexes.get(model)
        if index is None:
            return False
        others = index.total_wei - index.stake_of(node.address)
        return others - sum(index.stake_of(sim._by_name[a].address) for a in exclude if a in sim._by_name) > 0

    def draw(self, model: str, route: Sequence[str], seed: bytes, k: int, exclude: frozenset[str]) -> list[str]:
        sim, node = self.sim, self.node
        # The draw leaves out the route; the peers to avoid are left out the same way.
        barred = [*route, *(sim._by_name[a].address for a in exclude if a in sim._by_name)]
        if sim._indexes is None:
            peers = sim._routable_peers(node, model)
            return [p.address for p in routing.candidates_for_delegation(peers, node.address, barred, seed, k, model)]
        index = sim._indexes.get(model)
        return [] if index is None else index.candidates_for_delegation(node.address, barred, seed, k)

    def block_hash(self) -> bytes:
        return self.sim.block_hash(self.sim.now)


class Simulation:
    """Runs `requests` over `nodes` under `config`; `run()` returns one `RequestRecord` per request."""

    def __init__(self, nodes: Sequence[NodeSpec], requests: Iterable[RequestSpec], config: SimConfig | None = None,
                 progress: Callable[[float, int, int], None] | None = None) -> None:
        self.config = config or SimConfig()
        if len({n.name for n in nodes}) != len(nodes):
            raise ValueError("node names must be unique")
        self.nodes = [_Node(i, spec, self.config.seed) for i, spec in enumerate(nodes)]
        self._by_name = {n.address: n for n in self.nodes}
        self._by_name.update({n.address.lower(): n for n in self.nodes})
        self._indexes: dict[str, routing.StakeIndex] | None = {} if self.config.selection == "tree" else None
        self.ledger: ContractLedger | None = None
        if self.config.contract:
            from wwwserve.sim.duels import ContractLedger

            config = self.config
            self.ledger = ContractLedger(self, config.contract_params, config.judge_accuracy, config.seed,
                                         config.appeal)
        self.requests = sorted(requests, key=lambda r: r.arrival_s)
        for spec in self.requests:
            if spec.source not in self._by_name:
                raise ValueError(f"request at {spec.arrival_s:.1f} s names an unknown node {spec.source!r}")
        self.records: list[RequestRecord] = []
        self._deadlines: deque[tuple[float, _Req]] = deque()
        self._deadline_check = False
        self._heap: list[tuple[Any, ...]] = []
        self._seq = 0
        self.now = 0.0
        self._progress = progress
        self._open = 0
        self.decisions = {action.value: 0 for action in Action}
        self.delegations = 0
        self.events = 0
        self._duels_open = 0
        self._duel_requests: dict[int, _Req] = {}  # an open duel's served request, until B is drawn
        self._duel_copies: dict[int, _Req] = {}  # the challenger's copy, while it runs

    # ---- the event queue ------------------------------------------------------------------------

    def _push(self, t: float, kind: int, *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, *args))

    def run(self) -> list[RequestRecord]:
        """Simulate until every request is done, timed out or failed."""
        for node in self.nodes:
            self._push(node.spec.join_s, _JOIN, node.index)
            if node.spec.leave_s is not None:
                self._push(node.spec.leave_s, _LEAVE, node.index)
        if self.requests:  # users arrive one after the other: one pending arrival at a time in the queue
            self._push(self.requests[0].arrival_s, _USER, 0)
        self._open = total = len(self.requests)
        report_every = max(1, total // 100)
        handlers = (self._on_arrive, self._on_engine, self._on_retry, self._on_timeout, self._on_join,
                    self._on_leave, self._on_stake, self._on_return, self._on_visible, self._on_user,
                    self._on_duel, self._on_sample)
        if self.ledger is not None:
            self._push(0.0, _SAMPLE)
        heap = self._heap
        while heap and (self._open > 0 or self._duels_open > 0):  # open duels run to their settlement
            entry = heapq.heappop(heap)
            self.now = entry[0]
            self.events += 1
            handlers[entry[2]](*entry[3:])
            if self._progress is not None and self.events % (report_every * 8) == 0:
                self._progress(self.now, total - self._open, total)
        if self._progress is not None:
            self._progress(self.now, total - self._open, total)
        if self.ledger is not None:
            self.ledger.sample(self.now)
        return self.records

    def _on_user(self, rid: int) -> None:
        spec = self.requests[rid]
        if rid + 1 < len(self.requests):
            self._push(self.requests[rid + 1].arrival_s, _USER, rid + 1)
        record = RequestRecord(rid, spec.source, spec.arrival_s, spec.prompt_tokens, spec.output_tokens)
        self.records.append(record)
        req = _Req(record, spec)
        # Deadlines come in arrival order, so they wait in a FIFO with one check event in the queue for the
        # earliest (a heap entry per request made the event queue hundreds of thousands long).
        self._deadlines.append((spec.arrival_s + self.config.request_timeout_s, req))
        if not self._deadline_check:
            self._deadline_check = True
            self._push(self._deadlines[0][0], _TIMEOUT)
        self._on_arrive(req, self._by_name[spec.source].index, 0, True)

    def _close(self, req: _Req, status: str, at_s: float) -> None:
        record = req.record
        if record.status != "pending":
            return
        record.status = status
        record.finish_s = at_s if status == "done" else None
        self._open -= 1
        req.attempt += 1  # whatever is still scheduled for it is stale now

    # ---- chain and stake --------------------------------------------------------------------------

    def block_hash(self, now_s: float) -> bytes:
        """The hash of the latest block at `now_s` (what routing seeds from)."""
        block = int(now_s // self.config.block_time_s)
        return hashlib.sha256(b"sim-block/%d/%d" % (self.config.seed, block)).digest()

    def _show_stake(self, node: _Node, stake_wei: int) -> None:
        """The chain now shows `stake_wei` as `node`'s stake (0 when it is offline)."""
        node.visible_stake_wei = stake_wei
        min_stake = self.config.contract_params.min_stake_wei  # the contract's MIN_STAKE, as a live registry
        routable = routing.routable_stake_wei(stake_wei, min_stake) if node.online else 0
        node.peer = routing.Peer(node.address, routable, node.models, node.address)
        if self._indexes is not None:
            for model in node.models:
                self._indexes.setdefault(model, routing.StakeIndex()).set(node.address, routable)

    def _stake_changed(self, node: _Node, at_s: float) -> None:
        """`node` sent a stake transaction: the others see it from block time `at_s`."""
        node.pending_stake = (at_s, node.stake_wei)
        self._push(at_s, _VISIBLE, node.index, node.stake_wei)

    def _on_visible(self, index: int, stake_wei: int) -> None:
        node = self.nodes[index]
        if node.pending_stake is not None and node.pending_stake[1] == stake_wei and node.online:
            node.pending_stake = None
            self._show_stake(node, stake_wei)

    def _auto_stake(self, node: _Node) -> None:
        """Run the live auto-stake rule for every stake interval since the last one (lazily)."""
        config = node.policy.config
        if not node.online or (not config.auto_stake and config.fixed_stake_wei is None):
            return
        interval = max(config.auto_stake_interval_s, self.config.block_time_s)
        if self.now < node.next_stake_tick:
            if not node.stake_scheduled:
                node.stake_scheduled = True
                self._push(node.next_stake_tick, _STAKE, node.index)
            return
        ticks = int((self.now - node.next_stake_tick) // interval) + 1
        node.next_stake_tick += ticks * interval
        changed = False
        for _ in range(min(ticks, 16)):
            if not self._stake_step(node):
                break
            changed = True
        if changed:
            block = self.config.block_time_s
            self._stake_changed(node, (math.floor(self.now / block) + 1) * block)
            if not node.stake_scheduled:  # look again next interval: the target may need more steps
                node.stake_scheduled = True
                self._push(node.next_stake_tick, _STAKE, node.index)

    def _stake_step(self, node: _Node) -> bool:
        """One stake interval of the live rule (`stake_change_wei`) applied; whether the stake changed."""
        delta = policy_module.stake_change_wei(node.policy, self._snapshot(node), node.stake_wei)
        if self.ledger is not None:
            # On the contract: stake more from credit (an unstake would unbond; the simulated contract
            # nodes only ever top their stake up).
            if delta <= 0 or self.ledger.add_stake(node, delta, self.now) == 0:
                return False
            node.stake_wei = self.ledger.stake_wei(node)
            return True
        if delta == 0:
            return False
        node.stake_wei += delta
        node.credit_wei -= delta
        return True

    def _on_stake(self, index: int) -> None:
        node = self.nodes[index]
        node.stake_scheduled = False
        self._auto_stake(node)

    # ---- what the policy sees --------------------------------------------------------------------

    def _snapshot(self, node: _Node) -> LoadSnapshot:
        """What the policy sees at `node` now (the same snapshot while nothing it depends on changed)."""
        credit = node.credit_wei if self.ledger is None else self.ledger.credit_wei(node)
        key = (self.now, id(node.engine), node.engine_version, node.queued_user, node.queued_node, credit)
        if node.snapshot_key == key and node.snapshot is not None:
            return node.snapshot
        kv, running, waiting = node.engine.load(self.now)
        load = policy_module.observed_load(kv, running, waiting)
        models: dict[str, ModelLoad] = dict.fromkeys(node.models, load)
        node.snapshot = LoadSnapshot(models=models, user_queue=node.queued_user, node_queue=node.queued_node,
                                     credit_wei=max(0, credit))
        node.snapshot_key = key
        return node.snapshot

    # ---- joins and leaves ---------------------------------------------------------------------------

    def _on_join(self, index: int) -> None:
        node = self.nodes[index]
        node.online = True
        node.next_stake_tick = self.now
        config = node.policy.config
        if not config.auto_stake and config.fixed_stake_wei is None:
            # Stake left to the operator: a node in a run with no staking rule stakes one unit on joining.
            node.stake_wei = config.stake_unit_wei
            node.credit_wei -= node.stake_wei
            self._stake_changed(node, self.now + self.config.block_time_s)
        if self.now == 0.0:
            # A node there from the start has been running for a while: its stake is already where its
            # (idle) load puts it, on-chain, when the first request arrives.
            for _ in range(64):
                if not self._stake_step(node):
                    break
            node.pending_stake = None
            self._show_stake(node, node.stake_wei)
            node.next_stake_tick = max(config.auto_stake_interval_s, self.config.block_time_s)
            return
        self._auto_stake(node)

    def _on_leave(self, index: int) -> None:
        node = self.nodes[index]
        node.online = False
        node.pending_stake = None
        self._show_stake(node, 0)
        engine = node.engine
        node.engine = EngineModel(node.spec.profile)  # its work is gone
        node.engine_version += 1
        lost = [r.payload for r in [*engine.waiting, *engine._running]]
        for req in lost:
            self._lost_at(req, node)

    def _lost_at(self, req: _Req, node: _Node) -> None:
        """`req` was at `node`, which went away: its sender re-dispatches it, or its user loses it."""
        if req.record.status != "pending":
            return
        if req.duel_of is not None:  # the challenger went away: it does not answer (and pays for it)
            req.record.status = "failed"
            return
        req.attempt += 1
        if not req.route:
            self._close(req, "failed", self.now)
            return
        sender = self.nodes[req.route[-1]]
        req.route.pop()
        req.avoid.add(node.address.lower())  # the live sender bans a peer whose connection failed
        req.record.redispatches += 1
        delay = self.config.latency.one_way(sender.spec.region, node.spec.region)
        self._push(self.now + delay, _ARRIVE, req, sender.index, req.attempt, False)

    # ---- requests --------------------------------------------------------------------------------------

    def _on_timeout(self) -> None:
        """Time out every request past its deadline; look again at the next open one's deadline."""
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= self.now or deadlines[0][1].record.status != "pending"):
            _, req = deadlines.popleft()
            if req.record.status == "pending":
                self._time_out(req)
        if deadlines:
            self._push(deadlines[0][0], _TIMEOUT)
        else:
            self._deadline_check = False

    def _time_out(self, req: _Req) -> None:
        if req.engine_req is not None and req.executor >= 0:
            executor = self.nodes[req.executor]
            self._settle_engine(executor, executor.engine.abort(self.now, req.engine_req))
        self._close(req, "timeout", self.now)

    def _on_arrive(self, req: _Req, index: int, attempt: int, fresh: bool) -> None:
        if attempt != req.attempt or req.record.status != "pending":
            return
        node = self.nodes[index]
        if not node.online:
            if not req.route:  # the user's own node is down: nobody to take the request
                self._close(req, "failed", self.now)
            else:
                self._lost_at(req, node)
            return
        req.node_at = index
        mode = self.config.mode
        if mode == "single":
            self._run_here(req, node)
        elif mode == "centralized":
            self._centralized(req, node)
        else:
            self._dispatch(req, node)

    def _on_retry(self, req: _Req, index: int, attempt: int, from_user: bool) -> None:
        node = self.nodes[index]
        # Every scheduled retry counted once in a queue: uncount it whatever became of the request.
        if from_user:
            node.queued_user -= 1
        else:
            node.queued_node -= 1
        if attempt != req.attempt or req.record.status != "pending" or req.plan is None:
            return
        self._auto_stake(node)
        if not node.online:
            req.plan = None
            self._on_arrive(req, index, attempt, False)  # the node went away meanwhile
            return
        steps, req.plan = req.plan, None
        self._step(req, node, steps, self.now)

    def _dispatch(self, req: _Req, node: _Node) -> None:
        """`node.planner.plan` stepped in the event loop, as the live `Dispatcher.plan` steps it on asyncio."""
        serves = req.model in node.models
        request = planner.PlanRequest(
            request_id=req.request_id, model=req.model, route=tuple(self.nodes[i].address for i in req.route),
            serves=serves, network_serves=serves or self._network_serves(req.model), attempt=req.record.redispatches)
        record = self._record_decision
        steps = planner.plan(request, _SimPeers(self, node), self._limits(node), self.now, req.avoid, record)
        self._step(req, node, steps, None)

    def _step(self, req: _Req, node: _Node, steps: Generator[planner.Step, object, planner.Outcome],
              answer: object) -> None:
        """Drive `steps` until it waits or ends: a policy question is answered at once, an offer is decided
        from the candidates' policies (answers come a round trip later), a wait is a RETRY event."""
        t = self.now  # when the last answer is known (after an offer's round trips)
        while True:
            try:
                step = steps.send(answer)
            except StopIteration as stop:
                self._outcome(req, node, stop.value, t)
                return
            if isinstance(step, planner.AskPolicy):
                snapshot = self._snapshot(node)
                answer = (node.policy.decide_fallback(req.model, snapshot) if step.fallback
                          else node.policy.decide_dispatch(req.model, snapshot))
            elif isinstance(step, planner.Offer):
                taker, t = self._offer(node, req.model, step.candidates)
                if taker is not None:
                    self._delegate(req, node, taker, t)
                    steps.close()
                    return
                answer = planner.OfferResult(None, now_s=t)
            else:
                req.plan = steps
                req.record.retries += 1
                if req.route:
                    node.queued_node += 1
                else:
                    node.queued_user += 1
                self._auto_stake(node)  # a queue counts against the stake the load calls for
                self._push(max(step.until_s, self.now), _RETRY, req, node.index, req.attempt, not req.route)
                return

    def _outcome(self, req: _Req, node: _Node, outcome: planner.Outcome, at_s: float) -> None:
        if isinstance(outcome, planner.RunHere):
            req.node_at = node.index
            self._push_run_here(req, node, at_s)
        elif isinstance(outcome, planner.Refused):  # the user gets a 404, 503 or 504
            self._close(req, "failed", self.now)
        else:  # Delegated: handled where the offer was taken
            raise AssertionError(outcome)

    def _record_decision(self, action: Action) -> None:
        self.decisions[action.value] += 1

    def _limits(self, node: _Node) -> planner.DispatchLimits:
        config = node.policy.config
        return planner.DispatchLimits(max_hops=self.config.max_hops, k_exec=config.k_exec,
                                      retry_delay_s=config.retry_delay_s,
                                      request_timeout_s=self.config.request_timeout_s,
                                      no_peer_wait_s=self.config.no_peer_wait_s,
                                      max_redispatches=self.config.max_redispatches)

    def _network_serves(self, model: str) -> bool:
        """Some registered node (online or not, as the registry shows) with routable stake serves `model`."""
        return any(other.peer is not None and other.peer.stake_wei > 0 and model in other.models
                   for other in self.nodes)

    def _routable_peers(self, node: _Node, model: str) -> list[routing.Peer]:
        """Every other online node serving `model` with routable stake (what a live node's registry holds)."""
        return [other.peer for other in self.nodes if other is not node and other.peer is not None
                and other.peer.stake_wei > 0 and other.online and model in other.models]

    def _offer(self, node: _Node, model: str, candidates: Sequence[str]) -> tuple[_Node | None, float]:
        """The live offer's outcome and when it is known: the first candidate runs the request if it would
        accept the probe folded in; else the others are probed in parallel and the first acceptor in
        candidate order takes it, once every answer before it is back."""
        latency = self.config.latency
        region = node.spec.region
        t = self.now
        first = self._by_name[candidates[0]]
        if self._accepts(first, model):
            return first, t
        t += 2 * latency.one_way(region, first.spec.region)  # its refusal comes back
        answers_at = t
        for address in candidates[1:]:
            other = self._by_name[address]
            answers_at = max(answers_at, t + 2 * latency.one_way(region, other.spec.region))
            if self._accepts(other, model):
                return other, answers_at
        return None, answers_at

    def _accepts(self, node: _Node, model: str) -> bool:
        """The candidate's `accept_probe` (a node that is down or lacks the model refuses)."""
        if not node.online or model not in node.models:
            return False
        return bool(node.policy.accept_probe(self._snapshot(node), model))

    def _delegate(self, req: _Req, node: _Node, to: _Node, at_s: float) -> None:
        self.delegations += 1
        if (self.ledger is not None and not req.route and req.duel_origin < 0 and req.duel_of is None
                and node.policy.should_inspect()):
            req.duel_origin = node.index  # committed blind, before any answer exists (Work.inspect)
        req.route.append(node.index)
        req.record.hops = max(req.record.hops, len(req.route))
        delay = self.config.latency.one_way(node.spec.region, to.spec.region)
        self._push(at_s + delay, _ARRIVE, req, to.index, req.attempt, False)

    # ---- duels (contract only) -----------------------------------------------------------------------

    def _open_duel(self, req: _Req, executor: _Node) -> None:
        """The answer is back at the origin, which committed to duel it: it opens the duel over the work
        its executor attested (only work delegated straight from the origin: a multi-hop answer was
        attested to the last hop, not to the origin)."""
        ledger = self.ledger
        if ledger is None or req.duel_origin < 0 or req.route != [req.duel_origin]:
            return
        origin = self.nodes[req.duel_origin]
        run = ledger.open(self.now, origin, executor, req.request_id)
        if run is not None:
            self._duels_open += 1
            self._duel_requests[run.duel_id] = req
            self._schedule_duel(run)

    def _schedule_duel(self, run: DuelRun) -> None:
        assert self.ledger is not None
        self._push(max(self.now, self.ledger.block_time(run.due_block)), _DUEL, run, run.due_block)

    def _on_duel(self, run: DuelRun, due: int) -> None:
        """The duel's next step is due (the contract's windows at the simulated block height)."""
        ledger = self.ledger
        assert ledger is not None
        if run.done or run.due_block != due:
            return  # stale: the challenger answered before the end of its window
        step = run.step
        copy = self._duel_copies.pop(run.duel_id, None)
        if copy is not None and copy.record.status == "pending":  # the answer window is over: B gives up
            if copy.engine_req is not None and copy.executor >= 0:
                executor = self.nodes[copy.executor]
                self._settle_engine(executor, executor.engine.abort(self.now, copy.engine_req))
            copy.record.status = "failed"
        ledger.advance(run, self.now)
        if step == "challenger" and not run.done:
            self._challenger_runs(run)
        self._after_duel_step(run)

    def _challenger_runs(self, run: DuelRun) -> None:
        """B, drawn by the contract, fetches the request from the origin and runs it on its engine (the
        user has had A's answer for a while: this copy is only for the judges)."""
        assert self.ledger is not None
        served = self._duel_requests.pop(run.duel_id)
        b = self._by_name.get(self.ledger.name.get(run.b, ""))
        if b is None or not b.online:
            return  # B does not answer; the step due at the end of the window settles it
        origin = self._by_name[self.ledger.name[run.origin]]
        shadow = RequestRecord(served.record.rid, served.record.source, served.record.arrival_s,
                               served.spec.prompt_tokens, served.spec.output_tokens)
        copy = _Req(shadow, served.spec)
        copy.request_id = served.request_id
        copy.duel_of = run
        copy.route = [origin.index]
        self._duel_copies[run.duel_id] = copy
        delay = self.config.latency.one_way(origin.spec.region, b.spec.region)
        self._push(self.now + delay, _ENGINE, b.index, -1, copy)

    def _after_duel_step(self, run: DuelRun) -> None:
        ledger = self.ledger
        assert ledger is not None
        if not run.done:
            self._schedule_duel(run)
            return
        self._duels_open -= 1
        self._duel_copies.pop(run.duel_id, None)
        self._duel_requests.pop(run.duel_id, None)
        result = run.result
        involved = {result.origin, result.a, result.b, *(seat for r in result.rounds for seat in r.seats)} - {""}
        block = self.config.block_time_s
        for address in involved:  # every seat of every round may have been paid or slashed
            node = self._by_name[ledger.name[address]]
            node.stake_wei = ledger.stake_wei(node)
            self._stake_changed(node, (math.floor(self.now / block) + 1) * block)
            self._auto_stake(node)

    def _on_sample(self) -> None:
        assert self.ledger is not None
        self.ledger.sample(self.now)
        if self._open > 0 or self._duels_open > 0:
            self._push(self.now + self.config.sample_every_s, _SAMPLE)

    def _push_run_here(self, req: _Req, node: _Node, at_s: float) -> None:
        if at_s <= self.now:
            self._run_here(req, node)
        else:  # after the probes' round trips: arrives "again" with a forced local run
            self._push(at_s, _ENGINE, node.index, -1, req)

    def _centralized(self, req: _Req, node: _Node) -> None:
        """The reference centralized dispatcher: the source node if its KV usage < 0.6, else the node with
        the least (KV usage, running + queued), over every online node; it sees every node's metrics."""
        kv, _, _ = node.engine.load(self.now)
        if kv < self.config.centralized_kv_threshold:
            self._run_here(req, node)
            return
        best = min((n for n in self.nodes if n.online and req.model in n.models),
                   key=lambda n: (n.engine.load(self.now)[0], n.engine.running + len(n.engine.waiting), n.index))
        if best is node:
            self._run_here(req, node)
            return
        req.route.append(node.index)
        req.record.hops = 1
        delay = self.config.latency.one_way(node.spec.region, best.spec.region)
        self._push(self.now + delay, _ENGINE, best.index, -1, req)

    # ---- engines ------------------------------------------------------------------------------------------

    def _run_here(self, req: _Req, node: _Node) -> None:
        engine_req = EngineRequest(req.spec.prompt_tokens, req.spec.output_tokens, payload=req)
        req.engine_req = engine_req
        req.executor = node.index
        req.node_at = node.index
        self._settle_engine(node, node.engine.submit(self.now, engine_req))

    def _settle_engine(self, node: _Node, finished: list[EngineRequest]) -> None:
        for engine_req in finished:
            self._finished(node, engine_req.payload, engine_req)
        node.engine_version += 1
        t = node.engine.next_event_s()
        if t is not None:
            self._push(t, _ENGINE, node.index, node.engine_version, None)
        if node.online:
            self._auto_stake(node)

    def _on_engine(self, index: int, version: int, req: _Req | None) -> None:
        node = self.nodes[index]
        if req is not None:  # a request to run here now (after probes, or from the central dispatcher)
            if req.record.status == "pending" and node.online:
                self._run_here(req, node)
            elif req.record.status == "pending":
                self._lost_at(req, node)
            return
        if version != node.engine_version:
            return
        self._settle_engine(node, node.engine.run_until(self.now))

    def _finished(self, node: _Node, req: _Req, engine_req: EngineRequest) -> None:
        """The answer is complete at its executor: it travels back along the route; each hop is paid."""
        if req.record.status != "pending" or req.engine_req is not engine_req:
            return
        if req.duel_of is not None:  # the challenger's answer: for the judges, never sent to a user
            req.record.status = "done"
            self._duel_copies.pop(req.duel_of.duel_id, None)
            if self.ledger is not None and self.ledger.b_answered(req.duel_of, self.now):
                self._after_duel_step(req.duel_of)
            return
        record = req.record
        record.executor = node.address
        record.preemptions = engine_req.preemptions
        latency = self.config.latency
        back = 0.0
        hops = [*req.route, node.index]
        fee = self.config.fee_wei if self.ledger is None else 0
        for upstream, downstream in itertools.pairwise(hops):
            up, down = self.nodes[upstream], self.nodes[downstream]
            back += latency.one_way(up.spec.region, down.spec.region)
            up.credit_wei -= fee
            down.credit_wei += fee
        if engine_req.first_token_s is not None:
            record.first_token_s = engine_req.first_token_s + back
        req.attempt += 1
        self._push(self.now + back, _RETURN, req)

    def _on_return(self, req: _Req) -> None:
        self._close(req, "done", self.now)
        if req.duel_origin >= 0 and req.executor >= 0:
            self._open_duel(req, self.nodes[req.executor])
