"""The reference default policy: dispatch order and frequencies, probe acceptance, auto-stake, loading."""

from __future__ import annotations

import math
import random
import sys
import types
from collections import Counter
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from wwwserve.node.policy import (
    DEFAULT_POLICY_PATH,
    Action,
    Decision,
    DefaultPolicy,
    LoadSnapshot,
    ModelLoad,
    Policy,
    PolicyConfig,
    PolicyInputError,
    PolicyLoadError,
    load_policy,
    stake_change_wei,
)

N = 20_000
UNIT = PolicyConfig().stake_unit_wei


def policy(seed: int = 7, **knobs: object) -> DefaultPolicy:
    return DefaultPolicy(PolicyConfig(**knobs), random.Random(seed))  # type: ignore[arg-type]


def snap(
    kv: float | None = None, *, waiting: int = 0, credit_wei: int = 1, user: int = 0, node: int = 0
) -> LoadSnapshot:
    models = {} if kv is None else {"m": ModelLoad(kv_usage=kv, running=1, waiting=waiting)}
    return LoadSnapshot(models=models, user_queue=user, node_queue=node, credit_wei=credit_wei)


def assert_frequency(count: int, n: int, p: float) -> None:
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(count - n * p) <= 4 * sigma + 1e-9, (count, n * p)


# --- config ------------------------------------------------------------------------------------------


def test_config_defaults_are_the_reference_example() -> None:
    c = PolicyConfig()
    assert (c.target_token_usage, c.offload_frequency, c.queue_frequency, c.accept_frequency) == (0.6, 0.8, 0.2, 0.8)
    assert (c.p_inspect, c.k_exec, c.auto_stake_max_step) == (0.1, 1, 2)
    # Where we leave the reference: auto-stake moves the operator's money, so it is off unless turned on.
    assert c.auto_stake is False
    assert c.fixed_stake_wei is None
    assert c.target_for("anything") == 0.6
    assert PolicyConfig(model_target_token_usage={"big": 0.7}).target_for("big") == 0.7


