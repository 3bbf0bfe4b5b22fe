"""Indexer catch-up speed (events/s) on SQLite and on PostgreSQL, over the same anvil chain.

    .venv/bin/python bench/indexer_catchup.py                 # 5,000 events, 3 runs per backend
    .venv/bin/python bench/indexer_catchup.py --events 20000 --runs 5

Starts anvil (one block per transaction), deploys WWWServe and sends `--events` deposits from anvil's
ten unlocked dev accounts (each emits one `Deposited` event, which the indexer stores and applies to the
depositor's balance row). Then, `--runs` times per backend, interleaved, a fresh indexer catches up on the
whole chain into an empty database with one `sync()` (eth_getLogs over 2,000-block batches, each batch one
database transaction with the cursor): SQLite (a file, WAL, synchronous=FULL: `ledger.db.make_engine`'s
settings) and a throwaway PostgreSQL 15 server (tests/postgres_server.py: `initdb` in a temp directory,
fsync on, as a production server runs; the psycopg 3 driver over TCP on 127.0.0.1). The time is the
sync() call's wall clock, RPC reads included (the same for both), schema creation excluded; each run ends
with `reconcile()` against the contract's getters, which must find no difference.

Prints events/s per backend as a mean with a 95 % interval over the runs, and the ratio PostgreSQL/SQLite.
Needs PostgreSQL's programs on PATH (`initdb`, `pg_ctl`, `postgres`) and psycopg (`pip install -e '.[postgres]'`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from eth_account import Account
from web3 import Web3
from web3.types import Wei

from wwwserve.devnet.anvil import start_anvil
from wwwserve.ledger.chain import connect
from wwwserve.ledger.client import WWWServeClient
from wwwserve.ledger.indexer import Indexer
from wwwserve.ledger.params import WEI_PER_CREDIT
from wwwserve.ledger.tx import TxSender
from wwwserve.sim.metrics import mean_interval

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres_server import running_postgres  # tests/ holds the throwaway-server helper

DEV_KEY0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def build_chain(w3: Web3, events: int) -> str:
    """Deploy WWWServe and emit `events` Deposited events; returns the contract address."""
    address, _ = WWWServeClient.deploy(w3, TxSender(w3, Account.from_key(DEV_KEY0)))
    contract = w3.eth.contract(address=address, abi=WWWServeClient(w3, address).contract.abi)
    senders = w3.eth.accounts[1:10]
    data = contract.encode_abi("deposit", [])
    for i in range(events):
        w3.eth.send_transaction({"from": senders[i % len(senders)], "to": address, "data": data,
                                 "value": Wei(WEI_PER_CREDIT + i), "gas": 100_000})
    return str(address)


def catch_up(w3: Web3, address: str, url: str) -> tuple[int, float]:
    """One fresh indexer's sync() over the whole chain: (events applied, seconds)."""
    idx = Indexer(w3, address, url)
    try:
        start = time.perf_counter()
        report = idx.sync()
        elapsed = time.perf_counter() - start
        mismatches = idx.reconcile()
        if mismatches:
            raise SystemExit(f"{url}: the index disagrees with the contract: {mismatches[:3]}")
        return report.events_applied, elapsed
    finally:
        idx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000, help="Deposited events on the chain")
    parser.add_argument("--runs", type=int, default=3, help="catch-ups per backend (interleaved)")
    args = parser.parse_args()

    anvil = start_anvil()
    try:
        w3 = connect(anvil.rpc_url)
        t0 = time.perf_counter()
        address = build_chain(w3, args.events)
        print(f"chain: {args.events} Deposited events in {w3.eth.block_number} blocks, "
              f"built in {time.perf_counter() - t0:.1f} s")
        rates: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
        with running_postgres(fsync=True) as server, tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                for backend in rates:
                    url = (f"sqlite:///{Path(tmp) / f'index-{run}.sqlite'}" if backend == "sqlite"
                           else server.fresh_database("bench"))
                    applied, seconds = catch_up(w3, address, url)
                    if applied < args.events:
                        raise SystemExit(f"{backend}: indexed {applied} events, expected at least {args.events}")
                    rates[backend].append(applied / seconds)
                    print(f"run {run + 1} {backend:10s} {applied} events in {seconds:6.2f} s: "
                          f"{applied / seconds:8.0f} events/s")
    finally:
        anvil.stop()

    print("\nbackend      events/s (mean, 95 % interval over runs)")
    summary = {}
    for backend, values in rates.items():
        stats = summary[backend] = mean_interval(values)
        lo, hi = stats["lo"], stats["hi"]
        interval = f"[{lo:.0f}, {hi:.0f}]" if lo is not None and hi is not None else "(one run)"
        print(f"{backend:12s} {stats['mean']:8.0f} {interval}  n={stats['n']}")
    pg, lite = summary["postgresql"]["mean"], summary["sqlite"]["mean"]
    assert pg is not None and lite is not None
    print(f"ratio postgresql/sqlite: {pg / lite:.2f}")


if __name__ == "__main__":
    main()
