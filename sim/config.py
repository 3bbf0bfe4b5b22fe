"""What a simulation run is given: the providers (`NodeSpec`), the user requests (`RequestSpec`), the links
between regions (`LatencyModel`) and the network-wide settings (`SimConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.node import policy as policy_module
from wwwserve.node.policy import PolicyConfig
from wwwserve.sim.engine import EngineProfile

__all__ = ["LatencyModel", "Mode", "NodeSpec", "RequestSpec", "SimConfig"]

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

