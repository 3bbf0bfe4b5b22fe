"""How fast the simulator runs, and how its cost grows with nodes and requests (issue 5's scale target).

Each configuration runs in a fresh process (so its peak memory is its own): N nodes (RTX 3090 profile,
reference policy, auto-stake at most every 30 s), Poisson users with Azure-trace request lengths (the
bundled slice), half the nodes hot (1 req/s) and half cold (0.1 req/s) so that work flows between them
(about half the network's capacity in all). It prints simulated requests per wall-clock second, wall
time and peak RSS per configuration, then the headline run:
10,000 nodes x 1,000,000 requests (target: at most 5 minutes and 4 GB on this 2-core machine).

PoS selection, "full": every routable peer is hashed per selection (`node.routing.candidates_for_delegation`,
what a live node with the whole registry in view does): O(N) per offload, so O(N * requests) in all.
"tree": `node.routing.StakeIndex`, a sum tree of the stakes, O(log N) per candidate, same distribution.
(The reference implementation's gossip, every node syncing its full peer list with every peer every
3 s, is O(N^2) messages per round; our nodes read the registry from the chain instead, and the O(N) that
remains is the per-selection scan that the tree removes.)

    python bench/sim_scale.py                 # the table and the headline run (~10 min)
    python bench/sim_scale.py --quick         # the table only, up to 1,000 nodes
    python bench/sim_scale.py --one 10000 1000000 tree   # one configuration
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAKE_INTERVAL_S = 30.0
HOT_RATE_PER_S = 1.0
COLD_RATE_PER_S = 0.1


def workload(nodes: int, requests: int, seed: int) -> list:  # type: ignore[type-arg]
    from wwwserve.sim.network import RequestSpec
    from wwwserve.sim.workloads import MODEL, read_azure_trace

    rows = read_azure_trace()
    rng = random.Random(seed)
    rates = [HOT_RATE_PER_S if i % 2 == 0 else COLD_RATE_PER_S for i in range(nodes)]
    total_rate = sum(rates)
    out = []
    # One merged Poisson stream, each arrival at node i with probability rate_i / total.
    t = 0.0
    cumulative = list(itertools.accumulate(rates))
    for _ in range(requests):
        t += rng.expovariate(total_rate)
        i = bisect.bisect_left(cumulative, rng.random() * total_rate)
        row = rows[rng.randrange(len(rows))]
        out.append(RequestSpec(t, f"n{min(i, nodes - 1)}", min(row.context_tokens, 4096),
                               min(row.generated_tokens, 2048), MODEL))
    return out


def one(nodes: int, requests: int, selection: str, seed: int = 0) -> dict[str, Any]:
    """Run one configuration in this process; its figures."""
    from wwwserve.sim.engine import PROFILES
    from wwwserve.sim.network import NodeSpec, SimConfig, Simulation
    from wwwserve.sim.scenarios import REFERENCE_POLICY
    from wwwserve.sim.workloads import MODEL

    started = time.perf_counter()
    # Auto-stake moves stake at most every 30 s: every move is a transaction, and 10,000 nodes restaking
    # every second would be 10,000 transactions per second (the live default, 1 s, suits a small network).
    policy = REFERENCE_POLICY.model_copy(update={"auto_stake_interval_s": STAKE_INTERVAL_S})
    specs = [NodeSpec(f"n{i}", PROFILES["qwen3-8b-rtx3090"], (MODEL,), policy) for i in range(nodes)]
    reqs = workload(nodes, requests, seed)
    built = time.perf_counter()
    last = [0.0]

    def progress(now: float, done: int, total: int) -> None:
        wall = time.perf_counter()
        if wall - last[0] >= 10 and total >= 100_000:
            last[0] = wall
            print(f"  ... {done:,}/{total:,} requests, {now:,.0f} s simulated, {wall - built:,.0f} s wall",
                  file=sys.stderr, flush=True)

    sim = Simulation(specs, reqs, SimConfig(seed=seed, selection=selection), progress=progress)  # type: ignore[arg-type]
    records = sim.run()
    done = time.perf_counter()
    finished = sum(r.status == "done" for r in records)
    return {
        "nodes": nodes, "requests": requests, "selection": selection,
        "setup_s": built - started, "run_s": done - built,
        "requests_per_s": requests / (done - built),
        "simulated_s": sim.now, "events": sim.events, "offloads": sim.decisions["offload"],
        "delegations": sim.delegations, "done_share": finished / requests,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(nodes: int, requests: int, selection: str, timeout_s: float) -> dict[str, Any] | None:
    cmd = [sys.executable, __file__, "--one", str(nodes), str(requests), selection]
    try:
        out = subprocess.run(cmd, capture_output=False, stdout=subprocess.PIPE, text=True, timeout=timeout_s,
                             check=True)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the table only, up to 1,000 nodes")
    p.add_argument("--one", nargs=3, metavar=("NODES", "REQUESTS", "SELECTION"), help="run one configuration")
    p.add_argument("--requests", type=int, default=50_000, help="requests per row of the table")
    args = p.parse_args()
    if args.one:
        print(json.dumps(one(int(args.one[0]), int(args.one[1]), args.one[2])))
        return
    sizes = [10, 100, 1000] if args.quick else [10, 100, 1000, 10_000]
    rows = []
    print(f"{'nodes':>7} {'requests':>10} {'selection':>9} {'run (s)':>8} {'req/s':>8} {'offloads':>9} "
          f"{'peak RSS (MB)':>13}")
    for selection in ("tree", "full"):
        for n in sizes:
            if selection == "full" and n > 1000:
                continue  # O(N) per offload: see the 1,000-node row
            row = run_child(n, args.requests, selection, timeout_s=1800)
            if row is None:
                print(f"{n:>7} {args.requests:>10,} {selection:>9}  (over 30 minutes)")
                continue
            rows.append(row)
            print(f"{n:>7} {args.requests:>10,} {selection:>9} {row['run_s']:>8.1f} {row['requests_per_s']:>8.0f} "
                  f"{row['offloads']:>9,} {row['peak_rss_mb']:>13.0f}", flush=True)
    by = {(r["selection"], r["nodes"]): r for r in rows}
    for n in sizes[1:]:
        small, big = by.get(("tree", sizes[0])), by.get(("tree", n))
        if small and big:
            print(f"tree: {n:,} nodes cost {small['requests_per_s'] / big['requests_per_s']:.2f}x per request "
                  f"of {sizes[0]} nodes")
    for n in (100, 1000):
        tree, full = by.get(("tree", n)), by.get(("full", n))
        if tree and full:
            print(f"{n:,} nodes: full scan {tree['requests_per_s'] / full['requests_per_s']:.1f}x slower than the tree")
    if args.quick:
        return
    print("headline: 10,000 nodes x 1,000,000 requests (tree)", flush=True)
    row = run_child(10_000, 1_000_000, "tree", timeout_s=3600)
    if row is None:
        print("  did not finish within an hour")
        return
    total = row["setup_s"] + row["run_s"]
    memory_ok = "met" if row["peak_rss_mb"] <= 4096 else "MISSED"
    print(f"  {total:.0f} s wall ({row['setup_s']:.0f} s building the workload, {row['run_s']:.0f} s simulating; "
          f"target <= 300 s: {'met' if total <= 300 else 'MISSED'}), {row['requests_per_s']:.0f} requests/s, "
          f"peak RSS {row['peak_rss_mb']:.0f} MB (target <= 4096: {memory_ok}), "
          f"{row['simulated_s']:.0f} s simulated, {row['events']:,} events, {row['delegations']:,} delegations, "
          f"{100 * row['done_share']:.1f} % answered")


if __name__ == "__main__":
    main()
