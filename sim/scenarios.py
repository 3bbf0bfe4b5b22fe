"""The paper's experiments as simulator scenarios (DESIGN.md §6, PAPER.md §6).

Each scenario is a set of nodes and a workload; `run_modes` runs it as single-node serving (each node
serves only its own users), under the reference centralized dispatcher, and decentralized (WWW.Serve).
Node policies are the reference example (`offload 0.8, queue 0.2, accept 0.8, target KV usage 0.6`,
auto-stake on) unless a scenario says otherwise.

| scenario | nodes | workload |
|---|---|---|
| `schedule` | 4 × RTX 3090 | the paper's schedule (`simu_input.json`, 112 requests) if given, else a stand-in |
| `load-swing` | 4 × RTX 3090 | Poisson: nodes 1-2 at 1/15 req/s for 0-300 s then 1/30, nodes 3-4 the reverse |
| `hetero` | RTX 3090, RTX 3090, RTX 4090, A100 | the load swing, on mixed GPUs |
| `azure` | 5 × RTX 3090 | the Azure 2023 conversation trace, time zones emulated |
| `join-leave` | 5 × 3090 | 150/150/200 at node1/2/3 at 0/150/300 s (1 s a burst); node4 off 120 s, node5 on 600 s |

Every scenario carries its workload parameters (`Scenario.workload`); `parameters` adds its nodes, policies
and network settings, and the reports print them beside the figures.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.node.policy import PolicyConfig
from wwwserve.sim.config import LatencyModel, Mode, NodeSpec, RequestSpec, SimConfig
from wwwserve.sim.engine import PROFILES, EngineProfile
from wwwserve.sim.network import Simulation
from wwwserve.sim.records import RequestRecord
from wwwserve.sim.workloads import (
    MATH500_LENGTHS,
    MODEL,
    MathLengths,
    azure_time_zones,
    load_swing,
    read_azure_trace,
    schedule,
    synthetic_schedule,
)

__all__ = ["BURST_S", "MODES", "SCENARIOS", "Scenario", "build", "parameters", "run_modes"]

MODES: tuple[Mode, ...] = ("single", "centralized", "decentralized")

# The reference example policy (PAPER.md §3). Its stake unit is the live node's default (one minimum stake,
# 100 credits) where the reference's is 1 credit: a stake below the contract's MIN_STAKE is not routable,
# live or simulated, and the PoS draw is the same for stakes all scaled by one factor.
REFERENCE_POLICY = PolicyConfig(target_token_usage=0.6, offload_frequency=0.8, queue_frequency=0.2,
                                accept_frequency=0.8, p_inspect=0.0, auto_stake=True)
SLO_THRESHOLDS_S = tuple(range(200, 451, 10))  # the paper's sweep for long reasoning requests
# A burst's requests arrive evenly over this many seconds: the reference harness fires a burst from a
# client loop, not at one instant, and an instant burst lets the centralized baseline route a whole
# burst on one stale reading (the artefact issue 16 found).
BURST_S = 1.0


@dataclass
class Scenario:
    """Nodes, their requests, and how to read the result."""

    name: str
    title: str
    nodes: list[NodeSpec]
    requests: list[RequestSpec]
    thresholds_s: tuple[float, ...] = SLO_THRESHOLDS_S
    notes: list[str] = field(default_factory=list)
    window_s: float = 60.0
    modes: tuple[Mode, ...] = MODES
    config: SimConfig | None = None  # settings beyond the defaults (the quality scenario's contract)
    workload: dict[str, Any] = field(default_factory=dict)  # the workload's parameters, for the reports


# One-way delays between three continents (round trips of ~80, ~160 and ~180 ms), 5 ms inside one.
INTERCONTINENTAL = LatencyModel(default_s=0.005, between=(("us", "eu", 0.040), ("eu", "asia", 0.080),
                                                           ("us", "asia", 0.090)))
REGIONS = ("us", "eu", "asia")


def intercontinental(scenario: Scenario) -> Scenario:
    """`scenario` with its nodes spread round-robin over three continents (`INTERCONTINENTAL` delays)."""
    nodes = [replace(node, region=REGIONS[i % len(REGIONS)]) for i, node in enumerate(scenario.nodes)]
    config = replace(scenario.config or SimConfig(), latency=INTERCONTINENTAL)
    note = "nodes spread round-robin over us / eu / asia (one-way 40-90 ms between continents)"
    return replace(scenario, nodes=nodes, config=config, notes=[*scenario.notes, note])


def _nodes(profiles: Sequence[EngineProfile], policy: PolicyConfig = REFERENCE_POLICY) -> list[NodeSpec]:
    return [NodeSpec(f"node{i}", profile, (MODEL,), policy) for i, profile in enumerate(profiles, start=1)]


def _lengths(lengths: MathLengths) -> str:
    if lengths.output_tokens is not None:
        return f"{lengths.output_tokens} tokens each"
    return f"log-normal, median {lengths.median_output:.0f} tokens, sigma {lengths.sigma}, cut at {lengths.max_tokens}"


def build(name: str, seed: int = 0, *, schedule_path: Path | None = None, trace_path: Path | None = None,
          trace_scale: int | None = None, lengths: MathLengths | None = None, burst_s: float = BURST_S) -> Scenario:
    """The scenario called `name` (see the module docstring), its random parts drawn from `seed`; the
    join-leave bursts each spread evenly over `burst_s` seconds (0: every request of a burst at one instant)."""
    if burst_s < 0:
        raise ValueError(f"burst_s must be >= 0, not {burst_s}")
    lengths = lengths or MathLengths()
    answers = {"prompt tokens": "uniform 60-400", "answer tokens": _lengths(lengths)}
    r3090, r4090, a100 = PROFILES["qwen3-8b-rtx3090"], PROFILES["qwen3-8b-rtx4090"], PROFILES["qwen3-8b-a100"]
    if name == "schedule":
        nodes = _nodes([r3090] * 4)
        if schedule_path is not None:
            requests = schedule(schedule_path, seed, lengths)
            note = f"the paper's schedule from {schedule_path} ({len(requests)} requests)"
        else:
            requests = synthetic_schedule(seed, lengths)
            note = ("the paper's schedule file was not given (--schedule): same per-node counts 43/9/47/13 at "
                    "random times over 235 s")
        workload = {"arrivals": str(schedule_path) if schedule_path is not None
                    else "uniform over 0-235 s, 43/9/47/13 at node1-4", **answers}
        if schedule_path is not None:
            workload["prompt tokens"] = "from the problem text (~3.6 characters a token + 20)"
        return Scenario(name, "Paper's request schedule, 4 × RTX 3090", nodes, requests, notes=[note],
                        workload=workload)
    swing = {"arrivals": "Poisson: node1-2 at 1/15 req/s for 0-300 s then 1/30 to 600 s, node3-4 the reverse",
             **answers}
    if name == "load-swing":
        nodes = _nodes([r3090] * 4)
        requests = load_swing([n.name for n in nodes], seed, lengths)
        return Scenario(name, "Load swing, 4 × RTX 3090", nodes, requests, workload=swing)
    if name == "hetero":
        nodes = _nodes([r3090, r3090, r4090, a100])
        requests = load_swing([n.name for n in nodes], seed, lengths)
        return Scenario(name, "Load swing on mixed GPUs (3090, 3090, 4090, A100)", nodes, requests, workload=swing)
    if name == "azure":
        nodes = _nodes([r3090] * 5)
        rows = read_azure_trace(trace_path)
        scale = trace_scale if trace_scale is not None else (3 if trace_path is None else 30)
        requests = azure_time_zones(rows, [n.name for n in nodes], scale=scale, cap=1000)
        source = "the vendored 1/10 slice" if trace_path is None else str(trace_path)
        return Scenario(name, "Azure conversation trace, 5 × RTX 3090, time zones emulated", nodes, requests,
                        thresholds_s=tuple(float(t) for t in range(5, 61, 5)),
                        notes=[f"trace: {source}, every {scale}th row, first 1,000 requests; node i's hour is "
                               "rotated by i/5 of its length (time zones)"],
                        workload={"arrivals": f"trace {source}, every {scale}th row, first 1,000, node i's hour "
                                              "rotated by i/5", "prompt and answer tokens": "the trace's"})
    if name == "join-leave":
        nodes = _nodes([r3090] * 5)
        nodes[3] = replace(nodes[3], leave_s=120.0)
        nodes[4] = replace(nodes[4], join_s=600.0)
        rng = random.Random(seed)
        short = MATH500_LENGTHS  # MATH500, as the reference harness
        requests = [RequestSpec(start + burst_s * i / count, source, short.prompt(rng), short.output(rng), MODEL)
                    for source, start, count in (("node1", 0.0, 150), ("node2", 150.0, 150), ("node3", 300.0, 200))
                    for i in range(count)]
        return Scenario(name, "Dynamic participation: node4 leaves at 120 s, node5 joins at 600 s", nodes,
                        requests, thresholds_s=tuple(float(t) for t in range(100, 601, 50)), window_s=60.0,
                        notes=["the reference harness's bursts (tests/test.py): 150/150/200 MATH500 requests from "
                               f"0/150/300 s, each spread evenly over {burst_s:g} s (answers: median 1,500 tokens)"],
                        workload={"arrivals": "bursts of 150/150/200 at node1/2/3 from 0/150/300 s",
                                  "burst spread (s)": burst_s, "prompt tokens": "uniform 60-400",
                                  "answer tokens": _lengths(short), "node4 leaves (s)": 120.0,
                                  "node5 joins (s)": 600.0})
    if name == "quality":
        return _quality(seed)
    raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")


SCENARIOS = ("schedule", "load-swing", "hetero", "azure", "join-leave", "quality")

# The paper's duel win rates (model capacity experiment: Qwen3-8B / 4B / 0.6B) as the classes' qualities.
QUALITY_CLASSES = {"A": 0.57, "B": 0.53, "C": 0.39}


def _quality(seed: int) -> Scenario:
    """The reference's incentive setup (PAPER.md §6.5): node0 a pure dispatcher, nodes 1-6 pure executors in
    three quality classes (two each), every executor holding the contract's minimum stake (its fixed stake:
    topped up from credit after a lost duel, a won bond's excess unstaked back to credit after the unbonding
    period), 10,000 credits each; 2,000 MATH500 requests to node0, 4 every 6 s, with
    P_INSPECT 0.1; answers without thinking (max_tokens 4,096, as the reference's executors)."""
    unit = WEI_PER_CREDIT
    min_stake = DeploymentParams().min_stake_wei
    dispatcher = PolicyConfig(target_token_usage=-1.0, offload_frequency=1.0, queue_frequency=0.0,
                              accept_frequency=0.0, p_inspect=0.1, auto_stake=False, fixed_stake_wei=0,
                              stake_unit_wei=unit)
    executor = PolicyConfig(target_token_usage=0.6, offload_frequency=0.0, queue_frequency=1.0, accept_frequency=1.0,
                            p_inspect=0.0, auto_stake=False, fixed_stake_wei=min_stake, stake_unit_wei=unit)
    profile = PROFILES["qwen3-8b-rtx3090"]
    nodes = [NodeSpec("node0", profile, (MODEL,), dispatcher, initial_credit_wei=10_000 * unit)]
    for i, cls in enumerate("AABBCC", start=1):
        nodes.append(NodeSpec(f"node{i}", profile, (MODEL,), executor, initial_credit_wei=10_000 * unit,
                              quality=QUALITY_CLASSES[cls]))
    rng = random.Random(seed)
    lengths = MathLengths(max_tokens=4096, median_output=700.0, sigma=0.6)
    requests = [RequestSpec(6.0 * (i // 4) + 1.5 * (i % 4), "node0", lengths.prompt(rng), lengths.output(rng), MODEL)
                for i in range(2000)]
    return Scenario("quality", "Quality incentives: classes A/B/C (win rates 0.57/0.53/0.39), contract settlement",
                    nodes, requests, thresholds_s=(60.0, 120.0, 300.0), modes=("decentralized",),
                    workload={"arrivals": "2,000 at node0, 4 every 6 s (1.5 s apart)",
                              "prompt tokens": "uniform 60-400", "answer tokens": _lengths(lengths),
                              "classes": "node1-2 A 0.57, node3-4 B 0.53, node5-6 C 0.39", "P_INSPECT": 0.1},
                    config=SimConfig(contract=True, judge_accuracy=0.9),
                    notes=["classes: node1-2 A (0.57), node3-4 B (0.53), node5-6 C (0.39); judges vote for the better "
                           "answer with probability 0.9; stake, duels and slashing on the contract's reference "
                           "model (ledger.model)"])


_POLICY_KNOBS = ("target_token_usage", "offload_frequency", "queue_frequency", "accept_frequency", "p_inspect",
                 "auto_stake")
# SimConfig fields the reports leave out: set per run (mode, seed), printed another way (latency), or too
# long to print (the contract's deployment parameters: ledger.params defaults unless a scenario says).
_CONFIG_HIDDEN = {"mode", "seed", "latency", "contract_params", "sample_every_s"}
_DUEL_KNOBS = {"judge_accuracy", "judges", "appeal"}  # only matter with duels on (contract)


def parameters(scenario: Scenario) -> dict[str, Any]:
    """Everything that sets `scenario` up, as plain values: nodes (engine profile, region, join/leave),
    their policies, the workload, the network settings and the SLO thresholds (printed by the reports)."""
    config = scenario.config or SimConfig()
    nodes = []
    for n in scenario.nodes:
        text = f"{n.name}: {n.profile.name}"
        text += "" if n.region == "default" else f" in {n.region}"
        text += "" if n.join_s == 0 else f", joins at {n.join_s:g} s"
        text += "" if n.leave_s is None else f", leaves at {n.leave_s:g} s"
        if config.contract:
            text += f", quality {n.quality:g}"
            for knob in ("judge_accuracy", "judges"):  # a node's own judging, where it has one
                if getattr(n, knob, None) is not None:
                    text += f", {knob} {getattr(n, knob)}"
        nodes.append(text)
    policies: dict[str, list[str]] = {}
    for n in scenario.nodes:
        knobs = ", ".join(f"{k} {getattr(n.policy, k)}" for k in _POLICY_KNOBS)
        policies.setdefault(knobs, []).append(n.name)
    network: dict[str, Any] = {}
    for f in fields(SimConfig):
        if f.name in _CONFIG_HIDDEN or (f.name in _DUEL_KNOBS and not config.contract):
            continue
        value = getattr(config, f.name)
        network[f.name] = value if isinstance(value, bool | int | float | str) else str(value)
    network["link one-way (s)"] = (f"{config.latency.default_s:g} inside a region"
                                   + "".join(f", {a}-{b} {s:g}" for a, b, s in config.latency.between))
    return {"nodes": nodes, "policies": {" ".join(names): knobs for knobs, names in policies.items()},
            "workload": {"requests": len(scenario.requests), **scenario.workload}, "network": network,
            "slo thresholds (s)": f"{min(scenario.thresholds_s):g}-{max(scenario.thresholds_s):g}, "
                                  f"{len(scenario.thresholds_s)} points"}


def run_modes(scenario: Scenario, seed: int, modes: Sequence[Mode] = MODES, config: SimConfig | None = None,
              progress: Callable[[str, float, int, int], None] | None = None) -> dict[str, list[RequestRecord]]:
    """Run `scenario` once per mode; the records per mode."""
    out: dict[str, list[RequestRecord]] = {}
    for mode in modes:
        if mode not in scenario.modes:
            continue
        cfg = replace(config or scenario.config or SimConfig(), mode=mode, seed=seed)

        def report(now: float, done: int, total: int, mode: str = mode) -> None:
            if progress is not None:
                progress(mode, now, done, total)

        out[mode] = Simulation(scenario.nodes, scenario.requests, cfg, progress=report).run()
    return out
