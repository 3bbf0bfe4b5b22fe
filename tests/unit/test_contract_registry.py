"""WWWServe deployment and node registry: constructor checks, the extension's parameters digest and
its refusal of direct calls, identical storage layouts, register / update / leave / re-register, key
ownership, and the epochs in which a node counts as serving a model."""

from __future__ import annotations

from typing import Any

import boa
import pytest
from contract_fixtures import (  # noqa: F401  (fixtures register under their own names)
    MIN_STAKE,
    MODEL,
    TEST_PARAMS,
    Deployment,
    block_number,
    contract_fixture,
    deploy,
    deploy_pair,
    deploy_raw,
    deployers,
    deployment_fixture,
    fresh_fixture,
    logs_named,
    make_node,
    mine,
    module_deployment_fixture,
    new_account,
    next_epoch,
    pubkey_of,
    register,
    stake,
    with_params,
)
from eth_abi import encode
from eth_utils import keccak
from vyper.compiler.output import build_abi_output

from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.work import model_hash

# constructor argument positions (DeploymentParams field order)
(MIN_STAKE_ARG, UNBONDING_ARG, NOTICE_ARG, K_ARG, EPOCH_ARG, ANSWER_ARG, COMMIT_ARG, REVEAL_ARG, APPEAL_ARG,
 PUBLISH_ARG, TTL_ARG, BOND_ARG, DUELIST_FEE_ARG, JUDGE_FEE_ARG, PENALTY_ARG, SILENT_ARG, BPS_ARG,
 DEPTH_ARG) = range(18)
GWEI = 10**9


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({MIN_STAKE_ARG: 0}, "Params: min_stake must be > 0"),
        ({K_ARG: 0}, "Params: k_judges out of range"),
        ({K_ARG: 4}, "Params: k_judges out of range"),
        ({EPOCH_ARG: 1, ANSWER_ARG: 1, COMMIT_ARG: 1}, "Params: epoch_blocks out of range"),
        ({EPOCH_ARG: 251}, "Params: epoch_blocks out of range"),
        ({ANSWER_ARG: 0}, "Params: answer_window out of range"),
        ({ANSWER_ARG: TEST_PARAMS.epoch_blocks}, "Params: answer_window out of range"),
        # the window must end with a block to spare inside its epoch (settling a no-show there draws B)
        ({ANSWER_ARG: TEST_PARAMS.epoch_blocks - 1}, "Params: answer_window out of range"),
        ({EPOCH_ARG: 2, ANSWER_ARG: 1, COMMIT_ARG: 1}, "Params: answer_window out of range"),
        ({COMMIT_ARG: 0}, "Params: commit_window out of range"),
        ({COMMIT_ARG: TEST_PARAMS.epoch_blocks}, "Params: commit_window out of range"),
        ({REVEAL_ARG: 0}, "Params: windows must be >= 1"),
        ({APPEAL_ARG: 0}, "Params: windows must be >= 1"),
        ({PUBLISH_ARG: 0}, "Params: windows must be >= 1"),
        ({TTL_ARG: 0}, "Params: attestation_ttl out of range"),
        ({TTL_ARG: TEST_PARAMS.unbonding_period_s + 1}, "Params: attestation_ttl out of range"),
        ({BOND_ARG: 0}, "Params: bad duel_bond"),
        ({BOND_ARG: 20 * GWEI + 1}, "Params: bad duel_bond"),
        ({BOND_ARG: (1 << 40) * GWEI, MIN_STAKE_ARG: (1 << 41) * GWEI}, "Params: bad duel_bond"),
        ({BOND_ARG: TEST_PARAMS.min_stake_wei + GWEI}, "Params: duel_bond above min_stake"),
        ({BPS_ARG: 10_001}, "Params: bps > 10000"),
        ({DEPTH_ARG: 0}, "Sortition: depth out of range"),
        ({DEPTH_ARG: 21}, "Sortition: depth out of range"),
    ],
)
def test_constructor_rejects_bad_params(fresh: None, changes: dict[int, int], reason: str) -> None:
    args = TEST_PARAMS.constructor_args()
    for position, value in changes.items():
        args[position] = value
    with boa.reverts(reason):
        deploy_raw(args)


