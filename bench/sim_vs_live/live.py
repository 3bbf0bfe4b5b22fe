"""The scenario on a real network: anvil, the contract, six registered and staked `wwwserve node run`
processes with fake backends, the workload sent by a seeded open-loop client, and the duels read back from
the chain's events.

The set-up is the benchmarks' own (bench/harness/procs.py `Processes`, devnet/deploy.py
`ensure_deployment` and `bring_up_demo_nodes`); anvil mines a block per transaction while the network is
set up, then one block per `Scenario.block_time_s` (anvil's interval mining), as the simulated chain does.
Each request is sent to its source node at its arrival time (open loop: a user does not wait for the one
before) with `max_tokens` = its answer length; its latency is measured at the client, and the executor is
the one the answer names (`wwwserve.executor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.node_metrics import dispatch_counters
from harness.procs import NodeSpec, Processes, demo_password, free_port_block, node_launch

from sim_vs_live.compare import DuelRow, RequestRow
from sim_vs_live.scenario import MODEL, Scenario, live_sets, prompt_text, workload

__all__ = ["run_live"]

READY_TIMEOUT_S = 180.0


def _duel_blocks(duel: Any) -> dict[str, Any]:
    """When one duel's steps happened, in blocks (one a second): opened, the challenger's seed block, B's
    answer mined, and each seat's commit and reveal (None: never). The simulator's duel work starts at the
    seed block (B) and after B's answer (the judges), all at once; these say how the live work spreads."""
    return {"opened": duel.opened_block, "seed": duel.seed_block, "answered": duel.answered_block,
            "settled": duel.settled_block, "committed": [s.committed_block for s in duel.judges],
            "revealed": [s.revealed_block for s in duel.judges]}


def _duel_row(duel: Any, names: dict[str, str]) -> DuelRow:
    if duel.status == "settled":
        outcome = duel.outcome or "settled"
    elif duel.status == "cancelled":
        outcome = "cancelled"
    else:
        outcome = "open"
    votes = tuple("none" if s.vote is None else s.vote.name for s in duel.current_seats)
    return DuelRow(outcome, duel.cancel_reason or "", votes)


