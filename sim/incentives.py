"""`wwwserve sim incentives`: the paper's incentive claims on a network larger than the reference's seven nodes.

The setup is the quality scenario's (`sim.scenarios`, PAPER.md §6.5) scaled up: `dispatchers` pure
dispatchers (the only origins, P_INSPECT 0.1, 100,000 credits each so escrow never runs out) and pure
executors in four quality classes, `per_class` each of A, B, C with the paper's win rates 0.57 / 0.53 / 0.39
as qualities and `random_nodes` of class R, a random responder (quality 0.02: its answer is the better
one in about 3 % of duels against class C, 1.5 % against A). Every executor holds the contract's minimum
stake, topped up from its free credit after a duel took some (`PolicyConfig.fixed_stake_wei`, as the quality
scenario and `bench/incentives.py`), and starts with `credit_wei`, its stake included (1,000 credits: the live bench's
`--credit 1.0`). Users send `requests` math requests (answers log-normal, median 700 tokens, cut at 4,096, as
the quality scenario) to the dispatchers in turn, Poisson at `rate_per_executor` per executor. Stake,
credit and duels run on the contract's reference model (`SimConfig.contract`): an executor's credit moves
by the delegation fee of each request it serves (a voucher from the dispatcher, claimed every 30 s) and
through duels (stake won or lost, the challenger's fee, judge fees and fines).

With `restake` every executor stakes all its free credit instead (a fixed stake above any balance), so
what it wins in duels becomes routing weight and what it loses takes weight away.

Each judge setting (`settings_for`: the measured judges, weaker ones, weaker ones a third of which abstain
as SmolLM2-135M did) runs over `seeds` seeds. A class's **routable stake share** is its stake counted as
routing and the contract's sortition count it (a stake below MIN_STAKE counts 0) over all executors'; its
**stake share** the same for active stake, its **credit share** for free credit, its **total share** for
stake + credit (the ledger's samples count stake on its way back to credit, unbonding, as stake, so a
won bond shows as routable until the fixed-stake rule's unstake is withdrawn); each per time bin is the
seed mean with a 95 % t-interval (`metrics.mean_interval`), and
`RULES` turns the final shares and the bankruptcies into a verdict per claim of the paper.

**Bankruptcy** of a random responder: the first balance sample (every `sample_every_s`) at which its
stake + free credit is below the contract's MIN_STAKE. From then on it cannot top its stake back up to
MIN_STAKE, so routing gives it no weight (`routing.routable_stake_wei`) and the contract's sortition tree
none either (draws read the tree as the epoch began): it is no longer delegated to, drawn as a challenger
or, from the next epoch, seated as a judge. The simulator does not stop it otherwise (requests already
queued at it still finish; a duel still open or a seat drawn before may pay it: `recovered` counts the
responders back at MIN_STAKE or above at a later sample). A responder never bankrupt within the run
counts at the run's end (a lower bound), and `bankrupt_share` says how many were. The **share of users it
served before that**: the requests it executed among the user requests that arrived before its bankruptcy,
beside `1 / executors`, the share an equal split would give it.

R judges as a coin would (per-order accuracy 0.5: right a quarter of the time, wrong a quarter, abstaining
half): a node that answers at random to save compute judges the same way.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from wwwserve.errors import WWWServeError
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.node.policy import PolicyConfig
from wwwserve.sim.claims import figure
from wwwserve.sim.config import REFERENCE_JUDGE, SMOLLM2_JUDGE, JudgeBehaviour, NodeSpec, RequestSpec, SimConfig
from wwwserve.sim.engine import PROFILES
from wwwserve.sim.metrics import interval_text, mean_interval
from wwwserve.sim.network import Simulation
from wwwserve.sim.scenarios import QUALITY_CLASSES
from wwwserve.sim.workloads import MODEL, MathLengths

__all__ = ["CLASSES", "DEFAULT_SETTINGS", "KINDS", "RULES", "IncentiveSetup", "IncentiveSetupError", "JudgeSetting",
           "bankruptcy_times", "build_network", "run_incentives", "run_one", "settings_for"]

RANDOM_QUALITY = 0.02
CLASSES: dict[str, float] = {**QUALITY_CLASSES, "R": RANDOM_QUALITY}
RANDOM_JUDGE_ACCURACY = 0.5
RESTAKE_ALL_WEI = 10**30  # 10^12 ETH: more than any executor holds
LENGTHS = MathLengths(max_tokens=4096, median_output=700.0, sigma=0.6)  # the quality scenario's answers


class IncentiveSetupError(WWWServeError, ValueError):
    """A setup the incentive run cannot take (the CLI prints it as one line)."""


@dataclass(frozen=True)
class JudgeSetting:
    """How the executors judge in one run: per-order accuracy, behaviour, and every `abstaining_every`-th
    executor of each class judging as `abstaining` instead (0: none)."""

    name: str
    accuracy: float
    behaviour: JudgeBehaviour = REFERENCE_JUDGE
    abstaining_every: int = 0
    abstaining: JudgeBehaviour = SMOLLM2_JUDGE
    note: str = ""


def settings_for(weak_accuracy: float = 0.7, names: Sequence[str] | None = None) -> tuple[JudgeSetting, ...]:
    """The settings `wwwserve sim incentives` runs (`names` of them, in that order; default all three): the
    measured judges, weaker ones, weaker ones of which a third always abstain (SmolLM2-135M as measured)."""
    if not 0.0 <= weak_accuracy <= 1.0:
        raise IncentiveSetupError(f"--judge-accuracy must be between 0 and 1, not {weak_accuracy:g}")
    every = _settings(weak_accuracy)
    if names is None:
        return every
    by_name = {s.name: s for s in every}
    unknown = [n for n in names if n not in by_name]
    if unknown or not names or len(set(names)) != len(names):
        raise IncentiveSetupError(f"--settings takes distinct names from {', '.join(by_name)}; got "
                                  f"{','.join(names)!r}")
    return tuple(by_name[n] for n in names)


def _settings(weak_accuracy: float) -> tuple[JudgeSetting, ...]:
    return (
        JudgeSetting("measured", 0.9, note="the live network's judge behaviour (SimConfig.judges default: two "
                                           "orders, 4.1 % silent seats), right per order with probability 0.9 "
                                           "(the quality scenario's)"),
        JudgeSetting("weak", weak_accuracy, note=f"the same behaviour, right per order with probability "
                                                 f"{weak_accuracy:g}"),
        JudgeSetting("weak+abstaining", weak_accuracy, abstaining_every=3,
                     note=f"as weak ({weak_accuracy:g} per order), and every third executor of each class "
                          "judges as SmolLM2-135M did (SMOLLM2_JUDGE: no letter or the first answer, so it "
                          "always abstains)"),
    )


DEFAULT_SETTINGS = settings_for()


@dataclass(frozen=True)
class IncentiveSetup:
    """The network and workload of one incentive run (see the module docstring)."""

    per_class: int = 10  # executors in each of classes A, B, C
    random_nodes: int = 3  # executors of class R
    dispatchers: int = 4
    requests: int = 40_000
    rate_per_executor: float = 1 / 9  # user requests per second per executor (the quality scenario's load)
    credit_wei: int = 1_000 * WEI_PER_CREDIT
    dispatcher_credit_wei: int = 100_000 * WEI_PER_CREDIT
    p_inspect: float = 0.1
    sample_every_s: float = 10.0
    bins: int = 40  # time bins of the share series
    restake: bool = False  # executors stake all their free credit (else they hold MIN_STAKE)

    def __post_init__(self) -> None:
        if self.per_class < 1:
            raise IncentiveSetupError(f"--nodes must be >= 1, not {self.per_class}")
        if self.random_nodes < 0 or self.dispatchers < 1:
            raise IncentiveSetupError("--random-nodes must be >= 0 and --dispatchers >= 1")
        if self.requests < 1:
            raise IncentiveSetupError(f"--requests must be >= 1, not {self.requests}")
        if self.rate_per_executor <= 0 or self.sample_every_s <= 0 or self.bins < 1:
            raise IncentiveSetupError("the request rate, the sample interval and the bins must be > 0")
        if self.credit_wei < 0 or self.dispatcher_credit_wei < 0:
            raise IncentiveSetupError("credits must be >= 0")

    @property
    def executors(self) -> int:
        return 3 * self.per_class + self.random_nodes


def _class_of(name: str) -> str:
    return name[0].upper()


def build_network(setup: IncentiveSetup, setting: JudgeSetting, seed: int) -> tuple[list[NodeSpec],
                                                                                    list[RequestSpec], SimConfig]:
    """Nodes, user requests and settings of one run."""
    unit = WEI_PER_CREDIT
    params = DeploymentParams()
    profile = PROFILES["qwen3-8b-rtx3090"]
    dispatcher = PolicyConfig(target_token_usage=-1.0, offload_frequency=1.0, queue_frequency=0.0,
                              accept_frequency=0.0, p_inspect=setup.p_inspect, auto_stake=False, fixed_stake_wei=0,
                              stake_unit_wei=unit)
    # Restaking: a fixed stake above any balance, which the fixed-stake rule fills from all free credit.
    stake = RESTAKE_ALL_WEI if setup.restake else params.min_stake_wei
    executor = PolicyConfig(target_token_usage=0.6, offload_frequency=0.0, queue_frequency=1.0, accept_frequency=1.0,
                            p_inspect=0.0, auto_stake=False, fixed_stake_wei=stake, stake_unit_wei=unit)
    nodes = [NodeSpec(f"d{i}", profile, (MODEL,), dispatcher, initial_credit_wei=setup.dispatcher_credit_wei)
             for i in range(setup.dispatchers)]
    counts = {"A": setup.per_class, "B": setup.per_class, "C": setup.per_class, "R": setup.random_nodes}
    for cls, count in counts.items():
        for i in range(count):
            judges: JudgeBehaviour | None = None
            accuracy: float | None = None
            if cls == "R":
                accuracy = RANDOM_JUDGE_ACCURACY
            elif setting.abstaining_every and i % setting.abstaining_every == setting.abstaining_every - 1:
                judges = setting.abstaining
            nodes.append(NodeSpec(f"{cls.lower()}{i}", profile, (MODEL,), executor, initial_credit_wei=setup.credit_wei,
                                  quality=CLASSES[cls], judge_accuracy=accuracy, judges=judges))
    rng = random.Random(f"incentives/{seed}")
    rate = setup.rate_per_executor * setup.executors
    t = 0.0
    requests = []
    for i in range(setup.requests):
        t += rng.expovariate(rate)
        requests.append(RequestSpec(t, f"d{i % setup.dispatchers}", LENGTHS.prompt(rng), LENGTHS.output(rng), MODEL))
    config = SimConfig(contract=True, seed=seed, judge_accuracy=setting.accuracy, judges=setting.behaviour,
                       sample_every_s=setup.sample_every_s)
    return nodes, requests, config


def bankruptcy_times(samples: Sequence[tuple[float, dict[str, tuple[int, int]]]], names: Sequence[str],
                     min_stake_wei: int) -> dict[str, tuple[float | None, bool]]:
    """Per node of `names`: (the first sample time at which its stake + free credit is below
    `min_stake_wei`, or None; whether a later sample shows it back at or above)."""
    out: dict[str, tuple[float | None, bool]] = {}
    for name in names:
        when: float | None = None
        recovered = False
        for t, snapshot in samples:
            total = sum(snapshot[name])
            if when is None and total < min_stake_wei:
                when = t
            elif when is not None and total >= min_stake_wei:
                recovered = True
        out[name] = (when, recovered)
    return out


KINDS = ("routable", "stake", "credit", "total")


def _shares(snapshot: dict[str, tuple[int, int]], executors: Sequence[str],
            min_stake_wei: int) -> dict[str, dict[str, float]]:
    """Per class: its share of the executors' routable stake (a stake below MIN_STAKE counts 0, as routing
    and the sortition tree count it), of their stake, of their free credit, and of stake + credit."""

    def parts(names: Sequence[str]) -> tuple[int, int, int]:
        stake = [snapshot[n][0] for n in names]
        return (sum(x for x in stake if x >= min_stake_wei), sum(stake), sum(snapshot[n][1] for n in names))

    routable_all, stake_all, credit_all = parts(executors)

    def share(part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    out: dict[str, dict[str, float]] = {}
    for cls in CLASSES:
        members = [n for n in executors if _class_of(n) == cls]
        if members:
            routable, stake, credit = parts(members)
            out[cls] = {"routable": share(routable, routable_all), "stake": share(stake, stake_all),
                        "credit": share(credit, credit_all), "total": share(stake + credit, stake_all + credit_all)}
    return out


@dataclass(frozen=True)
class _Task:
    """One setting at one seed (picklable, for a worker process)."""

    setup: IncentiveSetup
    setting: JudgeSetting
    seed: int
    grid: tuple[float, ...]


def time_grid(setup: IncentiveSetup) -> tuple[float, ...]:
    """Bin edges of the share series: `bins` + 1 points from 0 to the expected last arrival, multiples of
    the sample interval (every seed has a sample at each)."""
    horizon = setup.requests / (setup.rate_per_executor * setup.executors)
    step = max(1, round(horizon / setup.bins / setup.sample_every_s)) * setup.sample_every_s
    return tuple(i * step for i in range(setup.bins + 1))


def run_one(setup: IncentiveSetup, setting: JudgeSetting, seed: int,
            grid: Sequence[float] | None = None) -> dict[str, Any]:
    """One run: the share series at `grid`, final shares, duel counts, each random responder's bankruptcy
    and the share of user requests it served before it."""
    nodes, requests, config = build_network(setup, setting, seed)
    sim = Simulation(nodes, requests, config)
    records = sim.run()
    ledger = sim.ledger
    assert ledger is not None
    samples = ledger.samples
    executors = [n.name for n in nodes if not n.name.startswith("d")]
    grid = tuple(grid if grid is not None else time_grid(setup))
    min_stake = config.contract_params.min_stake_wei
    series = []
    i = 0
    for t in grid:  # the latest sample at or before t (after the run's end: its last)
        while i + 1 < len(samples) and samples[i + 1][0] <= t:
            i += 1
        series.append(_shares(samples[i][1], executors, min_stake))
    randoms = [n for n in executors if _class_of(n) == "R"]
    end_s = samples[-1][0]
    arrivals = sorted(r.arrival_s for r in records)
    served_by = {n: [r.arrival_s for r in records if r.executor == n] for n in executors}
    responders = {}
    for name, (when, recovered) in bankruptcy_times(samples, randoms, min_stake).items():
        cut = end_s if when is None else when
        before = sum(1 for a in arrivals if a < cut)
        mine = sum(1 for a in served_by[name] if a < cut)
        responders[name] = {"bankrupt_s": when, "recovered": recovered, "served": len(served_by[name]),
                            "served_before": mine, "arrived_before": before,
                            "served_share_before": mine / before if before else 0.0,
                            "final_wei": sum(samples[-1][1][name])}
    won = dict.fromkeys(CLASSES, 0)
    lost = dict.fromkeys(CLASSES, 0)
    for d in ledger.duels:
        if d.outcome in ("a_won", "b_won"):
            winner, loser = (d.a, d.b) if d.outcome == "a_won" else (d.b, d.a)
            won[_class_of(winner)] += 1
            lost[_class_of(loser)] += 1
    served = {cls: sum(1 for r in records if r.executor and _class_of(r.executor) == cls) for cls in CLASSES}
    return {
        "setting": setting.name, "seed": seed, "simulated_s": end_s, "requests": len(records),
        "done": sum(r.status == "done" for r in records), "duels": len(ledger.duels),
        "outcomes": {o: sum(d.outcome == o for d in ledger.duels) for o in sorted({d.outcome for d in ledger.duels})},
        "won": won, "lost": lost, "served": served,
        "series": series, "final": _shares(samples[-1][1], executors, min_stake), "responders": responders,
    }


def _run_task(task: _Task) -> dict[str, Any]:
    return run_one(task.setup, task.setting, task.seed, task.grid)


def aggregate(runs: Sequence[dict[str, Any]], setup: IncentiveSetup, setting: JudgeSetting,
              grid: Sequence[float]) -> dict[str, Any]:
    """One setting's runs (one per seed, seed order) as means with 95 % intervals, and its verdicts."""
    classes = [c for c in CLASSES if c in runs[0]["final"]]
    series = {c: {k: [mean_interval([r["series"][i][c][k] for r in runs]) for i in range(len(grid))] for k in KINDS}
              for c in classes}
    final = {c: {k: figure([r["final"][c][k] for r in runs]) for k in KINDS} for c in classes}
    win_rate = {}
    for c in classes:
        rates = [r["won"][c] / (r["won"][c] + r["lost"][c]) for r in runs if r["won"][c] + r["lost"][c]]
        win_rate[c] = figure(rates) if rates else None
    out: dict[str, Any] = {
        "setting": asdict(setting), "seeds": [r["seed"] for r in runs],
        "simulated_s": figure([r["simulated_s"] for r in runs]), "duels": figure([r["duels"] for r in runs]),
        "done_share": figure([r["done"] / r["requests"] for r in runs]),
        "outcomes": {o: figure([r["outcomes"].get(o, 0) for r in runs])
                     for o in sorted({o for r in runs for o in r["outcomes"]})},
        "served_share": {c: figure([r["served"][c] / r["requests"] for r in runs]) for c in classes},
        "win_rate": win_rate, "final": final, "series": series,
        # a class's share an equal split would give it (every executor holds MIN_STAKE and the same credit)
        "start_share": {c: (setup.per_class if c != "R" else setup.random_nodes) / setup.executors for c in classes},
    }
    pairs = [(a, b) for a, b in (("A", "B"), ("B", "C"), ("A", "C")) if a in classes and b in classes]
    out["share_differences"] = {kind: {f"{a}-{b}": figure([r["final"][a][kind] - r["final"][b][kind] for r in runs])
                                       for a, b in pairs} for kind in ("total", "routable")}
    if setup.random_nodes:
        per_seed_time = []
        per_seed_bankrupt = []
        per_seed_share = []
        per_seed_final = []
        recovered = 0
        for r in runs:
            rs = r["responders"].values()
            per_seed_time.append(sum(x["bankrupt_s"] if x["bankrupt_s"] is not None else r["simulated_s"]
                                     for x in rs) / len(rs))
            per_seed_bankrupt.append(sum(x["bankrupt_s"] is not None for x in rs) / len(rs))
            per_seed_share.append(sum(x["served_share_before"] for x in rs) / len(rs))
            per_seed_final.append(sum(x["final_wei"] for x in rs) / len(rs) / WEI_PER_CREDIT)
            recovered += sum(x["recovered"] for x in rs)
        out["random_responder"] = {
            "bankrupt_s": figure(per_seed_time), "bankrupt_share": figure(per_seed_bankrupt),
            "served_share_before": figure(per_seed_share), "equal_share": 1 / setup.executors,
            "recovered": recovered, "responders": setup.random_nodes * len(runs),
            "final_credits": figure(per_seed_final), "start_credits": setup.credit_wei / WEI_PER_CREDIT,
        }
    out["verdicts"] = _verdicts(out, len(runs))
    return out


