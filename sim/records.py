"""The simulation's records: what happened to each user request (`RequestRecord`, one CSV row), and the
event loop's state of a request in flight (`InFlightRequest`) and of a node (`SimNode`)."""

from __future__ import annotations

import math
import random
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wwwserve.node import planner, routing
from wwwserve.node import policy as policy_module
from wwwserve.node.policy import LoadSnapshot
from wwwserve.sim.config import NodeSpec, RequestSpec
from wwwserve.sim.engine import EngineModel, EngineRequest

if TYPE_CHECKING:
    from wwwserve.sim.duels import DuelRun

__all__ = ["InFlightRequest", "RequestRecord", "SimNode"]


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


class InFlightRequest:
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


class SimNode:
    """A provider as the event loop sees it: its engine, policy, stake and credit, what the chain shows."""

    __slots__ = ("address", "claim_due_s", "credit_wei", "engine", "engine_version", "hysteresis", "index",
                 "models", "next_stake_tick", "online", "peer", "pending_stake", "policy", "queued_node",
                 "queued_user", "snapshot", "snapshot_key", "spec", "stake_seen", "stake_wei", "visible_stake_wei",
                 "wake_s", "withdraw_due_s")

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
        self.next_stake_tick = 0.0  # when auto-stake looks next (one look per auto_stake_interval_s)
        # auto-stake's hold on moves (the live loop's, one per node process; None with a fixed stake)
        self.hysteresis: policy_module.StakeHysteresis | None = None
        self.stake_seen: LoadSnapshot | None = None  # what the policy saw at the last look-up: the load since
        self.wake_s = math.inf  # the earliest ledger-loop (STAKE) event in the queue
        self.claim_due_s = math.inf  # the next voucher claim, while this node holds unclaimed vouchers
        self.withdraw_due_s = math.inf  # when its unbonding stake can be withdrawn (contract)
        self.queued_user = 0  # requests waiting here for a RETRY
        self.queued_node = 0
        self.peer: routing.Peer | None = None
        self.snapshot: LoadSnapshot | None = None
        self.snapshot_key: tuple[Any, ...] | None = None
