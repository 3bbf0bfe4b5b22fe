"""Revert reasons -> typed errors: the table against the contract sources, and real reverts on py-evm."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractLogicError

from contracts import CONTRACTS_DIR
from ledger import errors
from ledger.client import Vote, WWWServeClient
from ledger.errors import (
    REVERT_REASONS,
    AlreadyRegisteredError,
    BankError,
    ContractRevertedError,
    DuelStateError,
    DuelWindowError,
    InsufficientCreditError,
    LedgerError,
    NoModelsError,
    NotAJudgeError,
    NotRegisteredError,
    StakeLockedError,
    StaleVoucherError,
    UnknownDuelError,
    VoteCommitmentError,
    VoucherSignatureError,
    WithdrawalNoticeError,
    ZeroAmountError,
    revert_error,
)
from ledger.params import WEI_PER_CREDIT, WEI_PER_ETH, DeploymentParams
from ledger.tx import TxSender, revert_reason_of

# ---------------------------------------------------------------------------------------------
# the table


def _source_reasons() -> set[str]:
    """Every "<Domain>: <problem>" string literal in the contract sources."""
    found: set[str] = set()
    for path in Path(CONTRACTS_DIR).glob("*.vy"):
        found |= set(re.findall(r'"([A-Z][A-Za-z]*: [^"\n]+)"', path.read_text()))
    return found


def test_table_covers_exactly_the_contract_reasons() -> None:
    in_source = _source_reasons()
    assert len(in_source) > 40  # the regex really finds them
    assert set(REVERT_REASONS) == in_source, (
        f"missing from REVERT_REASONS: {sorted(in_source - set(REVERT_REASONS))}; "
        f"stale entries: {sorted(set(REVERT_REASONS) - in_source)}"
    )


def test_every_reason_has_its_domain_class() -> None:
    domain_base = {
        "Bank": errors.BankError,
        "Registry": errors.RegistryError,
        "Voucher": errors.VoucherError,
        "Duel": errors.DuelError,
        "Params": errors.ParamsError,
    }
    for reason, cls in REVERT_REASONS.items():
        domain = reason.split(":")[0]
        if domain in domain_base:
            assert issubclass(cls, domain_base[domain]), reason
        error = revert_error(reason, "WWWServe.fn")
        assert type(error) is cls
        assert (error.reason, error.function) == (reason, "WWWServe.fn")
        assert str(error) == f"WWWServe.fn: {reason}"


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("Bank: insufficient credit", InsufficientCreditError),
        ("  Bank: insufficient credit ", InsufficientCreditError),
        ("Bank: a problem added later", BankError),  # unknown reason of a known domain
        ("Duel: something new", errors.DuelError),
        ("Oracle: not a domain we know", ContractRevertedError),
        ("no domain at all", ContractRevertedError),
        ("", ContractRevertedError),
    ],
)
def test_revert_error_fallbacks(reason: str, cls: type[ContractRevertedError]) -> None:
    error = revert_error(reason, "WWWServe.x", tx_hash="0xabc")
    assert type(error) is cls
    assert error.tx_hash == "0xabc" and "0xabc" in str(error)
    assert "\n" not in str(error)
    if not reason:
        assert "reverted without a reason" in str(error)


def test_error_hierarchy_has_stdlib_twins() -> None:
    assert issubclass(errors.LedgerValueError, ValueError)
    assert issubclass(errors.ChainUnreachableError, ConnectionError)
    assert issubclass(errors.TransactionTimeoutError, TimeoutError)
    assert issubclass(errors.KeystoreNotFoundError, FileNotFoundError)
    assert issubclass(errors.WalletExistsError, FileExistsError)
    for name in dir(errors):
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__ == errors.__name__:
            assert issubclass(obj, LedgerError), name
            assert name.endswith("Error"), name


def test_revert_reason_from_web3_contract_logic_error() -> None:
    data = "0x08c379a0" + abi_encode(["string"], ["Duel: not in voting"]).hex()
    assert revert_reason_of(ContractLogicError("execution reverted: Duel: not in voting", data)) == (
        "Duel: not in voting"
    )
    # without decodable data, the message is used
    assert revert_reason_of(ContractLogicError("execution reverted: Bank: zero amount", "0x")) == "Bank: zero amount"
    assert revert_reason_of(ContractLogicError("execution reverted", None)) == ""
    assert revert_reason_of(ValueError("not a revert")) is None


# ---------------------------------------------------------------------------------------------
# real reverts on py-evm

PARAMS = DeploymentParams(
    min_stake_wei=10 * WEI_PER_CREDIT,
    withdrawal_notice_s=1000,
    k_judges=1,
    draw_window_blocks=5,
    commit_window_blocks=2,
    reveal_window_blocks=2,
    settle_window_blocks=2,
    tree_depth=3,
)
ROLES = ("origin", "a", "b", "judge")


class Chain:
    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        keys = self.w3.provider.ethereum_tester.backend.account_keys  # type: ignore[attr-defined]
        self.accounts: dict[str, LocalAccount] = {
            r: Account.from_key(keys[i].to_bytes()) for i, r in enumerate((*ROLES, "outsider"))
        }
        self.address, _ = WWWServeClient.deploy(self.w3, TxSender(self.w3, self.accounts["outsider"]), PARAMS)
        for role in ROLES:
            c = self.client(role)
            c.deposit(WEI_PER_ETH)
            c.register(keccak(text=role), "http://x", ["m"])
            c.stake(PARAMS.min_stake_wei)

    def client(self, role: str) -> WWWServeClient:
        return WWWServeClient(self.w3, self.address, TxSender(self.w3, self.accounts[role]))

    def addr(self, role: str) -> str:
        return str(self.accounts[role].address)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return Chain()


@pytest.fixture(autouse=True)
def _snapshot(request: pytest.FixtureRequest) -> Iterator[None]:
    if "chain" not in request.fixturenames:
        yield
        return
    chain: Chain = request.getfixturevalue("chain")
    tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snap = tester.take_snapshot()
    yield
    tester.revert_to_snapshot(snap)


def test_not_registered(chain: Chain) -> None:
    with pytest.raises(NotRegisteredError) as info:
        chain.client("outsider").stake(1)
    assert info.value.reason == "Registry: not registered"
    assert info.value.function == "WWWServe.stake"
    assert info.value.tx_hash is None  # caught at estimation: nothing was sent
    assert str(info.value) == "WWWServe.stake: Registry: not registered"


def test_registry_reverts(chain: Chain) -> None:
    with pytest.raises(AlreadyRegisteredError):
        chain.client("a").register(keccak(text="a"), "http://x", ["m"])
    with pytest.raises(NoModelsError):
        chain.client("outsider").register(keccak(text="new"), "http://x", [])


def test_bank_reverts(chain: Chain) -> None:
    c = chain.client("a")
    with pytest.raises(InsufficientCreditError, match="Bank: insufficient credit"):
        c.request_withdrawal(2 * WEI_PER_ETH)
    with pytest.raises(ZeroAmountError):
        c.deposit(0)
    c.request_withdrawal(WEI_PER_CREDIT)
    with pytest.raises(WithdrawalNoticeError):
        c.withdraw()


def test_voucher_reverts(chain: Chain) -> None:
    origin, executor = chain.accounts["origin"], chain.addr("a")
    c = chain.client("a")
    signature = c.sign_voucher(origin, executor, WEI_PER_CREDIT)
    c.claim_voucher(origin.address, executor, WEI_PER_CREDIT, signature)
    with pytest.raises(StaleVoucherError):
        c.claim_voucher(origin.address, executor, WEI_PER_CREDIT, signature)
    forged = c.sign_voucher(chain.accounts["b"], executor, 2 * WEI_PER_CREDIT)  # b signs for origin
    with pytest.raises(VoucherSignatureError, match="Voucher: bad signature"):
        c.claim_voucher(origin.address, executor, 2 * WEI_PER_CREDIT, forged)


def test_duel_reverts(chain: Chain) -> None:
    origin = chain.client("origin")
    with pytest.raises(UnknownDuelError):  # a view reverting is mapped too
        origin.duel(99)
    with pytest.raises(errors.DuelPartiesError):
        origin.open_duel(chain.addr("a"), chain.addr("a"), b"q" * 32, b"a" * 32, b"b" * 32)
    duel_id = origin.open_duel(chain.addr("a"), chain.addr("b"), b"q" * 32, b"a" * 32, b"b" * 32).duel_id
    assert duel_id is not None
    # the estimate runs in the block after the opening one, which is the seed block itself
    with pytest.raises(DuelWindowError, match="seed block not mined yet"):
        origin.draw_judges(duel_id)
    with pytest.raises(DuelStateError):
        origin.settle_duel(duel_id)
    chain.w3.provider.ethereum_tester.mine_blocks(1)  # type: ignore[attr-defined]
    origin.draw_judges(duel_id)
    assert origin.get_judges(duel_id) == (chain.addr("judge"),)
    with pytest.raises(NotAJudgeError):
        chain.client("a").commit_vote(duel_id, b"\x01" * 32)
    judge = chain.client("judge")
    salt = b"\x05" * 32
    judge.commit_vote(duel_id, judge.vote_commitment(duel_id, chain.addr("judge"), Vote.A, salt))
    with pytest.raises(errors.AlreadyVotedError):
        judge.commit_vote(duel_id, b"\x01" * 32)
    chain.w3.provider.ethereum_tester.mine_blocks(2)  # type: ignore[attr-defined]
    with pytest.raises(VoteCommitmentError, match="does not match"):
        judge.reveal_vote(duel_id, Vote.B, salt)
    # the duelists' stake is locked while the duel can be open
    a = chain.client("a")
    a.request_unstake(PARAMS.min_stake_wei)
    tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    tester.time_travel(chain.w3.eth.get_block("latest")["timestamp"] + PARAMS.unbonding_period_s + 1)
    with pytest.raises(StakeLockedError):
        a.withdraw_stake()


def test_mined_failure_is_decoded_from_the_receipt(chain: Chain) -> None:
    """A transaction that fails on-chain (gas given, so no estimate) still raises the typed error."""
    sender = TxSender(chain.w3, chain.accounts["outsider"])
    client = WWWServeClient(chain.w3, chain.address)
    data = client.contract.encode_abi("stake", args=[5])
    nonce_before = chain.w3.eth.get_transaction_count(sender.address)
    with pytest.raises(NotRegisteredError) as info:
        sender.send(to=chain.address, data=data, gas=200_000, function="WWWServe.stake")
    assert info.value.tx_hash is not None
    receipt = chain.w3.eth.get_transaction_receipt(info.value.tx_hash)
    assert receipt["status"] == 0
    assert chain.w3.eth.get_transaction_count(sender.address) == nonce_before + 1
    assert info.value.tx_hash in str(info.value)