def test_constructor_accepts_the_edges(fresh: None) -> None:
    p = with_params(k_judges=1, epoch_blocks=250, answer_window_blocks=248, commit_window_blocks=1,
                    attestation_ttl_s=TEST_PARAMS.unbonding_period_s, duel_bond_wei=TEST_PARAMS.min_stake_wei,
                    reserve_payout_bps=10_000, tree_depth=20)
    c = deploy(p)
    assert (c.K_JUDGES(), c.EPOCH_BLOCKS(), c.DEPTH(), c.DUEL_BOND()) == (1, 250, 20, p.min_stake_wei)
    assert c.ANSWER_WINDOW() == 248
    # the smallest epoch that leaves room for an answer window
    small = with_params(epoch_blocks=3, answer_window_blocks=1, commit_window_blocks=2)
    assert deploy(small).ANSWER_WINDOW() == 1


def params_digest(p: DeploymentParams) -> bytes:
    """keccak256 of the parameters abi-encoded in groups of six, as the contract hashes them."""
    args = p.constructor_args()
    return bytes(keccak(b"".join(encode(["uint256"] * len(args[i:i + 6]), args[i:i + 6]) for i in (0, 6, 12, 18))))


def test_wwwserve_checks_its_extension_was_built_with_the_same_params(fresh: None) -> None:
    with boa.reverts("Params: extension built with other parameters"):
        deploy_pair(TEST_PARAMS, ext_params=with_params(judge_fee_wei=TEST_PARAMS.judge_fee_wei + 1))
    with boa.reverts("Params: extension built with other parameters"):
        deploy_pair(TEST_PARAMS, ext_params=with_params(tree_depth=TEST_PARAMS.tree_depth - 1))
    _, core_d = deployers()
    with boa.reverts("Params: extension is not a contract"):
        core_d.deploy(*TEST_PARAMS.constructor_args(), new_account("eoa").address)
    dep = deploy_pair()
    assert dep.c.paramsDigest() == dep.ext.paramsDigest() == params_digest(TEST_PARAMS)
    assert dep.c.EXTENSION() == dep.ext.address


def test_constructor_sets_immutables(dep: Deployment) -> None:
    c, p = dep.c, dep.params
    getters = {
        "MIN_STAKE": p.min_stake_wei, "UNBONDING_PERIOD": p.unbonding_period_s,
        "WITHDRAWAL_NOTICE": p.withdrawal_notice_s, "K_JUDGES": p.k_judges, "EPOCH_BLOCKS": p.epoch_blocks,
        "ANSWER_WINDOW": p.answer_window_blocks, "COMMIT_WINDOW": p.commit_window_blocks,
        "REVEAL_WINDOW": p.reveal_window_blocks, "APPEAL_WINDOW": p.appeal_window_blocks,
        "PUBLISH_WINDOW": p.publish_window_blocks, "ATTESTATION_TTL": p.attestation_ttl_s,
        "DUEL_BOND": p.duel_bond_wei, "DUELIST_FEE": p.duelist_fee_wei, "JUDGE_FEE": p.judge_fee_wei,
        "JUDGE_PENALTY": p.judge_penalty_wei, "SILENT_PENALTY": p.silent_penalty_wei,
        "RESERVE_PAYOUT_BPS": p.reserve_payout_bps, "DEPTH": p.tree_depth,
        "DUEL_ESCROW": p.duel_escrow_wei, "APPEAL_FEE": p.appeal_fee_wei, "DUEL_SPAN_BLOCKS": p.duel_span_blocks,
        "REGISTRATION_BOND": p.registration_bond_wei, "SLOT_COOLDOWN_BLOCKS": p.slot_cooldown_blocks,
    }
    for name, want in getters.items():
        assert getattr(c, name)() == want, name
        assert getattr(dep.ext, name)() == want, name  # the extension holds the same immutables
    assert p.duel_span_blocks == 3 * 8 + 2 * 5 + 6 + 2 * 5 + 2 * 4 + 3
    assert c.totalWeight() == 0 and c.leafCount() == 0 and c.activeNodeCount() == 0 and c.reserve() == 0


# every function the extension runs, with arguments; called at the extension's own address, each
# refuses: it would otherwise hold state and value of its own that WWWServe never sees
EXTENSION_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("register", (b"\x01" * 32, "http://x", ["m"], "")),
    ("updateNode", (b"\x01" * 32, "http://x", ["m"], "")),
    ("leave", ()),
    ("releaseSlot", ()),
    ("deposit", ()),
    ("requestWithdrawal", (1,)),
    ("cancelWithdrawal", ()),
    ("withdraw", ()),
    ("stake", (1,)),
    ("requestUnstake", (1,)),
    ("withdrawStake", ()),
    ("syncWeight", ("0x" + "11" * 20,)),
    ("appeal", (1,)),
    ("claimVoucher", ("0x" + "11" * 20, "0x" + "22" * 20, 1, b"\x00" * 65)),
    ("publishRequest", (1, b"\x00" * 32, b"\x00" * 32, b"\x00" * 32, b"\x00" * 32, b"\x00" * 32, 0, b"", b"")),
]


