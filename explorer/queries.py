"""The explorer's reads: paged, indexed, read-only queries over the indexer's tables (`ledger.db`).

`ExplorerQueries(engine)` answers every JSON route of the explorer (`explorer.api`) with plain JSON-able
dicts. Wei amounts are decimal strings (a JavaScript number loses precision above 2**53); shares and
Bradley–Terry scores are floats, for display only.

Everything is sized for a network of 1,000 nodes and 10,000 duels (bench/explorer.py times each route):
pages are LIMIT/OFFSET over indexed orderings, a page's duel records and fees are one grouped query per
column over the page's addresses, and sums of uint256 columns run in SQL. On PostgreSQL those sums are
NUMERIC and exact; SQLite stores uint256 as a zero-padded 78-digit string (`ledger.db.Uint256`), so it
sums 12-digit slices as 64-bit integers and the slices are joined in Python (exact below 9.2 million rows;
SQLite raises "integer overflow" rather than round beyond that). The one cache is the Bradley–Terry fit
over all settled duels (`judge.leaderboard.bradley_terry`), fitted again when a duel has settled since.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import BigInteger, Engine, case, cast, func, literal, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from wwwserve.judge.leaderboard import DuelResult, bradley_terry
from wwwserve.judge.outcomes import duel_explanation
from wwwserve.ledger.db import (
    UINT256_DIGITS,
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
)
from wwwserve.ledger.indexer.results import OPEN_STATUSES
from wwwserve.ledger.records import Vote

__all__ = ["DUEL_FILTERS", "NODE_FILTERS", "NODE_SORTS", "DuelFilter", "ExplorerQueries", "NodeFilter", "NodeSort",
           "Ranking"]

NodeSort = Literal["stake", "rank", "address"]
NodeFilter = Literal["true", "false", "all"]
DuelFilter = Literal["open", "settled", "cancelled", "all"]
NODE_SORTS: tuple[NodeSort, ...] = ("stake", "rank", "address")
NODE_FILTERS: tuple[NodeFilter, ...] = ("true", "false", "all")
DUEL_FILTERS: tuple[DuelFilter, ...] = ("open", "settled", "cancelled", "all")
RECENT_DUELS = 20  # duels in a node's detail
RECENT_STAKE_MOVES = 50  # stake moves in a node's detail

_SLICE_DIGITS = 12  # SQLite sums uint256 strings in slices this wide (see the module docstring)
_VOTE_NAME = {Vote.A: "a", Vote.B: "b", Vote.ABSTAIN: "abstain", Vote.NO_EVIDENCE: "no_evidence"}
_DECIDED = ("a_won", "b_won", "tie")

# A duel summary reads these columns only (not the published request's bytes).
_SUMMARY_COLUMNS = (
    DuelRow.id, DuelRow.status, DuelRow.outcome, DuelRow.cancel_reason, DuelRow.origin, DuelRow.a, DuelRow.b,
    DuelRow.round, DuelRow.final_round, DuelRow.votes_a, DuelRow.votes_b, DuelRow.stake_moved_wei,
    DuelRow.opened_block, DuelRow.settled_block,
)
_NEWEST_FIRST = (DuelRow.opened_block.desc(), DuelRow.opened_event_id.desc())


@dataclass(frozen=True)
class Ranking:
    """A node's place in the Bradley–Terry standings (rank 1 = best score)."""

    rank: int
    score: float
    low: float
    high: float


def _wei(value: int | None) -> str | None:
    return None if value is None else str(value)


class _WeiSum:
    """An exact SQL sum of a uint256 column: its select expressions, and their result as an int."""

    def __init__(self, dialect: str, column: Any) -> None:
        if dialect == "sqlite":
            starts = range(1, UINT256_DIGITS + 1, _SLICE_DIGITS)
            self._places = [UINT256_DIGITS - min(s + _SLICE_DIGITS - 1, UINT256_DIGITS) for s in starts]
            self.columns: list[ColumnElement[Any]] = [
                func.sum(cast(func.substr(column, s, _SLICE_DIGITS), BigInteger)) for s in starts]
        else:
            self._places = [0]
            self.columns = [func.sum(column)]

    def value(self, values: Sequence[Any]) -> int:
        """The sum, from this sum's share of a result row (None, an empty sum, is 0)."""
        return sum(int(v or 0) * 10**place for v, place in zip(values, self._places, strict=True))


