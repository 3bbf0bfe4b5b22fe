"""WWWServe fee vouchers: EIP-712 digest, cumulative claims, replay, bad signatures, partial payment.

`claimVoucher` is exported by WWWServe itself (the hot path of every delegation); its reverts are
the same through the merged handle."""

from __future__ import annotations

from typing import Any

import boa
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    chain_id,
    contract_fixture,
    deploy,
    deployment_fixture,
    deposit,
    logs_named,
    module_deployment_fixture,
    new_account,
    sign_digest,
    sign_voucher,
)
from eth_account import Account

from wwwserve.ledger.model import SECP256K1N, domain_separator, voucher_digest

WEI = 10**15


def test_digest_matches_eip712_and_model(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    assert c.DOMAIN_SEPARATOR() == domain_separator(chain_id(), c.address)
    digest = c.voucherDigest(origin.address, executor, 123)
    assert digest == voucher_digest(chain_id(), c.address, origin.address, executor, 123)
    # a wallet's EIP-712 signature (eth_account typed data) is a signature over exactly this digest
    # (signatures are deterministic, RFC 6979)
    assert sign_voucher(c, origin, executor, 123) == sign_digest(c, origin, origin.address, executor, 123)
    assert Account.unsafe_sign_hash(digest, origin.key).message_hash == digest


def test_claim_pays_executor_once_per_cumulative_amount(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    deposit(c, origin.address, 10 * WEI)
    sig = sign_voucher(c, origin, executor, 3 * WEI)
    with boa.env.prank(executor):
        c.claimVoucher(origin.address, executor, 3 * WEI, sig)
    (ev,) = logs_named(c, "VoucherClaimed")
    assert (ev.origin, ev.executor, ev.cumulativeAmount, ev.paid) == (origin.address, executor, 3 * WEI, 3 * WEI)
    assert (c.credit(origin.address), c.credit(executor), c.claimed(origin.address, executor)) == (
        7 * WEI, 3 * WEI, 3 * WEI)
    # the next voucher is cumulative: only the difference is paid
    sig = sign_voucher(c, origin, executor, 5 * WEI)
    with boa.env.prank(executor):
        c.claimVoucher(origin.address, executor, 5 * WEI, sig)
    (ev,) = logs_named(c, "VoucherClaimed")
    assert ev.paid == 2 * WEI
    assert (c.credit(origin.address), c.credit(executor), c.claimed(origin.address, executor)) == (
        5 * WEI, 5 * WEI, 5 * WEI)


def test_third_party_submits_but_executor_is_paid(c: Any) -> None:
    origin, executor, relayer = new_account("o"), new_account("e").address, new_account("r").address
    deposit(c, origin.address, 10 * WEI)
    with boa.env.prank(relayer):
        c.claimVoucher(origin.address, executor, 4 * WEI, sign_voucher(c, origin, executor, 4 * WEI))
    assert (c.credit(executor), c.credit(relayer)) == (4 * WEI, 0)


def test_replayed_and_older_vouchers_are_stale(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    deposit(c, origin.address, 10 * WEI)
    old_sig = sign_voucher(c, origin, executor, 2 * WEI)
    new_sig = sign_voucher(c, origin, executor, 4 * WEI)
    c.claimVoucher(origin.address, executor, 4 * WEI, new_sig)
    with boa.reverts("Voucher: stale voucher"):
        c.claimVoucher(origin.address, executor, 4 * WEI, new_sig)
    with boa.reverts("Voucher: stale voucher"):
        c.claimVoucher(origin.address, executor, 2 * WEI, old_sig)
    with boa.reverts("Voucher: stale voucher"):
        c.claimVoucher(origin.address, new_account("other").address, 0, old_sig)


def test_wrong_signer_is_rejected(c: Any) -> None:
    origin, executor, mallory = new_account("o"), new_account("e").address, new_account("m")
    deposit(c, origin.address, 10 * WEI)
    forged = sign_digest(c, mallory, origin.address, executor, WEI)
    with boa.reverts("Voucher: bad signature"):
        c.claimVoucher(origin.address, executor, WEI, forged)


def test_signature_binds_executor_amount_and_contract(c: Any) -> None:
    origin, executor, other = new_account("o"), new_account("e").address, new_account("x").address
    deposit(c, origin.address, 10 * WEI)
    sig = sign_voucher(c, origin, executor, WEI)
    with boa.reverts("Voucher: bad signature"):
        c.claimVoucher(origin.address, other, WEI, sig)  # redirected to another executor
    with boa.reverts("Voucher: bad signature"):
        c.claimVoucher(origin.address, executor, 2 * WEI, sig)  # inflated amount
    twin = deploy()
    deposit(twin, origin.address, 10 * WEI)
    with boa.reverts("Voucher: bad signature"):
        twin.claimVoucher(origin.address, executor, WEI, sig)  # another deployment (EIP-712 domain)


def test_signature_length_is_checked(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    sig = sign_voucher(c, origin, executor, WEI)
    with boa.reverts("Voucher: bad signature length"):
        c.claimVoucher(origin.address, executor, WEI, sig[:64])


def test_malformed_signatures_are_rejected(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    deposit(c, origin.address, 10 * WEI)
    sig = sign_voucher(c, origin, executor, WEI)
    r, s, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    # the malleable twin (s -> n - s, flipped v) recovers the same signer but must not be accepted
    high_s = r + (SECP256K1N - s).to_bytes(32, "big") + bytes([55 - v])
    with boa.reverts("Voucher: malformed signature"):
        c.claimVoucher(origin.address, executor, WEI, high_s)
    with boa.reverts("Voucher: malformed signature"):
        c.claimVoucher(origin.address, executor, WEI, sig[:64] + bytes([29]))
    # r = 0 makes ecrecover fail (zero address): never accepted as anyone's signature
    with boa.reverts("Voucher: bad signature"):
        c.claimVoucher(origin.address, executor, WEI, b"\x00" * 32 + sig[32:])


def test_v_as_zero_or_one_is_accepted(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    deposit(c, origin.address, 10 * WEI)
    sig = sign_voucher(c, origin, executor, WEI)
    c.claimVoucher(origin.address, executor, WEI, sig[:64] + bytes([sig[64] - 27]))
    assert c.credit(executor) == WEI


def test_partial_payment_draws_on_pending_withdrawal_then_rest_later(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    deposit(c, origin.address, 7 * WEI)
    with boa.env.prank(origin.address):
        c.requestWithdrawal(4 * WEI)  # credit 3, pending 4
    sig = sign_voucher(c, origin, executor, 10 * WEI)
    c.claimVoucher(origin.address, executor, 10 * WEI, sig)
    (ev,) = logs_named(c, "VoucherClaimed")
    assert (ev.cumulativeAmount, ev.paid) == (10 * WEI, 7 * WEI)
    assert (c.credit(origin.address), c.pendingWithdrawal(origin.address)) == (0, 0)
    assert (c.credit(executor), c.claimed(origin.address, executor)) == (7 * WEI, 7 * WEI)
    with boa.reverts("Voucher: origin has no funds"):
        c.claimVoucher(origin.address, executor, 10 * WEI, sig)
    # the unpaid rest of the same voucher is claimable once the origin has funds again
    deposit(c, origin.address, 5 * WEI)
    c.claimVoucher(origin.address, executor, 10 * WEI, sig)
    assert (c.credit(origin.address), c.credit(executor), c.claimed(origin.address, executor)) == (
        2 * WEI, 10 * WEI, 10 * WEI)


def test_origin_without_funds_reverts(c: Any) -> None:
    origin, executor = new_account("o"), new_account("e").address
    with boa.reverts("Voucher: origin has no funds"):
        c.claimVoucher(origin.address, executor, WEI, sign_voucher(c, origin, executor, WEI))
