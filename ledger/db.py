"""SQLAlchemy tables of the event indexer: the raw event log and the state derived from it.

One database indexes one WWWServe deployment (contract address + chain id, recorded in `cursor`).
`events` keeps every decoded log exactly once (UNIQUE(tx_hash, log_index)); the other tables are a
pure function of `events`, written in the same transaction as the cursor advance.

uint256 quantities (wei, and the contract's timestamps, which are uint256 too) exceed 64-bit
integers. They use the `Uint256` column type: NUMERIC(78, 0) where the database has exact numerics
of that size (PostgreSQL), and a zero-padded 78-digit string on SQLite, whose NUMERIC affinity would
silently round big values to a float. Zero padding keeps ORDER BY numeric on both. Python code only
ever sees `int`.

The tables carry a schema version (`schema_meta`). Everything in them derives from the chain, so a
database written by another version is not migrated: `make_engine` drops its tables and the indexer
reads the chain again from its start block (bump `SCHEMA_VERSION` with every table change).
"""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    make_url,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from wwwserve.ledger.home import wwwserve_home

log = logging.getLogger(__name__)

# 2: duels over attested work (challenger drawn on-chain, rounds, appeal, bonds, reserve)
# 3: registry slots (nodes.slot_held: a registration bond is held until the slot is released)
# 4: stake_history (a node's active stake after each block that changed it, for the explorer's chart)
# 5: the explorer's composite indexes (duels by duelist/status/outcome and in opening order, fees per node);
#    stake_history's previous stake and net change per block
SCHEMA_VERSION = 5
UINT256_MAX = 2**256 - 1
UINT256_DIGITS = 78  # len(str(2**256 - 1))
ADDRESS_LEN = 42  # "0x" + 40 hex digits, EIP-55 checksummed
HASH_LEN = 66  # "0x" + 64 hex digits

# SQLite only turns an INTEGER PRIMARY KEY into an auto-increment rowid; BIGINT elsewhere.
_RowId = BigInteger().with_variant(Integer(), "sqlite")


