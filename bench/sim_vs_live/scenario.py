"""The one small scenario bench/sim_vs_live.py runs on a real network and in the simulator: six nodes with
fake backends of three sizes, one policy for all, and a seeded workload both sides replay.

Everything either side is given comes from here, so the two cannot drift apart: `node_specs` and
`sim_config` are the simulator's inputs, `live_sets` each live node's `--set` overrides (the same
`PolicyConfig` fields, the fake backend's capacity, latency and token rate), and `workload` the requests
(arrival time, source node, prompt and answer length); `prompt_text` turns one into the words a live
user sends, with `max_tokens` equal to its answer length so the fake backend answers exactly that many
words (node/backends/fake.py: the prompt's words reversed, cut to max_tokens).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.node.policy import PolicyConfig
from wwwserve.sim.config import JudgeBehaviour, NodeSpec, RequestSpec, SimConfig
from wwwserve.sim.engine import fake_backend_profile

__all__ = ["MODEL", "SCRIPTED_JUDGE", "FakeProfile", "Scenario", "live_sets", "node_specs", "policy", "prompt_text",
           "scenario_from_dict", "sim_config", "workload"]

# The model every node serves, live and simulated (a simulated duel is over the request's model since ba4ab2f;
# before, the simulator's duel chain knew only "qwen3-8b", hence this name).
MODEL = "qwen3-8b"

# The live judges are fake backends with `judge_rule=longer`: a judge prompt gets "A" or "B" by answer
# length, "#" (abstain) when the two answers are as long. Both duelists of this scenario run the same fake
# backend code on the same request, so their answers are identical: every reply is "#" in both A/B orders,
# i.e. a reply naming no letter. Nothing makes a scripted judge miss its reveal, so none is silent here
# (the live run counts the silent seats it actually had). The reply is one word, so each judge call holds a
# slot of the judge's engine for the first word only (0.3 s), not for the 16 tokens of `judge.max_tokens`
# (1.05 s on a 20 words/s engine): judge calls made the simulated engines busier than the live ones, and
# their offers were refused more often (bench/README.md, sim_vs_live).
SCRIPTED_JUDGE = JudgeBehaviour(no_letter=1.0, silent=0.0, reply_tokens=1)


@dataclass(frozen=True)
class FakeProfile:
    """A live fake backend's settings (`backend.fake.*`)."""

    capacity: int
    latency_s: float
    tokens_per_s: float


@dataclass(frozen=True)
class Scenario:
    """The scenario's knobs; the defaults are the benchmark's (`--quick` lowers `requests`)."""

    requests: int = 500
    rate_per_s: float = 3.0  # Poisson arrivals over the whole network
    # node name -> fake backend; two small, two medium, two large engines
    nodes: tuple[tuple[str, FakeProfile], ...] = (
        ("n1", FakeProfile(2, 0.3, 20.0)), ("n2", FakeProfile(2, 0.3, 20.0)),
        ("n3", FakeProfile(4, 0.3, 20.0)), ("n4", FakeProfile(4, 0.3, 20.0)),
        ("n5", FakeProfile(6, 0.3, 30.0)), ("n6", FakeProfile(6, 0.3, 30.0)))
    # share of the users at each node (in node order): the small nodes get the most, so they delegate
    source_weights: tuple[float, ...] = (0.3, 0.25, 0.15, 0.1, 0.1, 0.1)
    output_words: tuple[int, int] = (20, 60)  # answer length, uniform (words = the simulator's tokens)
    extra_prompt_words: tuple[int, int] = (0, 20)  # prompt length = answer length + this, uniform
    p_inspect: float = 0.2
    stake_wei: int = 1_000 * WEI_PER_CREDIT  # fixed, the same at every node (10 minimum stakes)
    credit_wei: int = 10_000 * WEI_PER_CREDIT  # before staking (NodeSpec's default initial credit)
    block_time_s: float = 1.0  # anvil mines one block a second; the simulated chain too

    def __post_init__(self) -> None:
        if len(self.source_weights) != len(self.nodes):
            raise ValueError("one source weight per node")


def scenario_from_dict(data: dict[str, Any]) -> Scenario:
    """The `Scenario` that `dataclasses.asdict` (then JSON) turned into `data`."""
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    fields["nodes"] = tuple((name, FakeProfile(**profile)) for name, profile in data["nodes"])
    return Scenario(**fields)


def policy(scenario: Scenario) -> PolicyConfig:
    """Every node's policy: the defaults, the scenario's p_inspect, a fixed stake, and no re-offer of queued
    requests (the simulator does not model it, sim/network.py; off on both sides keeps them the same)."""
    return PolicyConfig(p_inspect=scenario.p_inspect, auto_stake=False, fixed_stake_wei=scenario.stake_wei,
                        reoffer_interval_s=0.0)


def node_specs(scenario: Scenario) -> list[NodeSpec]:
    """The simulator's providers: each a `SlotEngine` of its fake backend, under `policy(scenario)`."""
    config = policy(scenario)
    return [NodeSpec(name, fake_backend_profile(f"fake-{name}", capacity=p.capacity, latency_s=p.latency_s,
                                                tokens_per_s=p.tokens_per_s),
                     models=(MODEL,), policy=config, initial_credit_wei=scenario.credit_wei)
            for name, p in scenario.nodes]


def sim_config(scenario: Scenario, seed: int) -> SimConfig:
    """Duels on the contract model, judges as the scripted fake judges behave, the live block time."""
    return SimConfig(seed=seed, contract=True, block_time_s=scenario.block_time_s, judges=SCRIPTED_JUDGE)


def live_sets(scenario: Scenario, name: str) -> list[str]:
    """`--set` overrides of live node `name`: the same policy fields and its fake backend."""
    profile = dict(scenario.nodes)[name]
    config = policy(scenario)
    fields = ("target_token_usage", "offload_frequency", "queue_frequency", "accept_frequency", "p_inspect",
              "k_exec", "retry_delay_s", "reoffer_interval_s", "fixed_stake_wei")
    return [*(f"policy.{f}={getattr(config, f)}" for f in fields),
            "backend.kind=fake", f"backend.models=['{MODEL}']", f"backend.fake.capacity={profile.capacity}",
            f"backend.fake.latency_s={profile.latency_s}", f"backend.fake.tokens_per_s={profile.tokens_per_s}",
            "backend.fake.judge_rule=longer"]


def workload(scenario: Scenario, seed: int) -> list[RequestSpec]:
    """`scenario.requests` requests from `seed`: Poisson arrivals, a source drawn by the weights, uniform
    answer lengths, prompts at least as long as their answers."""
    rng = random.Random(f"sim-vs-live/{seed}")
    names = [name for name, _ in scenario.nodes]
    t = 0.0
    out = []
    for _ in range(scenario.requests):
        t += rng.expovariate(scenario.rate_per_s)
        source = rng.choices(names, weights=scenario.source_weights)[0]
        answer = rng.randint(*scenario.output_words)
        out.append(RequestSpec(round(t, 3), source, answer + rng.randint(*scenario.extra_prompt_words), answer,
                               MODEL))
    return out


def prompt_text(seed: int, index: int, spec: RequestSpec) -> str:
    """The words a live user sends for request `index`: `spec.prompt_tokens` short words, from the seed."""
    rng = random.Random(f"sim-vs-live/{seed}/prompt/{index}")
    letters = "abcdefghijklmnopqrstuvwxyz"
    return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 7))) for _ in range(spec.prompt_tokens))
