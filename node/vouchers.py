"""Fee vouchers between nodes: the signed wire form, the checks an executor makes, and a durable store.

The origin of a delegated request pays its executor with an EIP-712 voucher (ledger.client format:
`Voucher(origin, executor, cumulativeAmount)` under the WWWServe domain). Vouchers are *cumulative*:
each new one from origin O to executor E states everything O has promised E so far, so the executor
only ever keeps the highest and claims it on-chain (`claimVoucher` pays the difference to what was
already claimed). Losing a voucher costs nothing once a later one arrives; replaying an old one earns
nothing. That is why the store below holds one row per counterparty rather than one per request.

`VoucherStore` keeps both sides of one node in SQLite (SQLAlchemy), keyed by contract so a redeployed
devnet contract never inherits the old contract's promises:
  * promised: cumulative wei this node (as origin) has promised each executor. It is advanced and
    committed *before* the voucher is signed, so a crash can at worst make the node promise a fee it
    never handed out (harmless to others), never sign two vouchers with the same cumulative amount;
  * earned: the best voucher received from each origin, and how much of it is already claimed.
Each change is one database transaction under a process lock (read-modify-write, compare-and-set).

Every rejection is its own `VoucherError` subclass carrying the HTTP status the peer API answers with.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils.address import is_checksum_address, is_hex_address, to_checksum_address
from sqlalchemy import Engine, LargeBinary, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from wwwserve.errors import WWWServeError
from wwwserve.ledger.client import recover_voucher_signer
from wwwserve.ledger.db import ADDRESS_LEN, UINT256_MAX, Uint256, durable_engine
from wwwserve.ledger.errors import LedgerError

SIGNATURE_BYTES = 65  # r || s || v, what ledger.client.sign_voucher_offline produces


# ---------------------------------------------------------------------------------------------
# errors
class VoucherError(WWWServeError):
    """Root of every voucher rejection; `http_status` is what the peer API answers with."""

    http_status: int = 402


class VoucherMalformedError(VoucherError, ValueError):
    """The voucher JSON is missing a field or a field has the wrong type, range or length."""

    http_status = 400


class VoucherWrongExecutorError(VoucherError):
    """The voucher pays someone else, not this node."""


class VoucherForgedError(VoucherError):
    """The signature does not recover to the voucher's origin (forged, or signed for another contract)."""


class VoucherStaleError(VoucherError):
    """The voucher's cumulative amount is not above the best one already held from that origin."""


class VoucherOverdrawnError(VoucherError):
    """The origin's funds on the ledger do not cover what the voucher leaves unclaimed."""


class VoucherCreditExceededError(VoucherError):
    """This node (as origin) would promise more than its free credit minus fees already promised."""


# ---------------------------------------------------------------------------------------------
# wire form
def _address(value: Any, what: str) -> str:
    # A mixed-case address must carry a valid EIP-55 checksum; all-lower/all-upper hex is accepted.
    if not isinstance(value, str) or not is_hex_address(value):
        raise VoucherMalformedError(f"voucher {what} must be a 0x-prefixed 20-byte hex address, got {value!r}")
    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise VoucherMalformedError(f"voucher {what} has a bad EIP-55 checksum: {value!r}")
    return str(to_checksum_address(value))


def _amount(value: Any) -> int:
    if isinstance(value, bool):
        raise VoucherMalformedError("voucher cumulative_wei must be a decimal string, got a boolean")
    if isinstance(value, str):
        if not value.isascii() or not value.isdigit() or len(value) > 78:
            raise VoucherMalformedError(f"voucher cumulative_wei must be a decimal string, got {value!r}")
        value = int(value)
    if not isinstance(value, int):
        raise VoucherMalformedError(f"voucher cumulative_wei must be a decimal string, got {type(value).__name__}")
    if not 0 < value <= UINT256_MAX:
        raise VoucherMalformedError(f"voucher cumulative_wei must be in 1..2**256-1, got {value}")
    return value


