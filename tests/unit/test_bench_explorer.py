"""bench/explorer.py on a small index: the built tables hang together and every timed route answers 200."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_bench_script
from sqlalchemy import Engine, func, select

from wwwserve.explorer.queries import ExplorerQueries
from wwwserve.ledger.db import AccountRow, StakeHistoryRow, make_engine


def load_bench() -> ModuleType:
    return load_bench_script("explorer.py", "bench_explorer")


def latest_stakes(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(StakeHistoryRow.address, StakeHistoryRow.active_stake_wei)
                            .order_by(StakeHistoryRow.block_number)).all()
    return {address: stake for address, stake in rows}


def test_the_bench_index_is_consistent_and_every_route_answers(tmp_path: Path) -> None:
    bench = load_bench()
    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")
    data = bench.build(engine, nodes=40, duels=300, vouchers=100, seed=3)
    assert data["rows"]["nodes"] == 40 and data["rows"]["duels"] == 300 and data["rows"]["vouchers_claimed"] == 100
    with engine.connect() as conn:
        stakes = dict(conn.execute(select(AccountRow.address, AccountRow.active_stake_wei)).all())
        history_rows = conn.execute(select(func.count()).select_from(StakeHistoryRow)).scalar()
    assert latest_stakes(engine) == stakes and history_rows == data["rows"]["stake_history"]
    queries = ExplorerQueries(engine)
    totals = queries.totals()
    assert totals["duels"]["total"] == 300 and totals["stake_total_wei"] == str(sum(stakes.values()))
    assert totals["duels"]["settled"] > totals["duels"]["cancelled"] > 0 and totals["duels"]["open"] > 0
    chart = queries.stake_history(points=50, top=5)
    assert sum(s["share"][-1] for s in chart["series"]) + chart["others"][-1] == pytest.approx(1.0)
    timed = asyncio.run(bench.time_routes(engine, data, warmup=0, calls=2, cold=1))  # exits on a non-200
    assert set(timed["routes"]) == set(bench.routes(data)) and len(timed["cold"]) == 3
    engine.dispose()