class Uint256(TypeDecorator[int]):
    """An unsigned 256-bit integer column that round-trips Python ints exactly on every backend."""

    impl = Numeric(UINT256_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(UINT256_DIGITS))
        return dialect.type_descriptor(Numeric(UINT256_DIGITS, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"Uint256 column needs an int, got {value!r}")
        if not 0 <= value <= UINT256_MAX:
            raise ValueError(f"Uint256 column value out of range: {value}")
        if dialect.name == "sqlite":
            return f"{value:0{UINT256_DIGITS}d}"
        return Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int(value)


class Base(DeclarativeBase):
    """Declarative base of the indexer tables."""


class SchemaMetaRow(Base):
    """The schema version the tables were created with (one row)."""

    __tablename__ = "schema_meta"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class EventRow(Base):
    """One decoded contract log. Re-reading a log is a no-op thanks to UNIQUE(tx_hash, log_index)."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_events_tx_log"),)

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    block_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    tx_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    log_index: Mapped[int] = mapped_column(Integer)
    event_name: Mapped[str] = mapped_column(String(64), index=True)
    # the duel a duel event is about (its indexed duelId), so a duel's transactions are one query
    duel_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    # bytes as 0x-hex, addresses checksummed, integers exact (JSON numbers have no size limit here)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)


class NodeRow(Base):
    """The registry entry of a node operator (address = node id)."""

    __tablename__ = "nodes"

    address: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    pubkey: Mapped[str] = mapped_column(String(HASH_LEN))  # ed25519 public key, 0x-hex
    endpoint: Mapped[str] = mapped_column(String(256))
    models: Mapped[list[str]] = mapped_column(JSON)
    # `metadata` is reserved on declarative classes, hence the attribute name
    node_metadata: Mapped[str] = mapped_column("metadata", Text)
    active: Mapped[bool] = mapped_column(Boolean, index=True)
    leaf: Mapped[int] = mapped_column(Integer)
    # holds a registry slot (the contract's `registeredOnce`): its registration bond is in the contract
    slot_held: Mapped[bool] = mapped_column(Boolean, default=True)
    registered_block: Mapped[int] = mapped_column(BigInteger)  # latest (re-)registration
    updated_block: Mapped[int] = mapped_column(BigInteger)


class AccountRow(Base):
    """Balances of one address, derived from events only."""

    __tablename__ = "accounts"

    address: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    credit_wei: Mapped[int] = mapped_column(Uint256, default=0)
    pending_withdrawal_wei: Mapped[int] = mapped_column(Uint256, default=0)
    withdrawable_at: Mapped[int] = mapped_column(Uint256, default=0)  # unix seconds
    active_stake_wei: Mapped[int] = mapped_column(Uint256, default=0, index=True)
    unbonding_stake_wei: Mapped[int] = mapped_column(Uint256, default=0)
    unbonding_end: Mapped[int] = mapped_column(Uint256, default=0)  # unix seconds
    unbonding_block: Mapped[int] = mapped_column(BigInteger, default=0)  # block of the last unstake request
    # stake bonded by open duels in which the node is a duelist: a part of the stake above, not an
    # amount taken out of it (the contract's `reserved`)
    bonded_wei: Mapped[int] = mapped_column(Uint256, default=0)
    updated_block: Mapped[int] = mapped_column(BigInteger, default=0)


class StakeHistoryRow(Base):
    """An address's active stake at the end of a block that changed it (Staked, UnstakeRequested, or a
    StakeSlashed that took from active stake): one row per (block, address). The stake at any block is
    the row of the latest block at or before it, and the network's total the sum of gains minus losses up
    to it; the explorer samples network shares from these rows."""

    __tablename__ = "stake_history"

    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # leads the key: the block index
    address: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True, index=True)
    active_stake_wei: Mapped[int] = mapped_column(Uint256)
    previous_stake_wei: Mapped[int] = mapped_column(Uint256)  # at the end of the block before
    # the block's net change, as two unsigned amounts (one of them 0), so that SQL can sum the network's
    # total stake up to any block without reading every row
    gained_wei: Mapped[int] = mapped_column(Uint256)
    lost_wei: Mapped[int] = mapped_column(Uint256)


class ContractStateRow(Base):
    """Contract-wide values of the deployment: the duel reserve (from ReserveChanged)."""

    __tablename__ = "contract_state"

    contract_address: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reserve_wei: Mapped[int] = mapped_column(Uint256, default=0)
    updated_block: Mapped[int] = mapped_column(BigInteger, default=0)


class DuelRow(Base):
    """A duel's lifecycle: awaiting_answer [-> awaiting_request -> awaiting_answer] -> judging (round 1,
    round 2 after an appeal) -> settled, or cancelled at any open step. Hashes are 0x-hex."""

    __tablename__ = "duels"
    # The explorer's reads (bench/explorer.py): a page of duels newest first, all or of one status, without a
    # sort; a node's duel record and the network's outcome counts from the index alone.
    __table_args__ = (
        Index("ix_duels_opened", "opened_block", "opened_event_id"),
        Index("ix_duels_status_opened", "status", "opened_block", "opened_event_id"),
        Index("ix_duels_status_outcome", "status", "outcome", "settled_block"),
        Index("ix_duels_a_record", "a", "status", "outcome"),
        Index("ix_duels_b_record", "b", "status", "outcome"),
    )

    # a 63-bit hash of (origin, requestId): fits a signed 64-bit column
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(String(ADDRESS_LEN), index=True)
    a: Mapped[str] = mapped_column(String(ADDRESS_LEN))  # indexed by ix_duels_a_record
    b: Mapped[str | None] = mapped_column(String(ADDRESS_LEN))  # None until drawn; ix_duels_b_record
    request_id: Mapped[str] = mapped_column(String(HASH_LEN))
    request_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    model_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    answer_a_hash: Mapped[str] = mapped_column(String(HASH_LEN))
    answer_b_hash: Mapped[str | None] = mapped_column(String(HASH_LEN))
    bond_wei: Mapped[int] = mapped_column(Uint256)  # each duelist's (equal once B is drawn)
    escrow_wei: Mapped[int] = mapped_column(Uint256)
    seed_block: Mapped[int] = mapped_column(BigInteger)  # the current step's
    answer_deadline: Mapped[int] = mapped_column(BigInteger)  # the latest answer window's end
    publish_deadline: Mapped[int | None] = mapped_column(BigInteger)
    round: Mapped[int] = mapped_column(Integer, default=0)  # 0 before B answered, then 1 or 2
    commit_end_r1: Mapped[int | None] = mapped_column(BigInteger)
    reveal_end_r1: Mapped[int | None] = mapped_column(BigInteger)
    commit_end_r2: Mapped[int | None] = mapped_column(BigInteger)
    reveal_end_r2: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))  # indexed by ix_duels_status_*
    outcome: Mapped[str | None] = mapped_column(String(16))
    cancel_reason: Mapped[str | None] = mapped_column(String(16))
    final_round: Mapped[int | None] = mapped_column(Integer)  # the round whose verdict settled it
    votes_a: Mapped[int | None] = mapped_column(Integer)  # that round's seats for A
    votes_b: Mapped[int | None] = mapped_column(Integer)
    stake_moved_wei: Mapped[int | None] = mapped_column(Uint256)
    appellant: Mapped[str | None] = mapped_column(String(ADDRESS_LEN))
    appeal_deposit_wei: Mapped[int | None] = mapped_column(Uint256)
    request: Mapped[bytes | None] = mapped_column(LargeBinary)  # published on-chain, if ever
    opened_block: Mapped[int] = mapped_column(BigInteger)  # indexed by ix_duels_opened
    opened_event_id: Mapped[int] = mapped_column(BigInteger)  # orders duels opened in one block
    answered_block: Mapped[int | None] = mapped_column(BigInteger)
    settled_block: Mapped[int | None] = mapped_column(BigInteger)  # settled or cancelled


class DuelJudgeRow(Base):
    """One seat of a round's panel (position = seat index, as in getJudges(id, round)). A judge drawn
    twice holds two seats: two rows, one commitment and one vote for both."""

    __tablename__ = "duel_judges"

    duel_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("duels.id"), primary_key=True)
    round: Mapped[int] = mapped_column(Integer, primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    judge: Mapped[str] = mapped_column(String(ADDRESS_LEN), index=True)
    commitment: Mapped[str | None] = mapped_column(String(HASH_LEN))
    vote: Mapped[int | None] = mapped_column(Integer)  # 1=A 2=B 3=abstain 4=no evidence
    committed_block: Mapped[int | None] = mapped_column(BigInteger)
    revealed_block: Mapped[int | None] = mapped_column(BigInteger)


class StakeMoveRow(Base):
    """A movement of value caused by a duel: escrow, appeal deposit, slash, reward, fee or refund."""

    __tablename__ = "stake_moves"

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id"), index=True)
    duel_id: Mapped[int] = mapped_column(BigInteger, index=True)
    node: Mapped[str] = mapped_column(String(ADDRESS_LEN), index=True)
    amount_wei: Mapped[int] = mapped_column(Uint256)
    # escrow | appeal_deposit | slashed_lost_duel | slashed_incoherent_judge | slashed_silent_judge
    # | slashed_no_answer | reward_stake_won | reward_reserve_bonus | fee_duelist | fee_judge
    # | refund_escrow | refund_appeal
    kind: Mapped[str] = mapped_column(String(32))
    block_number: Mapped[int] = mapped_column(BigInteger)


class VoucherClaimRow(Base):
    """A fee voucher claim, with the credit/pending split the contract applied."""

    __tablename__ = "vouchers_claimed"
    # fees earned (as executor) and paid (as origin) per node, summed from the index alone
    __table_args__ = (
        Index("ix_vouchers_executor_paid", "executor", "paid_wei"),
        Index("ix_vouchers_origin_paid", "origin", "paid_wei"),
    )

    id: Mapped[int] = mapped_column(_RowId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("events.id"), index=True)
    origin: Mapped[str] = mapped_column(String(ADDRESS_LEN))
    executor: Mapped[str] = mapped_column(String(ADDRESS_LEN))
    cumulative_amount_wei: Mapped[int] = mapped_column(Uint256)
    paid_wei: Mapped[int] = mapped_column(Uint256)
    from_credit_wei: Mapped[int] = mapped_column(Uint256)
    from_pending_wei: Mapped[int] = mapped_column(Uint256)
    block_number: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(HASH_LEN))


class CursorRow(Base):
    """The last fully processed block of a deployment, with its hash (to detect reorgs)."""

    __tablename__ = "cursor"

    contract_address: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(HASH_LEN))


def default_db_url(chain_id: int) -> str:
    """`sqlite:///<WWWSERVE_HOME>/index-<chain_id>.sqlite`."""
    return f"sqlite:///{wwwserve_home() / f'index-{chain_id}.sqlite'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the node's readers query while the indexer thread writes a batch.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _durable_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # FULL sync: a record must survive a power cut once the call that wrote it returned.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def durable_engine(target: Path | str, metadata: Any) -> Engine:
    """An engine for a node's own durable records (vouchers, votes, duel evidence), schema created.

    `target` is a SQLite file path (its directory is created) or a SQLAlchemy URL; SQLite gets WAL and
    synchronous=FULL, and may be shared by the event loop and worker threads.
    """
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{target}"
    else:
        url = target
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, **({"connect_args": {"check_same_thread": False, "timeout": 30}} if sqlite else {}))
    if sqlite:
        event.listen(engine, "connect", _durable_pragmas)
    metadata.create_all(engine)
    return engine


class DurableRecords:
    """Base of a node's own durable records for one contract (judge votes, duel evidence): the engine
    (`durable_engine` over the subclass's `metadata`), a lock for read-modify-write, and `close()`."""

    metadata: ClassVar[Any]

    def __init__(self, target: Path | str, *, contract_address: str) -> None:
        """Open (or create): `target` is a SQLite file path or a SQLAlchemy URL."""
        self.contract = contract_address.lower()
        self.engine: Engine = durable_engine(target, self.metadata)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the connections (the data stays on disk)."""
        self.engine.dispose()


def make_engine(url: str) -> Engine:
    """An engine for `url` with the schema created. SQLite files get their directory created.

    A database created by another schema version is emptied first (see the module docstring)."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # The indexer's run() thread and the node's request threads share one engine.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    _ensure_schema(engine)
    return engine


def drop_index(url: str) -> None:
    """Empty the index database at `url` (drop this package's tables; other tables are left alone): the
    next indexer opened on it reads the chain from its start. For a chain reset, whose old index describes
    a chain that is gone. The data are derived: nothing is lost that the chain cannot give again."""
    engine = make_engine(url)
    try:
        Base.metadata.drop_all(engine)
    finally:
        engine.dispose()


def schema_version(engine: Engine) -> int | None:
    """The schema version recorded in the database; None when it has no indexer tables at all, 0 for
    tables from before versions were recorded."""
    tables = set(inspect(engine).get_table_names())
    if "schema_meta" not in tables:
        return 0 if tables & set(Base.metadata.tables) else None
    with engine.connect() as conn:
        version = conn.execute(select(SchemaMetaRow.version)).scalar()
    return 0 if version is None else int(version)


def _ensure_schema(engine: Engine) -> None:
    found = schema_version(engine)
    if found is not None and found != SCHEMA_VERSION:
        # derived data only: the indexer reads it from the chain again
        log.warning("index database has schema version %s, this code writes %s: dropping it to re-index",
                    found, SCHEMA_VERSION)
        Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    if found != SCHEMA_VERSION:
        with engine.begin() as conn:
            conn.execute(delete(SchemaMetaRow))
            conn.execute(insert(SchemaMetaRow).values(id=1, version=SCHEMA_VERSION))