def test_extension_refuses_direct_calls(dep: Deployment) -> None:
    ext = dep.ext
    for name, args in EXTENSION_CALLS:
        with boa.reverts("WWWServe: call the WWWServe contract"):
            getattr(ext, name)(*args)
    assert boa.env.get_balance(ext.address) == 0
    # the same functions through WWWServe run (on WWWServe's storage)
    user = new_account("u").address
    with boa.env.prank(user):
        dep.c.deposit(value=5)
    assert dep.c.credit(user) == 5 and ext.credit(user) == 0


def test_every_extension_answer_fits_the_forwarding_buffer() -> None:
    """WWWServe forwards the extension's answer through a fixed buffer (EXTENSION_RETURN_BYTES): a longer
    answer would come back cut short, so each function's longest ABI-encoded answer must fit it."""
    ext_d, main_d = deployers()
    buffer = int(main_d.compiler_data.annotated_vyper_module._metadata["type"]
                 .variables["EXTENSION_RETURN_BYTES"].decl_node.value.value)
    ext_type = ext_d.compiler_data.annotated_vyper_module._metadata["type"]
    longest = max((fn.return_type.abi_type.size_bound(), fn.name) for fn in ext_type.exposed_functions
                  if fn.return_type is not None)
    assert longest == (3616, "nodes") and longest[0] <= buffer == 4096


def test_the_longest_registry_entry_comes_back_whole_through_wwwserve(c: Any) -> None:
    node = new_account("big").address
    endpoint, models, metadata = "h" * 256, [f"{i:02d}" + "m" * 62 for i in range(16)], "x" * 1024
    with boa.env.prank(node):
        c.register(pubkey_of("big"), endpoint, models, metadata, value=TEST_PARAMS.registration_bond_wei)
    rec = c.nodes(node)
    assert (rec.endpoint, list(rec.models), rec.metadata) == (endpoint, models, metadata)
    assert list(c.getModels(node)) == models


def test_every_state_changing_extension_function_is_checked() -> None:
    """The list above holds every non-view function of the extension's ABI."""
    abi = build_abi_output(deployers()[0].compiler_data)
    mutating = {f["name"] for f in abi if f["type"] == "function" and f["stateMutability"] != "view"
                and f["stateMutability"] != "pure"}
    assert mutating == {name for name, _ in EXTENSION_CALLS}


def test_storage_layouts_are_identical(dep: Deployment) -> None:
    core_layout = dep.core.compiler_data.storage_layout["storage_layout"]
    ext_layout = dep.ext.compiler_data.storage_layout["storage_layout"]
    assert core_layout == ext_layout
    shared = set(core_layout["core"])
    assert {"accounts", "duelInfo", "duelPanel", "commitments", "reserve", "credit", "nodes"} <= shared


def test_register_stores_node_and_emits(c: Any) -> None:
    node = new_account("n")
    with boa.env.prank(node.address):
        c.register(pubkey_of("n"), "http://n.example:8000", ["llama", "qwen"], '{"gpu":"H100"}',
                   value=TEST_PARAMS.registration_bond_wei)
    (ev,) = logs_named(c, "NodeRegistered")
    assert (ev.node, ev.pubkey, ev.endpoint, list(ev.models), ev.metadata, ev.leaf) == (
        node.address, pubkey_of("n"), "http://n.example:8000", ["llama", "qwen"], '{"gpu":"H100"}', 0)
    rec = c.nodes(node.address)
    assert (rec.pubkey, rec.endpoint, list(rec.models), rec.metadata, rec.active, rec.leaf) == (
        pubkey_of("n"), "http://n.example:8000", ["llama", "qwen"], '{"gpu":"H100"}', True, 0)
    assert list(c.getModels(node.address)) == ["llama", "qwen"]
    assert c.registeredOnce(node.address)
    assert c.pubkeyOwner(pubkey_of("n")) == node.address
    assert c.activeNodeCount() == 1
    assert c.leafCount() == 1 and c.leafOwner(0) == node.address
    # registration alone gives no routable weight
    assert c.totalWeight() == 0


