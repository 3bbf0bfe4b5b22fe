"""The explorer's queries and JSON routes (explorer/queries.py, explorer/api.py).

Two indexes: a synthetic one written straight into the tables, small enough to check by hand (wei above 2**64
so the exact SQL sums are tested, a 63-bit duel id, every duel status and outcome), and one filled by a real
indexer run over an in-process chain with a settled duel, an open one and a fee voucher, checked against the
contract's own views. Both run on SQLite and, in the postgres tier, on PostgreSQL (`fresh_index_url`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from eth_utils.address import to_checksum_address
from ledger_world import C, World, make_world
from sqlalchemy import Engine, update
from sqlalchemy.orm import Session
from starlette.routing import Route
from starlette.testclient import TestClient

from wwwserve.explorer.api import explorer_app
from wwwserve.explorer.queries import ExplorerQueries
from wwwserve.judge.leaderboard import DuelResult, bradley_terry
from wwwserve.judge.outcomes import CANCEL_WHY
from wwwserve.ledger.client import Vote
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
from wwwserve.ledger.indexer import Indexer

N1, N2, N3, N4 = (to_checksum_address("0x" + f"{i}" * 40) for i in (1, 2, 3, 4))
CONTRACT = to_checksum_address("0x" + "c" * 40)
E18 = 10**18
BIG = 2**70  # above 2**64: a float or a 64-bit sum would get it wrong
MAX_ID = 2**63 - 1
HASH = "0x" + "ab" * 32


class Log:
    """A stand-in request log (the explorer reads `entries` and `count`)."""

    def __init__(self) -> None:
        self.count = 0

    def entries(self, limit: int = 50) -> list[dict[str, Any]]:
        return [{"id": f"r{i}", "status": 200} for i in range(min(limit, self.count))][::-1]


def account(address: str, stake: int, credit: int = 0, unbonding: int = 0) -> AccountRow:
    return AccountRow(address=address, credit_wei=credit, pending_withdrawal_wei=0, withdrawable_at=0,
                      active_stake_wei=stake, unbonding_stake_wei=unbonding, unbonding_end=0, unbonding_block=0,
                      bonded_wei=0, updated_block=1)


def node(address: str, active: bool = True) -> NodeRow:
    return NodeRow(address=address, pubkey=HASH, endpoint=f"http://{address[-4:]}:8000", models=["m"],
                   node_metadata="", active=active, leaf=1, slot_held=active, registered_block=1, updated_block=1)


def duel(duel_id: int, a: str, b: str | None, opened: int, status: str, outcome: str | None = None,
         **extra: Any) -> DuelRow:
    return DuelRow(id=duel_id, origin=N3, a=a, b=b, request_id=HASH, request_hash=HASH, model_hash=HASH,
                   answer_a_hash=HASH, bond_wei=5 * E18, escrow_wei=E18, seed_block=opened, answer_deadline=opened + 4,
                   round=1 if status != "awaiting_answer" else 0, status=status, outcome=outcome,
                   opened_block=opened, opened_event_id=opened, **extra)


def fill_synthetic(engine: Engine) -> None:
    """Four nodes (N4 left), seven duels (four settled: a_won twice, a tie, a void; one cancelled; two open),
    a panel, stake moves and events of duel 1, three voucher claims, a stake history, the cursor at 40."""
    with Session(engine) as s, s.begin():
        s.add_all([node(N1), node(N2), node(N3), node(N4, active=False)])
        s.add_all([account(N1, BIG, credit=2**200), account(N2, 3 * E18, credit=1), account(N3, 0, unbonding=5),
                   account(N4, E18)])
        s.add(ContractStateRow(contract_address=CONTRACT, chain_id=7, reserve_wei=12345, updated_block=1))
        s.add(CursorRow(contract_address=CONTRACT, chain_id=7, block_number=40, block_hash=HASH))
        s.add_all([
            duel(1, N1, N2, 10, "settled", "a_won", final_round=1, votes_a=2, votes_b=1, stake_moved_wei=5 * E18,
                 settled_block=20),
            duel(2, N2, N1, 11, "settled", "a_won", final_round=1, votes_a=3, votes_b=0, settled_block=21),
            duel(3, N1, N3, 12, "settled", "tie", settled_block=22),
            duel(4, N1, N2, 13, "settled", "voided", settled_block=23),
            duel(5, N3, N1, 14, "cancelled", cancel_reason="no_answer", settled_block=24),
            duel(6, N2, None, 15, "awaiting_answer"),
            duel(MAX_ID, N1, N2, 16, "judging"),
        ])
        events = [EventRow(id=i, block_number=block, block_hash=HASH, tx_hash="0x" + f"{i:064x}", log_index=0,
                           event_name=name, duel_id=1, args={})
                  for i, (block, name) in enumerate([(10, "DuelOpened"), (11, "ChallengerDrawn"),
                                                     (20, "StakeSlashed"), (20, "DuelSettled")], start=1)]
        events.append(EventRow(id=5, block_number=30, block_hash=HASH, tx_hash="0x" + "05" * 32, log_index=0,
                               event_name="VoucherClaimed", duel_id=None, args={}))
        s.add_all(events)
        s.flush()
        s.add_all([
            DuelJudgeRow(duel_id=1, round=1, position=0, judge=N3, commitment=HASH, vote=int(Vote.A)),
            DuelJudgeRow(duel_id=1, round=1, position=1, judge=N4, commitment=HASH, vote=int(Vote.B)),
            DuelJudgeRow(duel_id=1, round=1, position=2, judge=N3, commitment=HASH, vote=int(Vote.A)),
            DuelJudgeRow(duel_id=MAX_ID, round=1, position=0, judge=N4),
        ])
        s.add_all([
            StakeMoveRow(event_id=1, duel_id=1, node=N3, amount_wei=E18, kind="escrow", block_number=10),
            StakeMoveRow(event_id=3, duel_id=1, node=N2, amount_wei=5 * E18, kind="slashed_lost_duel",
                         block_number=20),
            StakeMoveRow(event_id=4, duel_id=1, node=N1, amount_wei=5 * E18, kind="reward_stake_won",
                         block_number=20),
        ])
        for origin, executor, paid in ((N3, N1, 2**65), (N3, N2, 7), (N1, N2, E18)):
            s.add(VoucherClaimRow(event_id=5, origin=origin, executor=executor, cumulative_amount_wei=paid,
                                  paid_wei=paid, from_credit_wei=paid, from_pending_wei=0, block_number=30,
                                  tx_hash="0x" + "05" * 32))
        before: dict[str, int] = {}
        for block, who, stake in ((5, N1, E18), (5, N2, E18), (8, N4, 2 * E18), (30, N1, BIG), (30, N2, 3 * E18),
                                  (33, N4, E18)):
            previous = before.get(who, 0)
            s.add(StakeHistoryRow(block_number=block, address=who, active_stake_wei=stake, previous_stake_wei=previous,
                                  gained_wei=max(stake - previous, 0), lost_wei=max(previous - stake, 0)))
            before[who] = stake


@pytest.fixture
def synthetic(fresh_index_url: Callable[[], str]) -> Iterator[Engine]:
    engine = make_engine(fresh_index_url())
    fill_synthetic(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def client(synthetic: Engine) -> Iterator[TestClient]:
    with TestClient(explorer_app(ExplorerQueries(synthetic), recent=Log(), node_address=N1)) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# the synthetic index, checked by hand
def test_totals_are_exact_sums(client: TestClient) -> None:
    body = client.get("api/totals").json()
    assert body == {
        "chain_id": 7, "contract": CONTRACT, "block": 40, "nodes_active": 3, "nodes_registered": 4,
        "stake_total_wei": str(BIG + 4 * E18), "unbonding_total_wei": "5", "credit_total_wei": str(2**200 + 1),
        "reserve_wei": "12345",
        "duels": {"total": 7, "open": 2, "settled": 4, "cancelled": 1, "a_won": 2, "b_won": 0, "tie": 1, "void": 1},
        "fees_claimed_wei": str(2**65 + 7 + E18), "events": 5, "requests_logged": 0, "node": N1,
    }


def test_nodes_page_records_fees_shares_and_ranks(client: TestClient) -> None:
    body = client.get("api/nodes").json()
    assert (body["total"], body["offset"], body["limit"]) == (3, 0, 50)
    assert [n["address"] for n in body["items"]] == [N1, N2, N3]  # by stake, N4 (left) filtered out
    one, two, three = body["items"]
    assert one["duels"] == {"won": 1, "lost": 1, "tied": 1, "void": 1, "cancelled": 1}
    assert two["duels"] == {"won": 1, "lost": 1, "tied": 0, "void": 1, "cancelled": 0}
    assert three["duels"] == {"won": 0, "lost": 0, "tied": 1, "void": 0, "cancelled": 1}
    assert (one["stake_wei"], one["credit_wei"], three["unbonding_wei"]) == (str(BIG), str(2**200), "5")
    assert one["stake_share"] == pytest.approx(BIG / (BIG + 4 * E18))
    assert (one["fees_earned_wei"], one["fees_paid_wei"]) == (str(2**65), str(E18))
    assert (two["fees_earned_wei"], two["fees_paid_wei"]) == (str(E18 + 7), "0")
    assert three["fees_paid_wei"] == str(2**65 + 7)
    # the rank is the Bradley–Terry fit over the decided settled duels (1 and 2 won by A, 3 a tie)
    fit = bradley_terry([DuelResult(N1, N2, N1), DuelResult(N2, N1, N2), DuelResult(N1, N3, None)])
    by_rank = client.get("api/nodes", params={"sort": "rank"}).json()["items"]
    assert [n["address"] for n in by_rank] == [s.node for s in fit]
    for n, s in zip(by_rank, fit, strict=True):
        assert (n["rank"], n["bt_score"], n["bt_low"], n["bt_high"]) == (
            by_rank.index(n) + 1, pytest.approx(s.score), pytest.approx(s.ci_low), pytest.approx(s.ci_high))

    everyone = client.get("api/nodes", params={"active": "all", "sort": "address"}).json()
    assert [n["address"] for n in everyone["items"]] == sorted([N1, N2, N3, N4]) and everyone["total"] == 4
    left = client.get("api/nodes", params={"active": "false"}).json()["items"]
    assert [(n["address"], n["rank"], n["active"]) for n in left] == [(N4, None, False)]
    page = client.get("api/nodes", params={"offset": 1, "limit": 1}).json()
    assert [n["address"] for n in page["items"]] == [N2] and (page["total"], page["limit"]) == (3, 1)


def test_node_detail_lists_its_duels_newest_first_and_its_stake_moves(client: TestClient) -> None:
    body = client.get(f"api/nodes/{N1.lower()}").json()
    assert body["address"] == N1
    assert [d["id"] for d in body["duels_recent"]] == [str(MAX_ID), "5", "4", "3", "2", "1"]
    assert body["stake_moves"] == [{"duel_id": "1", "kind": "reward_stake_won", "amount_wei": str(5 * E18),
                                    "block": 20}]
    missing = client.get("api/nodes/0x" + "9" * 40)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_duels_page_filters_and_pages(client: TestClient) -> None:
    def ids(**params: Any) -> list[str]:
        return [d["id"] for d in client.get("api/duels", params=params).json()["items"]]

    assert ids() == [str(MAX_ID), "6", "5", "4", "3", "2", "1"]
    assert ids(status="open") == [str(MAX_ID), "6"]
    assert ids(status="settled") == ["4", "3", "2", "1"]
    assert ids(status="cancelled") == ["5"]
    assert ids(node=N3) == ["5", "3"]
    assert ids(offset=2, limit=2) == ["5", "4"]
    body = client.get("api/duels", params={"status": "settled", "node": N2, "limit": 1}).json()
    assert body["total"] == 3 and len(body["items"]) == 1
    first = client.get("api/duels", params={"status": "cancelled"}).json()["items"][0]
    assert first == {"id": "5", "status": "cancelled", "outcome": None, "cancel_reason": "no_answer",
                     "why": CANCEL_WHY["no_answer"], "origin": N3, "a": N3, "b": N1, "round": 1,
                     "final_round": None, "votes_a": None, "votes_b": None,
                     "stake_moved_wei": None, "opened_block": 14, "settled_block": 24}


def test_duel_detail_has_seats_votes_moves_and_transactions(client: TestClient) -> None:
    body = client.get("api/duels/1").json()
    assert (body["outcome"], body["votes_a"], body["votes_b"], body["stake_moved_wei"]) == ("a_won", 2, 1,
                                                                                          str(5 * E18))
    assert body["judges"] == [
        {"round": 1, "position": 0, "judge": N3, "committed": True, "vote": "a"},
        {"round": 1, "position": 1, "judge": N4, "committed": True, "vote": "b"},
        {"round": 1, "position": 2, "judge": N3, "committed": True, "vote": "a"},
    ]
    assert [(m["node"], m["kind"]) for m in body["stake_moves"]] == [
        (N3, "escrow"), (N2, "slashed_lost_duel"), (N1, "reward_stake_won")]
    assert [(t["event"], t["block"]) for t in body["transactions"]] == [
        ("DuelOpened", 10), ("ChallengerDrawn", 11), ("StakeSlashed", 20), ("DuelSettled", 20)]
    assert body["request_hash"] == body["answer_a_hash"] == HASH and body["answer_b_hash"] is None
    top = client.get(f"api/duels/{MAX_ID}").json()
    assert top["id"] == str(MAX_ID) and top["judges"] == [
        {"round": 1, "position": 0, "judge": N4, "committed": False, "vote": None}]
    assert client.get("api/duels/99").status_code == 404


def test_stake_history_samples_shares(client: TestClient) -> None:
    body = client.get("api/stake-history", params={"points": 8, "top": 2}).json()
    assert body["blocks"] == [5, 10, 15, 20, 25, 30, 35, 40]  # first change to the cursor, evenly
    assert [s["address"] for s in body["series"]] == [N1, N2]
    late = BIG + 3 * E18 + 2 * E18  # at block 30 N4 still has 2 E18; at 33 it drops to 1
    last = BIG + 4 * E18
    expected_n1 = [0.5] + [0.25] * 4 + [BIG / late] + [BIG / last] * 2
    expected_n2 = [0.5] + [0.25] * 4 + [3 * E18 / late] + [3 * E18 / last] * 2
    assert body["series"][0]["share"] == pytest.approx(expected_n1)
    assert body["series"][1]["share"] == pytest.approx(expected_n2)
    assert body["others"] == pytest.approx([1 - a - b for a, b in zip(expected_n1, expected_n2, strict=True)])
    every = client.get("api/stake-history", params={"points": 1000, "top": 1}).json()  # one sample per block
    assert every["blocks"] == list(range(5, 41))
    n1 = dict(zip(every["blocks"], every["series"][0]["share"], strict=True))
    assert (n1[5], n1[7], n1[8], n1[29]) == (0.5, 0.5, 0.25, 0.25) and n1[30] == pytest.approx(BIG / late)
    few = client.get("api/stake-history", params={"points": 3, "top": 0}).json()
    assert few["blocks"] == [5, 22, 40] and few["series"] == [] and few["others"] == pytest.approx([1.0] * 3)


def test_stake_history_of_a_single_block(fresh_index_url: Callable[[], str]) -> None:
    engine = make_engine(fresh_index_url())
    with Session(engine) as s, s.begin():
        s.add(account(N1, E18))
        s.add(StakeHistoryRow(block_number=5, address=N1, active_stake_wei=E18, previous_stake_wei=0, gained_wei=E18,
                              lost_wei=0))
    body = ExplorerQueries(engine).stake_history()
    assert body == {"blocks": [5], "series": [{"address": N1, "share": [1.0]}], "others": [0.0]}
    engine.dispose()


@pytest.mark.parametrize(("url", "param"), [
    ("api/nodes?limit=0", "limit"), ("api/nodes?limit=201", "limit"), ("api/nodes?offset=-1", "offset"),
    ("api/nodes?offset=x", "offset"), ("api/nodes?sort=fees", "sort"), ("api/nodes?active=yes", "active"),
    ("api/duels?status=won", "status"), ("api/duels?node=0x12", "node"), ("api/nodes/nobody", "address"),
    ("api/duels/-3", "duel_id"), ("api/duels/9223372036854775808", "duel_id"), ("api/duels/0x10", "duel_id"),
    ("api/stake-history?points=0", "points"), ("api/stake-history?top=51", "top"), ("api/requests?limit=0", "limit"),
])
def test_bad_parameters_are_400_in_the_error_shape(client: TestClient, url: str, param: str) -> None:
    response = client.get(url)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "invalid_parameter", param)
    assert error["message"]


def test_requests_and_an_unknown_route(synthetic: Engine) -> None:
    log = Log()
    log.count = 3
    with TestClient(explorer_app(ExplorerQueries(synthetic), recent=log)) as c:
        body = c.get("api/requests", params={"limit": 2}).json()
        assert body == {"items": [{"id": "r1", "status": 200}, {"id": "r0", "status": 200}], "total": 3,
                        "offset": 0, "limit": 2, "available": True}
        assert c.get("api/totals").json()["requests_logged"] == 3
        assert c.get("api/nothing").status_code == 404
    with TestClient(explorer_app(ExplorerQueries(synthetic))) as c:
        assert c.get("api/requests").json() == {"items": [], "total": 0, "offset": 0, "limit": 50,
                                                "available": False}
        totals = c.get("api/totals").json()
        assert (totals["requests_logged"], totals["node"]) == (None, None)


def test_every_route_that_reads_the_database_runs_in_the_thread_pool(synthetic: Engine) -> None:
    """Plain functions, which Starlette runs in its thread pool: a slow query never holds the node's event loop.
    Only the stream is a coroutine (it reads the cursor through anyio.to_thread)."""
    app = explorer_app(ExplorerQueries(synthetic))
    coroutines = {route.path for route in app.routes
                  if isinstance(route, Route) and inspect.iscoroutinefunction(route.endpoint)}
    assert coroutines == {"/api/stream"}


def test_the_page_is_served_at_the_root(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]


def test_the_ranking_is_fitted_again_when_a_duel_settles_not_when_the_cursor_moves(synthetic: Engine) -> None:
    queries = ExplorerQueries(synthetic)
    first = queries.ranking()
    with Session(synthetic) as s, s.begin():
        s.execute(update(CursorRow).values(block_number=41))
    assert queries.ranking() is first  # the same settled duels: the cached fit
    with Session(synthetic) as s, s.begin():
        s.execute(update(DuelRow).where(DuelRow.id == MAX_ID).values(status="settled", outcome="b_won",
                                                                      settled_block=41))
    again = queries.ranking()
    assert again is not first and again[N2].score > first[N2].score  # N2 beat N1 once more
    fit = bradley_terry([DuelResult(N1, N2, N1), DuelResult(N2, N1, N2), DuelResult(N1, N3, None),
                         DuelResult(N1, N2, N2)])
    assert {node: (r.rank, r.score) for node, r in again.items()} == {
        s.node: (place, pytest.approx(s.score)) for place, s in enumerate(fit, start=1)}


# ---------------------------------------------------------------------------------------------
# live updates
async def read_stream(app: Any, until: Callable[[list[str]], bool], on_event: Callable[[int], None]) -> list[str]:
    """Drive `api/stream` as an ASGI client: collect events (split on blank lines) until `until(events)`,
    calling `on_event(number)` after each one; then disconnect."""
    events: list[str] = []
    buffer = ""
    gone = anyio.Event()
    done = anyio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal buffer
        if message["type"] == "http.response.start":
            assert message["status"] == 200
            assert dict(message["headers"])[b"content-type"].startswith(b"text/event-stream")
        if message["type"] != "http.response.body" or done.is_set():
            return
        buffer += message.get("body", b"").decode()
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            events.append(event)
            if until(events):
                done.set()
                gone.set()
                return
            on_event(len(events))

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": "/api/stream", "raw_path": b"/api/stream", "query_string": b"", "root_path": "",
             "headers": [], "client": ("test", 1), "server": ("test", 80)}
    with anyio.fail_after(30):
        await app(scope, receive, send)
    return events


def change(event: str) -> dict[str, Any]:
    lines = event.splitlines()
    assert lines[0] == "event: change" and lines[1].startswith("data: ")
    data: dict[str, Any] = json.loads(lines[1].removeprefix("data: "))
    return data


@pytest.mark.anyio
async def test_the_stream_says_when_the_block_or_the_request_count_changes(synthetic: Engine) -> None:
    log = Log()
    app = explorer_app(ExplorerQueries(synthetic), recent=log, poll_interval_s=0.01, keepalive_s=0.05)

    def act(number: int) -> None:
        if number == 1:
            log.count = 1  # a request was logged
        elif number == 2:
            with Session(synthetic) as s, s.begin():
                s.execute(update(CursorRow).values(block_number=41))  # the indexer moved on

    events = await read_stream(app, lambda evs: len(evs) == 4, act)
    assert [change(e) for e in events[:3]] == [{"block": 40, "requests": 0}, {"block": 40, "requests": 1},
                                               {"block": 41, "requests": 1}]
    assert events[3] == ": keepalive"  # nothing changed after that


@pytest.mark.anyio
async def test_many_streams_share_one_poller_and_one_too_many_is_a_503(synthetic: Engine) -> None:
    reads = 0

    class CountingQueries(ExplorerQueries):
        def indexed_block(self) -> int | None:
            nonlocal reads
            reads += 1
            return super().indexed_block()

    log = Log()
    app = explorer_app(CountingQueries(synthetic), recent=log, poll_interval_s=0.01, keepalive_s=0.05,
                       max_streams=3)
    opened = anyio.Event()
    streams_open = 0

    def at_first_event(number: int) -> None:
        nonlocal streams_open
        if number == 1:
            streams_open += 1
            if streams_open == 3:
                opened.set()

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(read_stream, app, lambda evs: '"requests": 1' in evs[-1], at_first_event)
        await opened.wait()
        pollers = [t for t in asyncio.all_tasks() if t.get_name() == "explorer-changes"]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as client:
            busy = await client.get("/api/stream")
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "explorer_busy"
        assert "retry-after" in busy.headers
        log.count = 1  # every stream hears of it, and ends
    assert len(pollers) == 1 and reads > 0  # three streams, one poller reading the index
    with anyio.fail_after(5):
        await pollers[0]  # and it stops once the last stream has closed


# ---------------------------------------------------------------------------------------------
# an index written by a real indexer run
@dataclass
class Indexed:
    world: World
    indexer: Indexer
    settled: int
    open: int


@pytest.fixture
def indexed(fresh_index_url: Callable[[], str]) -> Iterator[Indexed]:
    """Six staked nodes; a duel A won (every seat votes A), one awaiting its answer, a fee voucher claimed."""
    world = make_world()
    c = world.client
    settled = world.open_duel("settled")
    world.answer(settled.duel_id)
    world.vote(settled.duel_id, 1, lambda j: Vote.A)
    world.settle_after_appeal_window(settled.duel_id)
    still_open = world.open_duel("open")
    payer = c("origin")
    signature = payer.sign_voucher(world.accounts["origin"], world.addr("a"), 3 * C)
    c("c1").claim_voucher(world.addr("origin"), world.addr("a"), 3 * C, signature)
    indexer = Indexer(world.w3, world.address, fresh_index_url())
    indexer.sync()
    yield Indexed(world, indexer, settled.duel_id, still_open.duel_id)
    indexer.close()


def test_a_real_index_agrees_with_the_contract(indexed: Indexed) -> None:
    world, idx = indexed.world, indexed.indexer
    c = world.client()
    app = explorer_app(ExplorerQueries(idx.engine), chain_id=idx.chain_id, contract=idx.contract_address)
    with TestClient(app) as client:
        totals = client.get("api/totals").json()
        nodes = client.get("api/nodes", params={"active": "all"}).json()
        by_rank = client.get("api/nodes", params={"sort": "rank"}).json()["items"]
        detail = client.get(f"api/duels/{indexed.settled}").json()
        open_duels = client.get("api/duels", params={"status": "open"}).json()
        history = client.get("api/stake-history", params={"top": 50}).json()
        a = client.get(f"api/nodes/{world.addr('a')}").json()

    addresses = [n["address"] for n in nodes["items"]]
    stakes = {address: c.active_stake(address) for address in addresses}
    assert totals["block"] == world.w3.eth.block_number and totals["events"] == idx.event_count()
    assert (totals["chain_id"], totals["contract"]) == (world.w3.eth.chain_id, world.address)
    assert totals["stake_total_wei"] == str(sum(stakes.values()))
    assert totals["reserve_wei"] == str(c.reserve())
    assert totals["fees_claimed_wei"] == str(3 * C)
    assert totals["duels"]["total"] == 2 and totals["duels"]["open"] == 1 and totals["duels"]["a_won"] == 1
    assert nodes["total"] == 6 == totals["nodes_registered"]
    for n in nodes["items"]:
        assert n["stake_wei"] == str(stakes[n["address"]])
        assert n["credit_wei"] == str(c.credit(n["address"]))
    assert [int(n["stake_wei"]) for n in nodes["items"]] == sorted(stakes.values(), reverse=True)

    info = c.duel(indexed.settled)
    assert info.b is not None
    assert [n["address"] for n in by_rank[:2]] == [info.a, info.b]  # the only game: A beat B
    assert (by_rank[0]["duels"]["won"], by_rank[1]["duels"]["lost"]) == (1, 1)
    assert by_rank[2]["rank"] is None
    seats = info.judges_of(1)
    assert [j["judge"] for j in detail["judges"]] == list(seats)
    assert all(j["committed"] and j["vote"] == "a" for j in detail["judges"])
    assert detail["outcome"] == "a_won" and (detail["votes_a"], detail["votes_b"]) == (len(seats), 0)
    assert [(t["event"], t["tx_hash"]) for t in detail["transactions"]] == [
        (e.name, e.tx_hash) for e in idx.duel_events(indexed.settled)]
    assert [(m["node"], m["kind"], int(m["amount_wei"])) for m in detail["stake_moves"]] == [
        (m.node, m.kind, m.amount_wei) for m in idx.stake_moves(duel_id=indexed.settled)]
    assert [d["id"] for d in open_duels["items"]] == [str(indexed.open)]
    assert a["fees_earned_wei"] == str(3 * C) and a["duels_recent"][0]["id"] == str(indexed.open)

    # the last sample of the stake-share chart is today's stake
    total = sum(stakes.values())
    assert history["blocks"][-1] == totals["block"]
    last = {s["address"]: s["share"][-1] for s in history["series"]}
    assert last == pytest.approx({address: stake / total for address, stake in stakes.items() if stake})
