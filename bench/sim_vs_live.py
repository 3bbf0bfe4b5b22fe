"""Live vs simulated: one small scenario on a real network and in the simulator, same workload, compared.

What makes "the simulator drives the live code" checkable (issue 16). The scenario
(bench/sim_vs_live/scenario.py): six nodes whose engines are fake backends of three sizes (2, 4 and 6
slots, 0.3 s to the first word, 20 or 30 words/s), one `PolicyConfig` for all (the defaults, p_inspect
0.2, a fixed stake of 1,000 credits, no re-offer of queued requests), duels on the contract, judges that
are the fake backend's scripted judge, and a seeded workload (500 Poisson arrivals at 3 requests/s,
sources weighted towards the two small nodes, answers of 20-60 words).

- Live (bench/sim_vs_live/live.py): anvil, the contract, six `wwwserve node run` processes with
  `backend.kind=fake`, the workload sent open loop to each request's source node, duels read back from the
  chain until every one has ended.
- Simulated: `wwwserve.sim.network.Simulation` on the same workload, each node's engine a `SlotEngine`
  (sim/engine.py `fake_backend_profile`), `SimConfig(contract=True)`, over `--sim-seeds` simulator seeds
  (the workload stays the live one's; only the nodes' random draws change).

Printed per live seed: executor shares per node, delegation rate (executed by a node other than the
user's), latency mean / p50 / p90, the two-sample Kolmogorov-Smirnov distance between the live and the
simulated latencies (beside the distance between two simulator seeds, the simulator's own noise, and the
5 % critical value), and duels opened, settled and by outcome; the live value, the simulator's mean with a
95 % interval over its seeds (`wwwserve.sim.metrics.mean_interval`), and their ratio. No figure is
asserted: a slow machine changes the numbers, never the exit status (the load average is printed).

    .venv/bin/python bench/sim_vs_live.py                      # 500 requests, ~6 minutes
    .venv/bin/python bench/sim_vs_live.py --quick              # 120 requests, ~3 minutes
    .venv/bin/python bench/sim_vs_live.py --no-live            # the simulator side only (seconds)
    .venv/bin/python bench/sim_vs_live.py --live-seeds 3 --json out.json --report out.md
    .venv/bin/python bench/sim_vs_live.py --live-from out.json    # stored live runs vs today's simulator
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_vs_live.compare import DUEL_OUTCOMES, DuelRow, RequestRow, ks_critical, ks_distance, summarize
from sim_vs_live.scenario import Scenario, node_specs, scenario_from_dict, sim_config, workload

from wwwserve.sim.metrics import mean_interval
from wwwserve.sim.network import Simulation


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_sim(scenario: Scenario, workload_seed: int, sim_seed: int) -> dict[str, Any]:
    """One simulated run of `workload(scenario, workload_seed)` under simulator seed `sim_seed`."""
    sim = Simulation(node_specs(scenario), workload(scenario, workload_seed), sim_config(scenario, sim_seed))
    records = sim.run()
    rows = [RequestRow(r.source, r.executor, r.latency_s, r.status) for r in records]
    assert sim.ledger is not None
    duels = [DuelRow({"cancelled": "cancelled"}.get(d.outcome, d.outcome), d.cancel_reason, d.votes)
             for d in sim.ledger.duels]
    return {"requests": rows, "duels": duels}


def metric_rows(nodes: list[str]) -> list[tuple[str, Any]]:
    """(label, how to read it from a summary) for every compared figure."""
    rows: list[tuple[str, Any]] = [(f"share {n}", lambda s, n=n: s["shares"][n]) for n in nodes]
    rows += [("delegation rate", lambda s: s["delegation_rate"]),
             ("latency mean (s)", lambda s: s["latency_mean_s"]),
             ("latency p50 (s)", lambda s: s["latency_p50_s"]),
             ("latency p90 (s)", lambda s: s["latency_p90_s"]),
             ("answered", lambda s: s["done"]),
             ("duels opened", lambda s: s["duels_opened"]),
             ("duels settled", lambda s: s["duels_settled"])]
    rows += [(f"duels {o}", lambda s, o=o: s["duel_outcomes"][o]) for o in DUEL_OUTCOMES]
    return rows


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def interval_text(values: list[float]) -> str:
    f = mean_interval(values)
    if f["lo"] is None:
        return fmt(f["mean"])
    return f"{fmt(f['mean'])} [{fmt(f['lo'])}, {fmt(f['hi'])}]"


def compare_one(live: dict[str, Any] | None, sims: list[dict[str, Any]], nodes: list[str]) -> dict[str, Any]:
    """The table of one workload seed: live value, simulator mean and interval, ratio; and the KS figures."""
    table = []
    for label, read in metric_rows(nodes):
        sim_values = [float(read(s)) for s in sims if read(s) is not None]
        f = mean_interval(sim_values)
        live_value = None if live is None else read(live)
        ratio = None if live_value is None or not f["mean"] else float(live_value) / float(f["mean"])
        table.append({"metric": label, "live": live_value, "sim_mean": f["mean"], "sim_lo": f["lo"],
                      "sim_hi": f["hi"], "sim_text": interval_text(sim_values), "ratio": ratio})
    pooled = [x for s in sims for x in s["latencies_s"]]
    ks: dict[str, Any] = {"sim_vs_sim": [ks_distance(a["latencies_s"], b["latencies_s"])
                                         for a, b in itertools.pairwise(sims)]}
    if live is not None and live["latencies_s"]:
        ks["live_vs_sim_pooled"] = ks_distance(live["latencies_s"], pooled)
        ks["live_vs_each_sim"] = [ks_distance(live["latencies_s"], s["latencies_s"]) for s in sims]
        ks["critical_5pct"] = ks_critical(len(live["latencies_s"]), len(sims[0]["latencies_s"]))
    return {"table": table, "ks": ks}


def print_table(seed: int, result: dict[str, Any], n_sims: int) -> list[str]:
    lines = [f"### workload seed {seed}", "",
             f"| figure | live | simulated: mean [95 % interval] over {n_sims} seeds | live / simulated |",
             "|---|---:|---:|---:|"]
    for row in result["table"]:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(f"| {row['metric']} | {fmt(row['live'])} | {row['sim_text']} | {ratio} |")
    ks = result["ks"]
    lines.append("")
    if "live_vs_sim_pooled" in ks:
        each = mean_interval(ks["live_vs_each_sim"])
        lines.append(f"KS distance of end-to-end latency, live vs simulated: {ks['live_vs_sim_pooled']:.3f} against "
                     f"the pooled simulated runs, {each['mean']:.3f} on average against one simulated run "
                     f"(5 % critical value {ks['critical_5pct']:.3f}).")
    if ks["sim_vs_sim"]:
        lines.append(f"KS distance between two simulator seeds (its own noise): "
                     f"{interval_text(ks['sim_vs_sim'])}.")
    return lines


def code_state() -> dict[str, Any]:
    """The commit both sides ran, and the code paths that differed from it (the checkout is shared)."""
    root = Path(__file__).resolve().parents[1]

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--short", "--", "sim", "node", "ledger", "judge", "contracts", "devnet", "bench/sim_vs_live")
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": dirty.splitlines()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0, help="First workload seed (live seed i uses seed + i).")
    parser.add_argument("--live-seeds", type=int, default=1, help="Live runs, one workload seed each.")
    parser.add_argument("--sim-seeds", type=int, default=10, help="Simulator seeds per workload seed.")
    parser.add_argument("--requests", type=int, help="Requests per run (default 500, --quick 120).")
    parser.add_argument("--rate", type=float, help="Arrivals per second over the network (default 3).")
    parser.add_argument("--quick", action="store_true", help="120 requests, 5 simulator seeds.")
    parser.add_argument("--no-live", action="store_true", help="The simulator side only.")
    parser.add_argument("--duel-timeout", type=float, default=600.0,
                        help="Seconds after the last answer to wait for the live duels to end.")
    parser.add_argument("--live-from", type=Path,
                        help="Compare the live runs stored in this --json file (same scenario) with the simulator "
                        "as it is now, instead of running the network again.")
    parser.add_argument("--json", type=Path, help="Write every figure (and the raw latencies) here.")
    parser.add_argument("--report", type=Path, help="Write the tables as Markdown here.")
    args = parser.parse_args()
    base = Scenario()
    scenario = dataclasses.replace(base, requests=args.requests or (120 if args.quick else base.requests),
                                   rate_per_s=args.rate or base.rate_per_s)
    sim_seeds = args.sim_seeds if not args.quick or args.sim_seeds != 10 else 5
    stored: dict[int, dict[str, Any]] = {}
    if args.live_from:
        old = json.loads(args.live_from.read_text())
        scenario = scenario_from_dict(old["scenario"])
        stored = {r["seed"]: r for r in old["runs"] if "live" in r}
    nodes = [name for name, _ in scenario.nodes]
    started = time.monotonic()
    seeds = sorted(stored) if stored else [args.seed + i for i in range(max(1, args.live_seeds))]
    out: dict[str, Any] = {"scenario": dataclasses.asdict(scenario), "sim_seeds": sim_seeds, "code": code_state(),
                           "runs": []}
    if stored:
        out["live_from"] = {"file": str(args.live_from), "code": old.get("code")}
    lines = [f"sim_vs_live: {scenario.requests} requests at {scenario.rate_per_s}/s over {len(nodes)} fake-backend "
             f"nodes, p_inspect {scenario.p_inspect}, blocks of {scenario.block_time_s} s", ""]
    for seed in seeds:
        sims = []
        for k in range(sim_seeds):
            run = run_sim(scenario, seed, seed + k)
            sims.append(summarize(run["requests"], run["duels"], nodes))
        log(f"simulated workload seed {seed} under {sim_seeds} simulator seeds")
        live_raw = None
        live = None
        if seed in stored:
            live = stored[seed]["live"]
        elif not args.no_live:
            from sim_vs_live.live import run_live

            live_raw = run_live(scenario, seed, log, args.duel_timeout)
            live = summarize(live_raw["requests"], live_raw["duels"], nodes)
        result = compare_one(live, sims, nodes)
        entry: dict[str, Any] = {"seed": seed, **result,
                                 "sim": [{k: v for k, v in s.items() if k != "latencies_s"} for s in sims]}
        if live is not None and live_raw is not None:
            entry["live"] = live
            entry["live_run"] = {k: v for k, v in live_raw.items() if k not in ("requests", "duels")}
            entry["live_failures"] = sorted({r.status for r in live_raw["requests"] if r.status != "done"})
            lines.append(f"live run: set-up {live_raw['setup_s']} s, requests {live_raw['send_s']} s, "
                         f"{live_raw['total_s']} s in all; load average (1 min) "
                         f"{live_raw['load_average']['before'][0]:.2f} before, "
                         f"{live_raw['load_average']['after_requests'][0]:.2f} after the requests, on "
                         f"{live_raw['cpus']} CPUs")
            lines.append("")
        if seed in stored:
            entry["live"] = live
            entry.update({k: stored[seed][k] for k in ("live_run", "live_failures") if k in stored[seed]})
        out["runs"].append(entry)
        lines += [*print_table(seed, result, sim_seeds), ""]
    if len(seeds) > 1 and (stored or not args.no_live):
        lines.append(f"### over {len(seeds)} live seeds (mean [95 % interval] of the live values)")
        for label, _ in metric_rows(nodes):
            values = [float(r["table"][i]["live"]) for r in out["runs"]
                      for i, row in enumerate(r["table"]) if row["metric"] == label and row["live"] is not None]
            if values:
                lines.append(f"- {label}: {interval_text(values)}")
    out["seconds"] = round(time.monotonic() - started, 1)
    lines.append(f"{out['seconds']} s in all")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str))
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
