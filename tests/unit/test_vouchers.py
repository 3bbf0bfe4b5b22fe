"""The voucher wire form, the executor's stateless checks and the SQLite voucher store, without a chain."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from wwwserve.ledger.client import sign_voucher_offline
from wwwserve.node.vouchers import (
    SignedVoucher,
    VoucherCreditExceededError,
    VoucherError,
    VoucherForgedError,
    VoucherMalformedError,
    VoucherStaleError,
    VoucherStore,
    VoucherWrongExecutorError,
    check_voucher,
)

CHAIN_ID = 31337
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
ORIGIN: LocalAccount = Account.from_key("0x" + "11" * 32)
EXECUTOR: LocalAccount = Account.from_key("0x" + "22" * 32)
MALLORY: LocalAccount = Account.from_key("0x" + "33" * 32)


def voucher(amount: int, *, signer: LocalAccount = ORIGIN, executor: str = EXECUTOR.address,
            contract: str = CONTRACT, origin: str | None = None) -> SignedVoucher:
    signature = sign_voucher_offline(signer, CHAIN_ID, contract, executor, amount)
    return SignedVoucher(origin=origin or signer.address, executor=executor, cumulative_wei=amount, signature=signature)


def store_at(tmp_path: Path, contract: str = CONTRACT) -> VoucherStore:
    return VoucherStore(tmp_path / "vouchers" / "31337-me.db", contract_address=contract)


# -- wire form ---------------------------------------------------------------------------------
def test_json_round_trip_is_exact_for_uint256_amounts() -> None:
    v = voucher(2**256 - 1)
    data = v.to_json()
    assert data["cumulative_wei"] == str(2**256 - 1)
    assert data["signature"].startswith("0x") and len(data["signature"]) == 2 + 130
    assert SignedVoucher.from_json(data) == v


def test_from_json_takes_a_json_integer_amount_too() -> None:
    # Exact in Python; the wire form itself always writes a decimal string.
    data: dict[str, Any] = {**voucher(5).to_json(), "cumulative_wei": 5}
    assert SignedVoucher.from_json(data) == voucher(5)


def test_from_json_normalises_lowercase_addresses() -> None:
    data = voucher(5).to_json()
    data["origin"] = data["origin"].lower()
    assert SignedVoucher.from_json(data).origin == ORIGIN.address


@pytest.mark.parametrize(
    "change",
    [
        {"cumulative_wei": "0"},
        {"cumulative_wei": "-1"},
        {"cumulative_wei": "1.5"},
        {"cumulative_wei": str(2**256)},
        {"cumulative_wei": True},
        {"cumulative_wei": None},
        {"origin": "0x1234"},
        {"origin": 7},
        {"executor": "not an address"},
        {"signature": "0x" + "ab" * 64},  # 64 bytes
        {"signature": "ab" * 65},  # no 0x
        {"signature": "0x" + "zz" * 65},
        {"signature": None},
        {"extra": 1},
    ],
)
def test_malformed_json_is_rejected_with_a_typed_error(change: dict[str, Any]) -> None:
    data: dict[str, Any] = {**voucher(5).to_json(), **change}
    with pytest.raises(VoucherMalformedError):
        SignedVoucher.from_json(data)


def test_bad_checksum_and_missing_fields_are_malformed() -> None:
    data = voucher(5).to_json()
    addr = data["origin"]
    flipped = addr[:2] + "".join(c.swapcase() if c.isalpha() else c for c in addr[2:])
    with pytest.raises(VoucherMalformedError, match="checksum"):
        SignedVoucher.from_json({**data, "origin": flipped})
    del data["signature"]
    with pytest.raises(VoucherMalformedError, match="signature"):
        SignedVoucher.from_json(data)
    with pytest.raises(VoucherMalformedError):
        SignedVoucher.from_json(["not", "an", "object"])  # type: ignore[arg-type]


def test_malformed_is_a_voucher_error_and_a_value_error_with_400() -> None:
    assert issubclass(VoucherMalformedError, VoucherError) and issubclass(VoucherMalformedError, ValueError)
    assert VoucherMalformedError.http_status == 400
    assert VoucherStaleError.http_status == 402


# -- stateless checks --------------------------------------------------------------------------
def test_check_accepts_a_genuine_voucher() -> None:
    check_voucher(voucher(10), chain_id=CHAIN_ID, contract=CONTRACT, me=EXECUTOR.address.lower())


def test_check_rejects_a_voucher_for_another_executor() -> None:
    with pytest.raises(VoucherWrongExecutorError):
        check_voucher(voucher(10, executor=MALLORY.address), chain_id=CHAIN_ID, contract=CONTRACT, me=EXECUTOR.address)


def test_check_rejects_a_signature_by_someone_else() -> None:
    forged = voucher(10, signer=MALLORY, origin=ORIGIN.address)
    with pytest.raises(VoucherForgedError):
        check_voucher(forged, chain_id=CHAIN_ID, contract=CONTRACT, me=EXECUTOR.address)


def test_check_rejects_an_amount_changed_after_signing() -> None:
    genuine = voucher(10)
    inflated = SignedVoucher(genuine.origin, genuine.executor, 10_000, genuine.signature)
    with pytest.raises(VoucherForgedError):
        check_voucher(inflated, chain_id=CHAIN_ID, contract=CONTRACT, me=EXECUTOR.address)


def test_check_rejects_a_voucher_signed_for_another_contract_or_chain() -> None:
    with pytest.raises(VoucherForgedError):
        check_voucher(voucher(10, contract=OTHER_CONTRACT), chain_id=CHAIN_ID, contract=CONTRACT, me=EXECUTOR.address)
    with pytest.raises(VoucherForgedError):
        check_voucher(voucher(10), chain_id=1, contract=CONTRACT, me=EXECUTOR.address)


def test_check_rejects_garbage_signature_bytes() -> None:
    garbage = SignedVoucher(ORIGIN.address, EXECUTOR.address, 10, b"\xff" * 65)
    with pytest.raises(VoucherForgedError):
        check_voucher(garbage, chain_id=CHAIN_ID, contract=CONTRACT, me=EXECUTOR.address)


# -- store: origin side ------------------------------------------------------------------------
def test_promises_accumulate_per_executor_and_survive_reopening(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    assert store.promise(EXECUTOR.address, 3) == 3
    assert store.promise(EXECUTOR.address.lower(), 4) == 7
    assert store.promise(MALLORY.address, 1) == 1
    store.close()
    reopened = store_at(tmp_path)
    assert reopened.promised() == {EXECUTOR.address: 7, MALLORY.address: 1}
    assert reopened.promise(EXECUTOR.address, 1) == 8


def test_promise_limit_refuses_over_promising_and_writes_nothing(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.promise(EXECUTOR.address, 5, limit_wei=5)
    with pytest.raises(VoucherCreditExceededError):
        store.promise(EXECUTOR.address, 6, limit_wei=5)
    assert store.promised() == {EXECUTOR.address: 5}


@pytest.mark.parametrize("fee", [0, -1, True, 1.0])
def test_promise_needs_a_positive_int_fee(tmp_path: Path, fee: Any) -> None:
    with pytest.raises(VoucherMalformedError):
        store_at(tmp_path).promise(EXECUTOR.address, fee)


def test_concurrent_promises_lose_no_update(tmp_path: Path) -> None:
    store = store_at(tmp_path)

    def work() -> None:
        for _ in range(25):
            store.promise(EXECUTOR.address, 1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.promised() == {EXECUTOR.address: 100}


def test_contracts_do_not_share_promises(tmp_path: Path) -> None:
    store_at(tmp_path).promise(EXECUTOR.address, 9)
    assert store_at(tmp_path, OTHER_CONTRACT).promised() == {}


# -- store: executor side ----------------------------------------------------------------------
def test_accept_keeps_the_best_voucher_and_returns_what_is_new(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    assert store.accept(voucher(10)) == 10
    assert store.accept(voucher(25)) == 15
    held = store.best(ORIGIN.address)
    assert held is not None and held.voucher == voucher(25) and held.unclaimed_wei == 25
    assert store.owed() == {ORIGIN.address: 25}


@pytest.mark.parametrize("amount", [25, 24, 1])
def test_accept_rejects_stale_vouchers(tmp_path: Path, amount: int) -> None:
    store = store_at(tmp_path)
    store.accept(voucher(25))
    with pytest.raises(VoucherStaleError):
        store.accept(voucher(amount))
    best = store.best(ORIGIN.address)
    assert best is not None and best.voucher.cumulative_wei == 25


def test_claimed_mark_only_rises_and_reduces_what_is_owed(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.accept(voucher(30))
    store.mark_claimed(ORIGIN.address, 20)
    assert store.owed() == {ORIGIN.address: 10}
    store.mark_claimed(ORIGIN.address, 5)  # an older reading never lowers the mark
    assert store.owed() == {ORIGIN.address: 10}
    store.mark_claimed(ORIGIN.address, 30)
    assert store.owed() == {}
    # A voucher at or below what the chain already paid earns nothing.
    with pytest.raises(VoucherStaleError):
        store.accept(voucher(30))
    assert store.accept(voucher(31)) == 1


def test_executor_side_survives_reopening(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    store.accept(voucher(40))
    store.mark_claimed(ORIGIN.address, 15)
    store.close()
    reopened = store_at(tmp_path)
    assert reopened.owed() == {ORIGIN.address: 25}
    with pytest.raises(VoucherStaleError):
        reopened.accept(voucher(39))
    earned = reopened.earned()
    assert [e.voucher for e in earned] == [voucher(40)] and earned[0].claimed_wei == 15


def test_concurrent_copies_of_one_voucher_count_once(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    gains: list[int] = []
    errors: list[Exception] = []

    def take() -> None:
        try:
            gains.append(store.accept(voucher(50)))
        except VoucherStaleError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert gains == [50] and len(errors) == 5