def test_leaves_are_allocated_in_order(c: Any) -> None:
    nodes = [make_node(c, f"n{i}", 0, 0) for i in range(3)]
    assert [c.nodes(n.address).leaf for n in nodes] == [0, 1, 2]
    assert [c.leafOwner(i) for i in range(3)] == [n.address for n in nodes]
    assert c.activeNodeCount() == 3


def test_register_twice_reverts(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address), boa.reverts("Registry: already registered"):
        c.register(pubkey_of("other"), "http://x", ["m"], "")


def test_register_empty_pubkey_reverts(c: Any) -> None:
    with boa.env.prank(new_account("n").address), boa.reverts("Registry: empty public key"):
        c.register(b"\x00" * 32, "http://x", ["m"], "")


def test_register_without_models_reverts(c: Any) -> None:
    with boa.env.prank(new_account("n").address), boa.reverts("Registry: no models"):
        c.register(pubkey_of("n"), "http://x", [], "")


def test_pubkey_is_unique(c: Any) -> None:
    make_node(c, "n1", 0, 0)
    with boa.env.prank(new_account("n2").address), boa.reverts("Registry: public key already registered"):
        c.register(pubkey_of("n1"), "http://x", ["m"], "", value=TEST_PARAMS.registration_bond_wei)


def test_tree_full_reverts(fresh: None) -> None:
    small = deploy(with_params(tree_depth=1))  # two leaves
    register(small, new_account("n0"), "n0")
    register(small, new_account("n1"), "n1")
    with boa.env.prank(new_account("n2").address), boa.reverts("Sortition: tree full"):
        small.register(pubkey_of("n2"), "http://x", ["m"], "", value=TEST_PARAMS.registration_bond_wei)
    # a returning node reuses its own leaf, so it is not blocked by a full tree
    with boa.env.prank(new_account("n0").address):
        small.leave()
        small.register(pubkey_of("n0"), "http://x", ["m"], "")


