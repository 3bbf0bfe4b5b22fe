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
5 % critical value), duels opened, settled and by outcome, and the dispatch decisions of all nodes by
action (local, offload, queue, retry: each live node's /metrics, the simulator's counters); the live value,
the simulator's mean with a 95 % interval over its seeds (`wwwserve.sim.metrics.mean_interval`), its
per-run sd, and their ratio. A live node reads its fake backend's load in memory at every decision and
probe, as the simulator does (`backend.metrics_interval_s` only spaces an openai or vllm backend's /metrics
scrapes; an earlier `--metrics-interval` flag set it to no effect on the fake). No figure is asserted: a
slow machine changes the numbers, never the exit status (the load average is printed).

    .venv/bin/python bench/sim_vs_live.py                      # 500 requests, ~6 minutes
    .venv/bin/python bench/sim_vs_live.py --quick              # 120 requests, ~3 minutes
    .venv/bin/python bench/sim_vs_live.py --no-live            # the simulator side only (seconds)
    .venv/bin/python bench/sim_vs_live.py --live-seeds 3 --json out.json --report out.md
    .venv/bin/python bench/sim_vs_live.py --live-from a.json b.json   # stored live runs vs today's simulator
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
from sim_vs_live.compare import DECISIONS, DUEL_OUTCOMES, DuelRow, RequestRow, ks_critical, ks_distance, summarize
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
    return {"requests": rows, "duels": duels, "decisions": dict(sim.decisions)}


def summarize_run(run: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    """`compare.summarize` of one side's run (rows, duels and, where counted, dispatch decisions)."""
    return summarize(run["requests"], run["duels"], nodes, run.get("decisions"))


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
    rows += [(f"decisions {a}", lambda s, a=a: None if not s.get("decisions") else s["decisions"][a])
             for a in DECISIONS]
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
        z = None if live_value is None or not f["sd"] else (float(live_value) - float(f["mean"])) / float(f["sd"])
        table.append({"metric": label, "live": live_value, "sim_mean": f["mean"], "sim_lo": f["lo"],
                      "sim_hi": f["hi"], "sim_sd": f["sd"], "sim_text": interval_text(sim_values), "ratio": ratio,
                      "z": z})
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
             f"| figure | live | simulated: mean [95 % interval] over {n_sims} seeds | simulated sd | live / simulated "
             "| (live - mean) / sd |",
             "|---|---:|---:|---:|---:|---:|"]
    for row in result["table"]:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}"
        z = "-" if row.get("z") is None else f"{row['z']:+.1f}"
        lines.append(f"| {row['metric']} | {fmt(row['live'])} | {row['sim_text']} | {fmt(row.get('sim_sd'))} | {ratio} "
                     f"| {z} |")
    ks = result["ks"]
    lines.append("")
    lines.append("The interval is the simulator's mean's; one run, live or simulated, also varies by its own random "
                 "draws: the simulated sd is one simulated run's spread, and (live - mean) / sd says how far the live "
                 "run lies out in it.")
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


def live_line(run: dict[str, Any]) -> str:
    """How long a live run took and how busy the machine was."""
    load = run["load_average"]
    return (f"live run: set-up {run['setup_s']} s, requests {run['send_s']} s, {run['total_s']} s in all; load "
            f"average (1 min) {load['before'][0]:.2f} before, {load['after_requests'][0]:.2f} after the requests, "
            f"on {run['cpus']} CPUs")


