"""The reference default policy: run locally, offload, queue or retry; accept probes; inspect; auto-stake.

Pure decisions over a `LoadSnapshot` and a seeded `random.Random`, no I/O and no clock, so the live
node's Policy manager and the discrete-event simulator make identical choices from identical inputs.
The knobs and the order of the checks follow the reference implementation (DESIGN §2, PAPER §2–§3);
where we differ it is said next to the code.

Custom policies implement the `Policy` protocol and are named by import path in the node config:
`load_policy("my_pkg.policies:Greedy", config, rng)`.
"""

from __future__ import annotations

import importlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wwwserve.errors import WWWServeError
from wwwserve.ledger.params import WEI_PER_CREDIT

__all__ = [
    "DEFAULT_POLICY_PATH",
    "Action",
    "Decision",
    "DefaultPolicy",
    "LoadSnapshot",
    "ModelLoad",
    "Policy",
    "PolicyConfig",
    "PolicyError",
    "PolicyInputError",
    "PolicyLoadError",
    "StakeHysteresis",
    "load_policy",
    "observed_load",
    "stake_change_wei",
    "stake_look_wei",
]

DEFAULT_POLICY_PATH = "wwwserve.node.policy:DefaultPolicy"

_POLICY_MEMBERS = (
    "config",
    "decide_dispatch",
    "decide_fallback",
    "accept_probe",
    "should_inspect",
    "auto_stake_target",
    "next_stake_step",
)


class PolicyError(WWWServeError):
    """Root of the policy errors."""


class PolicyInputError(PolicyError, ValueError):
    """A snapshot or argument is out of range (negative queue, KV usage outside [0, 1], ...)."""


class PolicyLoadError(PolicyError, ValueError):
    """A custom policy named by import path cannot be loaded or does not implement `Policy`."""