def _ordering(diffs: dict[str, dict[str, Any]]) -> str:
    if all(v["lo"] is not None and v["lo"] > 0 for v in diffs.values()):
        return "reproduced"
    return "partly" if diffs["A-C"]["lo"] is not None and diffs["A-C"]["lo"] > 0 else "not"


def _verdicts(agg: dict[str, Any], seeds: int) -> dict[str, dict[str, str]]:
    """The paper's incentive claims, judged by the rules in `RULES`."""
    if seeds < 2:
        return {k: {"verdict": "no verdict", "why": "one seed: no interval"} for k in RULES}
    out = {}
    claims = (("better_gain", "total", "stake + credit"), ("better_stake", "routable", "routable stake"))
    for claim, kind, what in claims:
        diffs = agg["share_differences"][kind]
        spans = ", ".join(f"{k} {interval_text(v, 100, 1, True)}" for k, v in diffs.items())
        out[claim] = {"verdict": _ordering(diffs),
                      "why": f"final {what} share differences (points, paired over seeds): {spans}"}
    rr = agg.get("random_responder")
    if rr is not None:
        share = rr["bankrupt_share"]
        verdict = "reproduced" if share["mean"] == 1.0 else "partly" if share["mean"] > 0 else "not"
        out["random_bankrupt"] = {"verdict": verdict, "why": f"{share['mean'] * 100:.0f} % of random responders "
                                                             "bankrupt within the run"}
    return out