@pytest.mark.parametrize(
    "knobs",
    [
        {"offload_frequency": 1.5},
        {"queue_frequency": -0.1},
        {"accept_frequency": 2},
        {"p_inspect": -1},
        {"target_token_usage": 1.01},
        {"target_token_usage": -2},
        {"target_token_usage": float("nan")},
        {"offload_frequency": float("nan")},
        {"model_target_token_usage": {"m": 3.0}},
        {"model_target_token_usage": {"m": float("nan")}},
        {"k_exec": 0},
        {"retry_delay_s": 0},
        {"auto_stake_max_step": 0},
        {"stake_unit_wei": 0},
        {"fixed_stake_wei": -1, "auto_stake": False},
        {"auto_stake": True, "fixed_stake_wei": 10},
        {"auto_stake_settle_intervals": 0},
        {"auto_stake_credit_reserve_wei": -1},
        {"unknown_knob": 1},
    ],
)
def test_config_rejects_out_of_range_knobs(knobs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PolicyConfig(**knobs)  # type: ignore[arg-type]


def test_config_accepts_the_dispatcher_and_executor_profiles() -> None:
    dispatcher = PolicyConfig(target_token_usage=-1, offload_frequency=1.0, queue_frequency=0.0, accept_frequency=0.0)
    executor = PolicyConfig(offload_frequency=0.0, queue_frequency=1.0, accept_frequency=1.0)
    assert dispatcher.target_token_usage == -1 and executor.queue_frequency == 1.0
    assert PolicyConfig(auto_stake=False, fixed_stake_wei=10**30).fixed_stake_wei == 10**30


def test_snapshot_validates_its_inputs() -> None:
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(PolicyInputError):
            ModelLoad(kv_usage=bad)
    with pytest.raises(PolicyInputError):
        ModelLoad(kv_usage=0.1, waiting=-1)
    with pytest.raises(PolicyInputError):
        LoadSnapshot(user_queue=-1)
    with pytest.raises(PolicyInputError):
        LoadSnapshot(credit_wei=1.5)  # type: ignore[arg-type]


# --- dispatch ----------------------------------------------------------------------------------------


def test_local_when_the_requested_model_is_below_target_without_using_randomness() -> None:
    p = policy()
    state = p.rng.getstate()
    assert p.decide_dispatch("m", snap(0.59)) == Decision(Action.LOCAL, "m")
    assert p.rng.getstate() == state
    # strictly below: at the target the model is busy
    assert p.decide_dispatch("m", snap(0.6, credit_wei=0)).action is not Action.LOCAL


def test_per_model_target_and_other_models_do_not_count_as_idle() -> None:
    p = policy(model_target_token_usage={"m": 0.9})
    assert p.decide_dispatch("m", snap(0.8)) == Decision(Action.LOCAL, "m")
    idle_other = LoadSnapshot(models={"other": ModelLoad(0.0)}, credit_wei=0)
    assert p.decide_dispatch("m", idle_other) == Decision(Action.RETRY)


def test_dispatcher_profile_never_runs_locally() -> None:
    p = policy(target_token_usage=-1, offload_frequency=1.0, queue_frequency=0.0)
    assert p.decide_dispatch("m", snap(0.0)) == Decision(Action.OFFLOAD)
    assert p.decide_dispatch("m", snap(0.0, credit_wei=0)) == Decision(Action.RETRY)


def test_busy_node_with_credit_splits_offload_queue_retry_by_the_reference_frequencies() -> None:
    p = policy()
    counts = Counter(p.decide_dispatch("m", snap(0.9)) for _ in range(N))
    assert set(counts) == {Decision(Action.OFFLOAD), Decision(Action.QUEUE, "m"), Decision(Action.RETRY)}
    assert_frequency(counts[Decision(Action.OFFLOAD)], N, 0.8)
    assert_frequency(counts[Decision(Action.QUEUE, "m")], N, 0.2 * 0.2)
    assert_frequency(counts[Decision(Action.RETRY)], N, 0.2 * 0.8)


def test_no_credit_means_no_offload_and_queue_at_queue_frequency() -> None:
    p = policy()
    for credit in (0, -5):
        counts = Counter(p.decide_dispatch("m", snap(0.9, credit_wei=credit)).action for _ in range(N // 2))
        assert counts[Action.OFFLOAD] == 0
        assert_frequency(counts[Action.QUEUE], N // 2, 0.2)
        assert counts[Action.QUEUE] + counts[Action.RETRY] == N // 2


def test_queue_needs_a_local_model_serving_the_request() -> None:
    p = policy(offload_frequency=0.0, queue_frequency=1.0)
    assert p.decide_dispatch("m", snap(0.9)) == Decision(Action.QUEUE, "m")
    assert p.decide_dispatch("absent", snap(0.1)) == Decision(Action.RETRY)


def test_fallback_after_failed_offload_is_queue_or_retry() -> None:
    p = policy()
    counts = Counter(p.decide_fallback("m", snap(0.9)).action for _ in range(N))
    assert set(counts) <= {Action.QUEUE, Action.RETRY}
    assert_frequency(counts[Action.QUEUE], N, 0.2)


def test_same_seed_replays_the_same_decisions() -> None:
    a, b = policy(seed=42), policy(seed=42)
    states = [snap(kv) for kv in (0.1, 0.7, 0.95, 0.61, 0.3)] * 40
    assert [a.decide_dispatch("m", s) for s in states] == [b.decide_dispatch("m", s) for s in states]
    assert [a.accept_probe(s, "m") for s in states] == [b.accept_probe(s, "m") for s in states]


# --- probes and inspection ---------------------------------------------------------------------------


def test_accept_probe_frequency_when_idle() -> None:
    p = policy()
    accepted = sum(p.accept_probe(snap(0.1), "m") for _ in range(N))
    assert_frequency(accepted, N, 0.8)


@pytest.mark.parametrize(
    ("snapshot", "model"),
    [
        (snap(0.1, user=1), "m"),  # own users first
        (snap(0.6), "m"),  # at target = busy
        (snap(0.1), "other"),  # not served here
        (snap(None), None),  # no local model at all
    ],
)
def test_accept_probe_refuses_when_not_idle(snapshot: LoadSnapshot, model: str | None) -> None:
    p = policy(accept_frequency=1.0)
    assert not any(p.accept_probe(snapshot, model) for _ in range(200))


def test_accept_probe_ignores_the_node_queue_and_accepts_any_idle_model_when_unspecified() -> None:
    p = policy(accept_frequency=1.0)
    assert p.accept_probe(snap(0.1, node=3), "m")
    two = LoadSnapshot(models={"busy": ModelLoad(0.9), "idle": ModelLoad(0.1)})
    assert p.accept_probe(two, None)
    assert not p.accept_probe(two, "busy")


def test_accept_probe_always_draws_so_the_rng_stream_is_load_independent() -> None:
    a, b = policy(seed=3), policy(seed=3)
    a.accept_probe(snap(0.1), "m")
    b.accept_probe(snap(0.9, user=5), "m")
    assert a.rng.getstate() == b.rng.getstate()


def test_accept_frequency_zero_never_accepts() -> None:
    p = policy(accept_frequency=0.0)
    assert not any(p.accept_probe(snap(0.0), "m") for _ in range(1000))


def test_should_inspect_frequency_and_extremes() -> None:
    p = policy()
    assert_frequency(sum(p.should_inspect() for _ in range(N)), N, 0.1)
    assert not any(policy(p_inspect=0.0).should_inspect() for _ in range(1000))
    assert all(policy(p_inspect=1.0).should_inspect() for _ in range(1000))


# --- auto-stake --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kv", "waiting", "queued", "target"),
    [
        # u vs T = 0.5 (boundaries exact in binary): <= 0.125 -> 4, <= 0.25 -> 3, <= 0.375 -> 2, <= 0.5 -> 1
        (0.0, 0, 0, 4),
        (0.125, 0, 0, 4),
        (0.126, 0, 0, 3),
        (0.25, 0, 0, 3),
        (0.26, 0, 0, 2),
        (0.375, 0, 0, 2),
        (0.376, 0, 0, 1),
        (0.5, 0, 0, 1),
        (0.51, 0, 0, 0),
        (1.0, 0, 0, 0),
        # backend queue -> load score 0
        (0.0, 1, 0, 0),
        # own queues non-empty -> -2, floored at 0
        (0.0, 0, 1, 2),
        (0.2, 0, 1, 1),
        (0.3, 0, 1, 0),
        (0.45, 0, 1, 0),
        (0.0, 1, 1, 0),
    ],
)
def test_auto_stake_target_table(kv: float, waiting: int, queued: int, target: int) -> None:
    p = policy(target_token_usage=0.5)
    assert p.auto_stake_target(snap(kv, waiting=waiting, user=queued)) == target
    # user and node queues count alike
    assert p.auto_stake_target(snap(kv, waiting=waiting, node=queued)) == target


def test_auto_stake_target_averages_usage_and_targets_over_models() -> None:
    p = policy(model_target_token_usage={"a": 0.8, "b": 0.4})
    # u = (0.1 + 0.2)/2 = 0.15, T = 0.6 -> u <= T/4 -> 4
    two = LoadSnapshot(models={"a": ModelLoad(0.1), "b": ModelLoad(0.2)})
    assert p.auto_stake_target(two) == 4
    # u = 0.35 -> <= 0.45 -> 2
    assert p.auto_stake_target(LoadSnapshot(models={"a": ModelLoad(0.3), "b": ModelLoad(0.4)})) == 2
    # one backend with waiting requests zeroes the load score for the node
    queued = LoadSnapshot(models={"a": ModelLoad(0.0), "b": ModelLoad(0.0, waiting=2)})
    assert p.auto_stake_target(queued) == 0
    assert p.auto_stake_target(LoadSnapshot()) == 0
    # dispatcher profile: T = -1 -> never idle -> 0
    assert policy(target_token_usage=-1).auto_stake_target(snap(0.0)) == 0


@pytest.mark.parametrize(
    ("current", "target", "free", "step"),
    [
        (0, 4, None, 2),
        (0, 1, None, 1),
        (3, 4, None, 1),
        (4, 4, None, 0),
        (4, 0, None, -2),
        (4, 3, None, -1),
        (1, 0, None, -1),
        (0, 4, 1, 1),  # not enough free credit
        (0, 4, 0, 0),
        (2, 0, 0, -2),  # unstaking needs no free credit
    ],
)
def test_next_stake_step_moves_at_most_max_step(current: int, target: int, free: int | None, step: int) -> None:
    assert policy().next_stake_step(current, target, free) == step


def test_next_stake_step_respects_a_larger_max_step_and_rejects_negatives() -> None:
    assert policy(auto_stake_max_step=5).next_stake_step(0, 4) == 4
    with pytest.raises(PolicyInputError):
        policy().next_stake_step(-1, 2)
    with pytest.raises(PolicyInputError):
        policy().next_stake_step(0, 2, -1)


def test_auto_stake_converges_to_target_in_steps_of_two() -> None:
    p = policy()
    stake, history = 0, []
    for _ in range(4):
        stake += p.next_stake_step(stake, 4)
        history.append(stake)
    assert history == [2, 4, 4, 4]


def test_stake_change_wei_auto_fixed_and_manual() -> None:
    auto = policy(auto_stake=True, auto_stake_credit_reserve_wei=0)  # the reference rule, no reserve
    rich = snap(0.0, credit_wei=100 * UNIT)
    assert stake_change_wei(auto, rich, 0) == 2 * UNIT
    assert stake_change_wei(auto, rich, 4 * UNIT) == 0
    # stray remainder below a unit counts down, and the step lands on a whole unit
    assert stake_change_wei(auto, rich, 3 * UNIT + 5) == UNIT - 5
    assert stake_change_wei(auto, snap(1.0, credit_wei=0), 4 * UNIT) == -2 * UNIT
    # staking is bounded by free credit, in whole units
    assert stake_change_wei(auto, snap(0.0, credit_wei=UNIT + 1), 0) == UNIT
    assert stake_change_wei(auto, snap(0.0, credit_wei=UNIT - 1), 0) == 0

    fixed = policy(auto_stake=False, fixed_stake_wei=10 * UNIT)
    assert stake_change_wei(fixed, rich, 0) == 10 * UNIT
    assert stake_change_wei(fixed, snap(0.0, credit_wei=3), 0) == 3
    assert stake_change_wei(fixed, rich, 12 * UNIT) == -2 * UNIT

    manual = policy(auto_stake=False)
    assert stake_change_wei(manual, rich, 7) == 0


# --- loading custom policies -------------------------------------------------------------------------


class _CustomPolicy(DefaultPolicy):
    def decide_dispatch(self, request_model: str, snapshot: LoadSnapshot) -> Decision:
        return Decision(Action.RETRY)


@pytest.fixture
def fake_module() -> Iterator[str]:
    module = types.ModuleType("wwwserve_test_policies")
    module.Custom = _CustomPolicy  # type: ignore[attr-defined]
    module.NOT_CALLABLE = 3  # type: ignore[attr-defined]
    module.Incomplete = lambda config, rng: types.SimpleNamespace(config=config)  # type: ignore[attr-defined]

    def exploding(config: PolicyConfig, rng: random.Random) -> None:
        raise RuntimeError("boom")

    module.Exploding = exploding  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield module.__name__
    finally:
        del sys.modules[module.__name__]


def test_load_policy_builds_the_default_and_custom_classes(fake_module: str) -> None:
    config, rng = PolicyConfig(), random.Random(1)
    default = load_policy(DEFAULT_POLICY_PATH, config, rng)
    assert isinstance(default, DefaultPolicy) and isinstance(default, Policy)
    assert default.config is config
    custom = load_policy(f"{fake_module}:Custom", config, rng)
    assert custom.decide_dispatch("m", snap(0.0)) == Decision(Action.RETRY)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("node.policy.DefaultPolicy", "package.module:ClassName"),
        ("wwwserve.node.policy:", "package.module:ClassName"),
        (":DefaultPolicy", "package.module:ClassName"),
        ("a:b:c", "package.module:ClassName"),
        ("wwwserve.node.policy:Not-An-Identifier", "package.module:ClassName"),
        ("no_such_pkg_xyz.mod:Cls", "cannot import policy module 'no_such_pkg_xyz.mod'"),
        ("wwwserve.node.policy:NoSuchClass", "has no attribute 'NoSuchClass'"),
        ("{mod}:NOT_CALLABLE", "not a class or factory"),
        ("{mod}:Exploding", "boom"),
        ("{mod}:Incomplete", "missing: decide_dispatch, decide_fallback, accept_probe"),
    ],
)
def test_load_policy_errors_name_the_problem(fake_module: str, path: str, message: str) -> None:
    with pytest.raises(PolicyLoadError, match=message.replace("(", r"\(")) as info:
        load_policy(path.format(mod=fake_module), PolicyConfig(), random.Random(0))
    assert isinstance(info.value, ValueError)
