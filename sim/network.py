"""The simulated network: nodes, links, the ledger's block clock, and the event loop that drives them.

One implementation, two drivers. Every decision a node makes here is made by the live node's own code,
called the same way the live node calls it:

- dispatch (`Policy.decide_dispatch`), the fallback after no peer accepted (`Policy.decide_fallback`),
  probe acceptance (`Policy.accept_probe`), auto-stake (`node.policy.stake_look_wei`: the live stake
  loop's look, `stake_change_wei` with the contract's MIN_STAKE held back by `StakeHysteresis`, one look
  per `auto_stake_interval_s` and the next an interval after a move's transaction is mined) — the policy
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
the routable minimum stake the contract's. Fees (`fee_wei` per delegation) are owed hop by hop when the
answer is done, each by the node that delegated to the next hop, and only as far as its free credit goes
(the live `record_fee` refuses a fee past it; the fee goes unpaid). With `SimConfig.contract` they are
cumulative vouchers on the contract's model: promised at once (the policy's credit is the on-chain credit
less what is promised and unclaimed, as the live `credit_wei()`), claimed by each payee with one signed
`claimVoucher` per origin every `voucher_claim_interval_s` (the live default, 30 s) and at the end of the
run; without it the books move at once. An OFFLOAD needs free credit, as live. On the contract auto-stake
stakes from credit (`stake`) and unstakes with `requestUnstake`: the stake leaves the draw at once and
comes back to credit by `withdrawStake` at the first block the unbonding period and the duel span allow.

Simplifications (each one says what it changes):
- A QUEUE decision commits the request to the node's engine. The live node offers a queued request to
  peers again every `reoffer_interval_s` until its first output (`Dispatcher.run_queued`); not modelled
  here, so a busy node's backlog stays with it and a node joining later gets none of it.
- A probe's answer is decided from the candidate's load when the probe is sent, and arrives a round
  trip later (the live candidate looks at its load half a round trip later; sub-second staleness).
- Stake changes are visible to other nodes from the next block (a transaction is mined, indexers see
  it). Auto-stake's looks are made lazily, when something the policy sees changes or a held-back move
  would go through: looks before that instant see the load of the previous change, so each interval is
  one look of the hysteresis, as live; what a look cannot see is the KV cache filling between two events.
  Nodes online from time 0 start with the stake their idle load calls for (the network was running
  before; their hysteresis starts settled); a node joining later starts from none, with a fresh one.
- Unstaked stake is withdrawn to credit as soon as the contract allows: the live node never sends
  `withdrawStake` itself (its operator runs `wwwserve stake withdraw`); here the operator is prompt.
- Fees are owed when the executor finishes, not when each hop gets the answer back (link delays apart,
  the same instant); vouchers are signed per fee, not batched by the FeeBook's 0.5 s flush (the amounts
  and the claims are the same); an executor never refuses an origin for owing it too much
  (`node.billing`'s credit limit); payees claim on schedule even while offline.
- Duels (with `SimConfig.contract`; sim.duels runs them on the contract's model): the origin draws its
  blind commitment (`Policy.should_inspect`) when it delegates, and opens the duel once the answer is
  back, over work delegated straight from it (a multi-hop answer is attested to the last hop). The user
  gets A's answer only. B, the contract's draw, fetches the request from the origin one link delay after
  the seed block and runs it on its own engine (it competes with its other work); an answer not done
  by the end of the answer window is no answer (B pays its bond). Each seat holder fetches the evidence
  and runs both A/B judge calls on its own engine (competing with its serving work); it commits only if
  both are done by the last block of the commit window, else its seats are silent (sim.network_duels),
  and reveals when the window ends. A duelist that lost round 1 appeals by `SimConfig.appeal` (default
  "split", the live `judge.appeal` default). Steps follow the contract's windows at the simulated block
  height, and the run goes on until every duel has ended. Not modelled: a judge on a separate endpoint
  (`judge.base_url`), the judge prompt's cut of long answers, and prompt caching between the two orders.
- A node that leaves drops its work at once: requests it was executing for others are re-dispatched by
  the node that sent them one link delay later (the live sender sees the connection fail); requests of
  its own users fail. Peers stop routing to it at once (connection refused; the live node bans it).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from wwwserve.node import planner, routing
from wwwserve.node.policy import Action
from wwwserve.sim.config import LatencyModel, Mode, NodeSpec, RequestSpec, SimConfig
from wwwserve.sim.engine import EngineRequest
from wwwserve.sim.network_core import (
    ARRIVE,
    ENGINE,
    JOIN,
    LEAVE,
    RETRY,
    RETURN,
    SAMPLE,
    TIMEOUT,
    USER,
)
from wwwserve.sim.network_duels import DuelEvents
from wwwserve.sim.network_nodes import NodeEvents
from wwwserve.sim.records import InFlightRequest, RequestRecord, SimNode

if TYPE_CHECKING:
    from wwwserve.sim.duels import ContractLedger

__all__ = ["LatencyModel", "Mode", "NodeSpec", "RequestRecord", "RequestSpec", "SimConfig", "Simulation"]


class _SimPeers:
    """The planner's `PeerView` at one simulated node: the other online nodes with routable stake (every
    one hashed, as a live node does), or the stake tree with the same distribution (`selection="tree"`)."""

    __slots__ = ("node", "sim")

    def __init__(self, sim: Simulation, node: SimNode) -> None:
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


class Simulation(NodeEvents, DuelEvents):
    """Runs `requests` over `nodes` under `config`; `run()` returns one `RequestRecord` per request.

    The parts: the event loop, dispatch and engines here; a node's stake, load and presence in
    `sim.network_nodes`; duels in `sim.network_duels`; the queue and shared state in `sim.network_core`.
    """

    def __init__(self, nodes: Sequence[NodeSpec], requests: Iterable[RequestSpec], config: SimConfig | None = None,
                 progress: Callable[[float, int, int], None] | None = None) -> None:
        self.config = config or SimConfig()
        if len({n.name for n in nodes}) != len(nodes):
            raise ValueError("node names must be unique")
        self.nodes = [SimNode(i, spec, self.config.seed) for i, spec in enumerate(nodes)]
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
        self._deadlines: deque[tuple[float, InFlightRequest]] = deque()
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
        self._duel_requests: dict[int, InFlightRequest] = {}  # an open duel's served request, until the duel ends
        self._duel_copies: dict[int, InFlightRequest] = {}  # the challenger's copy, while it runs

    # ---- the event queue ------------------------------------------------------------------------


    def run(self) -> list[RequestRecord]:
        """Simulate until every request is done, timed out or failed."""
        for node in self.nodes:
            self._push(node.spec.join_s, JOIN, node.index)
            if node.spec.leave_s is not None:
                self._push(node.spec.leave_s, LEAVE, node.index)
        if self.requests:  # users arrive one after the other: one pending arrival at a time in the queue
            self._push(self.requests[0].arrival_s, USER, 0)
        self._open = total = len(self.requests)
        report_every = max(1, total // 100)
        handlers = (self._on_arrive, self._on_engine, self._on_retry, self._on_timeout, self._on_join,
                    self._on_leave, self._on_stake, self._on_return, self._on_visible, self._on_user,
                    self._on_duel, self._on_sample)
        if self.ledger is not None:
            self._push(0.0, SAMPLE)
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
            self.settle_fees()
            self.ledger.sample(self.now)
        return self.records

    def _on_user(self, rid: int) -> None:
        spec = self.requests[rid]
        if rid + 1 < len(self.requests):
            self._push(self.requests[rid + 1].arrival_s, USER, rid + 1)
        record = RequestRecord(rid, spec.source, spec.arrival_s, spec.prompt_tokens, spec.output_tokens)
        self.records.append(record)
        req = InFlightRequest(record, spec)
        # Deadlines come in arrival order, so they wait in a FIFO with one check event in the queue for the
        # earliest (a heap entry per request made the event queue hundreds of thousands long).
        self._deadlines.append((spec.arrival_s + self.config.request_timeout_s, req))
        if not self._deadline_check:
            self._deadline_check = True
            self._push(self._deadlines[0][0], TIMEOUT)
        self._on_arrive(req, self._by_name[spec.source].index, 0, True)

    def _close(self, req: InFlightRequest, status: str, at_s: float) -> None:
        record = req.record
        if record.status != "pending":
            return
        record.status = status
        record.finish_s = at_s if status == "done" else None
        self._open -= 1
        req.attempt += 1  # whatever is still scheduled for it is stale now

    # ---- requests --------------------------------------------------------------------------------------

    def _on_timeout(self) -> None:
        """Time out every request past its deadline; look again at the next open one's deadline."""
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= self.now or deadlines[0][1].record.status != "pending"):
            _, req = deadlines.popleft()
            if req.record.status == "pending":
                self._time_out(req)
        if deadlines:
            self._push(deadlines[0][0], TIMEOUT)
        else:
            self._deadline_check = False

    def _time_out(self, req: InFlightRequest) -> None:
        if req.engine_req is not None and req.executor >= 0:
            executor = self.nodes[req.executor]
            self._settle_engine(executor, executor.engine.abort(self.now, req.engine_req))
        self._close(req, "timeout", self.now)

    def _on_arrive(self, req: InFlightRequest, index: int, attempt: int, fresh: bool) -> None:
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

    def _on_retry(self, req: InFlightRequest, index: int, attempt: int, from_user: bool) -> None:
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

    def _dispatch(self, req: InFlightRequest, node: SimNode) -> None:
        """`node.planner.plan` stepped in the event loop, as the live `Dispatcher.plan` steps it on asyncio."""
        serves = req.model in node.models
        request = planner.PlanRequest(
            request_id=req.request_id, model=req.model, route=tuple(self.nodes[i].address for i in req.route),
            serves=serves, network_serves=serves or self._network_serves(req.model), attempt=req.record.redispatches)
        record = self._record_decision
        steps = planner.plan(request, _SimPeers(self, node), self._limits(node), self.now, req.avoid, record)
        self._step(req, node, steps, None)

    def _step(self, req: InFlightRequest, node: SimNode, steps: Generator[planner.Step, object, planner.Outcome],
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
                self._push(max(step.until_s, self.now), RETRY, req, node.index, req.attempt, not req.route)
                return

    def _outcome(self, req: InFlightRequest, node: SimNode, outcome: planner.Outcome, at_s: float) -> None:
        if isinstance(outcome, planner.RunHere):
            req.node_at = node.index
            self._push_run_here(req, node, at_s)
        elif isinstance(outcome, planner.Refused):  # the user gets a 404, 503 or 504
            self._close(req, "failed", self.now)
        else:  # Delegated: handled where the offer was taken
            raise AssertionError(outcome)

    def _record_decision(self, action: Action) -> None:
        self.decisions[action.value] += 1

    def _limits(self, node: SimNode) -> planner.DispatchLimits:
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

    def _routable_peers(self, node: SimNode, model: str) -> list[routing.Peer]:
        """Every other online node serving `model` with routable stake (what a live node's registry holds)."""
        return [other.peer for other in self.nodes if other is not node and other.peer is not None
                and other.peer.stake_wei > 0 and other.online and model in other.models]

    def _offer(self, node: SimNode, model: str, candidates: Sequence[str]) -> tuple[SimNode | None, float]:
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

    def _accepts(self, node: SimNode, model: str) -> bool:
        """The candidate's `accept_probe` (a node that is down or lacks the model refuses)."""
        if not node.online or model not in node.models:
            return False
        return bool(node.policy.accept_probe(self._snapshot(node), model))

    def _delegate(self, req: InFlightRequest, node: SimNode, to: SimNode, at_s: float) -> None:
        self.delegations += 1
        if (self.ledger is not None and not req.route and req.duel_origin < 0 and req.duel_of is None
                and node.policy.should_inspect()):
            req.duel_origin = node.index  # committed blind, before any answer exists (Work.inspect)
        req.route.append(node.index)
        req.record.hops = max(req.record.hops, len(req.route))
        delay = self.config.latency.one_way(node.spec.region, to.spec.region)
        self._push(at_s + delay, ARRIVE, req, to.index, req.attempt, False)

    def _push_run_here(self, req: InFlightRequest, node: SimNode, at_s: float) -> None:
        if at_s <= self.now:
            self._run_here(req, node)
        else:  # after the probes' round trips: arrives "again" with a forced local run
            self._push(at_s, ENGINE, node.index, -1, req)

    def _centralized(self, req: InFlightRequest, node: SimNode) -> None:
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
        self._push(self.now + delay, ENGINE, best.index, -1, req)

    # ---- engines ------------------------------------------------------------------------------------------

    def _run_here(self, req: InFlightRequest, node: SimNode) -> None:
        engine_req = EngineRequest(req.spec.prompt_tokens, req.spec.output_tokens, payload=req)
        req.engine_req = engine_req
        req.executor = node.index
        req.node_at = node.index
        self._settle_engine(node, node.engine.submit(self.now, engine_req))

    def _settle_engine(self, node: SimNode, finished: list[EngineRequest]) -> None:
        for engine_req in finished:
            self._finished(node, engine_req.payload, engine_req)
        node.engine_version += 1
        t = node.engine.next_event_s()
        if t is not None:
            self._push(t, ENGINE, node.index, node.engine_version, None)
        if node.online:
            self._auto_stake(node)

    def _on_engine(self, index: int, version: int, req: InFlightRequest | None) -> None:
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

    def _finished(self, node: SimNode, req: InFlightRequest, engine_req: EngineRequest) -> None:
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
        for upstream, downstream in itertools.pairwise(hops):
            up, down = self.nodes[upstream], self.nodes[downstream]
            back += latency.one_way(up.spec.region, down.spec.region)
            self._pay_fee(up, down)
        if engine_req.first_token_s is not None:
            record.first_token_s = engine_req.first_token_s + back
        req.attempt += 1
        self._push(self.now + back, RETURN, req)

    def _on_return(self, req: InFlightRequest) -> None:
        self._close(req, "done", self.now)
        if req.duel_origin >= 0 and req.executor >= 0:
            self._open_duel(req, self.nodes[req.executor])
