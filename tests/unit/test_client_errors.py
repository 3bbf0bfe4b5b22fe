"""Revert reasons -> typed errors: the table against the contract sources, and real reverts on py-evm."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak
from ledger_world import PARAMS, STAKE_WEI, World, make_world
from web3.exceptions import ContractLogicError

from wwwserve.contracts import CONTRACTS_DIR, load_artifact
from wwwserve.ledger import errors
from wwwserve.ledger.chain import revert_reason_of
from wwwserve.ledger.client import Vote, WWWServeClient
from wwwserve.ledger.errors import (
    REVERT_REASONS,
    AlreadyRegisteredError,
    BankError,
    ContractRevertedError,
    DuelStateError,
    DuelWindowError,
    ExtensionCalledDirectlyError,
    ExtensionMismatchError,
    InsufficientCreditError,
    LedgerError,
    NoModelsError,
    NotAJudgeError,
    NotRegisteredError,
    StakeBondedError,
    StaleVoucherError,
    UnknownDuelError,
    VoteCommitmentError,
    VoucherSignatureError,
    WithdrawalNoticeError,
    ZeroAmountError,
    revert_error,
)
from wwwserve.ledger.params import WEI_PER_CREDIT, WEI_PER_ETH, DeploymentParams
from wwwserve.ledger.tx import TxSender

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
        "WWWServe": errors.ExtensionCalledDirectlyError,
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
# real reverts on py-evm (through WWWServe's own functions and through its delegatecall fallback)


@pytest.fixture(scope="module")
def chain() -> World:
    return make_world()


@pytest.fixture(autouse=True)
def _snapshot(request: pytest.FixtureRequest) -> Iterator[None]:
    if "chain" not in request.fixturenames:
        yield
        return
    chain: World = request.getfixturevalue("chain")
    tester = chain.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snap = tester.take_snapshot()
    yield
    tester.revert_to_snapshot(snap)


def test_not_registered(chain: World) -> None:
    # stake() runs in the extension: its revert reason comes back through WWWServe's fallback
    with pytest.raises(NotRegisteredError) as info:
        chain.client("outsider").stake(1)
    assert info.value.reason == "Registry: not registered"
    assert info.value.function == "WWWServe.stake"
    assert info.value.tx_hash is None  # caught at estimation: nothing was sent
    assert str(info.value) == "WWWServe.stake: Registry: not registered"


def test_registry_reverts(chain: World) -> None:
    with pytest.raises(AlreadyRegisteredError):
        chain.client("a").register(keccak(text="a"), "http://x", ["m"])
    with pytest.raises(NoModelsError):
        chain.client("outsider").register(keccak(text="new"), "http://x", [])


def test_bank_reverts(chain: World) -> None:
    c = chain.client("a")
    with pytest.raises(InsufficientCreditError, match="Bank: insufficient credit"):
        c.request_withdrawal(2 * WEI_PER_ETH)
    with pytest.raises(ZeroAmountError):
        c.deposit(0)
    c.request_withdrawal(WEI_PER_CREDIT)
    with pytest.raises(WithdrawalNoticeError):
        c.withdraw()


def test_voucher_reverts(chain: World) -> None:
    origin, executor = chain.accounts["origin"], chain.addr("a")
    c = chain.client("a")
    signature = c.sign_voucher(origin, executor, WEI_PER_CREDIT)
    c.claim_voucher(origin.address, executor, WEI_PER_CREDIT, signature)
    with pytest.raises(StaleVoucherError):
        c.claim_voucher(origin.address, executor, WEI_PER_CREDIT, signature)
    forged = c.sign_voucher(chain.accounts["c1"], executor, 2 * WEI_PER_CREDIT)  # c1 signs for origin
    with pytest.raises(VoucherSignatureError, match="Voucher: bad signature"):
        c.claim_voucher(origin.address, executor, 2 * WEI_PER_CREDIT, forged)


def test_the_extension_refuses_direct_calls(chain: World) -> None:
    direct = WWWServeClient(chain.w3, chain.extension, TxSender(chain.w3, chain.accounts["outsider"]))
    with pytest.raises(ExtensionCalledDirectlyError, match="call the WWWServe contract"):
        direct.deposit(WEI_PER_CREDIT)
    with pytest.raises(ExtensionCalledDirectlyError):
        direct.register(keccak(text="x"), "http://x", ["m"])


def test_deploying_over_a_mismatched_extension_is_refused(chain: World) -> None:
    """WWWServe's constructor checks its extension's parameters (the typed error comes from the estimate)."""
    sender = TxSender(chain.w3, chain.accounts["outsider"])
    main = load_artifact()
    factory = chain.w3.eth.contract(abi=main.abi, bytecode=main.bytecode)
    other = DeploymentParams(k_judges=2)
    with pytest.raises(ExtensionMismatchError, match="other parameters"):
        sender.send(to=None, data=factory.constructor(*other.constructor_args(), chain.extension).data_in_transaction,
                    function="WWWServe.constructor")
    with pytest.raises(ExtensionMismatchError, match="not a contract"):
        sender.send(to=None, data=factory.constructor(*PARAMS.constructor_args(), chain.addr("a")).data_in_transaction,
                    function="WWWServe.constructor")


def test_duel_reverts(chain: World) -> None:
    origin = chain.client("origin")
    with pytest.raises(UnknownDuelError):  # a view reverting is mapped too
        origin.duel(99)
    work, salt, _ = chain.work("origin", "a", "reverts")
    duel = chain.open_duel("reverts")
    with pytest.raises(errors.WorkAlreadyDueledError):
        origin.open_duel(work, salt)
    # the estimate runs in the block after the opening one, which cannot be past the seed block
    with pytest.raises(DuelWindowError, match="seed block not mined yet"):
        origin.draw_challenger(duel.duel_id)
    with pytest.raises(DuelWindowError, match="answer window not over"):
        origin.settle_duel(duel.duel_id)
    b = chain.challenger(duel.duel_id)
    outsider = next(r for r in ("c1", "c2", "c3", "c4") if chain.addr(r) != b)
    with pytest.raises(errors.NotTheChallengerError):
        chain.client(outsider).answer_duel(duel.duel_id, b"\x01" * 32)
    with pytest.raises(DuelStateError, match="request not missing"):
        origin.publish_request(duel.duel_id, duel.work, duel.salt, duel.request)
    chain.answer(duel.duel_id)
    with pytest.raises(DuelStateError, match="not awaiting an answer"):
        chain.client(b).answer_duel(duel.duel_id, b"\x01" * 32)
    judges = chain.client().judges(duel.duel_id, 1)
    with pytest.raises(DuelStateError, match="judges already drawn"):
        origin.draw_judges(duel.duel_id)
    # seats exclude nobody (A or the origin may hold one): ask from a node that holds none
    seated = {j.lower() for j in judges}
    not_a_judge = next(r for r in ("a", "origin", "c1", "c2", "c3", "c4") if chain.addr(r).lower() not in seated)
    with pytest.raises(NotAJudgeError):
        chain.client(not_a_judge).commit_vote(duel.duel_id, b"\x01" * 32)
    judge = chain.client(judges[0])
    with pytest.raises(VoteCommitmentError, match="empty commitment"):
        judge.commit_vote(duel.duel_id, bytes(32))
    salt_j = b"\x05" * 32
    judge.commit_vote(duel.duel_id, judge.vote_commitment(duel.duel_id, 1, judges[0], Vote.A, salt_j))
    with pytest.raises(errors.AlreadyVotedError):
        judge.commit_vote(duel.duel_id, b"\x01" * 32)
    with pytest.raises(DuelWindowError, match="reveal window not open"):
        judge.reveal_vote(duel.duel_id, Vote.A, salt_j)
    info = chain.client().duel(duel.duel_id)
    assert info.commit_end_block is not None
    chain.mine_to(info.commit_end_block)
    with pytest.raises(VoteCommitmentError, match="does not match"):
        judge.reveal_vote(duel.duel_id, Vote.B, salt_j)
    judge.reveal_vote(duel.duel_id, Vote.A, salt_j)
    with pytest.raises(DuelWindowError, match="reveal window not over"):
        chain.client(b).appeal(duel.duel_id)
    # the duelists' bonds stay slashable: what open duels bond cannot be withdrawn
    a = chain.client("a")
    a.request_unstake(a.active_stake(chain.addr("a")))
    chain.time_travel(PARAMS.unbonding_period_s + 1)
    chain.mine(PARAMS.duel_span_blocks)
    with pytest.raises(DuelWindowError, match="appeal window over"):
        chain.client(b).appeal(duel.duel_id)
    unbonded = a.withdraw_stake().event("StakeWithdrawn").args["amount"]
    assert unbonded == STAKE_WEI - PARAMS.duel_bond_wei
    with pytest.raises(StakeBondedError):
        a.withdraw_stake()


def test_mined_failure_is_decoded_from_the_receipt(chain: World) -> None:
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
