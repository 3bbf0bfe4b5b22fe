"""One run of the incentives benchmark on a real network: anvil, the contract, the origin, the executors of
the three classes and the judge-only nodes (see bench/incentives.py), the user requests through the
origin, and the duels and balances read back from the chain."""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.procs import Processes, free_port, wait_http

from quality_classes.analysis import DuelRow, duel_events
from quality_classes.common import ETH, JUDGE_POOL_MODEL, ORIGIN_MODEL, problems_and_solutions, write_csv
from quality_classes.judge import serve_reference_judge, vocabulary
from wwwserve.devnet.localnet import NodeLaunch


@dataclass
class Network:
    rpc_url: str
    contract: str
    origin_port: int
    addresses: dict[str, str]  # node name -> address
    classes: dict[str, str]  # executor address -> class
    names: dict[str, str] = field(default_factory=dict)  # address -> node name


def start_network(procs: Processes, home: Path, args: argparse.Namespace, judge_url: str | None,
                  judge_model: str | None, progress: Callable[[str], None]) -> Network:
    """Anvil, the contract, seven registered nodes (see the module docstring), all ready."""
    from wwwserve.devnet.anvil import mine, start_anvil
    from wwwserve.devnet.deploy import DEMO_PASSWORD, bring_up_demo_nodes, demo_account, ensure_deployment
    from wwwserve.ledger.chain import connect
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.ledger.identity import load_or_create_identity, public_key_bytes
    from wwwserve.ledger.tx import TxSender
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    anvil = start_anvil(log_path=home / "anvil.log")
    procs.stoppers.append(anvil.stop)
    w3 = connect(anvil.rpc_url)
    deployment, _ = ensure_deployment(w3, anvil.rpc_url)
    names = ["origin", "a1", "a2", "b1", "b2", "c1", "c2", *[f"j{i}" for i in range(1, args.judges + 1)]]
    ports = [free_port() for _ in names]
    progress(f"anvil at {anvil.rpc_url}; registering {len(names)} nodes")
    stake = int(args.stake * ETH)
    demo = bring_up_demo_nodes(w3, deployment, len(names), stake_wei=stake, deposit_wei=int(args.credit * ETH),
                               base_port=ports[0], models=(DEFAULT_LOCAL_MODEL,), progress=progress)
    # bring_up_demo_nodes registers consecutive ports; the nodes listen on the free ports found above.
    for index, (node, port) in enumerate(zip(demo, ports, strict=True), start=1):
        client = WWWServeClient(w3, deployment.address, TxSender(w3, demo_account(index)))
        name = names[index - 1]
        models = [ORIGIN_MODEL] if name == "origin" else [JUDGE_POOL_MODEL] if name[0] == "j" else [DEFAULT_LOCAL_MODEL]
        pubkey = public_key_bytes(load_or_create_identity(node.wallet))
        client.update_node(pubkey, f"http://127.0.0.1:{port}", models, '{"bench": "incentives"}')
        if index == 1:  # the origin pays the delegation fees and every duel's escrow
            w3.provider.make_request("anvil_setBalance",  # type: ignore[arg-type]
                                     [node.address, hex(int(args.origin_credit * ETH) + 10 * ETH)])
            client.deposit(int(args.origin_credit * ETH))
    addresses = {name: node.address for name, node in zip(names, demo, strict=True)}

    stop_mining = threading.Event()

    def miner() -> None:  # the duel windows count blocks; anvil only mines on transactions
        while not stop_mining.wait(args.block_time):
            with contextlib.suppress(Exception):
                mine(anvil.rpc_url, 1)

    threading.Thread(target=miner, name="miner", daemon=True).start()
    procs.stoppers.append(stop_mining.set)

    env = {**os.environ, "WWWSERVE_HOME": str(home), "WWWSERVE_PASSWORD": DEMO_PASSWORD,
           "WWWSERVE_RPC_URL": anvil.rpc_url, "PYTHONUNBUFFERED": "1"}
    common = ["policy.auto_stake=false", "chain.poll_interval_s=0.5", "judge.poll_interval_s=0.5",
              f"server.request_timeout_s={args.request_timeout}"]
    executor = [f"policy.fixed_stake_wei={stake}", "policy.accept_frequency=1.0", "policy.offload_frequency=0.0",
                f"judge.max_tokens={16}"]
    judge_sets = [f"judge.base_url={judge_url}", f"judge.model={judge_model}"] if judge_url else []
    local = ["backend.kind=local", "backend.local.threads=1", "backend.local.max_context_tokens=1024"]
    specs = {
        "origin": ["backend.kind=fake", f"backend.models=['{ORIGIN_MODEL}']", "policy.target_token_usage=-1",
                   "policy.offload_frequency=1.0", "policy.accept_frequency=0.0", f"policy.p_inspect={args.p_inspect}",
                   f"policy.fixed_stake_wei={stake}"],
        "a1": [*local, *executor, *judge_sets], "a2": [*local, *executor, *judge_sets],
        "b1": [*local, *executor, *judge_sets, f"backend.local.max_tokens_cap={args.degraded_tokens}"],
        "b2": [*local, *executor, *judge_sets, f"backend.local.max_tokens_cap={args.degraded_tokens}"],
        "c1": ["backend.kind=fake", f"backend.models=['{DEFAULT_LOCAL_MODEL}']", "backend.fake.random_words=true",
               *executor],
        "c2": ["backend.kind=fake", f"backend.models=['{DEFAULT_LOCAL_MODEL}']", "backend.fake.random_words=true",
               *executor],
    }
    for name in names[7:]:
        # Judges only (their model is nobody's request): with --judge own, SmolLM2 under another name.
        serve = [f"backend.models=['{JUDGE_POOL_MODEL}']"]
        specs[name] = [*serve, "backend.kind=fake", *executor, *judge_sets] if judge_url else \
            [*serve, *local, *executor]
    started = {}

    def start(name: str) -> None:
        index = names.index(name)
        launch = NodeLaunch(name, ports[index], home / f"{name}.log", (*common, *specs[name]),
                            wallet=demo[index].wallet)
        started[name] = procs.start_node(launch, env)

    def wait(name: str) -> None:
        progress(f"waiting for {name} to be ready")
        wait_http(f"http://127.0.0.1:{ports[names.index(name)]}/ready", started[name], name, procs, name,
                  timeout_s=600)

    # The first SmolLM2 node converts the model file once; the other three then load the converted copy.
    for name in ("origin", "c1", "c2", "a1"):
        start(name)
    wait("a1")
    for name in names:
        if name not in started:
            start(name)
    for name in names:
        wait(name)
    classes = {addresses[n]: n[0] for n in names[1:7]}
    return Network(anvil.rpc_url, deployment.address, ports[0], addresses, classes,
                   {addr: name for name, addr in addresses.items()})