class PolicyConfig(BaseModel):
    """Every knob of the default policy, validated once at start-up. Defaults are the reference example."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # KV-cache usage below which a local model counts as idle: requests run locally, probes are accepted.
    # <= 0 (the reference dispatcher uses -1) means never execute locally.
    target_token_usage: float = Field(default=0.6, ge=-1.0, le=1.0)
    # Per-model override of target_token_usage (the reference sets it per model in dispatch_params).
    model_target_token_usage: dict[str, float] = Field(default_factory=dict)
    # Probability of trying the network when no local model is idle (pure dispatcher 1.0, executor 0.0).
    offload_frequency: float = Field(default=0.8, ge=0.0, le=1.0)
    # Probability of queueing on the local model anyway (after offload was not taken or found no peer).
    queue_frequency: float = Field(default=0.2, ge=0.0, le=1.0)
    # Probability of accepting a peer's probe while idle (dispatcher 0.0, executors 1.0).
    accept_frequency: float = Field(default=0.8, ge=0.0, le=1.0)
    # Probability that a delegated answer is dueled, drawn blind before delegating (reference: 0.1).
    p_inspect: float = Field(default=0.1, ge=0.0, le=1.0)
    # Executors wanted per offload; k_exec + 2 candidates are probed (DESIGN §3).
    k_exec: int = Field(default=1, ge=1, le=8)
    # Wait before re-dispatching a request that got RETRY. The reference retried on its next 0.5 s tick;
    # our dispatch is event-driven, so this only paces a node that has nowhere to send work.
    retry_delay_s: float = Field(default=0.1, gt=0.0, le=60.0)
    # How often a request queued on a busy local model is offered to peers again while it waits for its
    # first output (the policy is asked again each time; it keeps its place here). 0: never, it waits.
    reoffer_interval_s: float = Field(default=1.0, ge=0.0, le=60.0)
    # Let load drive stake (the reference newest rule, bounded: see stake_change_wei and StakeHysteresis).
    # Off by default: the operator's money moves only by their own command (`wwwserve stake ...`) or by
    # turning this on. False: hold fixed_stake_wei, or leave stake alone.
    auto_stake: bool = False
    # How often auto-stake looks at the load. Each move is an on-chain transaction, so this rate-limits them.
    auto_stake_interval_s: float = Field(default=1.0, gt=0.0)
    # Consecutive looks that must all call for a move the same way (up, or down) before auto-stake makes it:
    # a load that flaps sends no transaction, and stake is never unbonded (locked for the contract's unbonding
    # period) for a passing burst. 300 x 1 s: the load must hold for five minutes.
    auto_stake_settle_intervals: int = Field(default=300, ge=1)
    # Free credit auto-stake never stakes: it pays delegation fees and opens duels (reference: none).
    # 100 credits = 100 delegations at the default fee, or 7 duels with K = 3 judges.
    auto_stake_credit_reserve_wei: int = Field(default=100 * WEI_PER_CREDIT, ge=0)
    # Most stake units moved per interval (reference: 2).
    auto_stake_max_step: int = Field(default=2, ge=1)
    # Wei per auto-stake unit (reference: 1 credit; ours defaults to the contract's default minimum stake,
    # so one unit already makes the node routable).
    stake_unit_wei: int = Field(default=100 * WEI_PER_CREDIT, gt=0)
    # With auto_stake off: the stake to hold (wei); None leaves stake to the operator's CLI.
    fixed_stake_wei: int | None = Field(default=None, ge=0)

    @field_validator("model_target_token_usage")
    @classmethod
    def _targets_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for name, target in value.items():
            if not (math.isfinite(target) and -1.0 <= target <= 1.0):
                raise ValueError(f"target_token_usage for {name!r} must be in [-1, 1], got {target}")
        return value

    @model_validator(mode="after")
    def _one_stake_mode(self) -> PolicyConfig:
        if self.auto_stake and self.fixed_stake_wei is not None:
            raise ValueError("choose one stake mode: auto_stake=true or fixed_stake_wei, not both")
        return self

    def target_for(self, model: str) -> float:
        """The idle threshold of one local model."""
        return self.model_target_token_usage.get(model, self.target_token_usage)


def _check_count(name: str, value: int) -> None:
    if type(value) is int and value >= 0:  # the common case, checked fast (snapshots are built per decision)
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyInputError(f"{name} must be a non-negative int, got {value!r}")


@dataclass(frozen=True)
class ModelLoad:
    """Load of one local model, as its backend(s) report it (replicas are merged by the Model manager)."""

    kv_usage: float  # KV-cache usage, 0..1 (vLLM gpu_cache_usage_perc, SGLang token_usage)
    running: int = 0  # requests being generated
    waiting: int = 0  # requests queued inside the backend

    def __post_init__(self) -> None:
        # NaN fails the range test, so a broken metric cannot pass for an idle model.
        kv = self.kv_usage
        if not ((type(kv) is float or isinstance(kv, int | float)) and 0.0 <= kv <= 1.0):
            raise PolicyInputError(f"kv_usage must be in [0, 1], got {self.kv_usage!r}")
        _check_count("running", self.running)
        _check_count("waiting", self.waiting)


def observed_load(kv_usage: float, running: int, waiting: int, occupancy: float = 0.0) -> ModelLoad:
    """What the policy is told about an engine that reports (KV usage, running, waiting).

    An engine that queues requests is full whatever its KV figure says (vLLM only queues when its KV
    cache is; a one-at-a-time engine queues at once), and the node's own slot `occupancy` bounds it from
    below. Used by the live Policy manager and by the simulator alike.
    """
    return ModelLoad(kv_usage=1.0 if waiting > 0 else max(kv_usage, occupancy), running=running, waiting=waiting)


@dataclass(frozen=True)
class LoadSnapshot:
    """What the policy sees at one instant: local models' load, the node's own queues, its free credit."""

    models: Mapping[str, ModelLoad] = field(default_factory=dict)  # model id -> load
    # Requests waiting at this node before its engine, by who sent them (this node's users, or peers): for
    # dispatch (a RETRY's delay) or for one of the node's slots. The simulator counts the same (its nodes
    # have no slots, so there only RETRY waits count).
    user_queue: int = 0
    node_queue: int = 0
    credit_wei: int = 0  # the node's free (unstaked) credit on the ledger

    def __post_init__(self) -> None:
        _check_count("user_queue", self.user_queue)
        _check_count("node_queue", self.node_queue)
        credit = self.credit_wei
        if type(credit) is not int and (not isinstance(credit, int) or isinstance(credit, bool)):
            raise PolicyInputError(f"credit_wei must be an int (wei), got {self.credit_wei!r}")


class Action(StrEnum):
    """What to do with one request."""

    LOCAL = "local"  # run now on Decision.model
    OFFLOAD = "offload"  # probe PoS candidates; if none accepts, ask decide_fallback
    QUEUE = "queue"  # queue on Decision.model although it is busy
    RETRY = "retry"  # put back at the front of its queue, try again after retry_delay_s


@dataclass(frozen=True)
class Decision:
    """A dispatch decision; `model` is set for LOCAL and QUEUE."""

    action: Action
    model: str | None = None


@runtime_checkable
class Policy(Protocol):
    """What the Policy manager (and the simulator) needs from a policy. Constructed as `cls(config, rng)`."""

    config: PolicyConfig

    def decide_dispatch(self, request_model: str, snapshot: LoadSnapshot) -> Decision:
        """Decide what to do with a request for `request_model` now."""
        ...

    def decide_fallback(self, request_model: str, snapshot: LoadSnapshot) -> Decision:
        """Decide after an OFFLOAD found no accepting peer: QUEUE or RETRY."""
        ...

    def accept_probe(self, snapshot: LoadSnapshot, model: str | None) -> bool:
        """Whether to accept a peer's probe to run a request for `model` (None: any model)."""
        ...

    def should_inspect(self) -> bool:
        """Whether this offloaded request also becomes a duel."""
        ...

    def auto_stake_target(self, snapshot: LoadSnapshot) -> int:
        """The stake this load calls for, in stake units."""
        ...

    def next_stake_step(self, current_units: int, target_units: int, free_units: int | None = None) -> int:
        """Signed change of stake (units) to make this interval."""
        ...


