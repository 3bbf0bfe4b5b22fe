"""Shared harness for the WWWServe contract unit tests (titanoboa, in-process py-evm).

One compile per session (boa caches it on disk too), one deployment per test module, and a chain
snapshot around every test (`boa.env.anchor()`), so tests are independent and fast.

Chain control is explicit: boa does not advance the block per transaction, so tests call `mine()`
(block number only) and `advance()` (timestamp only). `blockhash()` is 0 in plain boa; `mine()`
keeps `prev_hashes` filled with `fake_blockhash(n)` so every seed block has a distinct, known hash
that `ledger.model` can use to predict the draw.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import boa
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from ledger.model import vote_commitment, voucher_digest
from ledger.params import WEI_PER_ETH, DeploymentParams

CONTRACT_PATH = str(Path(__file__).resolve().parents[2] / "contracts" / "WWWServe.vy")
# Short windows keep block arithmetic readable; everything else is the production default.
TEST_PARAMS = DeploymentParams(
    draw_window_blocks=20,
    commit_window_blocks=5,
    reveal_window_blocks=5,
    settle_window_blocks=10,
)
MIN_STAKE = TEST_PARAMS.min_stake_wei
FUNDS_WEI = 1_000 * WEI_PER_ETH
SALT = keccak(b"salt")


@cache
def _deployer() -> Any:
    return boa.load_partial(CONTRACT_PATH)


def deploy(params: DeploymentParams = TEST_PARAMS) -> Any:
    """Deploy WWWServe with `params`."""
    return _deployer().deploy(*params.constructor_args())


def deploy_raw(args: Sequence[int]) -> Any:
    """Deploy with raw constructor arguments (to reach the constructor's own checks)."""
    return _deployer().deploy(*args)


def with_params(**changes: int) -> DeploymentParams:
    return dataclasses.replace(TEST_PARAMS, **changes)


def fake_blockhash(number: int) -> bytes:
    """The hash block `number` has in these tests."""
    return keccak(b"wwwserve-test-block" + number.to_bytes(32, "big"))


def sync_blockhashes() -> None:
    """Make BLOCKHASH(n) return fake_blockhash(n) for the 256 blocks before the current one."""
    now = boa.env.evm.patch.block_number
    boa.env.evm.patch.prev_hashes = [fake_blockhash(now - 1 - i) for i in range(min(256, now))]


def mine(blocks: int = 1) -> None:
    """Advance the block number (the timestamp does not move)."""
    boa.env.evm.patch.block_number += blocks
    sync_blockhashes()


def advance(seconds: int) -> None:
    """Advance the block timestamp (the block number does not move)."""
    boa.env.evm.patch.timestamp += seconds


def block_number() -> int:
    return int(boa.env.evm.patch.block_number)


def now_s() -> int:
    return int(boa.env.evm.patch.timestamp)


def chain_id() -> int:
    return int(boa.env.evm.patch.chain_id)


def new_account(label: str) -> LocalAccount:
    """A funded account with a known key (so it can sign vouchers)."""
    acct: LocalAccount = Account.from_key(keccak(b"wwwserve-test-" + label.encode()))
    boa.env.set_balance(acct.address, FUNDS_WEI)
    return acct


def pubkey_of(label: str) -> bytes:
    return keccak(b"ed25519-" + label.encode())


def register(c: Any, who: LocalAccount | str, label: str = "", *, models: Sequence[str] = ("m",)) -> None:
    addr = who if isinstance(who, str) else who.address
    with boa.env.prank(addr):
        c.register(pubkey_of(label or addr), f"http://{label or 'node'}.example", list(models), "{}")


def deposit(c: Any, who: str, amount_wei: int) -> None:
    with boa.env.prank(who):
        c.deposit(value=amount_wei)


def stake(c: Any, who: str, amount_wei: int) -> None:
    """Deposit and stake `amount_wei` (the node must be registered)."""
    with boa.env.prank(who):
        c.deposit(value=amount_wei)
        c.stake(amount_wei)


def make_node(c: Any, label: str, stake_wei: int = MIN_STAKE, credit_wei: int = WEI_PER_ETH) -> LocalAccount:
    """A registered node with `stake_wei` staked and `credit_wei` of free credit."""
    acct = new_account(label)
    register(c, acct, label)
    if stake_wei:
        stake(c, acct.address, stake_wei)
    if credit_wei:
        deposit(c, acct.address, credit_wei)
    return acct


def sign_voucher(c: Any, origin: LocalAccount, executor: str, cumulative_wei: int) -> bytes:
    """Sign a fee voucher as a wallet would: EIP-712 typed data through eth_account."""
    signed = Account.sign_typed_data(
        origin.key,
        domain_data={"name": "WWWServe", "version": "1", "chainId": chain_id(), "verifyingContract": c.address},
        message_types={"Voucher": [{"name": "origin", "type": "address"}, {"name": "executor", "type": "address"},
                                   {"name": "cumulativeAmount", "type": "uint256"}]},
        message_data={"origin": origin.address, "executor": executor, "cumulativeAmount": cumulative_wei},
    )
    return bytes(signed.signature)


def sign_digest(c: Any, signer: LocalAccount, origin: str, executor: str, cumulative_wei: int) -> bytes:
    """Sign the voucher digest directly (lets a wrong key sign for `origin`)."""
    digest = voucher_digest(chain_id(), c.address, origin, executor, cumulative_wei)
    return bytes(Account.unsafe_sign_hash(digest, signer.key).signature)


def commitment(c: Any, duel_id: int, judge: str, vote: int, salt: bytes = SALT) -> bytes:
    return vote_commitment(chain_id(), c.address, duel_id, judge, vote, salt)


def open_duel(c: Any, origin: str, a: str, b: str, tag: bytes = b"") -> int:
    with boa.env.prank(origin):
        duel_id: int = c.openDuel(a, b, keccak(b"q" + tag), keccak(b"a" + tag), keccak(b"b" + tag))
    return duel_id


def open_and_draw(c: Any, origin: str, a: str, b: str, tag: bytes = b"") -> tuple[int, list[str]]:
    """Open a duel, mine past its seed block, draw. Returns (duel id, judges)."""
    duel_id = open_duel(c, origin, a, b, tag)
    mine(TEST_PARAMS.seed_delay_blocks + 1)
    c.drawJudges(duel_id)
    return duel_id, [str(j) for j in c.getJudges(duel_id)]


def vote_all(c: Any, duel_id: int, judges: Sequence[str], votes: Sequence[int | None],
             commit_window_blocks: int = TEST_PARAMS.commit_window_blocks) -> None:
    """Every judge commits; those with a vote (not None) reveal after the commit window."""
    for judge, vote in zip(judges, votes, strict=True):
        with boa.env.prank(judge):
            c.commitVote(duel_id, commitment(c, duel_id, judge, vote or 1))
    mine(commit_window_blocks + 1)
    for judge, vote in zip(judges, votes, strict=True):
        if vote is not None:
            with boa.env.prank(judge):
                c.revealVote(duel_id, vote, SALT)


def logs_named(c: Any, name: str) -> list[Any]:
    """Decoded logs of the last call with the given event name."""
    return [log for log in c.get_logs() if type(log).__name__ == name]


# Fixtures carry explicit names, so test modules import them under these function names and
# take `c`/`fresh` as parameters without shadowing an import.
@pytest.fixture(scope="module", name="module_contract")
def module_contract_fixture() -> Iterator[Any]:
    """One deployment per module; tests run inside snapshots of it."""
    with boa.env.anchor():
        yield deploy()


@pytest.fixture(name="c")
def contract_fixture(module_contract: Any) -> Iterator[Any]:
    """The module's contract, with every change a test makes rolled back afterwards."""
    with boa.env.anchor():
        sync_blockhashes()
        yield module_contract


@pytest.fixture(name="fresh")
def fresh_fixture() -> Iterator[None]:
    """A snapshot for tests that deploy their own contract."""
    with boa.env.anchor():
        yield
