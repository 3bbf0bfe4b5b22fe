"""WWWServeClient against the real contract on py-evm (EthereumTesterProvider): every method once.

One chain per module with six registered, staked nodes (an origin, two duelists, three judges);
each test runs from a snapshot of it, so tests are independent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3

from contracts import load_artifact
from ledger.client import (
    Balances,
    DuelOutcome,
    DuelStatus,
    NodeInfo,
    RewardReason,
    Vote,
    WWWServeClient,
    voucher_digest,
)
from ledger.errors import DeploymentNotFoundError, InvalidAmountError, LedgerValueError
from ledger.params import WEI_PER_CREDIT, WEI_PER_ETH, DeploymentParams
from ledger.tx import TxSender

PARAMS = DeploymentParams(
    min_stake_wei=10 * WEI_PER_CREDIT,
    unbonding_period_s=100,
    withdrawal_notice_s=50,
    k_judges=3,
    seed_delay_blocks=1,
    draw_window_blocks=5,
    commit_window_blocks=3,
    reveal_window_blocks=3,
    settle_window_blocks=2,
    tree_depth=4,
)
STAKE_WEI = 20 * WEI_PER_CREDIT
DEPOSIT_WEI = WEI_PER_ETH
ROLES = ("origin", "a", "b", "j1", "j2", "j3")


@dataclass
class World:
    w3: Web3
    address: str
    deploy_block: int
    accounts: dict[str, LocalAccount]

    def client(self, role: str | None = None) -> WWWServeClient:
        sender = TxSender(self.w3, self.accounts[role]) if role else None
        return WWWServeClient(self.w3, self.address, sender)

    def mine(self, blocks: int) -> None:
        self.w3.provider.ethereum_tester.mine_blocks(blocks)  # type: ignore[attr-defined]

    def time_travel(self, seconds: int) -> None:
        now = self.w3.eth.get_block("latest")["timestamp"]
        self.w3.provider.ethereum_tester.time_travel(now + seconds)  # type: ignore[attr-defined]


def pubkey_of(role: str) -> bytes:
    return keccak(text=f"ed25519 key of {role}")


@pytest.fixture(scope="module")
def world() -> World:
    w3 = Web3(EthereumTesterProvider())
    keys = w3.provider.ethereum_tester.backend.account_keys  # type: ignore[attr-defined]
    accounts = {role: Account.from_key(keys[i].to_bytes()) for i, role in enumerate(("deployer", *ROLES))}
    accounts["outsider"] = Account.from_key(keys[len(ROLES) + 1].to_bytes())
    address, block = WWWServeClient.deploy(w3, TxSender(w3, accounts["deployer"]), PARAMS)
    out = World(w3=w3, address=address, deploy_block=block, accounts=accounts)
    for role in ROLES:
        c = out.client(role)
        c.deposit(DEPOSIT_WEI)
        c.register(pubkey_of(role), f"http://{role}.example:8000", ["smollm2", f"model-{role}"], f"meta {role}")
        c.stake(STAKE_WEI)
    return out


@pytest.fixture(autouse=True)
def snapshot(world: World) -> Iterator[None]:
    tester = world.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snap = tester.take_snapshot()
    yield
    tester.revert_to_snapshot(snap)


def addr(world: World, role: str) -> str:
    return str(world.accounts[role].address)


# Every function in the ABI and the client method that covers it (a test below calls each one).
ABI_TO_CLIENT = {
    "register": "register",
    "updateNode": "update_node",
    "leave": "leave",
    "getModels": "get_models",
    "nodes": "node",
    "registeredOnce": "registered_once",
    "pubkeyOwner": "pubkey_owner",
    "activeNodeCount": "active_node_count",
    "deposit": "deposit",
    "requestWithdrawal": "request_withdrawal",
    "cancelWithdrawal": "cancel_withdrawal",
    "withdraw": "withdraw",
    "stake": "stake",
    "requestUnstake": "request_unstake",
    "withdrawStake": "withdraw_stake",
    "credit": "credit",
    "pendingWithdrawal": "pending_withdrawal",
    "withdrawableAt": "withdrawable_at",
    "activeStake": "active_stake",
    "unbondingStake": "unbonding_stake",
    "unbondingEnd": "unbonding_end",
    "lockedUntil": "locked_until",
    "voucherDigest": "voucher_digest_onchain",
    "claimVoucher": "claim_voucher",
    "claimed": "claimed",
    "openDuel": "open_duel",
    "getDuel": "duel",
    "getJudges": "get_judges",
    "getVotes": "get_votes",
    "drawJudges": "draw_judges",
    "cancelUndrawnDuel": "cancel_undrawn_duel",
    "voteCommitment": "vote_commitment_onchain",
    "commitVote": "commit_vote",
    "revealVote": "reveal_vote",
    "settleDuel": "settle_duel",
    "duelCount": "duel_count",
    "commitments": "commitment",
    "totalWeight": "total_weight",
    "leafWeight": "leaf_weight",
    "leafOwner": "leaf_owner",
    "leafCount": "leaf_count",
    "DEPTH": "params",
    "MIN_STAKE": "params",
    "UNBONDING_PERIOD": "params",
    "WITHDRAWAL_NOTICE": "params",
    "K_JUDGES": "params",
    "SEED_DELAY": "params",
    "DRAW_WINDOW": "params",
    "COMMIT_WINDOW": "params",
    "REVEAL_WINDOW": "params",
    "SETTLE_WINDOW": "params",
    "GAMMA_BPS": "params",
    "MINORITY_SLASH_BPS": "params",
    "ABSTAIN_SLASH_BPS": "params",
    "DUELIST_FEE": "params",
    "JUDGE_FEE": "params",
    "DUEL_ESCROW": "duel_escrow_wei",
    "DOMAIN_SEPARATOR": "domain_separator",
}


def test_every_abi_function_has_a_client_method() -> None:
    abi_functions = {item["name"] for item in load_artifact().abi if item["type"] == "function"}
    assert abi_functions == set(ABI_TO_CLIENT)
    for method in ABI_TO_CLIENT.values():
        assert callable(getattr(WWWServeClient, method)), method


def test_deploy_and_params(world: World) -> None:
    c = world.client()
    c.ensure_deployed()
    assert world.deploy_block >= 1
    assert c.params() == PARAMS
    assert c.duel_escrow_wei() == PARAMS.duel_escrow_wei
    # the domain separator is EIP-712's, as eth-account computes it
    from eth_account.messages import encode_typed_data

    from ledger.client import voucher_typed_data

    message = encode_typed_data(
        full_message=voucher_typed_data(world.w3.eth.chain_id, world.address, world.address, world.address, 1)
    )
    assert c.domain_separator() == message.header


def test_ensure_deployed_rejects_other_addresses(world: World) -> None:
    with pytest.raises(DeploymentNotFoundError, match="no contract"):
        WWWServeClient(world.w3, addr(world, "outsider")).ensure_deployed()


def test_deploy_and_connect_returns_a_bound_client(world: World) -> None:
    client, block = WWWServeClient.deploy_and_connect(world.w3, TxSender(world.w3, world.accounts["outsider"]))
    assert block == world.w3.eth.block_number
    assert client.params() == DeploymentParams()
    assert client.address != world.address


def test_registry_views(world: World) -> None:
    c = world.client()
    info = c.node(addr(world, "a"))
    assert info == NodeInfo(
        address=addr(world, "a"),
        pubkey=pubkey_of("a"),
        endpoint="http://a.example:8000",
        models=("smollm2", "model-a"),
        metadata="meta a",
        active=True,
        leaf=1,
    )
    assert c.node(addr(world, "outsider")) is None
    assert c.get_models(addr(world, "b")) == ("smollm2", "model-b")
    assert c.registered_once(addr(world, "a")) and not c.registered_once(addr(world, "outsider"))
    assert c.pubkey_owner(pubkey_of("j1")) == addr(world, "j1")
    assert c.pubkey_owner(b"\x07" * 32) is None
    assert c.active_node_count() == len(ROLES)
    assert c.leaf_count() == len(ROLES)
    assert c.leaf_owner(0) == addr(world, "origin")
    assert c.leaf_owner(15) is None
    assert c.leaf_weight(2) == STAKE_WEI
    assert c.total_weight() == len(ROLES) * STAKE_WEI


def test_register_emits_event_and_update_node(world: World) -> None:
    c = world.client("outsider")
    c.deposit(PARAMS.min_stake_wei)
    result = c.register("0x" + "ab" * 32, "http://new:1", ["m1"], "")
    event = result.event("NodeRegistered")
    assert event.args == {
        "node": addr(world, "outsider"),
        "pubkey": b"\xab" * 32,
        "endpoint": "http://new:1",
        "models": ("m1",),
        "metadata": "",
        "leaf": len(ROLES),
    }
    assert result.tx_hash.startswith("0x") and len(result.tx_hash) == 66
    assert result.block_number == world.w3.eth.block_number and result.gas_used > 21_000
    assert result.duel_id is None
    updated = c.update_node(b"\xcd" * 32, "http://moved:2", ["m1", "m2"], "gpu=h100")
    assert updated.event("NodeUpdated").args["endpoint"] == "http://moved:2"
    node = c.node(addr(world, "outsider"))
    assert node is not None and node.pubkey == b"\xcd" * 32 and node.models == ("m1", "m2")
    assert c.pubkey_owner(b"\xab" * 32) is None


def test_leave(world: World) -> None:
    c = world.client("j3")
    result = c.leave()
    assert [e.name for e in result.events] == ["NodeLeft"]
    node = c.node(addr(world, "j3"))
    assert node is not None and not node.active
    assert c.active_node_count() == len(ROLES) - 1
    assert c.total_weight() == (len(ROLES) - 1) * STAKE_WEI


def test_credit_lifecycle(world: World) -> None:
    c = world.client("outsider")
    me = addr(world, "outsider")
    assert c.deposit(5 * WEI_PER_CREDIT).event("CreditDeposited").args == {"account": me, "amount": 5 * WEI_PER_CREDIT}
    requested = c.request_withdrawal(2 * WEI_PER_CREDIT).event("WithdrawalRequested")
    assert requested.args["amount"] == 2 * WEI_PER_CREDIT
    assert c.pending_withdrawal(me) == 2 * WEI_PER_CREDIT
    assert c.withdrawable_at(me) == requested.args["availableAt"]
    assert c.cancel_withdrawal().event("WithdrawalCancelled").args["amount"] == 2 * WEI_PER_CREDIT
    assert c.credit(me) == 5 * WEI_PER_CREDIT
    second = c.request_withdrawal(3 * WEI_PER_CREDIT).event("WithdrawalRequested")
    world.time_travel(PARAMS.withdrawal_notice_s + 1)
    eth_before = world.w3.eth.get_balance(me)
    result = c.withdraw()
    assert result.event("CreditWithdrawn").args["amount"] == 3 * WEI_PER_CREDIT
    assert c.balances(me) == Balances(
        credit_wei=2 * WEI_PER_CREDIT,
        pending_withdrawal_wei=0,
        withdrawable_at_s=second.args["availableAt"],
        active_stake_wei=0,
        unbonding_stake_wei=0,
        unbonding_end_s=0,
        locked_until_block=0,
    )
    # the ETH came back, less the gas of the withdraw transaction
    gas_paid = result.gas_used * world.w3.eth.get_transaction_receipt(result.tx_hash)["effectiveGasPrice"]
    assert world.w3.eth.get_balance(me) == eth_before + 3 * WEI_PER_CREDIT - gas_paid


def test_stake_lifecycle(world: World) -> None:
    c = world.client("j2")
    me = addr(world, "j2")
    assert c.stake(WEI_PER_CREDIT).event("Staked").args["amount"] == WEI_PER_CREDIT
    unstake = c.request_unstake(STAKE_WEI).event("UnstakeRequested")
    b = c.balances(me)
    assert (b.active_stake_wei, b.unbonding_stake_wei) == (WEI_PER_CREDIT, STAKE_WEI)
    assert b.unbonding_end_s == unstake.args["unbondingEnd"] == c.unbonding_end(me)
    assert b.stake_wei == STAKE_WEI + WEI_PER_CREDIT
    assert b.total_wei == DEPOSIT_WEI
    assert c.unbonding_stake(me) == STAKE_WEI and c.active_stake(me) == WEI_PER_CREDIT
    world.time_travel(PARAMS.unbonding_period_s + 1)
    assert c.withdraw_stake().event("StakeWithdrawn").args["amount"] == STAKE_WEI
    assert c.credit(me) == DEPOSIT_WEI - WEI_PER_CREDIT
    # below the minimum stake the node is no longer routable
    assert c.leaf_weight(c.node(me).leaf) == 0  # type: ignore[union-attr]


def test_vouchers(world: World) -> None:
    origin = world.accounts["origin"]
    executor = addr(world, "a")
    c = world.client("b")  # anyone may submit a voucher; the money goes to the executor
    chain_id = world.w3.eth.chain_id
    digest = c.voucher_digest(origin.address, executor, 7 * WEI_PER_CREDIT)
    assert digest == c.voucher_digest_onchain(origin.address, executor, 7 * WEI_PER_CREDIT)
    assert digest == voucher_digest(chain_id, world.address, origin.address, executor, 7 * WEI_PER_CREDIT)
    signature = c.sign_voucher(origin, executor, 7 * WEI_PER_CREDIT)
    assert len(signature) == 65
    assert c.recover_voucher_signer(origin.address, executor, 7 * WEI_PER_CREDIT, signature) == origin.address
    credit_before = c.credit(executor)
    claimed = c.claim_voucher(origin.address, executor, 7 * WEI_PER_CREDIT, signature).event("VoucherClaimed")
    assert claimed.args == {
        "origin": origin.address,
        "executor": executor,
        "cumulativeAmount": 7 * WEI_PER_CREDIT,
        "paid": 7 * WEI_PER_CREDIT,
    }
    assert c.claimed(origin.address, executor) == 7 * WEI_PER_CREDIT
    assert c.credit(executor) == credit_before + 7 * WEI_PER_CREDIT
    # cumulative: the next voucher pays only the difference
    later = c.sign_voucher(origin, executor, 10 * WEI_PER_CREDIT)
    assert c.claim_voucher(origin.address, executor, 10 * WEI_PER_CREDIT, "0x" + later.hex()).event(
        "VoucherClaimed"
    ).args["paid"] == 3 * WEI_PER_CREDIT


def _open_duel(world: World) -> tuple[WWWServeClient, int, tuple[bytes, bytes, bytes]]:
    c = world.client("origin")
    hashes = (keccak(text="question"), keccak(text="answer a"), keccak(text="answer b"))
    result = c.open_duel(addr(world, "a"), addr(world, "b"), *hashes)
    assert result.duel_id is not None
    return c, result.duel_id, hashes


def test_duel_full_lifecycle(world: World) -> None:
    c, duel_id, hashes = _open_duel(world)
    assert duel_id == 1 and c.duel_count() == 1
    opened = c.duel(duel_id)
    assert opened.status is DuelStatus.AWAITING_JUDGES and opened.outcome is DuelOutcome.NONE
    assert (opened.origin, opened.a, opened.b) == (addr(world, "origin"), addr(world, "a"), addr(world, "b"))
    assert c.duel_hashes(duel_id) == hashes
    assert opened.judges == () and opened.votes == ()
    assert c.locked_until(addr(world, "a")) > opened.seed_block

    world.mine(1)
    drawn = c.draw_judges(duel_id).event("JudgesDrawn")
    judges = c.get_judges(duel_id)
    assert set(judges) == {addr(world, r) for r in ("j1", "j2", "j3")}
    assert drawn.args["judges"] == judges
    voting = c.duel(duel_id)
    assert voting.status is DuelStatus.VOTING and voting.commit_end_block == drawn.args["commitEnd"]

    ballots = {addr(world, "j1"): Vote.A, addr(world, "j2"): Vote.A, addr(world, "j3"): Vote.B}
    role_of = {addr(world, r): r for r in ("j1", "j2", "j3")}
    for judge, vote in ballots.items():
        jc = world.client(role_of[judge])
        salt = keccak(text=f"salt {judge}")
        commitment = jc.vote_commitment(duel_id, judge, vote, salt)
        assert commitment == jc.vote_commitment_onchain(duel_id, judge, vote, salt)
        jc.commit_vote(duel_id, commitment)
        assert jc.commitment(duel_id, judge) == commitment
    # reveals open after the commit window: the next transaction lands in block commit_end + 1
    world.mine(voting.commit_end_block - world.w3.eth.block_number)
    for judge, vote in ballots.items():
        jc = world.client(role_of[judge])
        revealed = jc.reveal_vote(duel_id, vote, keccak(text=f"salt {judge}")).event("VoteRevealed")
        assert revealed.args["vote"] == vote
    assert set(zip(c.get_judges(duel_id), c.get_votes(duel_id), strict=True)) == set(ballots.items())

    stake_b = c.active_stake(addr(world, "b"))
    settled = c.settle_duel(duel_id)
    assert DuelOutcome(settled.event("DuelSettled").args["outcome"]) is DuelOutcome.A_WON
    rewards = {RewardReason(e.args["reason"]) for e in settled.events_named("DuelRewardPaid")}
    assert {RewardReason.STAKE_WON, RewardReason.DUELIST_FEE, RewardReason.JUDGE_FEE} <= rewards
    final = c.duel(duel_id)
    assert final.status is DuelStatus.SETTLED and final.outcome is DuelOutcome.A_WON
    assert c.active_stake(addr(world, "b")) == stake_b - stake_b * PARAMS.gamma_bps // 10_000


def test_cancel_undrawn_duel(world: World) -> None:
    c, duel_id, _ = _open_duel(world)
    world.mine(PARAMS.seed_delay_blocks + PARAMS.draw_window_blocks + 1)
    result = c.cancel_undrawn_duel(duel_id)
    assert result.event("DuelCancelled").args["reason"] == 2
    assert c.duel(duel_id).status is DuelStatus.CANCELLED


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.register(b"\x01" * 31, "http://x", ["m"]), "pubkey .* exactly 32 bytes, got 31"),
        (lambda c: c.register("0x1234", "http://x", ["m"]), "exactly 32 bytes"),
        (lambda c: c.register(b"\x01" * 32, "h" * 257, ["m"]), "endpoint is 257 bytes; the contract allows at most"),
        (lambda c: c.register(b"\x01" * 32, "é" * 129, ["m"]), "endpoint is 258 bytes"),
        (lambda c: c.register(b"\x01" * 32, "http://x", [f"m{i}" for i in range(17)]), "17 models given"),
        (lambda c: c.register(b"\x01" * 32, "http://x", ["m" * 65]), "at most 64"),
        (lambda c: c.register(b"\x01" * 32, "http://x", "m"), "list of model names"),
        (lambda c: c.update_node(b"\x01" * 32, "http://x", ["m"], "x" * 1025), "metadata is 1025 bytes"),
        (lambda c: c.open_duel("0x1234", "0x" + "00" * 20, b"1" * 32, b"2" * 32, b"3" * 32), "duelist a"),
        # a mixed-case address with a broken checksum is a typo, not an address
        (
            lambda c: c.claimed("0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x" + "00" * 20),
            "origin must be a 20-byte hex address with a valid checksum",
        ),
        (lambda c: c.claim_voucher("0x" + "11" * 20, "0x" + "22" * 20, 1, b"\x00" * 64), "65 bytes"),
        (lambda c: c.reveal_vote(1, 7, b"\x00" * 32), "vote must be one of"),
        (lambda c: c.draw_judges(-1), "duel_id must be an integer"),
    ],
)
def test_inputs_are_validated_before_sending(world: World, call: object, message: str) -> None:
    c = world.client("outsider")
    nonce_before = world.w3.eth.get_transaction_count(addr(world, "outsider"))
    with pytest.raises(LedgerValueError, match=message) as info:
        call(c)  # type: ignore[operator]
    assert "\n" not in str(info.value)
    assert world.w3.eth.get_transaction_count(addr(world, "outsider")) == nonce_before


@pytest.mark.parametrize("amount", [-1, 1.5, "1 eth", True, 2**256])
def test_amounts_must_be_int_wei(world: World, amount: object) -> None:
    with pytest.raises(InvalidAmountError):
        world.client("outsider").deposit(amount)  # type: ignore[arg-type]


def test_lowercase_addresses_are_checksummed(world: World) -> None:
    c = world.client()
    assert c.credit(addr(world, "a").lower()) == c.credit(addr(world, "a"))
    assert WWWServeClient(world.w3, world.address.lower()).address == world.address


def test_state_changes_need_a_sender(world: World) -> None:
    with pytest.raises(LedgerValueError, match="TxSender"):
        world.client().leave()