class DefaultPolicy:
    """The reference policy (DESIGN §2). All randomness comes from `rng`, so a seeded rng replays exactly."""

    def __init__(self, config: PolicyConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng

    def _is_idle(self, model: str, snapshot: LoadSnapshot) -> bool:
        load = snapshot.models.get(model)
        return load is not None and load.kv_usage < self.config.target_for(model)

    def decide_dispatch(self, request_model: str, snapshot: LoadSnapshot) -> Decision:
        """Reference order: LOCAL if idle; OFFLOAD with offload_frequency while credit > 0; then fallback.

        The offload draw is only made when credit is positive, so a broke node consumes no randomness
        on it (the reference skipped the whole step without a ledger).
        """
        if self._is_idle(request_model, snapshot):
            return Decision(Action.LOCAL, request_model)
        if snapshot.credit_wei > 0 and self.rng.random() < self.config.offload_frequency:
            return Decision(Action.OFFLOAD)
        return self.decide_fallback(request_model, snapshot)

    def decide_fallback(self, request_model: str, snapshot: LoadSnapshot) -> Decision:
        """QUEUE on the local model serving the request with probability queue_frequency, else RETRY.

        The reference queues on the local model with the fewest queued requests, whatever was asked for
        (it served one model). We serve several, so only the model asked for qualifies; its replicas are
        balanced by the Model manager, which reports them as one ModelLoad.
        """
        if self.rng.random() < self.config.queue_frequency and request_model in snapshot.models:
            return Decision(Action.QUEUE, request_model)
        return Decision(Action.RETRY)

    def accept_probe(self, snapshot: LoadSnapshot, model: str | None) -> bool:
        """random() < accept_frequency, the user queue is empty, and a local model (`model` if given) is idle.

        The draw is made first and always, as in the reference, so the rng advances the same way
        whatever the load.
        """
        willing = self.rng.random() < self.config.accept_frequency
        if not willing or snapshot.user_queue > 0:
            return False
        if model is not None:
            return self._is_idle(model, snapshot)
        return any(self._is_idle(name, snapshot) for name in snapshot.models)

    def should_inspect(self) -> bool:
        """True with probability p_inspect (strict `<`, so 0.0 never and 1.0 always inspects)."""
        return self.rng.random() < self.config.p_inspect

    def auto_stake_target(self, snapshot: LoadSnapshot) -> int:
        """Reference newest rule, in stake units (0..4).

        u = mean KV usage, T = mean target over local models;
        load_score = 0 if any backend has waiting requests, else 4/3/2/1/0 for u <= T/4, T/2, 3T/4, T, above;
        queue_score = -2 if the node's own queues hold anything; target = max(0, load + queue).
        A node without local models has nothing to offer and targets 0.
        """
        if not snapshot.models:
            return 0
        n = len(snapshot.models)
        u = sum(load.kv_usage for load in snapshot.models.values()) / n
        t = sum(self.config.target_for(name) for name in snapshot.models) / n
        if any(load.waiting > 0 for load in snapshot.models.values()):
            load_score = 0
        elif u <= 0.25 * t:
            load_score = 4
        elif u <= 0.5 * t:
            load_score = 3
        elif u <= 0.75 * t:
            load_score = 2
        elif u <= t:
            load_score = 1
        else:
            load_score = 0
        queue_score = -2 if snapshot.user_queue + snapshot.node_queue > 0 else 0
        return max(0, load_score + queue_score)

    def next_stake_step(self, current_units: int, target_units: int, free_units: int | None = None) -> int:
        """Signed stake change toward the target, as the reference: at most auto_stake_max_step units,
        never more than the free credit (`free_units`, when given) up, never below zero stake down.
        """
        _check_count("current_units", current_units)
        _check_count("target_units", target_units)
        if free_units is not None:
            _check_count("free_units", free_units)
        delta = target_units - current_units
        cap = self.config.auto_stake_max_step
        if delta > 0:
            return min(delta, cap) if free_units is None else min(delta, cap, free_units)
        return -min(-delta, cap, current_units)


def stake_change_wei(policy: Policy, snapshot: LoadSnapshot, current_stake_wei: int, *,
                     min_stake_wei: int = 0) -> int:
    """The signed stake change (wei) one stake interval should make: positive stakes, negative unstakes.

    auto_stake: the policy's target and step in units of stake_unit_wei; stake between units counts down
    to whole units. Bounded so that it never leaves the node unable to work or to pay: staking spends only
    the free credit (`snapshot.credit_wei`) above `auto_stake_credit_reserve_wei`, and never lands between
    0 and `min_stake_wei` (the contract's MIN_STAKE: a smaller stake is not routable, so it would spend
    credit for nothing; a step that would is raised to MIN_STAKE when the spendable credit covers it, else
    not made); unstaking stops at `min_stake_wei`, and a stake already below it is never unstaked.
    Fixed stake: straight to fixed_stake_wei, bounded by free credit (the operator chose the amount).
    Neither: 0. The live node also holds auto-stake moves back until the load has called for them for a
    while (StakeHysteresis).
    """
    _check_count("current_stake_wei", current_stake_wei)
    _check_count("min_stake_wei", min_stake_wei)
    config = policy.config
    if config.auto_stake:
        unit = config.stake_unit_wei
        current_units = current_stake_wei // unit
        target_units = policy.auto_stake_target(snapshot)
        spendable_wei = max(0, snapshot.credit_wei - config.auto_stake_credit_reserve_wei)
        step_units = policy.next_stake_step(current_units, target_units, spendable_wei // unit)
        if step_units == 0:
            return 0
        # Land on an exact multiple of the unit so a stray remainder does not linger.
        new_stake_wei = (current_units + step_units) * unit
        if step_units < 0:
            return min(0, max(new_stake_wei, min_stake_wei) - current_stake_wei)
        if new_stake_wei < min_stake_wei:
            to_min_wei = min_stake_wei - current_stake_wei
            return to_min_wei if to_min_wei <= spendable_wei else 0
        return new_stake_wei - current_stake_wei
    if config.fixed_stake_wei is not None:
        delta = config.fixed_stake_wei - current_stake_wei
        return min(delta, max(0, snapshot.credit_wei)) if delta > 0 else delta
    return 0


class StakeHysteresis:
    """Holds auto-stake moves back until the load has called for a move the same way (up, or down) at
    `settle_intervals` looks in a row (PolicyConfig.auto_stake_settle_intervals).

    Counting only, no clock: the caller looks once per stake interval. A look that calls for no move, or
    for one the other way, starts the count again, so a load that flaps sends no stake transaction; once
    settled, moves the same way follow at one per look until the target is reached.
    """

    def __init__(self, settle_intervals: int) -> None:
        if not isinstance(settle_intervals, int) or isinstance(settle_intervals, bool) or settle_intervals < 1:
            raise PolicyInputError(f"settle_intervals must be an int >= 1, got {settle_intervals!r}")
        self.settle_intervals = settle_intervals
        self._direction = 0
        self._streak = 0

    def admit(self, delta_wei: int) -> int:
        """`delta_wei` once this look and the `settle_intervals - 1` before it all called for a move its
        way; else 0 (no transaction)."""
        direction = (delta_wei > 0) - (delta_wei < 0)
        if direction != self._direction:
            self._direction, self._streak = direction, 0
        if direction == 0:
            return 0
        self._streak += 1
        return delta_wei if self._streak >= self.settle_intervals else 0

    @property
    def streak(self) -> int:
        """Looks in a row, this one included, that called for a move the current way; 0 after a look that
        called for none (the simulator reads it to know when a held-back move will go through)."""
        return self._streak


def stake_look_wei(policy: Policy, snapshot: LoadSnapshot, current_stake_wei: int,
                   hysteresis: StakeHysteresis | None, *, min_stake_wei: int = 0) -> int:
    """One look of the live stake loop: the move `stake_change_wei` calls for, held back by `hysteresis`
    (auto-stake's; None with a fixed stake, which moves at once). The live Ledger manager and the simulator
    both call this once per `auto_stake_interval_s`; the result is the stake transaction to send (0: none).
    """
    delta_wei = stake_change_wei(policy, snapshot, current_stake_wei, min_stake_wei=min_stake_wei)
    return delta_wei if hysteresis is None else hysteresis.admit(delta_wei)


def load_policy(path: str, config: PolicyConfig, rng: random.Random) -> Policy:
    """Build the policy named `"package.module:ClassName"` as `ClassName(config, rng)`.

    Raises PolicyLoadError naming the problem: a malformed path, a module that does not import, a
    missing attribute, something not callable, a constructor that fails, or an object lacking a
    `Policy` member.
    """
    if not isinstance(path, str) or path.count(":") != 1:
        raise PolicyLoadError(f"policy path must look like 'package.module:ClassName', got {path!r}")
    module_name, _, attr = path.partition(":")
    if not module_name or not attr.isidentifier():
        raise PolicyLoadError(f"policy path must look like 'package.module:ClassName', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicyLoadError(f"cannot import policy module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if factory is None:
        raise PolicyLoadError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise PolicyLoadError(f"{path!r} is not a class or factory (got {type(factory).__name__})")
    try:
        policy = factory(config, rng)
    except Exception as exc:
        raise PolicyLoadError(f"constructing {path!r}(config, rng) failed: {exc!r}") from exc
    if not isinstance(policy, Policy):
        missing = [name for name in _POLICY_MEMBERS if not callable(getattr(policy, name, None)) and name != "config"]
        if not hasattr(policy, "config"):
            missing.insert(0, "config")
        raise PolicyLoadError(f"{path!r} does not implement Policy; missing: {', '.join(missing)}")
    return policy
