"""WWWServeClient against the real contract pair on py-evm (EthereumTesterProvider): every method once.

One chain per module (`ledger_world.make_world`: six registered, staked nodes serving one model);
each test runs from a snapshot of it, so tests are independent. Duels are played as nodes would:
the contract draws the challenger and the judges, the tests find out who and act as them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction

import pytest
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak
from ledger_world import (
    DEPOSIT_WEI,
    MODEL,
    PARAMS,
    ROLES,
    STAKE_WEI,
    World,
    make_world,
    pubkey_of,
)

from wwwserve.contracts import load_artifact
from wwwserve.ledger.client import (
    NO_REQUEST,
    Balances,
    CancelReason,
    DuelHashes,
    DuelOutcome,
    DuelRound,
    DuelStatus,
    NodeInfo,
    RewardReason,
    SlashReason,
    VerdictCounts,
    Vote,
    WWWServeClient,
    vote_commitment,
    voucher_digest,
    voucher_typed_data,
)
from wwwserve.ledger.errors import DeploymentNotFoundError, InvalidAmountError, LedgerValueError, UnknownDuelError
from wwwserve.ledger.model import Outcome, WWWServeModel
from wwwserve.ledger.params import WEI_PER_CREDIT, DeploymentParams
from wwwserve.ledger.tx import TxSender
from wwwserve.ledger.work import answer_hash, duel_id_of, inspect_commitment, work_digest

C = WEI_PER_CREDIT


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


@pytest.fixture(autouse=True)
def snapshot(world: World) -> Iterator[None]:
    tester = world.w3.provider.ethereum_tester  # type: ignore[attr-defined]
    snap = tester.take_snapshot()
    yield
    tester.revert_to_snapshot(snap)


# Every function in the merged ABI and the client method that covers it (a test below calls each one).
ABI_TO_CLIENT = {
    "register": "register",
    "updateNode": "update_node",
    "leave": "leave",
    "releaseSlot": "release_slot",
    "getModels": "get_models",
    "nodes": "node",
    "registeredOnce": "registered_once",
    "pubkeyOwner": "pubkey_owner",
    "activeNodeCount": "active_node_count",
    "servesModel": "serves_model",
    "modelId": "model_id",
    "modelCount": "model_count",
    "deposit": "deposit",
    "requestWithdrawal": "request_withdrawal",
    "cancelWithdrawal": "cancel_withdrawal",
    "withdraw": "withdraw",
    "stake": "stake",
    "requestUnstake": "request_unstake",
    "withdrawStake": "withdraw_stake",
    "syncWeight": "sync_weight",
    "credit": "credit",
    "pendingWithdrawal": "pending_withdrawal",
    "withdrawableAt": "withdrawable_at",
    "activeStake": "active_stake",
    "unbondingStake": "unbonding_stake",
    "unbondingEnd": "unbonding_end",
    "unbondingBlock": "unbonding_block",
    "reserved": "reserved",
    "reserve": "reserve",
    "verdicts": "verdicts",
    "voucherDigest": "voucher_digest_onchain",
    "claimVoucher": "claim_voucher",
    "claimed": "claimed",
    "workDigest": "work_digest_onchain",
    "inspectCommitment": "inspect_commitment_onchain",
    "duelIdOf": "duel_id_of_onchain",
    "openDuel": "open_duel",
    "drawChallenger": "draw_challenger",
    "challengerOf": "challenger_of",
    "answerDuel": "answer_duel",
    "publishRequest": "publish_request",
    "drawJudges": "draw_judges",
    "voteCommitment": "vote_commitment_onchain",
    "commitVote": "commit_vote",
    "commitmentOf": "commitment_of",
    "revealVote": "reveal_vote",
    "appeal": "appeal",
    "settleDuel": "settle_duel",
    "getDuel": "duel",
    "getJudges": "judges",
    "getVotes": "votes",
    "totalWeight": "total_weight",
    "leafWeight": "leaf_weight",
    "leafOwner": "leaf_owner",
    "leafCount": "leaf_count",
    "leafSince": "leaf_since",
    "freeLeafCount": "free_leaf_count",
    "EXTENSION": "extension",
    "paramsDigest": "params_digest",
    "DUEL_ESCROW": "duel_escrow_wei",
    "APPEAL_FEE": "appeal_fee_wei",
    "DUEL_SPAN_BLOCKS": "duel_span_blocks",
    "SLOT_COOLDOWN_BLOCKS": "slot_cooldown_blocks",
    "DOMAIN_SEPARATOR": "domain_separator",
    **{name: "params" for name in (
        "MIN_STAKE", "UNBONDING_PERIOD", "WITHDRAWAL_NOTICE", "K_JUDGES", "EPOCH_BLOCKS", "ANSWER_WINDOW",
        "COMMIT_WINDOW", "REVEAL_WINDOW", "APPEAL_WINDOW", "PUBLISH_WINDOW", "ATTESTATION_TTL", "DUEL_BOND",
        "DUELIST_FEE", "JUDGE_FEE", "JUDGE_PENALTY", "SILENT_PENALTY", "RESERVE_PAYOUT_BPS", "DEPTH",
        "REGISTRATION_BOND")},
}


def test_every_abi_function_has_a_client_method() -> None:
    abi_functions = {item["name"] for item in load_artifact().abi if item["type"] == "function"}
    assert abi_functions == set(ABI_TO_CLIENT)
    for method in ABI_TO_CLIENT.values():
        assert callable(getattr(WWWServeClient, method)), method


# ---------------------------------------------------------------------------------------------
# deployment


def test_deploy_and_params(world: World) -> None:
    c = world.client()
    c.ensure_deployed()
    assert world.deploy_block >= 2  # the extension went first
    assert c.extension() == world.extension != world.address
    assert c.params() == PARAMS
    assert c.duel_escrow_wei() == PARAMS.duel_escrow_wei == PARAMS.duelist_fee_wei + 3 * PARAMS.judge_fee_wei
    assert c.appeal_fee_wei() == PARAMS.appeal_fee_wei == 7 * PARAMS.judge_fee_wei
    assert c.duel_span_blocks() == PARAMS.duel_span_blocks
    assert c.slot_cooldown_blocks() == PARAMS.slot_cooldown_blocks == PARAMS.epoch_blocks + 2 * PARAMS.duel_span_blocks
    # the extension was built with the same parameters: that is what WWWServe's constructor checked
    assert c.params_digest() == WWWServeClient(world.w3, world.extension).params_digest()
    # the domain separator is EIP-712's, as eth-account computes it, and names WWWServe, not the extension
    message = encode_typed_data(
        full_message=voucher_typed_data(world.w3.eth.chain_id, world.address, world.address, world.address, 1)
    )
    assert c.domain_separator() == message.header


def test_ensure_deployed_rejects_other_addresses(world: World) -> None:
    with pytest.raises(DeploymentNotFoundError, match="no WWWServe contract"):
        WWWServeClient(world.w3, world.addr("outsider")).ensure_deployed()
    # the extension is a contract, but not WWWServe: nobody should point a client at it
    with pytest.raises(DeploymentNotFoundError, match="not this version of WWWServe"):
        WWWServeClient(world.w3, world.extension).ensure_deployed()


def test_deploy_and_connect_returns_a_bound_client(world: World) -> None:
    deployer = TxSender(world.w3, world.accounts["outsider"])
    client, block = WWWServeClient.deploy_and_connect(world.w3, deployer)
    assert block == world.w3.eth.block_number
    assert client.sender is deployer
    assert client.params() == DeploymentParams()
    assert client.address not in (world.address, world.extension)
    client.ensure_deployed()
    # two transactions: the extension one block earlier, from the same deployer
    ext_block = world.w3.eth.get_transaction_receipt(
        world.w3.eth.get_block(block - 1)["transactions"][0])
    assert ext_block["contractAddress"] == client.extension()


def test_deploy_contracts_reports_both_addresses(world: World) -> None:
    deployed = WWWServeClient.deploy_contracts(world.w3, TxSender(world.w3, world.accounts["outsider"]), PARAMS)
    assert deployed.extension_block_number == deployed.block_number - 1
    assert WWWServeClient(world.w3, deployed.address).extension() == deployed.extension


# ---------------------------------------------------------------------------------------------
# registry, credit, stake, vouchers


def test_registry_views(world: World) -> None:
    c = world.client()
    info = c.node(world.addr("a"))
    assert info == NodeInfo(
        address=world.addr("a"),
        pubkey=pubkey_of("a"),
        endpoint="http://a.example:8000",
        models=(MODEL, "model-a"),
        metadata="meta a",
        active=True,
        leaf=1,
    )
    assert c.node(world.addr("outsider")) is None
    assert c.get_models(world.addr("c1")) == (MODEL, "model-c1")
    assert c.registered_once(world.addr("a")) and not c.registered_once(world.addr("outsider"))
    assert c.pubkey_owner(pubkey_of("c2")) == world.addr("c2")
    assert c.pubkey_owner(b"\x07" * 32) is None
    assert c.active_node_count() == len(ROLES)
    assert c.leaf_count() == len(ROLES)
    assert c.leaf_owner(0) == world.addr("origin")
    assert c.leaf_owner(15) is None
    assert c.leaf_weight(2) == STAKE_WEI
    assert c.total_weight() == len(ROLES) * STAKE_WEI
    # models get ids in first-registration order; every node serves the shared one, each its own
    assert c.model_count() == 1 + len(ROLES)
    assert c.model_id(MODEL) == 1 and c.model_id("model-origin") == 2 and c.model_id("never") == 0
    assert c.serves_model(world.addr("c3"), MODEL) and c.serves_model(world.addr("c3"), "model-c3")
    assert not c.serves_model(world.addr("c3"), "model-c4")
    assert not c.serves_model(world.addr("outsider"), MODEL)


def test_registry_slot_lifecycle(world: World) -> None:
    """register sends the bond by itself; release_slot gives the slot back and the bond as credit."""
    c = world.client("outsider")
    me = world.addr("outsider")
    bond = PARAMS.registration_bond_wei
    assert c.registration_value_wei(me) == bond
    eth_before = world.w3.eth.get_balance(me)
    first = c.register(b"\x0e" * 32, "http://slot:1", ["m1"], "")
    assert c.registration_value_wei(me) == 0  # it holds a slot now
    paid_gas = first.gas_used * world.w3.eth.get_transaction_receipt(first.tx_hash)["effectiveGasPrice"]
    assert world.w3.eth.get_balance(me) == eth_before - bond - paid_gas
    leaf = first.event("NodeRegistered").args["leaf"]
    assert c.leaf_since(leaf) == first.block_number and c.leaf_owner(leaf) == me
    c.leave()
    again = c.register(b"\x0e" * 32, "http://slot:1", ["m1"], "")  # a returning node keeps its slot: no bond
    assert again.event("NodeRegistered").args["leaf"] == leaf
    c.leave()
    released = c.release_slot().event("SlotReleased").args
    assert released == {"node": me, "leaf": leaf, "bond": bond}
    assert c.credit(me) == bond and c.node(me) is None and not c.registered_once(me)
    assert c.free_leaf_count() == 1
    # inside the cooldown a new registration takes a new leaf (and a new bond)
    third = c.register(b"\x0e" * 32, "http://slot:1", ["m1"], "")
    assert third.event("NodeRegistered").args["leaf"] == len(ROLES) + 1 and c.free_leaf_count() == 1


def test_a_new_model_counts_from_the_next_epoch(world: World) -> None:
    c = world.client("c1")
    c.update_node(pubkey_of("c1"), "http://c1.example:8000", [MODEL, "fresh"], "")
    assert not c.serves_model(world.addr("c1"), "fresh")  # challenger draws of this epoch never see it
    world.mine(PARAMS.epoch_blocks)
    assert c.serves_model(world.addr("c1"), "fresh")


def test_register_emits_event_and_update_node(world: World) -> None:
    c = world.client("outsider")
    c.deposit(PARAMS.min_stake_wei)
    result = c.register("0x" + "ab" * 32, "http://new:1", ["m1"], "")
    event = result.event("NodeRegistered")
    assert event.args == {
        "node": world.addr("outsider"),
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
    node = c.node(world.addr("outsider"))
    assert node is not None and node.pubkey == b"\xcd" * 32 and node.models == ("m1", "m2")
    assert c.pubkey_owner(b"\xab" * 32) is None


def test_leave(world: World) -> None:
    c = world.client("c3")
    result = c.leave()
    assert [e.name for e in result.events] == ["NodeLeft"]
    node = c.node(world.addr("c3"))
    assert node is not None and not node.active
    assert c.active_node_count() == len(ROLES) - 1
    assert c.total_weight() == (len(ROLES) - 1) * STAKE_WEI


def test_credit_lifecycle(world: World) -> None:
    c = world.client("outsider")
    me = world.addr("outsider")
    assert c.deposit(5 * C).event("CreditDeposited").args == {"account": me, "amount": 5 * C}
    requested = c.request_withdrawal(2 * C).event("WithdrawalRequested")
    assert requested.args["amount"] == 2 * C
    assert c.pending_withdrawal(me) == 2 * C
    assert c.withdrawable_at(me) == requested.args["availableAt"]
    assert c.cancel_withdrawal().event("WithdrawalCancelled").args["amount"] == 2 * C
    assert c.credit(me) == 5 * C
    second = c.request_withdrawal(3 * C).event("WithdrawalRequested")
    world.time_travel(PARAMS.withdrawal_notice_s + 1)
    eth_before = world.w3.eth.get_balance(me)
    result = c.withdraw()
    assert result.event("CreditWithdrawn").args["amount"] == 3 * C
    assert c.balances(me) == Balances(
        credit_wei=2 * C,
        pending_withdrawal_wei=0,
        withdrawable_at_s=second.args["availableAt"],
        active_stake_wei=0,
        unbonding_stake_wei=0,
        unbonding_end_s=0,
        unbonding_block=0,
        bonded_wei=0,
    )
    # the ETH came back, less the gas of the withdraw transaction
    gas_paid = result.gas_used * world.w3.eth.get_transaction_receipt(result.tx_hash)["effectiveGasPrice"]
    assert world.w3.eth.get_balance(me) == eth_before + 3 * C - gas_paid


def test_stake_lifecycle(world: World) -> None:
    c = world.client("c2")
    me = world.addr("c2")
    assert c.stake(C).event("Staked").args["amount"] == C
    unstake = c.request_unstake(STAKE_WEI)
    b = c.balances(me)
    assert (b.active_stake_wei, b.unbonding_stake_wei, b.bonded_wei) == (C, STAKE_WEI, 0)
    assert b.unbonding_end_s == unstake.event("UnstakeRequested").args["unbondingEnd"] == c.unbonding_end(me)
    assert b.unbonding_block == unstake.block_number == c.unbonding_block(me)
    assert b.stake_wei == STAKE_WEI + C and b.free_stake_wei == b.stake_wei
    assert b.total_wei == DEPOSIT_WEI
    # unbonding lasts the period in seconds AND the longest a duel can stay open, in blocks
    world.time_travel(PARAMS.unbonding_period_s + 1)
    world.mine_to(unstake.block_number + PARAMS.duel_span_blocks)
    assert c.withdraw_stake().event("StakeWithdrawn").args["amount"] == STAKE_WEI
    assert c.credit(me) == DEPOSIT_WEI - C
    # below the minimum stake the node is no longer drawable
    node = c.node(me)
    assert node is not None and c.leaf_weight(node.leaf) == 0


def test_vouchers(world: World) -> None:
    origin = world.accounts["origin"]
    executor = world.addr("a")
    c = world.client("c1")  # anyone may submit a voucher; the money goes to the executor
    chain_id = world.w3.eth.chain_id
    digest = c.voucher_digest(origin.address, executor, 7 * C)
    assert digest == c.voucher_digest_onchain(origin.address, executor, 7 * C)
    assert digest == voucher_digest(chain_id, world.address, origin.address, executor, 7 * C)
    signature = c.sign_voucher(origin, executor, 7 * C)
    assert len(signature) == 65
    assert c.recover_voucher_signer(origin.address, executor, 7 * C, signature) == origin.address
    credit_before = c.credit(executor)
    claimed = c.claim_voucher(origin.address, executor, 7 * C, signature).event("VoucherClaimed")
    assert claimed.args == {"origin": origin.address, "executor": executor, "cumulativeAmount": 7 * C, "paid": 7 * C}
    assert c.claimed(origin.address, executor) == 7 * C
    assert c.credit(executor) == credit_before + 7 * C
    # cumulative: the next voucher pays only the difference
    later = c.sign_voucher(origin, executor, 10 * C)
    assert c.claim_voucher(origin.address, executor, 10 * C, "0x" + later.hex()).event(
        "VoucherClaimed"
    ).args["paid"] == 3 * C


# ---------------------------------------------------------------------------------------------
# work attestations


def test_work_encodings_match_the_contract(world: World) -> None:
    c = world.client()
    work, salt, _ = world.work("origin", "a", "encodings")
    assert c.work_digest(work) == c.work_digest_onchain(work)
    assert c.work_digest(work) == work_digest(world.w3.eth.chain_id, world.address, work)
    assert c.inspect_commitment_onchain(work.request_id, True, salt) == work.inspect
    refused = inspect_commitment(work.request_id, False, salt)
    assert c.inspect_commitment_onchain(work.request_id, False, salt) == refused
    duel_id = c.duel_id_of(work.origin, work.request_id)
    assert duel_id == c.duel_id_of_onchain(work.origin, work.request_id) == duel_id_of(work.origin, work.request_id)
    assert 0 <= duel_id < 2**63


# ---------------------------------------------------------------------------------------------
# duels


def test_duel_full_lifecycle(world: World) -> None:
    c = world.client()
    a = world.addr("a")
    duel = world.open_duel("lifecycle")
    assert duel.duel_id == c.duel_id_of(world.addr("origin"), duel.work.request_id)
    opened = duel.opened.event("DuelOpened").args
    assert opened["bond"] == PARAMS.duel_bond_wei and opened["escrow"] == PARAMS.duel_escrow_wei
    info = c.duel(duel.duel_id)
    assert info.status is DuelStatus.AWAITING_ANSWER and info.outcome is DuelOutcome.NONE
    assert (info.origin, info.a, info.b, info.round) == (world.addr("origin"), a, None, 0)
    assert info.seed_block % PARAMS.epoch_blocks == 0 and info.seed_block > duel.opened.block_number
    assert info.answer_deadline_block == info.deadline == info.seed_block + PARAMS.answer_window_blocks
    assert info.commit_end_block is None and info.judges == () and info.rounds == ()
    assert info.bond_wei == c.reserved(a) == c.balances(a).bonded_wei == PARAMS.duel_bond_wei
    assert c.duel_hashes(duel.duel_id) == DuelHashes(duel.work.request_hash, duel.work.answer_hash, None)
    assert c.challenger_of(duel.duel_id) is None  # the seed block is not mined yet

    answered = world.answer(duel.duel_id)
    b = answered.event("ChallengerDrawn").args["b"]
    assert answered.duel_id == duel.duel_id
    assert b not in (world.addr("origin"), a) and c.challenger_of(duel.duel_id) == b
    drawn = answered.event("JudgesDrawn").args
    info = c.duel(duel.duel_id)
    assert info.status is DuelStatus.JUDGING and (info.b, info.round) == (b, 1)
    assert info.judges == drawn["seats"] == c.judges(duel.duel_id, 1)
    # seats exclude nobody: any registered node may judge, the origin and both duelists included
    assert len(info.judges) == PARAMS.k_judges and set(info.judges) <= {world.addr(r) for r in ROLES}
    assert info.commit_end_block == drawn["commitEnd"] and info.reveal_end_block == drawn["revealEnd"]
    assert info.appeal_end_block == drawn["revealEnd"] + PARAMS.appeal_window_blocks
    assert info.rounds == (DuelRound(1, info.judges, (Vote.NONE,) * PARAMS.k_judges, drawn["commitEnd"],
                                     drawn["revealEnd"]),)
    assert c.reserved(b) == info.bond_wei  # equal bonds
    assert c.duel_hashes(duel.duel_id).answer_b_hash == answer_hash("answer of B")
    # the same state with what the events add (the contract keeps no hashes in storage)
    assert info.request_hash is None and c.duel_with_hashes(duel.duel_id) == replace(
        info, request_hash=duel.work.request_hash, answer_a_hash=duel.work.answer_hash,
        answer_b_hash=answer_hash("answer of B"))

    # one judge commits: its 16-byte commitment is stored, bound to the round
    j0 = info.judges[0]
    jc = world.client(j0)
    commitment = jc.vote_commitment(duel.duel_id, 1, j0, Vote.B, world.salt(duel.duel_id, j0))
    assert commitment == jc.vote_commitment_onchain(duel.duel_id, 1, j0, Vote.B, world.salt(duel.duel_id, j0))
    assert commitment == vote_commitment(world.w3.eth.chain_id, world.address, duel.duel_id, 1, j0, Vote.B,
                                         world.salt(duel.duel_id, j0))
    assert commitment != jc.vote_commitment(duel.duel_id, 2, j0, Vote.B, world.salt(duel.duel_id, j0))
    assert c.commitment_of(duel.duel_id, 1, j0) == bytes(16)
    jc.commit_vote(duel.duel_id, commitment)
    assert c.commitment_of(duel.duel_id, 1, j0) == commitment[:16]
    assert c.commitment_of(duel.duel_id, 2, j0) == bytes(16)

    # the rest commit, everybody reveals B
    world.mine_to(world.w3.eth.block_number)
    others = [j for j in dict.fromkeys(info.judges) if j != j0]
    for j in others:
        world.client(j).commit_vote(duel.duel_id, world.client(j).vote_commitment(
            duel.duel_id, 1, j, Vote.B, world.salt(duel.duel_id, j)))
    world.mine_to(info.commit_end_block)
    for j in dict.fromkeys(info.judges):
        revealed = world.client(j).reveal_vote(duel.duel_id, Vote.B, world.salt(duel.duel_id, j))
        assert revealed.event("VoteRevealed").args["round"] == 1
    assert c.votes(duel.duel_id, 1) == (Vote.B,) * PARAMS.k_judges
    assert c.duel_settlement(duel.duel_id) is None

    stake_a, credit_b = c.active_stake(a), c.credit(b)
    assert c.verdicts() == VerdictCounts(a_won=0, b_won=0)
    settled = world.settle_after_appeal_window(duel.duel_id)
    assert settled.event("DuelSettled").args["outcome"] == DuelOutcome.B_WON
    slash = settled.event("StakeSlashed").args
    assert (slash["node"], slash["amount"], SlashReason(slash["reason"])) == (a, info.bond_wei, SlashReason.LOST_DUEL)
    paid = {(e.args["account"], RewardReason(e.args["reason"])): e.args["amount"]
            for e in settled.events_named("DuelRewardPaid")}
    assert paid[(b, RewardReason.STAKE_WON)] == info.bond_wei + PARAMS.duelist_fee_wei  # one payment
    # B (and A, who voted B too) may hold seats: what a seat earns goes to credit, stake stays
    judge_pay_b = sum(e.args["amount"] for e in settled.events_named("DuelRewardPaid")
                      if e.args["account"] == b and RewardReason(e.args["reason"]) is RewardReason.JUDGE_FEE)
    assert all(paid[(j, RewardReason.JUDGE_FEE)] >= PARAMS.judge_fee_wei for j in info.judges)
    final = c.duel(duel.duel_id)
    assert final.status is DuelStatus.SETTLED and final.outcome is DuelOutcome.B_WON
    assert final.commit_end_block is None and final.votes == (Vote.B,) * PARAMS.k_judges
    settlement = c.duel_settlement(duel.duel_id)
    assert settlement is not None and settlement.tx_hash == settled.tx_hash
    assert (settlement.outcome, settlement.round, settlement.votes_a, settlement.votes_b,
            settlement.stake_moved_wei) == (DuelOutcome.B_WON, 1, 0, PARAMS.k_judges, info.bond_wei)
    assert c.active_stake(a) == stake_a - info.bond_wei
    assert c.credit(b) == credit_b + info.bond_wei + PARAMS.duelist_fee_wei + judge_pay_b
    # the verdict is counted: the next B win pays coherent seats 3/4, the next A win 3/2
    assert c.verdicts() == VerdictCounts(a_won=0, b_won=1)
    assert c.verdicts().pay_scale(DuelOutcome.B_WON) == (3, 4) and c.verdicts().pay_scale(DuelOutcome.A_WON) == (3, 2)
    assert c.reserved(a) == c.reserved(b) == 0
    assert c.duel_ids(world.deploy_block) == [duel.duel_id]
    assert c.duel_cancel_reason(duel.duel_id) is None

    # slashes leave the draw tree alone until someone syncs the weight
    leaf = c.node(a).leaf  # type: ignore[union-attr]
    assert c.leaf_weight(leaf) == stake_a
    synced = world.client("c4").sync_weight(a)
    assert synced.events == () and c.leaf_weight(leaf) == stake_a - info.bond_wei


def test_appeal_round(world: World) -> None:
    c = world.client()
    duel = world.open_duel("appeal")
    world.answer(duel.duel_id)
    world.vote(duel.duel_id, 1, lambda j: Vote.A)  # round 1: A wins, so B may appeal
    b = c.duel(duel.duel_id).b
    assert b is not None
    info = c.duel(duel.duel_id)
    assert info.reveal_end_block is not None
    world.mine_to(info.reveal_end_block)
    credit_b = c.credit(b)
    appealed = world.client(b).appeal(duel.duel_id)
    event = appealed.event("DuelAppealed").args
    assert (event["appellant"], event["deposit"]) == (b, PARAMS.appeal_fee_wei)
    assert c.credit(b) == credit_b - PARAMS.appeal_fee_wei
    info = c.duel(duel.duel_id)
    assert info.round == 2 and info.status is DuelStatus.JUDGING
    assert info.seed_block == event["seedBlock"] and info.commit_end_block == event["commitEnd"]
    assert info.judges == () and info.appeal_end_block is None  # round 2 is final and not drawn yet
    assert len(info.judges_of(1)) == PARAMS.k_judges and info.votes_of(1) == (Vote.A,) * PARAMS.k_judges

    world.mine_to(info.seed_block)
    drawn = world.client("origin").draw_judges(duel.duel_id).event("JudgesDrawn").args
    seats = c.judges(duel.duel_id, 2)
    assert drawn["round"] == 2 and drawn["seats"] == seats and len(seats) == 2 * PARAMS.k_judges + 1
    world.vote(duel.duel_id, 2, lambda j: Vote.B, salt_tag="round 2")
    info = c.duel(duel.duel_id)
    assert info.votes == info.votes_of(2) == (Vote.B,) * len(seats)
    assert [r.round for r in info.rounds] == [1, 2]
    # every seat of the final round revealed: settle without waiting for the reveal window
    settled = world.client("c4").settle_duel(duel.duel_id)
    assert settled.event("DuelSettled").args["round"] == 2
    reasons = {RewardReason(e.args["reason"]) for e in settled.events_named("DuelRewardPaid") if e.args["account"] == b}
    assert RewardReason.APPEAL_REFUND in reasons and RewardReason.STAKE_WON in reasons
    assert c.duel(duel.duel_id).outcome is DuelOutcome.B_WON
    assert c.duel_settlement(duel.duel_id).round == 2  # type: ignore[union-attr]


def test_no_show_challenger_is_cancelled_and_slashed(world: World) -> None:
    c = world.client()
    duel = world.open_duel("no-show")
    b = world.challenger(duel.duel_id)
    drawn = world.client("origin").draw_challenger(duel.duel_id).event("ChallengerDrawn").args
    assert drawn["b"] == b and c.duel(duel.duel_id).b == b
    info = c.duel(duel.duel_id)
    assert info.answer_deadline_block is not None
    world.mine_to(info.answer_deadline_block)
    stake_b, credit_origin = c.active_stake(b), c.credit(world.addr("origin"))
    result = world.client("c4").settle_duel(duel.duel_id)
    assert CancelReason(result.event("DuelCancelled").args["reason"]) is CancelReason.NO_ANSWER
    assert SlashReason(result.event("StakeSlashed").args["reason"]) is SlashReason.NO_ANSWER
    assert c.duel(duel.duel_id).status is DuelStatus.CANCELLED
    assert c.duel_cancel_reason(duel.duel_id) is CancelReason.NO_ANSWER
    assert c.active_stake(b) == stake_b - info.bond_wei and c.reserve() == info.bond_wei
    assert c.credit(world.addr("origin")) == credit_origin + PARAMS.duel_escrow_wei
    assert c.reserved(world.addr("a")) == 0


def test_missing_request_is_published_then_answered(world: World) -> None:
    c = world.client()
    duel = world.open_duel("withheld")
    missing = world.no_request(duel.duel_id)
    assert missing.event("RequestMissing").args["b"] == c.duel(duel.duel_id).b
    info = c.duel(duel.duel_id)
    assert info.status is DuelStatus.AWAITING_REQUEST
    assert info.publish_deadline_block == missing.event("RequestMissing").args["publishDeadline"]
    assert c.published_request(duel.duel_id) is None
    published = world.client("c4").publish_request(duel.duel_id, duel.work, duel.salt, duel.request)
    assert published.event("RequestPublished").args["request"] == duel.request
    assert c.published_request(duel.duel_id, world.deploy_block) == duel.request
    info = c.duel(duel.duel_id)
    assert info.status is DuelStatus.AWAITING_ANSWER and info.seed_block == published.event(
        "RequestPublished").args["seedBlock"]
    answered = world.answer(duel.duel_id)
    assert "ChallengerDrawn" not in [e.name for e in answered.events]  # B stays the one drawn
    assert c.duel(duel.duel_id).status is DuelStatus.JUDGING


# ---------------------------------------------------------------------------------------------
# validation


def test_open_duel_checks_the_attestation_before_sending(world: World) -> None:
    work, salt, _ = world.work("origin", "a", "checks")
    origin = world.client("origin")
    nonce = world.w3.eth.get_transaction_count(world.addr("origin"))
    with pytest.raises(LedgerValueError, match="inspect_salt does not open"):
        origin.open_duel(work, keccak(text="another salt"))
    forged = world.accounts["c1"].unsafe_sign_hash(work_digest(world.w3.eth.chain_id, world.address, work))
    with pytest.raises(LedgerValueError, match="not signed by its executor"):
        origin.open_duel(replace(work, signature=bytes(forged.signature)), salt)
    with pytest.raises(LedgerValueError, match="only the work's origin"):
        world.client("c1").open_duel(work, salt)
    with pytest.raises(LedgerValueError, match="work signature must be 65 bytes"):
        origin.open_duel(replace(work, signature=b""), salt)
    with pytest.raises(LedgerValueError, match="cannot sign work attested for"):
        world.client("c1").sign_work(world.accounts["c1"], work)
    assert world.w3.eth.get_transaction_count(world.addr("origin")) == nonce


def test_publish_request_checks_the_request_before_sending(world: World) -> None:
    duel = world.open_duel("publish checks")
    other, other_salt, _ = world.work("origin", "a", "another request")
    c = world.client("c4")
    with pytest.raises(LedgerValueError, match=r"does not hash to work\.request_hash"):
        c.publish_request(duel.duel_id, duel.work, duel.salt, duel.request + b" ")
    with pytest.raises(LedgerValueError, match="not the work of duel"):
        c.publish_request(duel.duel_id, other, other_salt, duel.request)
    with pytest.raises(LedgerValueError, match="at most 65536"):
        c.publish_request(duel.duel_id, duel.work, duel.salt, b"x" * 65537)


def test_unknown_duel_views(world: World) -> None:
    c = world.client()
    with pytest.raises(UnknownDuelError):
        c.duel(12345)
    with pytest.raises(UnknownDuelError):
        c.duel_hashes(12345)
    assert c.judges(12345, 1) == () and c.votes(12345, 2) == ()
    assert c.duel_settlement(12345) is None and c.published_request(12345) is None


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
        (lambda c: c.open_duel("not work", b"\x00" * 32), "wwwserve.ledger.work.WorkAttestation"),
        # a mixed-case address with a broken checksum is a typo, not an address
        (
            lambda c: c.claimed("0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x" + "00" * 20),
            "origin must be a 20-byte hex address with a valid checksum",
        ),
        (lambda c: c.claim_voucher("0x" + "11" * 20, "0x" + "22" * 20, 1, b"\x00" * 64), "65 bytes"),
        (lambda c: c.reveal_vote(1, 7, b"\x00" * 32), "vote must be one of"),
        (lambda c: c.reveal_vote(1, Vote.NONE, b"\x00" * 32), "NONE .* cannot be cast"),
        (lambda c: c.answer_duel(1, b"\x00" * 31), "answer_hash must be exactly 32 bytes"),
        (lambda c: c.draw_judges(-1), "duel_id must be an integer"),
        (lambda c: c.settle_duel(2**63), r"duel_id must be an integer in \[0, 2\*\*63\)"),
        (lambda c: c.judges(1, 3), "round must be 1 .* or 2"),
        (lambda c: c.commitment_of(1, 0, "0x" + "11" * 20), "round must be 1"),
        (lambda c: c.vote_commitment(1, True, "0x" + "11" * 20, 1, b"\x00" * 32), "round must be 1"),
        (lambda c: c.sync_weight("nobody"), "node must be a 20-byte hex address"),
        (lambda c: c.serves_model("0x" + "11" * 20, "m" * 65), "model is 65 bytes"),
    ],
)
def test_inputs_are_validated_before_sending(world: World, call: object, message: str) -> None:
    c = world.client("outsider")
    nonce_before = world.w3.eth.get_transaction_count(world.addr("outsider"))
    with pytest.raises(LedgerValueError, match=message) as info:
        call(c)  # type: ignore[operator]
    assert "\n" not in str(info.value)
    assert world.w3.eth.get_transaction_count(world.addr("outsider")) == nonce_before


@pytest.mark.parametrize("counts", [(0, 0), (0, 1), (1, 0), (3, 5), (0, 7), (7, 0), (500, 20), (1, 1022)])
def test_verdict_pay_scale_is_the_models_weight(counts: tuple[int, int]) -> None:
    model = WWWServeModel(PARAMS, chain_id=1, address="0x" + "11" * 20)
    model.verdicts_a, model.verdicts_b = counts
    verdicts = VerdictCounts(*counts)
    for outcome in DuelOutcome:
        assert verdicts.pay_scale(outcome) == model.weight(Outcome(int(outcome))), outcome
        num, den = verdicts.pay_scale(outcome)
        assert Fraction(1, 4) <= Fraction(num, den) <= 4


def test_no_request_is_32_zero_bytes() -> None:
    assert bytes(32) == NO_REQUEST


@pytest.mark.parametrize("amount", [-1, 1.5, "1 eth", True, 2**256])
def test_amounts_must_be_int_wei(world: World, amount: object) -> None:
    with pytest.raises(InvalidAmountError):
        world.client("outsider").deposit(amount)  # type: ignore[arg-type]


def test_lowercase_addresses_are_checksummed(world: World) -> None:
    c = world.client()
    assert c.credit(world.addr("a").lower()) == c.credit(world.addr("a"))
    assert WWWServeClient(world.w3, world.address.lower()).address == world.address


def test_state_changes_need_a_sender(world: World) -> None:
    with pytest.raises(LedgerValueError, match="TxSender"):
        world.client().leave()