def vote_name(vote: int) -> str:
    return {0: "none", 1: "A", 2: "B", 3: "abstain", 4: "no_evidence"}.get(int(vote), str(vote))


def opened_duel_ids(client: Any) -> list[int]:
    """Every duel opened so far, in chain order (duel ids are hashes of the work, not a counter: read from
    the DuelOpened events)."""
    logs = client.contract.events.DuelOpened().get_logs(from_block=0)
    return [int(log["args"]["duelId"]) for log in sorted(logs, key=lambda lg: (lg["blockNumber"], lg["logIndex"]))]


def read_duels(client: Any, net: Network) -> list[DuelRow]:
    from wwwserve.ledger.client import DuelOutcome, DuelStatus

    rows = []
    for duel_id in opened_duel_ids(client):
        d = client.duel(duel_id)
        outcome = "cancelled" if d.status is DuelStatus.CANCELLED else "open"
        if d.status is DuelStatus.SETTLED:
            outcome = {DuelOutcome.A_WON: "A", DuelOutcome.B_WON: "B", DuelOutcome.TIE: "tie"}.get(d.outcome, "voided")
        judges = tuple(net.classes.get(j, net.names.get(j, "?")[0]) for j in d.judges)
        rows.append(DuelRow(duel_id, net.classes.get(d.a, "?"), net.classes.get(d.b, "?"), outcome,
                            tuple(vote_name(v) for v in d.votes), judges))
    return rows