RULES = {
    "better_gain": "paper: nodes serving better answers gain credit. Ours: each class's final share of the executors' "
                   "stake + credit. Reproduced: A > B, B > C and A > C, each difference's 95 % interval above 0 "
                   "(paired over seeds); partly: only A > C; not: not even that",
    "better_stake": "paper (its stake-share dynamics, Props. 5.6/5.7, as reconstructed in PAPER.md): better nodes "
                    "gain routing share. Ours: each class's final share of the routable stake (MIN_STAKE and up), "
                    "the same rule as better_gain",
    "random_bankrupt": "paper: random responders are quickly penalized. Ours: a random responder's stake + credit "
                       "falls below MIN_STAKE. Reproduced: every random responder of every seed within the run; "
                       "partly: some; not: none",
}


@dataclass
class IncentiveResult:
    """What `run_incentives` wrote: the summary (also summary.json) and the files."""

    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    plotted: bool = False


def run_incentives(out: Path | None, setup: IncentiveSetup | None = None,
                   settings: Sequence[JudgeSetting] = DEFAULT_SETTINGS, *, seed: int = 0, seeds: int = 10,
                   jobs: int = 1, progress: Callable[[str], None] | None = None) -> IncentiveResult:
    """Run every setting at seeds `seed` .. `seed + seeds - 1`, `jobs` runs at a time (each in its own
    process when `jobs` > 1: the same numbers as one), aggregate, and write `out/` when given."""
    if seeds < 1:
        raise IncentiveSetupError(f"--seeds must be >= 1, not {seeds}")
    if jobs < 1:
        raise IncentiveSetupError(f"--jobs must be >= 1, not {jobs}")
    if not settings:
        raise IncentiveSetupError("no judge setting to run")
    setup = setup or IncentiveSetup()
    say = progress or (lambda _m: None)
    grid = time_grid(setup)
    tasks = [_Task(setup, s, sd, grid) for s in settings for sd in range(seed, seed + seeds)]
    say(f"{len(settings)} judge settings x {seeds} seeds = {len(tasks)} runs of {setup.executors} executors + "
        f"{setup.dispatchers} dispatchers, {setup.requests:,} requests each, {jobs} at a time")
    started = time.monotonic()
    results: dict[int, dict[str, Any]] = {}

    def done(i: int, result: dict[str, Any]) -> None:
        results[i] = result
        task = tasks[i]
        say(f"  [{len(results)}/{len(tasks)}] {task.setting.name} seed {task.seed}: {result['duels']} duels, "
            f"{result['simulated_s']:.0f} s simulated ({time.monotonic() - started:.0f} s elapsed)")

    if jobs == 1 or len(tasks) == 1:
        for i, task in enumerate(tasks):
            done(i, _run_task(task))
    else:
        # spawn, not fork: a worker starts from a clean interpreter, whatever threads the parent holds.
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_run_task, task): i for i, task in enumerate(tasks)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    ordered = [results[i] for i in range(len(tasks))]
    summary: dict[str, Any] = {
        "setup": {**asdict(setup), "executors": setup.executors, "random_quality": RANDOM_QUALITY,
                  "random_judge_accuracy": RANDOM_JUDGE_ACCURACY, "classes": CLASSES,
                  "min_stake_wei": DeploymentParams().min_stake_wei,
                  "duel_bond_wei": DeploymentParams().duel_bond_wei},
        "interval": "95 % Student t over the seeds", "rules": RULES, "grid_s": list(grid),
        "settings": {s.name: aggregate([r for r in ordered if r["setting"] == s.name], setup, s, grid)
                     for s in settings},
    }
    result = IncentiveResult(summary)
    if out is not None:
        result.files, result.plotted = _write(out, summary, ordered)
    return result