def summary_lines(runs: list[dict[str, Any]], nodes: list[str]) -> list[str]:
    """Over every live run: the live values, the simulator's mean for the same workload, and their paired
    difference, each a mean with a 95 % interval over the live runs."""
    lines = [f"### over {len(runs)} live runs (mean [95 % interval] over the runs; the difference is paired: "
             "each live run minus the simulator's mean on its workload)", "",
             "| figure | live | simulated | live - simulated |", "|---|---:|---:|---:|"]
    for label, _ in metric_rows(nodes):
        pairs = [(float(row["live"]), float(row["sim_mean"])) for r in runs for row in r["table"]
                 if row["metric"] == label and row["live"] is not None and row["sim_mean"] is not None]
        if len(pairs) < 2:
            continue
        diffs = [a - b for a, b in pairs]
        lines.append(f"| {label} | {interval_text([a for a, _ in pairs])} | {interval_text([b for _, b in pairs])} | "
                     f"{interval_text(diffs)} |")
    ks = [r["ks"]["live_vs_sim_pooled"] for r in runs if "live_vs_sim_pooled" in r["ks"]]
    noise = [x for r in runs for x in r["ks"]["sim_vs_sim"]]
    if ks:
        lines += ["", f"KS distance live vs simulated: {interval_text(ks)} (each run: "
                  f"{', '.join(f'{x:.3f}' for x in ks)}); between two simulator seeds: {interval_text(noise)}."]
    return lines


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
    parser.add_argument("--live-from", type=Path, nargs="+",
                        help="Compare the live runs stored in these --json files (one scenario) with the simulator "
                        "as it is now, instead of running the network again.")
    parser.add_argument("--json", type=Path, help="Write every figure (and the raw latencies) here.")
    parser.add_argument("--report", type=Path, help="Write the tables as Markdown here.")
    args = parser.parse_args()
    base = Scenario()
    scenario = dataclasses.replace(base, requests=args.requests or (120 if args.quick else base.requests),
                                   rate_per_s=args.rate or base.rate_per_s)
    sim_seeds = args.sim_seeds if not args.quick or args.sim_seeds != 10 else 5
    stored: list[dict[str, Any]] = []  # live runs read back, each with "seed", "live" and maybe "live_run"
    sources = []
    for path in args.live_from or []:
        old = json.loads(path.read_text())
        if scenario_from_dict(old["scenario"]) != scenario and stored:
            raise SystemExit(f"{path} ran another scenario than the files before it")
        scenario = scenario_from_dict(old["scenario"])
        stored += [r for r in old["runs"] if "live" in r]
        sources.append({"file": str(path), "code": old.get("code")})
    nodes = [name for name, _ in scenario.nodes]
    started = time.monotonic()
    plan: list[tuple[int, dict[str, Any] | None]] = (
        [(r["seed"], r) for r in stored] if stored
        else [(args.seed + i, None) for i in range(max(1, args.live_seeds))])
    out: dict[str, Any] = {"scenario": dataclasses.asdict(scenario), "sim_seeds": sim_seeds, "code": code_state(),
                           "runs": []}
    if sources:
        out["live_from"] = sources
    lines = [f"sim_vs_live: {scenario.requests} requests at {scenario.rate_per_s}/s over {len(nodes)} fake-backend "
             f"nodes, p_inspect {scenario.p_inspect}, blocks of {scenario.block_time_s} s", ""]
    simulated: dict[int, list[dict[str, Any]]] = {}
    for seed, old_run in plan:
        if seed not in simulated:
            simulated[seed] = [summarize_run(run_sim(scenario, seed, seed + k), nodes) for k in range(sim_seeds)]
            log(f"simulated workload seed {seed} under {sim_seeds} simulator seeds")
        sims = simulated[seed]
        entry: dict[str, Any] = {"seed": seed}
        live = None
        if old_run is not None:
            live = old_run["live"]
            entry.update({k: old_run[k] for k in ("live_run", "live_failures") if k in old_run})
        elif not args.no_live:
            from sim_vs_live.live import run_live

            live_raw = run_live(scenario, seed, log, args.duel_timeout)
            live = summarize_run(live_raw, nodes)
            entry["live_run"] = {k: v for k, v in live_raw.items() if k not in ("requests", "duels", "decisions")}
            entry["live_failures"] = sorted({r.status for r in live_raw["requests"] if r.status != "done"})
        entry.update(compare_one(live, sims, nodes))
        entry["sim"] = [{k: v for k, v in s.items() if k != "latencies_s"} for s in sims]
        if live is not None:
            entry["live"] = live
        out["runs"].append(entry)
        if "live_run" in entry:
            lines += [live_line(entry["live_run"]), ""]
        lines += [*print_table(seed, entry, sim_seeds), ""]
    live_runs = [r for r in out["runs"] if "live" in r]
    if len(live_runs) > 1:
        lines += [*summary_lines(live_runs, nodes), ""]
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
