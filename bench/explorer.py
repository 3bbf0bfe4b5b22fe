"""The explorer's routes on a network of 1,000 nodes and 10,000 duels: latency per route, SQLite and PostgreSQL.

    .venv/bin/python bench/explorer.py                      # SQLite and PostgreSQL, 50 timed calls per route
    .venv/bin/python bench/explorer.py --backends sqlite --calls 20

Builds an index straight into the indexer's tables (`ledger.db`, through SQLAlchemy core; no chain): `--nodes`
registered nodes (5 % of them left), `--duels` duels over 100,000 blocks (80 % settled: a_won/b_won/tie/voided
drawn from hidden node strengths; 12 % cancelled; 8 % still open), three judge seats per challenged duel, the
events a duel emits (3 to 13 each), the stake moves of each settled duel, `--vouchers` fee-voucher claims, and a
stake_history replayed from the same story (each node's first stake, then every slash of a losing duelist), so
the accounts' stakes equal the history's last rows. Then it times every JSON route through the ASGI app
(`explorer.api.explorer_app` over `explorer.queries.ExplorerQueries`, driven by httpx's ASGI transport, so the
thread-pool hop is in the figure): `--warmup` untimed calls, then `--calls` timed ones per route, rotating over
nodes, duels and pages; p50 and p95 in ms. Separately, the cold Bradley–Terry fit: the first `api/nodes` call of
a fresh app (fit over every settled duel + the page), `--cold` times, `ranking()` on fresh queries (the query
of the decided duels + the fit), and `bradley_terry()` alone over the same games.

Prints a table per backend and writes bench/results/explorer.json. PostgreSQL is `tests/postgres_server.py`'s
throwaway server (fsync off: nothing here writes while timing), psycopg 3 over TCP on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from eth_utils.address import to_checksum_address
from sqlalchemy import Engine, insert, select

from wwwserve.explorer.api import explorer_app
from wwwserve.explorer.queries import ExplorerQueries
from wwwserve.judge.leaderboard import DuelResult, bradley_terry
from wwwserve.ledger.db import (
    AccountRow,
    ContractStateRow,
    CursorRow,
    DuelJudgeRow,
    DuelRow,
    EventRow,
    NodeRow,
    StakeHistoryRow,
    StakeMoveRow,
    VoucherClaimRow,
    make_engine,
)
from wwwserve.node.recent import RecentRequests, RequestRecord

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_server import running_postgres  # tests/ holds the throwaway-server helper

E18 = 10**18
BLOCKS = 100_000
BOND = 5 * E18
CONTRACT = to_checksum_address("0x" + "5e" * 20)
RESULTS = Path(__file__).resolve().parent / "results" / "explorer.json"


def address(i: int) -> str:
    return to_checksum_address("0x" + hashlib.sha256(f"node {i}".encode()).hexdigest()[:40])


def tx_hash(i: int) -> str:
    return "0x" + hashlib.sha256(f"tx {i}".encode()).hexdigest()


def build(engine: Engine, nodes: int, duels: int, vouchers: int, seed: int) -> dict[str, Any]:
    """Fill an empty index (see the module docstring); returns what the timing rotates over."""
    rng = random.Random(seed)
    who = [address(i) for i in range(nodes)]
    strength = {a: rng.gauss(0.0, 1.0) for a in who}
    left = set(rng.sample(who, nodes // 20))
    stake = {a: rng.randint(10, 1000) * E18 for a in who}
    history: dict[tuple[int, str], int] = {(1 + i % 500, a): s for i, (a, s) in enumerate(stake.items())}
    events: list[dict[str, Any]] = []
    duel_rows: list[dict[str, Any]] = []
    seats: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []

    def event(block: int, name: str, duel_id: int | None) -> int:
        events.append({"id": len(events) + 1, "block_number": block, "block_hash": tx_hash(-block),
                       "tx_hash": tx_hash(len(events)), "log_index": 0, "event_name": name, "duel_id": duel_id,
                       "args": {}})
        return len(events)

    opened_blocks = sorted(rng.sample(range(1_000, BLOCKS - 200), duels))
    for n, opened in enumerate(opened_blocks):
        duel_id = rng.getrandbits(63)
        a, b = rng.sample(who, 2)
        origin = rng.choice(who)
        draw = rng.random()
        status = "settled" if draw < 0.80 else "cancelled" if draw < 0.92 else rng.choice(
            ("awaiting_answer", "judging"))
        opened_event = event(opened, "DuelOpened", duel_id)
        moves.append({"event_id": opened_event, "duel_id": duel_id, "node": origin, "amount_wei": E18,
                      "kind": "escrow", "block_number": opened})
        row: dict[str, Any] = {
            "id": duel_id, "origin": origin, "a": a, "b": b, "request_id": tx_hash(-n), "request_hash": tx_hash(-n),
            "model_hash": tx_hash(0), "answer_a_hash": tx_hash(n), "answer_b_hash": None, "bond_wei": BOND,
            "escrow_wei": E18, "seed_block": opened + 1, "answer_deadline": opened + 20, "publish_deadline": None,
            "round": 0, "commit_end_r1": None, "reveal_end_r1": None, "commit_end_r2": None, "reveal_end_r2": None,
            "status": status, "outcome": None, "cancel_reason": None, "final_round": None, "votes_a": None,
            "votes_b": None, "stake_moved_wei": None, "appellant": None, "appeal_deposit_wei": None,
            "request": None, "opened_block": opened, "opened_event_id": opened_event, "answered_block": None,
            "settled_block": None,
        }
        if status == "awaiting_answer" and rng.random() < 0.5:
            row["b"] = None
        else:
            event(opened + 2, "ChallengerDrawn", duel_id)
        if status == "cancelled":
            row["cancel_reason"] = rng.choice(("no_challenger", "no_answer", "request_withheld", "no_judges"))
            row["settled_block"] = opened + 25
            event(opened + 25, "DuelCancelled", duel_id)
        elif status in ("settled", "judging"):
            row.update(round=1, answer_b_hash=tx_hash(-n - 1), answered_block=opened + 5,
                       commit_end_r1=opened + 12, reveal_end_r1=opened + 18)
            event(opened + 5, "DuelAnswered", duel_id)
            panel = rng.sample([x for x in who if x not in (a, b)], 3)
            event(opened + 6, "JudgesDrawn", duel_id)
            p_a = 1.0 / (1.0 + 2.718281828459045 ** (strength[b] - strength[a]))
            for position, judge in enumerate(panel):
                vote = (1 if rng.random() < p_a else 2) if status == "settled" else None
                seats.append({"duel_id": duel_id, "round": 1, "position": position, "judge": judge,
                              "commitment": tx_hash(n * 3 + position), "vote": vote,
                              "committed_block": opened + 8, "revealed_block": None if vote is None else opened + 14})
                event(opened + 8, "VoteCommitted", duel_id)
            if status == "settled":
                votes = [s["vote"] for s in seats[-3:]]
                tie_or_void = rng.random()
                outcome = ("tie" if tie_or_void < 0.10 else "voided" if tie_or_void < 0.25
                           else "a_won" if votes.count(1) >= 2 else "b_won")
                row.update(outcome=outcome, final_round=1, votes_a=votes.count(1), votes_b=votes.count(2),
                           settled_block=opened + 25, stake_moved_wei=BOND if outcome in ("a_won", "b_won") else 0)
                for _ in range(3):
                    event(opened + 14, "VoteRevealed", duel_id)
                if outcome in ("a_won", "b_won"):
                    loser, winner = (b, a) if outcome == "a_won" else (a, b)
                    taken = min(BOND, stake[loser])
                    stake[loser] -= taken
                    history[(opened + 25, loser)] = stake[loser]
                    slash = event(opened + 25, "StakeSlashed", duel_id)
                    reward = event(opened + 25, "DuelRewardPaid", duel_id)
                    moves.append({"event_id": slash, "duel_id": duel_id, "node": loser, "amount_wei": taken,
                                  "kind": "slashed_lost_duel", "block_number": opened + 25})
                    moves.append({"event_id": reward, "duel_id": duel_id, "node": winner, "amount_wei": taken,
                                  "kind": "reward_stake_won", "block_number": opened + 25})
                event(opened + 25, "DuelSettled", duel_id)
        duel_rows.append(row)

    claims = []
    for _ in range(vouchers):
        block = rng.randrange(1_000, BLOCKS)
        origin, executor = rng.sample(who, 2)
        paid = rng.randint(1, 10**6) * 10**12
        claims.append({"event_id": event(block, "VoucherClaimed", None), "origin": origin, "executor": executor,
                       "cumulative_amount_wei": paid, "paid_wei": paid, "from_credit_wei": paid, "from_pending_wei": 0,
                       "block_number": block, "tx_hash": events[-1]["tx_hash"]})

    node_rows = [{"address": a, "pubkey": tx_hash(-i), "endpoint": f"https://node{i}.example:8000",
                  "models": ["smollm2", f"model-{i % 7}"], "metadata": "", "active": a not in left, "leaf": i + 1,
                  "slot_held": a not in left, "registered_block": 1 + i % 500, "updated_block": 1 + i % 500}
                 for i, a in enumerate(who)]
    account_rows = [{"address": a, "credit_wei": rng.randint(0, 10**6) * 10**15, "pending_withdrawal_wei": 0,
                     "withdrawable_at": 0, "active_stake_wei": stake[a], "unbonding_stake_wei": 0, "unbonding_end": 0,
                     "unbonding_block": 0, "bonded_wei": 0, "updated_block": BLOCKS} for a in who]
    history_rows = []
    held: dict[str, int] = {}
    for (block, a), s in sorted(history.items()):
        previous = held.get(a, 0)
        history_rows.append({"block_number": block, "address": a, "active_stake_wei": s, "previous_stake_wei": previous,
                             "gained_wei": max(s - previous, 0), "lost_wei": max(previous - s, 0)})
        held[a] = s
    with engine.begin() as conn:
        for table, rows in ((NodeRow, node_rows), (AccountRow, account_rows), (EventRow, events),
                            (DuelRow, duel_rows), (DuelJudgeRow, seats), (StakeMoveRow, moves),
                            (VoucherClaimRow, claims), (StakeHistoryRow, history_rows)):
            for start in range(0, len(rows), 5_000):
                conn.execute(insert(table), rows[start:start + 5_000])
        conn.execute(insert(ContractStateRow), [{"contract_address": CONTRACT, "chain_id": 31337,
                                                 "reserve_wei": 123 * E18, "updated_block": BLOCKS}])
        conn.execute(insert(CursorRow), [{"contract_address": CONTRACT, "chain_id": 31337, "block_number": BLOCKS,
                                          "block_hash": tx_hash(-BLOCKS)}])
    fought = Counter(d["a"] for d in duel_rows) + Counter(d["b"] for d in duel_rows if d["b"] is not None)
    busiest = [a for a, _ in fought.most_common(20)]
    return {
        "nodes": who, "busy_nodes": busiest, "duel_ids": [d["id"] for d in duel_rows],
        "rows": {"nodes": len(node_rows), "duels": len(duel_rows), "events": len(events), "duel_judges": len(seats),
                 "stake_moves": len(moves), "vouchers_claimed": len(claims), "stake_history": len(history_rows)},
    }


def recent_log(count: int) -> RecentRequests:
    log = RecentRequests()
    for i in range(count):
        log.add(RequestRecord(id=f"req-{i}", time=1.7e9 + i, model="smollm2", kind="chat", source="user",
                              route=(address(i % 10), address(i % 13)), executor=address(i % 13),
                              latency_ms=40 + i % 50, status=200, stream=bool(i % 2), signature_checked=True))
    return log


def routes(data: dict[str, Any]) -> dict[str, list[str]]:
    """Each timed route and the URLs its calls rotate over."""
    nodes, busy, ids = data["nodes"], data["busy_nodes"], data["duel_ids"]
    n = len(nodes)
    return {
        "api/totals": ["api/totals"],
        "api/nodes (stake)": [f"api/nodes?offset={o}" for o in (0, 50, 500, 900)],
        "api/nodes (rank)": [f"api/nodes?sort=rank&offset={o}" for o in (0, 50, 500, 900)],
        "api/nodes (address, all)": [f"api/nodes?sort=address&active=all&limit=200&offset={o}"
                                     for o in (0, n // 2, max(n - 200, 0))],
        "api/nodes/<address>": [f"api/nodes/{a}" for a in busy],
        "api/duels": [f"api/duels?offset={o}" for o in (0, 50, 5000, len(ids) - 50)],
        "api/duels?status=settled": [f"api/duels?status=settled&offset={o}" for o in (0, 4000, 7000)],
        "api/duels?status=open": ["api/duels?status=open", "api/duels?status=open&offset=400"],
        "api/duels?node=": [f"api/duels?node={a}" for a in busy],
        "api/duels/<id>": [f"api/duels/{ids[i]}" for i in range(0, len(ids), max(1, len(ids) // 20))],
        "api/requests": ["api/requests?limit=200"],
        "api/stake-history": ["api/stake-history?points=200&top=8"],
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def time_routes(engine: Engine, data: dict[str, Any], warmup: int, calls: int, cold: int) -> dict[str, Any]:
    log = recent_log(500)
    out: dict[str, Any] = {"routes": {}, "cold": {}}

    async def get(client: httpx.AsyncClient, url: str) -> float:
        start = time.perf_counter()
        response = await client.get(url)
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.text[:200]}")
        return elapsed

    # cold: a fresh app's first api/nodes call fits Bradley–Terry over every settled duel
    first_calls, fits = [], []
    for _ in range(cold):
        app = explorer_app(ExplorerQueries(engine), recent=log)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench/") as client:
            first_calls.append(await get(client, "api/nodes"))
        queries = ExplorerQueries(engine)
        start = time.perf_counter()
        queries.ranking()
        fits.append((time.perf_counter() - start) * 1000)
    # the fit alone, over the same games (no query): what the first two figures spend in numpy
    with engine.connect() as conn:
        rows = conn.execute(select(DuelRow.a, DuelRow.b, DuelRow.outcome).where(
            DuelRow.status == "settled", DuelRow.outcome.in_(("a_won", "b_won", "tie")))).all()
    games = [DuelResult(a, b, a if o == "a_won" else b if o == "b_won" else None) for a, b, o in rows]
    bare = []
    for _ in range(cold):
        start = time.perf_counter()
        bradley_terry(games)
        bare.append((time.perf_counter() - start) * 1000)
    out["cold"] = {"first api/nodes call": first_calls, "ranking() (query + fit)": fits,
                   f"bradley_terry() alone ({len(games):,} games)": bare}

    app = explorer_app(ExplorerQueries(engine), recent=log)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench/") as client:
        for name, urls in routes(data).items():
            for i in range(warmup):
                await get(client, urls[i % len(urls)])
            times = [await get(client, urls[i % len(urls)]) for i in range(calls)]
            out["routes"][name] = {"p50_ms": pct(times, 0.5), "p95_ms": pct(times, 0.95), "max_ms": max(times),
                                   "calls": calls}
    return out


@contextmanager
def index(backend: str) -> Iterator[Engine]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'index.sqlite'}")
            try:
                yield engine
            finally:
                engine.dispose()
    else:
        with running_postgres() as server:
            engine = make_engine(server.fresh_database("explorer"))
            try:
                yield engine
            finally:
                engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duels", type=int, default=10_000)
    parser.add_argument("--vouchers", type=int, default=20_000)
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per route")
    parser.add_argument("--calls", type=int, default=50, help="timed calls per route")
    parser.add_argument("--cold", type=int, default=5, help="cold Bradley-Terry measurements")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    report: dict[str, Any] = {"nodes": args.nodes, "duels": args.duels, "vouchers": args.vouchers,
                              "warmup": args.warmup, "calls": args.calls, "backends": {}}
    for backend in args.backends.split(","):
        with index(backend) as engine:
            start = time.perf_counter()
            data = build(engine, args.nodes, args.duels, args.vouchers, args.seed)
            built_s = time.perf_counter() - start
            print(f"\n{backend}: built in {built_s:.1f} s: " + ", ".join(f"{k} {v:,}" for k, v in data["rows"].items()))
            timed = asyncio.run(time_routes(engine, data, args.warmup, args.calls, args.cold))
        report["backends"][backend] = {"rows": data["rows"], "build_s": built_s, **timed}
        print(f"{'route':28s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}")
        for name, figures in timed["routes"].items():
            print(f"{name:28s} {figures['p50_ms']:8.1f} {figures['p95_ms']:8.1f} {figures['max_ms']:8.1f}")
        for name, values in timed["cold"].items():
            print(f"cold: {name:44s} median {statistics.median(values):7.1f} ms, "
                  f"all: {', '.join(f'{v:.0f}' for v in values)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