def _write(out: Path, summary: dict[str, Any], runs: Sequence[dict[str, Any]]) -> tuple[list[Path], bool]:
    out.mkdir(parents=True, exist_ok=True)
    files = []
    shares = out / "shares.csv"
    with shares.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "class", "kind", "t_s", "mean", "lo", "hi", "seeds"])
        for name, agg in summary["settings"].items():
            for cls, kinds in agg["series"].items():
                for kind, points in kinds.items():
                    for t, p in zip(summary["grid_s"], points, strict=True):
                        w.writerow([name, cls, kind, f"{t:.0f}", f"{p['mean']:.6f}",
                                    "" if p["lo"] is None else f"{p['lo']:.6f}",
                                    "" if p["hi"] is None else f"{p['hi']:.6f}", p["n"]])
    files.append(shares)
    responders = out / "responders.csv"
    with responders.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", "seed", "node", "bankrupt_s", "recovered", "served", "served_before",
                    "arrived_before", "served_share_before"])
        for r in runs:
            for node, x in r["responders"].items():
                w.writerow([r["setting"], r["seed"], node, "" if x["bankrupt_s"] is None else f"{x['bankrupt_s']:.0f}",
                            x["recovered"], x["served"], x["served_before"], x["arrived_before"],
                            f"{x['served_share_before']:.6f}"])
    files.append(responders)
    plotted = _plot(out / "shares.png", summary)
    summary["plot"] = "shares.png" if plotted else None
    if plotted:
        files.append(out / "shares.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    files += [out / "summary.json", out / "summary.md"]
    return files, plotted


def _plot(path: Path, summary: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    settings = summary["settings"]
    kinds = (("routable", "routable stake share"), ("stake", "stake share"), ("credit", "free-credit share"),
             ("total", "stake + credit share"))
    colors = {"A": "tab:green", "B": "tab:blue", "C": "tab:orange", "R": "tab:red"}
    fig, axes = plt.subplots(len(settings), len(kinds), figsize=(4 * len(kinds), 2.8 * len(settings)),
                             sharex=True, squeeze=False)
    xs = [t / 60 for t in summary["grid_s"]]
    for row, (name, agg) in enumerate(settings.items()):
        for col, (kind, label) in enumerate(kinds):
            ax = axes[row][col]
            for cls, series in agg["series"].items():
                points = series[kind]
                ax.plot(xs, [100 * p["mean"] for p in points], color=colors.get(cls),
                        label=f"{cls} ({CLASSES[cls]:g})")
                if all(p["lo"] is not None for p in points):
                    ax.fill_between(xs, [100 * p["lo"] for p in points], [100 * p["hi"] for p in points],
                                    color=colors.get(cls), alpha=0.2, linewidth=0)
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.grid(alpha=0.3)
            if col == 0:
                ax.set_ylabel("% of executors'")
            if row == len(settings) - 1:
                ax.set_xlabel("time (min)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Incentives at scale: mean and 95 % interval over {len(next(iter(settings.values()))['seeds'])} "
                 "seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown(summary: dict[str, Any]) -> str:
    """summary.md: the setup, per setting the final shares, the random responders, and the verdicts."""
    s = summary["setup"]
    settings = summary["settings"]
    first = next(iter(settings.values()))
    lines = ["# Incentives at scale (simulated, contract settlement)", "",
             f"{len(first['seeds'])} seeds ({first['seeds'][0]}-{first['seeds'][-1]}) per judge setting; every "
             "figure is the seed mean with its 95 % t-interval in brackets (none for one seed); shares in %.", "",
             f"- executors: {s['per_class']} each of classes A/B/C (qualities {CLASSES['A']}/{CLASSES['B']}/"
             f"{CLASSES['C']}, the paper's win rates) and {s['random_nodes']} of class R (random responder, quality "
             f"{s['random_quality']}, judging with per-order accuracy {s['random_judge_accuracy']}); "
             + ("each stakes all its free credit (--restake)" if s["restake"] else
                f"each holds MIN_STAKE ({s['min_stake_wei'] // WEI_PER_CREDIT} credits) topped up from credit")
             + f", starting with {s['credit_wei'] // WEI_PER_CREDIT:,} credits, its stake included; duel bond "
             f"{s['duel_bond_wei'] // WEI_PER_CREDIT} credits",
             f"- dispatchers: {s['dispatchers']} (the only origins, P_INSPECT {s['p_inspect']}, "
             f"{s['dispatcher_credit_wei'] // WEI_PER_CREDIT:,} credits each)",
             f"- workload: {s['requests']:,} requests, Poisson at {s['rate_per_executor']:.3f} req/s per executor, "
             f"to the dispatchers in turn; answers log-normal, median {LENGTHS.median_output:.0f} tokens, cut at "
             f"{LENGTHS.max_tokens}",
             f"- balances sampled every {s['sample_every_s']:g} s; bankruptcy: stake + free credit below MIN_STAKE "
             "(no longer routable, drawn or seated)", ""]
    for name, agg in settings.items():
        it = interval_text
        outcomes = ", ".join(f"{o} {it(v, 1, 0)}" for o, v in agg["outcomes"].items())
        lines += [f"## {name}", "", f"Judges: {agg['setting']['note']}.", "",
                  f"{it(agg['duels'], 1, 0)} duels a run over {it(agg['simulated_s'], 1, 0)} s simulated "
                  f"({outcomes}); {it(agg['done_share'], 100, share=True)} % of requests answered.", "",
                  "| class | quality | start share | final routable stake share | final stake share | final credit "
                  "share | final stake + credit share | duel win rate | requests served |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for cls, f in agg["final"].items():
            shares = (*(f[k] for k in KINDS), agg["win_rate"][cls], agg["served_share"][cls])
            cells = [it(x, 100, share=True) for x in shares]
            start = f"{agg['start_share'][cls] * 100:.1f}"
            lines.append(f"| {cls} | {CLASSES[cls]:g} | {start} | " + " | ".join(cells) + " |")
        grid = summary["grid_s"]
        picks = [len(grid) // 4, len(grid) // 2, 3 * len(grid) // 4, len(grid) - 1]
        lines += ["", "Stake + credit share over time (shares.csv has every bin, stake and credit apart):", "",
                  "| class | " + " | ".join(f"{grid[i]:.0f} s" for i in picks) + " |",
                  "|---|" + "---|" * len(picks)]
        for cls, series in agg["series"].items():
            lines.append(f"| {cls} | " + " | ".join(it(series["total"][i], 100, share=True) for i in picks) + " |")
        rr = agg.get("random_responder")
        if rr is not None:
            lines += ["", f"Random responders: {it(rr['bankrupt_share'], 100, 0, share=True)} % bankrupt within the "
                          f"run, at {it(rr['bankrupt_s'], 1, 0)} s (one not bankrupt counts at the run's end: a lower "
                          f"bound); before that each served {it(rr['served_share_before'], 100, 2, share=True)} % of "
                          f"the users' requests (an equal split: {rr['equal_share'] * 100:.2f} %); "
                          f"{rr['recovered']} of {rr['responders']} came back above MIN_STAKE later. Stake + credit "
                          f"of each: {rr['start_credits']:,.0f} credits at the start, "
                          f"{it(rr['final_credits'], 1, 0)} at the end."]
        lines.append("")
        for claim, v in agg["verdicts"].items():
            lines.append(f"- {claim}: **{v['verdict']}** ({v['why']})")
        lines.append("")
    lines += ["Verdict rules:"] + [f"- {k}: {v}." for k, v in summary["rules"].items()]
    return "\n".join(lines) + "\n"