class ExplorerQueries:
    """Read-only queries over one deployment's index (see the module docstring).

    `chain_id` and `contract` default to those the index records in its cursor (None before the first
    indexed batch). Safe to share between threads: every call opens its own connection.
    """

    def __init__(self, engine: Engine, *, chain_id: int | None = None, contract: str | None = None) -> None:
        """Read the index behind `engine` (an `ledger.db.make_engine` engine, or the indexer's own)."""
        self.engine = engine
        self._dialect = engine.dialect.name
        self._chain_id = chain_id
        self._contract = contract
        self._ranking_lock = threading.Lock()
        self._ranking: tuple[tuple[int, int | None], dict[str, Ranking]] | None = None

    # -----------------------------------------------------------------------------------------
    # shared pieces
    def _sum(self, column: Any) -> _WeiSum:
        return _WeiSum(self._dialect, column)

    def indexed_block(self) -> int | None:
        """The indexer's cursor block (the last fully indexed one), None before the first batch."""
        with self.engine.connect() as conn:
            return self._cursor_block(conn)

    @staticmethod
    def _cursor_block(conn: Connection) -> int | None:
        block = conn.execute(select(func.max(CursorRow.block_number))).scalar()
        return None if block is None else int(block)

    def ranking(self) -> dict[str, Ranking]:
        """Bradley–Terry standings of every node with a decided, settled duel (voided and cancelled duels
        are not games), by address. Fitted again only when that set of duels changed: a settled duel never
        changes, so their count and the last settlement block identify it (one index-only query)."""
        decided = (DuelRow.status == "settled", DuelRow.outcome.in_(_DECIDED))
        with self.engine.connect() as conn:
            count, last = conn.execute(select(func.count(), func.max(DuelRow.settled_block)).where(*decided)).one()
            key = (int(count), None if last is None else int(last))
            with self._ranking_lock:
                if self._ranking is not None and self._ranking[0] == key:
                    return self._ranking[1]
                rows = conn.execute(
                    select(DuelRow.a, DuelRow.b, DuelRow.outcome).where(*decided, DuelRow.b.is_not(None))).all()
                results = [DuelResult(a, b, a if outcome == "a_won" else b if outcome == "b_won" else None)
                           for a, b, outcome in rows if b is not None]
                ranking = {s.node: Ranking(place, s.score, s.ci_low, s.ci_high)
                           for place, s in enumerate(bradley_terry(results), start=1)}
                self._ranking = (key, ranking)
                return ranking

    # -----------------------------------------------------------------------------------------
    # api/totals
    def totals(self) -> dict[str, Any]:
        """Network totals: nodes, stake, credit, the reserve, duels by status and outcome, fees, events."""
        active_sum = self._sum(AccountRow.active_stake_wei)
        unbonding_sum = self._sum(AccountRow.unbonding_stake_wei)
        credit_sum = self._sum(AccountRow.credit_wei)
        fees_sum = self._sum(VoucherClaimRow.paid_wei)
        with self.engine.connect() as conn:
            cursor = conn.execute(select(CursorRow).limit(1)).first()
            registered, active = conn.execute(
                select(func.count(), func.coalesce(func.sum(case((NodeRow.active.is_(True), 1), else_=0)), 0))
                .select_from(NodeRow)
            ).one()
            sums = list(conn.execute(select(*active_sum.columns, *unbonding_sum.columns, *credit_sum.columns)
                                     .select_from(AccountRow)).one())
            reserve = conn.execute(select(ContractStateRow.reserve_wei).limit(1)).scalar()
            fees = conn.execute(select(*fees_sum.columns).select_from(VoucherClaimRow)).one()
            events = conn.execute(select(func.count()).select_from(EventRow)).scalar()
            by_state = conn.execute(
                select(DuelRow.status, DuelRow.outcome, func.count()).group_by(DuelRow.status, DuelRow.outcome)
            ).all()
        duels = {"total": 0, "open": 0, "settled": 0, "cancelled": 0, "a_won": 0, "b_won": 0, "tie": 0, "void": 0}
        for status, outcome, count in by_state:
            duels["total"] += count
            if status in OPEN_STATUSES:
                duels["open"] += count
            elif status in ("settled", "cancelled"):
                duels[status] += count
            if status == "settled" and outcome is not None:
                key = "void" if outcome == "voided" else outcome
                duels[key] = duels.get(key, 0) + count
        k = len(active_sum.columns)
        return {
            "chain_id": self._chain_id if self._chain_id is not None else (cursor.chain_id if cursor else None),
            "contract": self._contract if self._contract is not None else (
                cursor.contract_address if cursor else None),
            "block": None if cursor is None else int(cursor.block_number),
            "nodes_active": int(active),
            "nodes_registered": int(registered),
            "stake_total_wei": str(active_sum.value(sums[:k])),
            "unbonding_total_wei": str(unbonding_sum.value(sums[k:2 * k])),
            "credit_total_wei": str(credit_sum.value(sums[2 * k:])),
            "reserve_wei": str(reserve or 0),
            "duels": duels,
            "fees_claimed_wei": str(fees_sum.value(fees)),
            "events": int(events or 0),
        }

    # -----------------------------------------------------------------------------------------
    # api/nodes, api/nodes/<address>
    def nodes(self, *, offset: int = 0, limit: int = 50, sort: NodeSort = "stake",
              active: NodeFilter = "true") -> dict[str, Any]:
        """One page of nodes with balances, duel record, fees and Bradley–Terry rank."""
        where: list[ColumnElement[bool]] = []
        if active != "all":
            where.append(NodeRow.active.is_(active == "true"))
        ranking = self.ranking() if sort == "rank" else None
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(NodeRow).where(*where)).scalar() or 0)
            if ranking is not None:
                addresses = conn.execute(select(NodeRow.address).where(*where)).scalars().all()
                unranked = len(ranking) + 1
                ordered = sorted(addresses, key=lambda a: (ranking[a].rank if a in ranking else unranked, a))
                page = ordered[offset:offset + limit]
            else:
                order = ((AccountRow.active_stake_wei.desc(), NodeRow.address) if sort == "stake"
                         else (NodeRow.address,))
                page = list(conn.execute(
                    select(NodeRow.address).outerjoin(AccountRow, AccountRow.address == NodeRow.address)
                    .where(*where).order_by(*order).offset(offset).limit(limit)
                ).scalars())
            items = self._node_objects(conn, page)
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    def node(self, address: str) -> dict[str, Any] | None:
        """One node (checksummed `address`) with its recent duels and stake moves; None if it never
        registered."""
        with self.engine.connect() as conn:
            objects = self._node_objects(conn, [address])
            if not objects:
                return None
            node = objects[0]
            recent: list[Any] = []
            for column in (DuelRow.a, DuelRow.b):
                recent += conn.execute(
                    select(*_SUMMARY_COLUMNS, DuelRow.opened_event_id).where(column == address)
                    .order_by(*_NEWEST_FIRST).limit(RECENT_DUELS)
                ).all()
            recent.sort(key=lambda r: (r.opened_block, r.opened_event_id), reverse=True)
            node["duels_recent"] = [self._summary(r) for r in recent[:RECENT_DUELS]]
            moves = conn.execute(
                select(StakeMoveRow.duel_id, StakeMoveRow.kind, StakeMoveRow.amount_wei, StakeMoveRow.block_number)
                .where(StakeMoveRow.node == address)
                .order_by(StakeMoveRow.event_id.desc(), StakeMoveRow.id.desc()).limit(RECENT_STAKE_MOVES)
            ).all()
        node["stake_moves"] = [{"duel_id": str(m.duel_id), "kind": m.kind, "amount_wei": str(m.amount_wei),
                                "block": int(m.block_number)} for m in moves]
        return node

    def _node_objects(self, conn: Connection, addresses: Sequence[str]) -> list[dict[str, Any]]:
        """The node objects of `addresses` that are registered, in that order."""
        if not addresses:
            return []
        rows = {r.address: r for r in conn.execute(
            select(NodeRow.address, NodeRow.endpoint, NodeRow.models, NodeRow.active,
                   AccountRow.active_stake_wei, AccountRow.unbonding_stake_wei, AccountRow.credit_wei,
                   AccountRow.bonded_wei)
            .outerjoin(AccountRow, AccountRow.address == NodeRow.address)
            .where(NodeRow.address.in_(addresses)))}
        if not rows:
            return []
        stake_sum = self._sum(AccountRow.active_stake_wei)
        total_stake = stake_sum.value(conn.execute(select(*stake_sum.columns).select_from(AccountRow)).one())
        records = self._duel_records(conn, list(rows))
        earned = self._fees(conn, VoucherClaimRow.executor, list(rows))
        paid = self._fees(conn, VoucherClaimRow.origin, list(rows))
        ranking = self.ranking()
        out = []
        for address in addresses:
            row = rows.get(address)
            if row is None:
                continue
            stake = row.active_stake_wei or 0
            place = ranking.get(address)
            out.append({
                "address": address,
                "endpoint": row.endpoint,
                "models": list(row.models),
                "active": bool(row.active),
                "stake_wei": str(stake),
                "unbonding_wei": str(row.unbonding_stake_wei or 0),
                "credit_wei": str(row.credit_wei or 0),
                "bonded_wei": str(row.bonded_wei or 0),
                "stake_share": stake / total_stake if total_stake else 0.0,
                "fees_earned_wei": str(earned.get(address, 0)),
                "fees_paid_wei": str(paid.get(address, 0)),
                "duels": records[address],
                "rank": None if place is None else place.rank,
                "bt_score": None if place is None else place.score,
                "bt_low": None if place is None else place.low,
                "bt_high": None if place is None else place.high,
            })
        return out

    @staticmethod
    def _duel_records(conn: Connection, addresses: Iterable[str]) -> dict[str, dict[str, int]]:
        """Won, lost, tied, voided and cancelled duels of each address as a duelist (A or B)."""
        records = {a: {"won": 0, "lost": 0, "tied": 0, "void": 0, "cancelled": 0} for a in addresses}
        for side, column in (("a", DuelRow.a), ("b", DuelRow.b)):
            grouped = conn.execute(
                select(column, DuelRow.status, DuelRow.outcome, func.count())
                .where(column.in_(list(records)), DuelRow.status.in_(("settled", "cancelled")))
                .group_by(column, DuelRow.status, DuelRow.outcome)
            ).all()
            for who, status, outcome, count in grouped:
                record = records[str(who)]
                if status == "cancelled":
                    record["cancelled"] += count
                elif outcome == "tie":
                    record["tied"] += count
                elif outcome == "voided":
                    record["void"] += count
                elif outcome == f"{side}_won":
                    record["won"] += count
                else:
                    record["lost"] += count
        return records

    def _fees(self, conn: Connection, column: Any, addresses: list[str]) -> dict[str, int]:
        """Voucher value paid, summed per address of `column` (executor: earned, origin: paid)."""
        paid_sum = self._sum(VoucherClaimRow.paid_wei)
        grouped = conn.execute(
            select(column, *paid_sum.columns).where(column.in_(addresses)).group_by(column)).all()
        return {row[0]: paid_sum.value(row[1:]) for row in grouped}

    # -----------------------------------------------------------------------------------------
    # api/duels, api/duels/<id>
    @staticmethod
    def _summary(row: Any) -> dict[str, Any]:
        return {
            "id": str(row.id),
            "status": row.status,
            "outcome": row.outcome,
            "cancel_reason": row.cancel_reason,
            "why": duel_explanation(row),  # a cancel, a void or a tie in words (judge.outcomes); else None
            "origin": row.origin,
            "a": row.a,
            "b": row.b,
            "round": row.round,
            "final_round": row.final_round,
            "votes_a": row.votes_a,
            "votes_b": row.votes_b,
            "stake_moved_wei": _wei(row.stake_moved_wei),
            "opened_block": int(row.opened_block),
            "settled_block": None if row.settled_block is None else int(row.settled_block),
        }

    def duels(self, *, offset: int = 0, limit: int = 50, status: DuelFilter = "all",
              node: str | None = None) -> dict[str, Any]:
        """One page of duel summaries, newest opened first; `node` keeps the duels it fought (A or B)."""
        where: list[ColumnElement[bool]] = []
        if status == "open":
            where.append(DuelRow.status.in_(OPEN_STATUSES))
        elif status != "all":
            where.append(DuelRow.status == status)
        if node is not None:
            where.append(or_(DuelRow.a == node, DuelRow.b == node))
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).select_from(DuelRow).where(*where)).scalar() or 0)
            rows = conn.execute(
                select(*_SUMMARY_COLUMNS).where(*where).order_by(*_NEWEST_FIRST).offset(offset).limit(limit)
            ).all()
        return {"items": [self._summary(r) for r in rows], "total": total, "offset": offset, "limit": limit}

    def duel(self, duel_id: int) -> dict[str, Any] | None:
        """One duel with its panel seats and revealed votes, stake moves and transactions; None if unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(*_SUMMARY_COLUMNS, DuelRow.appellant, DuelRow.request_hash, DuelRow.model_hash,
                       DuelRow.answer_a_hash, DuelRow.answer_b_hash, DuelRow.bond_wei, DuelRow.escrow_wei,
                       DuelRow.appeal_deposit_wei)
                .where(DuelRow.id == duel_id)
            ).first()
            if row is None:
                return None
            seats = conn.execute(
                select(DuelJudgeRow).where(DuelJudgeRow.duel_id == duel_id)
                .order_by(DuelJudgeRow.round, DuelJudgeRow.position)
            ).all()
            moves = conn.execute(
                select(StakeMoveRow.node, StakeMoveRow.kind, StakeMoveRow.amount_wei, StakeMoveRow.block_number)
                .where(StakeMoveRow.duel_id == duel_id).order_by(StakeMoveRow.event_id, StakeMoveRow.id)
            ).all()
            events = conn.execute(
                select(EventRow.event_name, EventRow.block_number, EventRow.tx_hash, EventRow.log_index)
                .where(EventRow.duel_id == duel_id).order_by(EventRow.block_number, EventRow.log_index)
            ).all()
        duel = self._summary(row)
        duel.update({
            "appellant": row.appellant,
            "appeal_deposit_wei": _wei(row.appeal_deposit_wei),
            "bond_wei": str(row.bond_wei),
            "escrow_wei": str(row.escrow_wei),
            "request_hash": row.request_hash,
            "model_hash": row.model_hash,
            "answer_a_hash": row.answer_a_hash,
            "answer_b_hash": row.answer_b_hash,
            "judges": [{"round": s.round, "position": s.position, "judge": s.judge,
                        "committed": s.commitment is not None,
                        "vote": None if s.vote is None else _VOTE_NAME.get(Vote(s.vote))} for s in seats],
            "stake_moves": [{"node": m.node, "kind": m.kind, "amount_wei": str(m.amount_wei),
                             "block": int(m.block_number)} for m in moves],
            "transactions": [{"event": e.event_name, "block": int(e.block_number), "tx_hash": e.tx_hash,
                              "log_index": int(e.log_index)} for e in events],
        })
        return duel

    # -----------------------------------------------------------------------------------------
    # api/stake-history
    def stake_history(self, *, points: int = 200, top: int = 8) -> dict[str, Any]:
        """Shares of total active stake over time: the `top` nodes by current stake, one series each, and
        everyone else summed in `others`, at most `points` blocks evenly spaced from the first stake change
        to the indexed block (the state at a block is its latest change at or before it).

        Reads only the leaders' rows and one sum per sample: the network's total at sample k is the sum of
        every gain minus every loss up to it, grouped in SQL by the sample each row falls before."""
        with self.engine.connect() as conn:
            leaders = list(conn.execute(
                select(AccountRow.address).where(AccountRow.active_stake_wei > 0)
                .order_by(AccountRow.active_stake_wei.desc(), AccountRow.address).limit(top)
            ).scalars())
            first, last = conn.execute(
                select(func.min(StakeHistoryRow.block_number), func.max(StakeHistoryRow.block_number))).one()
            if first is None:
                return {"blocks": [], "series": [{"address": a, "share": []} for a in leaders], "others": []}
            first, end = int(first), max(int(last), self._cursor_block(conn) or 0)
            span = end - first
            count = min(points, span + 1)
            steps = max(count - 1, 1)
            blocks = [first + span * k // steps for k in range(count)]  # strictly increasing: span >= steps
            # the first sample at or after a row's block: ceil((block - first) * steps / span)
            sample: ColumnElement[Any] = (
                ((StakeHistoryRow.block_number - first) * steps + (span - 1)).self_group().op("/")(span) if span
                else literal(0))
            gained, lost = self._sum(StakeHistoryRow.gained_wei), self._sum(StakeHistoryRow.lost_wei)
            k = len(gained.columns)
            net = [0] * count
            for row in conn.execute(select(sample, *gained.columns, *lost.columns).group_by(sample)):
                net[int(row[0])] = gained.value(row[1:1 + k]) - lost.value(row[1 + k:])
            leader_rows = conn.execute(
                select(StakeHistoryRow.block_number, StakeHistoryRow.address, StakeHistoryRow.active_stake_wei)
                .where(StakeHistoryRow.address.in_(leaders)).order_by(StakeHistoryRow.block_number)
            ).all() if leaders else []
        stakes: dict[str, int] = {}
        shares: dict[str, list[float]] = {a: [] for a in leaders}
        others: list[float] = []
        total = i = 0
        for block, change in zip(blocks, net, strict=True):
            total += change
            while i < len(leader_rows) and leader_rows[i][0] <= block:
                stakes[leader_rows[i][1]] = leader_rows[i][2]
                i += 1
            held = 0
            for address in leaders:
                stake = stakes.get(address, 0)
                held += stake
                shares[address].append(stake / total if total else 0.0)
            others.append((total - held) / total if total else 0.0)
        return {"blocks": blocks, "series": [{"address": a, "share": shares[a]} for a in leaders], "others": others}
