"""What a simulation run is given: the providers (`NodeSpec`), the user requests (`RequestSpec`), the links
between regions (`LatencyModel`) and the network-wide settings (`SimConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.node import policy as policy_module
from wwwserve.node.policy import PolicyConfig
from wwwserve.sim.engine import EngineProfile

__all__ = ["ONE_ORDER_JUDGE", "REFERENCE_JUDGE", "SMOLLM2_JUDGE", "JudgeBehaviour", "LatencyModel", "Mode", "NodeSpec",
           "RequestSpec", "SimConfig"]

Mode = Literal["decentralized", "single", "centralized"]


@dataclass(frozen=True)
class JudgeBehaviour:
    """How a simulated judge's seat turns into a vote, beyond its accuracy (sim.duels.judging.honest_vote).

    The live judge (judge/runner.py `decide`, judge/prompt.py `combine_orders`) asks its model twice, with
    the answers as (A, B) and swapped, and votes only when both replies name the same duelist, else it
    abstains. Per order a simulated reply is: no letter at all (`no_letter`), else the answer shown first
    (`position_bias`), else the better answer with probability `accuracy` (the chain's `judge_accuracy`)
    and the other one otherwise; the orders are drawn independently, so a judge right with probability p
    per order votes right p², wrong (1 - p)² and abstains 2p(1 - p). Before asking, with probability
    `no_evidence` the judge could not get the request and votes NO_EVIDENCE (judge/evidence.py
    `evidence_vote`); after committing, with probability `silent` it misses the reveal (the contract
    fines the seat SILENT_PENALTY), whatever its strategy.

    The defaults are what the live network measured with the reference judge (`bench/incentives.py`,
    `bench/results/incentives/duels.csv`, 135 duels, 405 seats, 2026-11-30): of the 208 seats that
    revealed in duels between answers of different classes none abstained and none disagreed with the
    intended order (0 of 208: at most 1.8 %, 95 % Wilson), hence no position bias and no unreadable
    replies; no seat voted no evidence (0 of 405); after judges got a decision loop of their own the
    re-run left 8 seats silent (4 of class a, 4 of class b) in 65 duels' 195 seats: 8/195 = 0.041
    (bench/README.md; judge-only nodes' misses were not reported there, so it is a lower bound; before
    that fix 78 of 405 seats were silent).
    """

    two_orders: bool = True  # False: one order, one vote (the simulator's judges before issue 16)
    position_bias: float = 0.0  # per order, among replies that name a letter: names the answer shown first
    no_letter: float = 0.0  # per order: the reply names no letter (parses as an abstention)
    no_evidence: float = 0.0  # per seat holder and round: votes NO_EVIDENCE
    silent: float = 8 / 195  # per seat holder and round: commits but misses the reveal
    # Tokens each of its model calls answers with, i.e. how long the call holds a slot of its engine (None: the
    # whole `judge.max_tokens` budget, 16). The fake backend's scripted judge answers one word ("A", "B", "#").
    reply_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("position_bias", "no_letter", "no_evidence", "silent"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"JudgeBehaviour.{name} must be in [0, 1], got {value}")
        if self.reply_tokens is not None and self.reply_tokens < 1:
            raise ValueError(f"JudgeBehaviour.reply_tokens must be >= 1, got {self.reply_tokens}")


REFERENCE_JUDGE = JudgeBehaviour()
"""The live network's reference judge (bench/incentives.py), as measured: the defaults."""

SMOLLM2_JUDGE = JudgeBehaviour(position_bias=1.0, no_letter=21 / 24, silent=0.0)
"""SmolLM2-135M judging (bench/results/incentives/judge_accuracy.json, 8 problems x 3 class pairs): in a
single order 21 of 24 replies named no letter and the 3 that did said "A:" (the answer shown first); in
both orders it abstained 24 of 24 times. `wwwserve up`'s demo judges so (every demo duel a tie, all seats
revealed: README, `bench/demo.py --runs 5`), hence no silent seats."""

ONE_ORDER_JUDGE = JudgeBehaviour(two_orders=False, silent=0.0)
"""One order, one vote, no abstentions, no misses: right with probability `accuracy` (the attack bench's
judges, `bench/attacks.py`, and the simulator's before issue 16)."""


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
    judge_accuracy: float | None = None  # per A/B order, as a judge; None: SimConfig.judge_accuracy
    judges: JudgeBehaviour | None = None  # how it judges; None: SimConfig.judges


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
    fee_wei: int = WEI_PER_CREDIT  # per delegation, owed to the next hop (the live peers.fee_wei default)
    max_hops: int = 3
    no_peer_wait_s: float = 30.0  # the live node's peers.no_peer_wait_s
    max_redispatches: int = 8  # the live node's peers.max_redispatches
    centralized_kv_threshold: float = 0.6  # the reference centralized dispatcher's "source node is idle"
    # PoS candidates: "full" hashes every routable peer per selection (`routing.candidates_for_delegation`,
    # what a live node does, O(N)); "tree" draws from a sum tree of the stakes (`routing.StakeIndex`,
    # O(log N), the same distribution) for networks of thousands of nodes.
    selection: Literal["full", "tree"] = "full"
    # Stake, credit and duels on the contract's reference model (sim.duels): delegation fees are vouchers
    # claimed with claimVoucher every 30 s (the live default), unstaking unbonds (requestUnstake, then
    # withdrawStake), duel fees and slashing are the contract's. False: credit and stake are the
    # simulator's own books, moved at once.
    contract: bool = False
    contract_params: DeploymentParams = field(default_factory=DeploymentParams)
    judge_accuracy: float = 1.0  # per A/B order: the chance a judge's reply prefers the better answer
    judges: JudgeBehaviour = REFERENCE_JUDGE  # abstentions, no-evidence votes, missed reveals (measured live)
    # When a duelist that lost round 1 appeals: split (a seat voted for it; the live judge.appeal default),
    # never, always.
    appeal: str = "split"
    sample_every_s: float = 30.0  # stake and credit samples (contract only)