def run_network(args: argparse.Namespace, problems: Sequence[str], out: Path,
                progress: Callable[[str], None]) -> dict[str, Any]:
    import httpx

    from wwwserve.ledger.chain import connect
    from wwwserve.ledger.client import WWWServeClient
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    home = Path(tempfile.mkdtemp(prefix="wwwserve-incentives-"))
    os.environ["WWWSERVE_HOME"] = str(home)  # wallets, identities and the deployment record of this run only
    procs = Processes(home)
    judge_url, judge_model = None, None
    try:
        if args.judge == "reference":
            port = free_port()
            vocab = vocabulary(problems_and_solutions())
            procs.stoppers.append(serve_reference_judge(port, vocab))
            judge_url, judge_model = f"http://127.0.0.1:{port}/v1", "reference-judge"
        elif args.judge != "own":
            judge_url, judge_model = args.judge, args.judge_model
        net = start_network(procs, home, args, judge_url, judge_model, progress)
        client = WWWServeClient(connect(net.rpc_url), net.contract, None)
        shares_rows: list[dict[str, Any]] = []
        t0 = time.monotonic()
        stop_sampling = threading.Event()

        def sample() -> None:
            balances = {}
            for addr in net.classes:
                b = client.balances(addr)
                balances[addr] = (b.stake_wei, b.credit_wei)
            t = round(time.monotonic() - t0, 1)
            for addr, (s, c) in balances.items():
                shares_rows.append({"t_s": t, "node": net.names[addr], "class": net.classes[addr],
                                    "stake_wei": s, "credit_wei": c})

        def sampler() -> None:
            while not stop_sampling.wait(args.sample_every):
                with contextlib.suppress(Exception):
                    sample()

        sample()
        threading.Thread(target=sampler, name="sampler", daemon=True).start()

        url = f"http://127.0.0.1:{net.origin_port}/v1/chat/completions"
        request_rows: list[dict[str, Any]] = []
        lock = threading.Lock()

        def one(i: int) -> None:
            body = {"model": DEFAULT_LOCAL_MODEL, "max_tokens": args.max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": problems[i % len(problems)]}]}
            start = time.monotonic()
            row: dict[str, Any] = {"request": i}
            try:
                resp = httpx.post(url, json=body, timeout=args.request_timeout + 30)
                row["status"] = resp.status_code
                if resp.status_code == 200:
                    executor = resp.json().get("wwwserve", {}).get("executor", "")
                    row["executor"] = net.names.get(executor, executor)
                    row["class"] = net.classes.get(executor, "?")
                    row["completion_tokens"] = resp.json().get("usage", {}).get("completion_tokens")
                else:
                    row["error"] = resp.text[:200]
            except httpx.HTTPError as exc:
                row["status"], row["error"] = 0, str(exc)[:200]
            row["latency_s"] = round(time.monotonic() - start, 3)
            with lock:
                request_rows.append(row)
                done = len(request_rows)
            if done % max(1, args.requests // 20) == 0 or done == args.requests:
                opened = len(opened_duel_ids(client))
                progress(f"{done}/{args.requests} requests ({sum(r['status'] != 200 for r in request_rows)} "
                         f"failed), {opened} duels opened, {time.monotonic() - t0:.0f} s")

        # Open-loop Poisson arrivals (seeded): a user does not wait for the previous user's answer.
        arrivals = random.Random(args.seed)
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            futures = []
            for i in range(args.requests):
                futures.append(pool.submit(one, i))
                time.sleep(arrivals.expovariate(args.rate))
            for future in futures:
                future.result()

        progress("requests done; waiting for the open duels to settle")
        deadline = time.monotonic() + args.settle_timeout
        last_count, stable_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            duels = read_duels(client, net)
            if len(duels) != last_count:
                last_count, stable_since = len(duels), time.monotonic()
            if all(d.outcome != "open" for d in duels) and time.monotonic() - stable_since > 10:
                break
            time.sleep(2)
        stop_sampling.set()
        sample()
        duels = read_duels(client, net)
        events = duel_events(httpx.get(f"http://127.0.0.1:{net.origin_port}/metrics", timeout=10).text)
        write_csv(out / "requests.csv", request_rows)
        write_csv(out / "duels.csv", [{"duel": d.duel_id, "class_a": d.class_a, "class_b": d.class_b,
                                       "outcome": d.outcome, "votes": " ".join(d.votes),
                                       "judge_classes": " ".join(d.judge_classes)} for d in duels])
        write_csv(out / "shares.csv", shares_rows)
        return {"requests": request_rows, "duels": duels, "shares": shares_rows, "seconds": time.monotonic() - t0,
                "origin_events": events,
                "judge": args.judge if judge_url is None or args.judge in ("reference", "own") else judge_url}
    finally:
        procs.close()