async def _send_all(scenario: Scenario, seed: int, ports: dict[str, int], names: dict[str, str],
                    progress: Callable[[str], None]) -> list[RequestRow]:
    import httpx

    specs = workload(scenario, seed)
    rows: list[RequestRow | None] = [None] * len(specs)
    timeout = httpx.Timeout(700.0)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    started = time.monotonic()
    done = 0

    async def one(index: int, client: httpx.AsyncClient) -> None:
        nonlocal done
        spec = specs[index]
        await asyncio.sleep(max(0.0, started + spec.arrival_s - time.monotonic()))
        body = {"model": MODEL, "max_tokens": spec.output_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": prompt_text(seed, index, spec)}]}
        sent = time.monotonic()
        executor, status = "", "failed"
        try:
            resp = await client.post(f"http://127.0.0.1:{ports[spec.source]}/v1/chat/completions", json=body)
            if resp.status_code == 200:
                address = str(resp.json().get("wwwserve", {}).get("executor", ""))
                executor, status = names.get(address.lower(), address), "done"
            else:
                status = f"http {resp.status_code}"
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        latency = time.monotonic() - sent
        rows[index] = RequestRow(spec.source, executor, latency if status == "done" else None, status)
        done += 1
        if done % max(1, len(specs) // 10) == 0:
            failed = sum(r is not None and r.status != "done" for r in rows)
            progress(f"live: {done}/{len(specs)} answered ({failed} failed), {time.monotonic() - started:.0f} s")

    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        await asyncio.gather(*(one(i, client) for i in range(len(specs))))
    return [r for r in rows if r is not None]


def decisions_of(ports: list[int]) -> dict[str, float]:
    """Every node's dispatch decisions so far (its /metrics), summed by action."""
    out: dict[str, float] = {}
    for port in ports:
        for name, value in dispatch_counters(port).items():
            if name.startswith("wwwserve_dispatch_decisions_total{"):
                action = name.split('action="', 1)[1].split('"', 1)[0]
                out[action] = out.get(action, 0.0) + value
    return out


def run_live(scenario: Scenario, seed: int, progress: Callable[[str], None],
             duel_timeout_s: float = 600.0) -> dict[str, Any]:
    """One live run: its request rows, duel rows, dispatch decisions, timings and the machine's load."""
    from wwwserve.devnet.anvil import ensure_anvil
    from wwwserve.devnet.deploy import bring_up_demo_nodes, ensure_deployment
    from wwwserve.ledger.chain import connect
    from wwwserve.ledger.indexer import Indexer

    # anvil from where the user has it (found or installed under their own WWWSERVE_HOME, once), not
    # installed again into every run's fresh home
    os.environ.setdefault("WWWSERVE_ANVIL", str(ensure_anvil(quiet=True)))
    home = Path(tempfile.mkdtemp(prefix="wwwserve-sim-vs-live-"))
    os.environ["WWWSERVE_HOME"] = str(home)  # wallets, identities and deployment of this run only
    procs = Processes(home)
    t_start = time.monotonic()
    load_before = os.getloadavg()
    try:
        anvil = procs.start_anvil()
        w3 = connect(anvil.rpc_url)
        deployment, _ = ensure_deployment(w3, anvil.rpc_url)
        names = [name for name, _ in scenario.nodes]
        base = free_port_block(len(names))
        progress(f"live: anvil at {anvil.rpc_url}; registering and staking {len(names)} nodes")
        demo = bring_up_demo_nodes(w3, deployment, len(names), stake_wei=scenario.stake_wei,
                                   deposit_wei=scenario.credit_wei - scenario.stake_wei, base_port=base,
                                   models=(MODEL,), progress=lambda _: None)
        w3.provider.make_request("evm_setIntervalMining", [int(scenario.block_time_s)])  # type: ignore[arg-type]
        env = {**os.environ, "WWWSERVE_HOME": str(home), "WWWSERVE_PASSWORD": demo_password(),
               "PYTHONUNBUFFERED": "1"}
        common = [f"chain.rpc_url={anvil.rpc_url}", f"chain.contract_address={deployment.address}",
                  "chain.poll_interval_s=0.5", "judge.poll_interval_s=0.5"]
        started = []
        for i, (name, node) in enumerate(zip(names, demo, strict=True)):
            spec = NodeSpec(node.wallet, base + i, [*common, *live_sets(scenario, name)])
            started.append(procs.start_node(node_launch(name, spec, home), env))
        for proc in started:
            procs.ready(proc, READY_TIMEOUT_S)
        setup_s = time.monotonic() - t_start
        by_address = {node.address.lower(): name for name, node in zip(names, demo, strict=True)}
        ports = {name: base + i for i, name in enumerate(names)}
        progress(f"live: {len(names)} nodes ready after {setup_s:.0f} s; sending {scenario.requests} requests")
        t_send = time.monotonic()
        first_block = w3.eth.block_number  # the block the requests start at
        rows = asyncio.run(_send_all(scenario, seed, ports, by_address, progress))
        send_s = time.monotonic() - t_send
        decisions = decisions_of(list(ports.values()))
        load_during = os.getloadavg()
        index = Indexer(w3, deployment.address, f"sqlite:///{home / 'index.sqlite'}")
        deadline = time.monotonic() + duel_timeout_s
        count, stable_since = -1, time.monotonic()
        duels: list[Any] = []
        while time.monotonic() < deadline:
            index.sync()
            duels = index.duels(limit=None)
            if len(duels) != count:
                count, stable_since = len(duels), time.monotonic()
            open_now = sum(d.is_open for d in duels)
            if not open_now and time.monotonic() - stable_since > 15:
                break
            progress(f"live: {len(duels)} duels, {open_now} open, {time.monotonic() - t_send:.0f} s")
            time.sleep(5.0)
        with contextlib.suppress(Exception):
            index.close()
        return {
            "requests": rows,
            "duels": [_duel_row(d, by_address) for d in duels],
            "duel_blocks": [_duel_blocks(d) for d in duels],
            "first_block": first_block,
            "decisions": decisions,
            "setup_s": round(setup_s, 1),
            "send_s": round(send_s, 1),
            "total_s": round(time.monotonic() - t_start, 1),
            "load_average": {"before": load_before, "after_requests": load_during, "end": os.getloadavg()},
            "cpus": os.cpu_count(),
            "home": str(home),
        }
    finally:
        procs.close()
