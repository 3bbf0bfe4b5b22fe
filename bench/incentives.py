"""Quality classes on a real network: do duels move stake from bad providers to good ones? (issue 4)

Anvil plus seven `wwwserve node run` processes:

  origin      a pure dispatcher (serves no model; `policy.p_inspect` of its offloaded requests become duels)
  a1, a2      class (a): SmolLM2-135M (`local` backend), honest
  b1, b2      class (b): the same model, degraded: every answer cut to `--degraded-tokens` tokens
  c1, c2      class (c): a random responder (random nonsense words; it also judges with them)
  j1, j2      judges only (`--judges`): they serve no requested model, so the contract can always draw
              K = 3 judges outside a duel even after a class has lost its stake

Every executor holds a fixed stake (`--stake`), topped up from its credit after a lost duel, so a class
that keeps losing drains its credit into the winners'. The origin sends MATH500 problems (`--requests`,
max_tokens `--max-tokens`) through itself; each becomes a duel with probability `--p-inspect`.

Judges (drawn by stake from the nodes not in the duel): classes (a) and (b) judge with
  --judge reference   a stand-in for a stronger judge model (default): an OpenAI-compatible endpoint this
                      benchmark serves (`judge.base_url`) that prefers the answer with more recognisable
                      words (vocabulary of the MATH500 problems and solutions) times its length. It is a
                      text heuristic, not an LLM; no model stronger than SmolLM2-135M can be fetched here.
  --judge own         their own SmolLM2-135M (the node's `judge.model`); measured to abstain almost always
  --judge URL         any OpenAI-compatible endpoint (with --judge-model), e.g. a vLLM serving a 7B model
Class (c) always judges with its own random words (it abstains: a lazy judge).

Before the network run, `--accuracy N` measures the 135M judge alone, in process: for N problems it asks
SmolLM2 the reference judge prompt in both orders on the three class pairs and counts votes that agree
with the intended ordering (a > b > c), against it, and abstentions.

Outputs (under --out, default bench/results/incentives): requests.csv, duels.csv, shares.csv (stake and
stake+credit per class over time), shares.png (with matplotlib: `pip install -e '.[bench]'`), summary.json,
report.md, judge_accuracy.json (with --accuracy), and the printed report. Figures are printed, never
asserted.

Usage:
  python bench/incentives.py                        # ~25 min on 2 cores: accuracy (8 problems), 200 requests
  python bench/incentives.py --quick                # 2 problems, 40 requests: a smoke run
  python bench/incentives.py --judge own --accuracy 0
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import csv
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH_DIR))

from serving import BenchError, Processes, free_port, wait_http  # noqa: E402

MATH500 = REPO_ROOT.parent / "shared" / "data" / "math500" / "test.jsonl"
CLASSES = ("a", "b", "c")
CLASS_NAMES = {"a": "SmolLM2 (honest)", "b": "degraded (short answers)", "c": "random responder"}
# The intended ordering: a lower rank is better.
RANK = {"a": 0, "b": 1, "c": 2}
ORIGIN_MODEL = "dispatch-only"
JUDGE_POOL_MODEL = "judge-pool"
ETH = 10**18


# ---------------------------------------------------------------------------------------------
# the reference judge (a text heuristic standing in for a stronger judge model)


def vocabulary(lines: Iterable[str]) -> frozenset[str]:
    """Lower-case alphabetic words of the given texts."""
    words: set[str] = set()
    for line in lines:
        words.update(w.lower() for w in re.findall(r"[A-Za-z]+", line))
    return frozenset(words)


def text_quality(text: str, vocab: frozenset[str]) -> float:
    """Recognisable share of the words times the length: random letters score near 0, a cut answer low."""
    words = re.findall(r"[A-Za-z]+", text)
    if not words:
        return 0.0 if not text.strip() else 0.5 * len(text.strip()) / 10  # digits and symbols only
    known = sum(1 for w in words if w.lower() in vocab) / len(words)
    return known * len(text.strip())


def reference_verdict(prompt: str, vocab: frozenset[str], margin: float = 1.05) -> str:
    """'A', 'B' or '#' for a judge prompt, by `text_quality`."""
    from wwwserve.judge.prompt import prompt_answers

    answers = prompt_answers(prompt)
    if answers is None:
        return "#"
    qa, qb = (text_quality(x, vocab) for x in answers)
    if qa > qb * margin:
        return "A"
    if qb > qa * margin:
        return "B"
    return "#"


def serve_reference_judge(port: int, vocab: frozenset[str], model: str = "reference-judge") -> Callable[[], None]:
    """An OpenAI-compatible chat endpoint answering judge prompts by `reference_verdict`, on a thread.
    Returns its stop function."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        messages = body.get("messages") or []
        prompt = str(messages[-1].get("content", "")) if messages else ""
        verdict = reference_verdict(prompt, vocab)
        return web.json_response({
            "id": "judge", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": verdict}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 1,
                      "total_tokens": len(prompt.split()) + 1},
        })

    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runner_box.append(runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    threading.Thread(target=run, name="reference-judge", daemon=True).start()
    if not started.wait(10):
        raise BenchError("the reference judge did not start")

    def stop() -> None:
        async def cleanup() -> None:
            for runner in runner_box:
                await runner.cleanup()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cleanup(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)

    return stop


# ---------------------------------------------------------------------------------------------
# analysis (pure: unit-tested)


@dataclass(frozen=True)
class DuelRow:
    """A settled duel, with its duelists' classes."""

    duel_id: int
    class_a: str
    class_b: str
    outcome: str  # "A", "B", "tie", "voided", "open"
    votes: tuple[str, ...]  # per judge: "A", "B", "abstain", "no_evidence", "none"
    judge_classes: tuple[str, ...]


def win_rates(duels: Sequence[DuelRow]) -> dict[str, dict[str, int | float | None]]:
    """Per class: duels fought, won, lost, tied, and win rate over decided duels (None when none)."""
    out: dict[str, dict[str, int | float | None]] = {}
    for cls in CLASSES:
        fought = won = lost = tied = 0
        for d in duels:
            if d.outcome not in ("A", "B", "tie"):
                continue
            for slot, mine in (("A", d.class_a), ("B", d.class_b)):
                if mine != cls:
                    continue
                fought += 1
                if d.outcome == "tie":
                    tied += 1
                elif d.outcome == slot:
                    won += 1
                else:
                    lost += 1
        decided = won + lost
        out[cls] = {"duels": fought, "won": won, "lost": lost, "tied": tied,
                    "win_rate": won / decided if decided else None}
    return out


def pair_table(duels: Sequence[DuelRow]) -> dict[str, Counter[str]]:
    """For each class pair "x-y" (x better by intent): outcomes "better", "worse", "tie", same-class duels apart."""
    table: dict[str, Counter[str]] = defaultdict(Counter)
    for d in duels:
        if d.outcome not in ("A", "B", "tie"):
            continue
        if d.class_a == d.class_b:
            table[f"{d.class_a}-{d.class_b}"][d.outcome if d.outcome == "tie" else "decided"] += 1
            continue
        better_slot = "A" if RANK[d.class_a] < RANK[d.class_b] else "B"
        key = "-".join(sorted((d.class_a, d.class_b), key=RANK.__getitem__))
        table[key]["tie" if d.outcome == "tie" else ("better" if d.outcome == better_slot else "worse")] += 1
    return dict(table)


def judge_agreement(duels: Sequence[DuelRow]) -> dict[str, Counter[str]]:
    """Per judge class: its revealed votes on duels between different classes, as agree/disagree/abstain/
    no_evidence/silent against the intended ordering."""
    out: dict[str, Counter[str]] = {cls: Counter() for cls in CLASSES}  # and "j" for judge-only nodes
    for d in duels:
        if d.class_a == d.class_b or d.outcome == "open":
            continue
        better = "A" if RANK[d.class_a] < RANK[d.class_b] else "B"
        for vote, judge_cls in zip(d.votes, d.judge_classes, strict=True):
            counts = out.setdefault(judge_cls, Counter())
            if vote in ("A", "B"):
                counts["agree" if vote == better else "disagree"] += 1
            else:
                counts["silent" if vote == "none" else vote] += 1
    return out


def class_shares(balances: Mapping[str, tuple[int, int]], classes: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """Per class: (share of all stake, share of all stake + credit), over the executors in `classes`."""
    stake = {cls: 0 for cls in CLASSES}
    total = {cls: 0 for cls in CLASSES}
    for node, cls in classes.items():
        s, c = balances[node]
        stake[cls] += s
        total[cls] += s + c
    all_stake, all_total = sum(stake.values()), sum(total.values())
    return {cls: (stake[cls] / all_stake if all_stake else 0.0, total[cls] / all_total if all_total else 0.0)
            for cls in CLASSES}


# ---------------------------------------------------------------------------------------------
# the 135M judge alone (in process)


def measure_judge_accuracy(problems: Sequence[str], max_tokens: int, degraded_tokens: int,
                           progress: Callable[[str], None]) -> dict[str, Any]:
    """Ask SmolLM2-135M the judge prompt, both orders, on (a, b), (a, c), (b, c) answers to each problem."""
    from wwwserve.judge.prompt import build_prompt, combine_orders, parse_vote
    from wwwserve.judge.runner import JUDGE_MAX_TOKENS
    from wwwserve.node.backends.base import GenerationRequest
    from wwwserve.node.backends.fake import FakeBackend
    from wwwserve.node.backends.local import LocalBackend, ensure_model_package
    from wwwserve.node.settings import DEFAULT_LOCAL_MODEL

    ensure_model_package()
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    replies: Counter[str] = Counter()

    async def run() -> None:
        local = LocalBackend(threads=2)
        await local.wait_ready(600)
        randomly = FakeBackend([DEFAULT_LOCAL_MODEL], random_words=True)
        n = 0
        try:
            for i, problem in enumerate(problems):
                def req(rid: str, content: str, tokens: int) -> GenerationRequest:
                    return GenerationRequest(request_id=rid, model=DEFAULT_LOCAL_MODEL, temperature=0.0,
                                             messages=[{"role": "user", "content": content}], max_tokens=tokens)

                answers = {
                    "a": (await local.generate(req(f"a{i}", problem, max_tokens))).text,
                    "b": (await local.generate(req(f"b{i}", problem, degraded_tokens))).text,
                    "c": (await randomly.generate(req(f"c{i}", problem, max_tokens))).text,
                }
                for better, worse in (("a", "b"), ("a", "c"), ("b", "c")):
                    prompts = build_prompt(problem, answers[better], answers[worse], max_tokens)
                    said = []
                    for text in (prompts.in_order, prompts.swapped):
                        n += 1
                        reply = (await local.generate(req(f"j{n}", text, JUDGE_MAX_TOKENS))).text
                        replies[reply.strip()[:30]] += 1
                        said.append(parse_vote(reply))
                    choice = combine_orders(*said).value  # in the order (better, worse)
                    verdict = {"A": "agree", "B": "disagree"}.get(choice, "abstain")
                    counts[f"{better}-{worse}"][verdict] += 1
                    counts["all"][verdict] += 1
                    counts["single order"]["agree" if said[0].value == "A" else
                                           "disagree" if said[0].value == "B" else "abstain"] += 1
                progress(f"judge accuracy: {i + 1}/{len(problems)} problems, so far {dict(counts['all'])}")
        finally:
            await local.aclose()

    asyncio.run(run())
    return {"counts": {k: dict(v) for k, v in counts.items()}, "top_replies": replies.most_common(5)}


# ---------------------------------------------------------------------------------------------
# the network run


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
        cmd = [sys.executable, "-m", "wwwserve.cli", "-w", demo[index].wallet, "node", "run",
               "--set", f"server.port={ports[index]}"]
        for s in [*common, *specs[name]]:
            cmd += ["--set", s]
        started[name] = procs.start(name, cmd, env)

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


def duel_events(metrics_text: str) -> dict[str, int]:
    """The origin's `wwwserve_duels_total` counters by event, from its /metrics page."""
    events = {}
    for line in metrics_text.splitlines():
        match = re.match(r'wwwserve_duels_total\{event="([^"]+)"\}\s+([0-9.e+]+)', line)
        if match:
            events[match.group(1)] = int(float(match.group(2)))
    return events


def problems_and_solutions() -> list[str]:
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    return [r["problem"] for r in rows] + [r.get("solution", "") for r in rows]


def load_problems() -> list[str]:
    if not MATH500.exists():
        raise BenchError(f"{MATH500} is missing (the benchmark's prompts and the reference judge's vocabulary)")
    return [json.loads(line)["problem"] for line in MATH500.read_text().splitlines() if line.strip()]


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def shares_over_time(rows: Sequence[Mapping[str, Any]], classes: Mapping[str, str]) -> list[dict[str, float]]:
    """Per sample time: each class's stake share and stake+credit share."""
    by_t: dict[float, dict[str, tuple[int, int]]] = defaultdict(dict)
    for row in rows:
        by_t[float(row["t_s"])][row["node"]] = (int(row["stake_wei"]), int(row["credit_wei"]))
    series = []
    for t in sorted(by_t):
        if set(by_t[t]) != set(classes):
            continue
        shares = class_shares(by_t[t], classes)
        point = {"t_s": t}
        for cls, (stake, total) in shares.items():
            point[f"stake_{cls}"], point[f"total_{cls}"] = stake, total
        series.append(point)
    return series


def plot(series: Sequence[Mapping[str, float]], path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    t = [p["t_s"] for p in series]
    for ax, kind, label in ((axes[0], "stake", "stake share"), (axes[1], "total", "stake + credit share")):
        for cls in CLASSES:
            ax.plot(t, [p[f"{kind}_{cls}"] for p in series], label=f"({cls}) {CLASS_NAMES[cls]}")
        ax.set_xlabel("time (s)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report(result: Mapping[str, Any], accuracy: Mapping[str, Any] | None, args: argparse.Namespace,
           out: Path) -> dict[str, Any]:
    duels: list[DuelRow] = result["duels"]
    classes = {row["node"]: row["class"] for row in result["shares"]}
    rates = win_rates(duels)
    pairs = pair_table(duels)
    agreement = judge_agreement(duels)
    series = shares_over_time(result["shares"], classes)
    plotted = plot(series, out / "shares.png", f"stake per class, {len(duels)} duels, judge: {result['judge']}")
    ok = [r for r in result["requests"] if r.get("status") == 200]
    served = Counter(r["class"] for r in ok)
    lines = [f"# Incentives: {len(duels)} duels, judge = {result['judge']}", ""]
    lines.append(f"{len(result['requests'])} requests ({len(ok)} answered) in {result['seconds']:.0f} s; "
                 f"p_inspect {args.p_inspect}; answers max_tokens {args.max_tokens}, degraded class cut at "
                 f"{args.degraded_tokens}; first answers served by class: {dict(sorted(served.items()))}")
    outcomes = Counter(d.outcome for d in duels)
    lines.append(f"duel outcomes: {dict(outcomes)}; the origin's duel events: {result.get('origin_events')}")
    lines += ["", "| class | duels | won | lost | tied | win rate (decided) |", "|---|---|---|---|---|---|"]
    for cls in CLASSES:
        r = rates[cls]
        wr = "-" if r["win_rate"] is None else f"{r['win_rate']:.2f}"
        lines.append(f"| ({cls}) {CLASS_NAMES[cls]} | {r['duels']} | {r['won']} | {r['lost']} | {r['tied']} | {wr} |")
    lines += ["", "pairs (better-worse by intent): " + "; ".join(
        f"{k}: {dict(v)}" for k, v in sorted(pairs.items()))]
    lines += ["", "| judge class | agree | disagree | abstain | no evidence | silent | agreement of votes cast |",
              "|---|---|---|---|---|---|---|"]
    for cls, c in agreement.items():
        cast = c["agree"] + c["disagree"]
        rate = "-" if not cast else f"{c['agree'] / cast:.2f}"
        lines.append(f"| ({cls}) | {c['agree']} | {c['disagree']} | {c['abstain']} | {c['no_evidence']} | "
                     f"{c['silent']} | {rate} |")
    if series:
        first, last = series[0], series[-1]
        lines += ["", "| class | stake share start → end | stake+credit share start → end |", "|---|---|---|"]
        for cls in CLASSES:
            lines.append(f"| ({cls}) | {first[f'stake_{cls}']:.3f} → {last[f'stake_{cls}']:.3f} | "
                         f"{first[f'total_{cls}']:.3f} → {last[f'total_{cls}']:.3f} |")
    if accuracy is not None:
        lines += ["", "SmolLM2-135M as a judge (both orders must agree; in process): "
                  + "; ".join(f"{k}: {v}" for k, v in accuracy["counts"].items()),
                  f"its most common replies: {accuracy['top_replies']}"]
    lines += ["", f"files: {out}/requests.csv, duels.csv, shares.csv" + (", shares.png" if plotted else
                                                                         " (no matplotlib: no plot)")]
    text = "\n".join(lines)
    print(text)
    (out / "report.md").write_text(text + "\n")
    summary = {"win_rates": rates, "pairs": {k: dict(v) for k, v in pairs.items()},
               "judge_agreement": {k: dict(v) for k, v in agreement.items()}, "outcomes": dict(outcomes),
               "shares_start": series[0] if series else None, "shares_end": series[-1] if series else None,
               "judge": result["judge"], "accuracy_135m": accuracy, "args": {k: str(v) for k, v in vars(args).items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 accuracy problems, 40 requests")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--rate", type=float, default=0.3,
                   help="Poisson arrivals per second (a busy SmolLM2 node declines work: faster arrivals leave "
                   "more requests, and duels, to the always-idle random responders)")
    p.add_argument("--concurrency", type=int, default=16, help="most requests in flight at once")
    p.add_argument("--seed", type=int, default=1, help="seed of the arrival times")
    p.add_argument("--p-inspect", type=float, default=0.9, help="share of offloaded requests that become duels")
    p.add_argument("--max-tokens", type=int, default=96, help="answer budget of each request")
    p.add_argument("--degraded-tokens", type=int, default=12, help="class (b)'s cut")
    p.add_argument("--judge", default="reference", help="reference | own | an OpenAI-compatible base URL")
    p.add_argument("--judge-model", default=None, help="model name at --judge URL")
    p.add_argument("--accuracy", type=int, default=8, help="problems for the in-process 135M judge test (0: skip)")
    p.add_argument("--judges", type=int, default=2,
                   help="extra judge-only nodes (with 6 executors alone, once a class is out of stake a duel "
                   "between two of the rest may have fewer than K = 3 eligible judges)")
    p.add_argument("--stake", type=float, default=0.1, help="fixed stake each executor holds (ETH)")
    p.add_argument("--credit", type=float, default=1.0, help="credit each executor starts with (ETH)")
    p.add_argument("--origin-credit", type=float, default=5.0, help="extra credit of the origin (ETH)")
    p.add_argument("--block-time", type=float, default=1.0,
                   help="seconds between mined blocks (the commit and reveal windows are 10 blocks each)")
    p.add_argument("--sample-every", type=float, default=3.0, help="seconds between balance samples")
    p.add_argument("--request-timeout", type=float, default=300.0)
    p.add_argument("--settle-timeout", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "incentives")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.accuracy, args.rate = 40, min(args.accuracy, 2), 1.0
    if args.judge not in ("reference", "own") and not args.judge_model:
        p.error("--judge URL needs --judge-model")
    if args.rate <= 0 or args.requests < 1 or args.concurrency < 1:
        p.error("--rate, --requests and --concurrency must be positive")
    if not 0 <= args.p_inspect <= 1:
        p.error("--p-inspect must be between 0 and 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    try:
        problems = load_problems()
        accuracy = None
        if args.accuracy > 0:
            progress(f"measuring SmolLM2-135M as a judge on {args.accuracy} problems")
            accuracy = measure_judge_accuracy(problems[: args.accuracy], args.max_tokens, args.degraded_tokens,
                                              progress)
            (args.out / "judge_accuracy.json").write_text(json.dumps({"problems": args.accuracy, **accuracy},
                                                                    indent=2))
        result = run_network(args, problems, args.out, progress)
        report(result, accuracy, args, args.out)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