def test_update_node_changes_fields_and_releases_old_key(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n-rotated"), "http://new", ["a", "b"], "meta")
    (ev,) = logs_named(c, "NodeUpdated")
    assert (ev.node, ev.pubkey, ev.endpoint, list(ev.models), ev.metadata) == (
        node.address, pubkey_of("n-rotated"), "http://new", ["a", "b"], "meta")
    rec = c.nodes(node.address)
    assert (rec.pubkey, rec.endpoint, list(rec.models), rec.metadata, rec.active, rec.leaf) == (
        pubkey_of("n-rotated"), "http://new", ["a", "b"], "meta", True, 0)
    assert c.pubkeyOwner(pubkey_of("n")) == "0x0000000000000000000000000000000000000000"
    assert c.pubkeyOwner(pubkey_of("n-rotated")) == node.address
    # the released key is free for someone else
    register(c, new_account("other"), "n")
    assert c.pubkeyOwner(pubkey_of("n")) == new_account("other").address


def test_update_node_keeping_the_key(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://moved", ["m"], "")
    assert c.pubkeyOwner(pubkey_of("n")) == node.address
    assert c.nodes(node.address).endpoint == "http://moved"


def test_update_node_checks(c: Any) -> None:
    make_node(c, "other", 0, 0)
    with boa.env.prank(new_account("stranger").address), boa.reverts("Registry: not registered"):
        c.updateNode(pubkey_of("stranger"), "http://x", ["m"], "")
    node = make_node(c, "n", 0, 0)
    with boa.env.prank(node.address):
        with boa.reverts("Registry: public key already registered"):
            c.updateNode(pubkey_of("other"), "http://x", ["m"], "")
        with boa.reverts("Registry: empty public key"):
            c.updateNode(b"\x00" * 32, "http://x", ["m"], "")
        with boa.reverts("Registry: no models"):
            c.updateNode(pubkey_of("n"), "http://x", [], "")


def test_leave_releases_key_and_weight(c: Any) -> None:
    node = make_node(c, "n", 3 * MIN_STAKE, 0)
    assert c.totalWeight() == 3 * MIN_STAKE
    with boa.env.prank(node.address):
        c.leave()
    (ev,) = logs_named(c, "NodeLeft")
    assert ev.node == node.address
    assert not c.nodes(node.address).active
    assert c.pubkeyOwner(pubkey_of("n")) == "0x0000000000000000000000000000000000000000"
    assert c.activeNodeCount() == 0
    assert c.totalWeight() == 0 and c.leafWeight(0) == 0
    # stake stays put until unstaked
    assert c.activeStake(node.address) == 3 * MIN_STAKE
    with boa.env.prank(node.address), boa.reverts("Registry: not registered"):
        c.leave()


def test_reregister_reuses_leaf_and_restores_weight(c: Any) -> None:
    make_node(c, "first", 0, 0)
    node = make_node(c, "n", 2 * MIN_STAKE, 0)
    with boa.env.prank(node.address):
        c.leave()
        c.register(pubkey_of("n-again"), "http://back", ["m"], "")
    (ev,) = logs_named(c, "NodeRegistered")
    assert ev.leaf == 1
    assert c.nodes(node.address).leaf == 1 and c.leafCount() == 2
    assert c.leafWeight(1) == 2 * MIN_STAKE == c.totalWeight()
    assert c.activeNodeCount() == 2


def test_staking_requires_registration_and_min_stake_for_weight(c: Any) -> None:
    node = make_node(c, "n", 0, 0)
    stake(c, node.address, MIN_STAKE - 1)
    # below MIN_STAKE: staked but not routable and never drawn as a judge
    assert c.activeStake(node.address) == MIN_STAKE - 1
    assert c.leafWeight(0) == 0 and c.totalWeight() == 0
    stake(c, node.address, 1)
    assert c.leafWeight(0) == MIN_STAKE == c.totalWeight()


# ---------------------------------------------------------------------------------------------
# models served per epoch


def serves(c: Any, node: str, model: str = MODEL) -> bool:
    return bool(c.servesModel(node, model_hash(model)))


def test_models_get_ids_on_first_use(c: Any) -> None:
    make_node(c, "n1", 0, 0, models=("llama", "qwen"))
    make_node(c, "n2", 0, 0, models=("qwen", "mistral"))
    assert [c.modelId(model_hash(m)) for m in ("llama", "qwen", "mistral", "never")] == [1, 2, 3, 0]
    assert c.modelCount() == 3


def test_a_model_added_serves_from_the_next_epoch(c: Any) -> None:
    next_epoch()
    node = make_node(c, "n", 0, 0, models=("m1",))
    assert not serves(c, node.address, "m1")  # registered in this epoch
    mine(TEST_PARAMS.epoch_blocks - 1)  # still the same epoch
    assert not serves(c, node.address, "m1")
    mine(1)
    assert serves(c, node.address, "m1") and not serves(c, node.address, "m2")
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://n", ["m1", "m2"], "")
    assert serves(c, node.address, "m1") and not serves(c, node.address, "m2")
    next_epoch()
    assert serves(c, node.address, "m1") and serves(c, node.address, "m2")


def test_a_model_dropped_stops_from_the_next_epoch(c: Any) -> None:
    node = make_node(c, "n", 0, 0, models=("m1", "m2"))
    next_epoch()
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://n", ["m2"], "")
    assert serves(c, node.address, "m1")  # a draw in this epoch still counts it
    next_epoch()
    assert not serves(c, node.address, "m1") and serves(c, node.address, "m2")


def test_a_model_readded_keeps_serving(c: Any) -> None:
    node = make_node(c, "n", 0, 0, models=("m1",))
    next_epoch()
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://n", ["m2"], "")  # drop m1 (from the next epoch)...
        c.updateNode(pubkey_of("n"), "http://n", ["m1", "m2"], "")  # ...and take it back at once
    for _ in range(3):
        assert serves(c, node.address, "m1")
        next_epoch()
    # dropped in one epoch, re-added in a later one: a gap of one epoch, then serving again
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://n", ["m2"], "")
    next_epoch()
    assert not serves(c, node.address, "m1")
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://n", ["m1", "m2"], "")
    assert not serves(c, node.address, "m1")
    next_epoch()
    assert serves(c, node.address, "m1")


def test_a_model_added_and_dropped_in_one_epoch_never_serves(c: Any) -> None:
    node = make_node(c, "n", 0, 0, models=("m1",))
    with boa.env.prank(node.address):
        c.updateNode(pubkey_of("n"), "http://n", ["m1", "m2"], "")
        c.updateNode(pubkey_of("n"), "http://n", ["m1"], "")
    for _ in range(2):
        next_epoch()
        assert serves(c, node.address, "m1") and not serves(c, node.address, "m2")


def test_leaving_keeps_the_model_epochs_and_returning_resumes_them(c: Any) -> None:
    node = make_node(c, "n", 0, 0, models=("m1",))
    next_epoch()
    with boa.env.prank(node.address):
        c.leave()
        c.register(pubkey_of("n"), "http://n", ["m1"], "")
    assert serves(c, node.address, "m1")  # kept across the return
    assert block_number() > 0