def _signature(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
    elif isinstance(value, str) and value.startswith("0x"):
        try:
            raw = bytes.fromhex(value[2:])
        except ValueError:
            raise VoucherMalformedError("voucher signature is not hex") from None
    else:
        raise VoucherMalformedError("voucher signature must be a 0x-prefixed hex string")
    if len(raw) != SIGNATURE_BYTES:
        raise VoucherMalformedError(f"voucher signature must be {SIGNATURE_BYTES} bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True)
class SignedVoucher:
    """A voucher as it travels between nodes: origin owes executor `cumulative_wei` in total."""

    origin: str  # checksummed
    executor: str  # checksummed
    cumulative_wei: int
    signature: bytes  # 65 bytes, EIP-712 over ledger.client.voucher_typed_data

    def __post_init__(self) -> None:
        # Normalise and validate here too, so a voucher built in code obeys the same rules as one parsed.
        object.__setattr__(self, "origin", _address(self.origin, "origin"))
        object.__setattr__(self, "executor", _address(self.executor, "executor"))
        object.__setattr__(self, "cumulative_wei", _amount(self.cumulative_wei))
        object.__setattr__(self, "signature", _signature(self.signature))

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form: addresses and signature as 0x-hex, the amount as a decimal string (uint256)."""
        return {
            "origin": self.origin,
            "executor": self.executor,
            "cumulative_wei": str(self.cumulative_wei),
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignedVoucher:
        """Parse `to_json`'s form; VoucherMalformedError on anything else (missing/extra keys included)."""
        if not isinstance(data, Mapping):
            raise VoucherMalformedError(f"voucher must be a JSON object, got {type(data).__name__}")
        expected = {"origin", "executor", "cumulative_wei", "signature"}
        missing = expected - set(data)
        if missing:
            raise VoucherMalformedError(f"voucher lacks {sorted(missing)}")
        extra = set(data) - expected
        if extra:
            raise VoucherMalformedError(f"voucher has unknown fields {sorted(str(k) for k in extra)}")
        if not isinstance(data["signature"], str):
            raise VoucherMalformedError("voucher signature must be a 0x-prefixed hex string")
        return cls(
            origin=data["origin"],
            executor=data["executor"],
            cumulative_wei=data["cumulative_wei"],
            signature=_signature(data["signature"]),
        )


def check_voucher(voucher: SignedVoucher, *, chain_id: int, contract: str, me: str) -> None:
    """The stateless checks an executor makes, cheapest first: addressed to `me`, then signed by its origin.

    Raises VoucherWrongExecutorError or VoucherForgedError. (Staleness needs the store: `VoucherStore.accept`.)
    """
    if voucher.executor != to_checksum_address(me):
        raise VoucherWrongExecutorError(f"voucher pays {voucher.executor}, not this node {to_checksum_address(me)}")
    if voucher.origin == voucher.executor:
        raise VoucherForgedError("a voucher from a node to itself pays nothing")
    try:
        signer = recover_voucher_signer(
            chain_id, contract, voucher.origin, voucher.executor, voucher.cumulative_wei, voucher.signature
        )
    except LedgerError as exc:
        raise VoucherForgedError(f"voucher signature cannot be recovered: {exc}") from exc
    if signer != voucher.origin:
        raise VoucherForgedError(f"voucher signed by {signer}, not by its origin {voucher.origin}")


# ---------------------------------------------------------------------------------------------
# store
class _Base(DeclarativeBase):
    """Declarative base of the voucher tables (separate from the indexer's: another database)."""


class _PromisedRow(_Base):
    __tablename__ = "vouchers_promised"

    contract: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    executor: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    cumulative_wei: Mapped[int] = mapped_column(Uint256)


class _EarnedRow(_Base):
    __tablename__ = "vouchers_earned"

    contract: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    origin: Mapped[str] = mapped_column(String(ADDRESS_LEN), primary_key=True)
    executor: Mapped[str] = mapped_column(String(ADDRESS_LEN))
    cumulative_wei: Mapped[int] = mapped_column(Uint256)
    signature: Mapped[bytes] = mapped_column(LargeBinary(SIGNATURE_BYTES))
    claimed_wei: Mapped[int] = mapped_column(Uint256)


@dataclass(frozen=True)
class EarnedVoucher:
    """The best voucher held from one origin, and how much of it the chain has already paid."""

    voucher: SignedVoucher
    claimed_wei: int

    @property
    def unclaimed_wei(self) -> int:
        """Earned and not yet paid on-chain (never negative)."""
        return max(0, self.voucher.cumulative_wei - self.claimed_wei)


def _engine(target: Path | str) -> Engine:
    return durable_engine(target, _Base.metadata)


class VoucherStore:
    """Both sides of one node's vouchers for one contract (see the module docstring)."""

    def __init__(self, target: Path | str, *, contract_address: str) -> None:
        """Open (or create) the store: `target` is a SQLite file path or a SQLAlchemy URL."""
        self.contract = _address(contract_address, "contract")
        self.engine = _engine(target)
        # One writer at a time in this process, so each read-modify-write is a compare-and-set.
        self._lock = threading.Lock()

    def close(self) -> None:
        """Release the database connections (the data stays on disk)."""
        self.engine.dispose()

    # -- origin side ----------------------------------------------------------------------------
    def promise(self, executor: str, fee_wei: int, *, limit_wei: int | None = None) -> int:
        """Add `fee_wei` to what this node owes `executor`, commit, and return the new cumulative amount.

        `limit_wei` (optional) bounds the *increase* against a caller's view of spendable credit: the
        check and the write happen under one lock, so two concurrent promises cannot both pass it.
        Raises VoucherCreditExceededError when `fee_wei > limit_wei`.
        """
        executor = _address(executor, "executor")
        if isinstance(fee_wei, bool) or not isinstance(fee_wei, int) or fee_wei <= 0:
            raise VoucherMalformedError(f"fee_wei must be a positive int, got {fee_wei!r}")
        with self._lock, Session(self.engine) as session, session.begin():
            if limit_wei is not None and fee_wei > limit_wei:
                raise VoucherCreditExceededError(
                    f"a fee of {fee_wei} wei exceeds the {max(0, limit_wei)} wei of credit not yet promised"
                )
            row = session.get(_PromisedRow, (self.contract, executor))
            if row is None:
                row = _PromisedRow(contract=self.contract, executor=executor, cumulative_wei=0)
                session.add(row)
            row.cumulative_wei = row.cumulative_wei + fee_wei
            return row.cumulative_wei

    def promised(self) -> dict[str, int]:
        """executor -> cumulative wei promised to it (all time, claimed or not)."""
        with Session(self.engine) as session:
            rows = session.scalars(select(_PromisedRow).where(_PromisedRow.contract == self.contract))
            return {row.executor: row.cumulative_wei for row in rows}

    # -- executor side --------------------------------------------------------------------------
    def accept(self, voucher: SignedVoucher) -> int:
        """Keep `voucher` if it beats the best held from its origin; return the newly earned wei.

        The caller has already run `check_voucher`. Raises VoucherStaleError when the cumulative amount
        is not above the best held, or not above what the chain has already paid.
        """
        with self._lock, Session(self.engine) as session, session.begin():
            row = session.get(_EarnedRow, (self.contract, voucher.origin))
            best = 0 if row is None else max(row.cumulative_wei, row.claimed_wei)
            if voucher.cumulative_wei <= best:
                raise VoucherStaleError(
                    f"voucher from {voucher.origin} for {voucher.cumulative_wei} wei is not above the "
                    f"{best} wei already held"
                )
            if row is None:
                row = _EarnedRow(contract=self.contract, origin=voucher.origin, claimed_wei=0)
                session.add(row)
            row.executor = voucher.executor
            row.cumulative_wei = voucher.cumulative_wei
            row.signature = voucher.signature
            return voucher.cumulative_wei - best

    def best(self, origin: str) -> EarnedVoucher | None:
        """The best voucher held from `origin`, or None."""
        with Session(self.engine) as session:
            row = session.get(_EarnedRow, (self.contract, _address(origin, "origin")))
            return None if row is None else _earned(row)

    def earned(self) -> list[EarnedVoucher]:
        """The best voucher from every origin, by origin address."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(_EarnedRow).where(_EarnedRow.contract == self.contract).order_by(_EarnedRow.origin)
            )
            return [_earned(row) for row in rows]

    def mark_claimed(self, origin: str, claimed_wei: int) -> None:
        """Record that the chain has paid `claimed_wei` in total from `origin` (only ever raises the mark)."""
        origin = _address(origin, "origin")
        with self._lock, Session(self.engine) as session, session.begin():
            row = session.get(_EarnedRow, (self.contract, origin))
            if row is not None and claimed_wei > row.claimed_wei:
                row.claimed_wei = claimed_wei

    def owed(self) -> dict[str, int]:
        """origin -> earned but not yet claimed wei (origins with nothing outstanding left out)."""
        return {e.voucher.origin: e.unclaimed_wei for e in self.earned() if e.unclaimed_wei > 0}


def _earned(row: _EarnedRow) -> EarnedVoucher:
    voucher = SignedVoucher(
        origin=row.origin, executor=row.executor, cumulative_wei=row.cumulative_wei, signature=row.signature
    )
    return EarnedVoucher(voucher=voucher, claimed_wei=row.claimed_wei)
