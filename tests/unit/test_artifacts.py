"""The committed artifacts are exactly what the pinned compiler makes of the committed sources, and
the two contracts they describe can be deployed together: each fits EIP-170, their storage layouts
are identical (the extension runs on WWWServe's storage by delegatecall), and WWWServe's ABI is the
union of both."""

from __future__ import annotations

import json

import pytest

from wwwserve.contracts import (
    ARTIFACTS_DIR,
    CONTRACTS,
    EVM_VERSION,
    EXTENSION_CONTRACT,
    MAIN_CONTRACT,
    MAX_RUNTIME_BYTES,
    VYPER_VERSION,
    load_artifact,
    load_extension_artifact,
    merge_abis,
    source_hash,
)
from wwwserve.contracts.build import compile_contract, compile_own, deployed_size, immutables_size, storage_layout


@pytest.mark.component  # the pinned vyper runs as a subprocess
def test_committed_artifacts_match_a_fresh_compile() -> None:
    assert list(CONTRACTS) == [EXTENSION_CONTRACT, MAIN_CONTRACT]  # deployment order
    for name in CONTRACTS:
        fresh = compile_contract(name).to_json()
        committed = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
        assert committed == fresh, f"{name}: stale artifact, run `python -m wwwserve.contracts.build`"


def test_artifact_records_compiler_evm_version_and_source_hash() -> None:
    for name in CONTRACTS:
        art = load_artifact(name)
        assert art.name == name
        assert art.compiler == f"vyper-{VYPER_VERSION}"
        assert art.evm_version == EVM_VERSION == "cancun"
        assert art.source_hash == source_hash(name)
    # the shared module is hashed with both contracts
    assert all("core.vy" in files and "sortition.vy" in files for files in CONTRACTS.values())


@pytest.mark.component  # the pinned vyper runs as a subprocess
def test_both_contracts_fit_eip170() -> None:
    # what EIP-170 caps is the deployed code: the runtime code and the immutables Vyper appends to it
    sizes = {name: deployed_size(load_artifact(name)) for name in CONTRACTS}
    assert all(0 < size <= MAX_RUNTIME_BYTES == 24_576 for size in sizes.values()), sizes
    assert all(immutables_size(name) >= 32 * 20 for name in CONTRACTS)  # not vacuous: ~25 immutables each


@pytest.mark.component  # the pinned vyper runs as a subprocess
def test_storage_layouts_are_identical() -> None:
    main, ext = storage_layout(MAIN_CONTRACT), storage_layout(EXTENSION_CONTRACT)
    assert main == ext
    # not vacuous: the layout names the state both contracts share
    text = json.dumps(main)
    for variable in ("accounts", "duelInfo", "duelPanel", "commitments", "reserve", "leafSlot"):
        assert f'"{variable}"' in text, variable


@pytest.mark.component  # the pinned vyper runs as a subprocess
def test_main_abi_is_the_union_of_both() -> None:
    merged = load_artifact().abi
    own_main, own_ext = compile_own(MAIN_CONTRACT).abi, load_extension_artifact().abi
    names = [(i["type"], i.get("name")) for i in merged]
    assert len(names) == len(set(names)), "no entry twice"
    for item in own_main + [i for i in own_ext if i["type"] != "constructor"]:
        assert item in merged, item
    # WWWServe's constructor (with the extension address), not the extension's
    (ctor,) = [i for i in merged if i["type"] == "constructor"]
    assert ctor["inputs"][-1]["name"] == "extension" and len(ctor["inputs"]) == 20
    # every event of the module reaches the users' ABI, whichever contract emits it
    events = {i["name"] for i in merged if i["type"] == "event"}
    assert {"DuelOpened", "DuelAppealed", "RequestPublished", "NodeRegistered", "StakeSlashed"} <= events
    functions = {i["name"] for i in merged if i["type"] == "function"}
    assert {"openDuel", "answerDuel", "appeal", "register", "getDuel", "EXTENSION", "paramsDigest"} <= functions


def test_merge_refuses_diverging_entries() -> None:
    fn = {"type": "function", "name": "f", "inputs": [{"name": "x", "type": "uint256"}], "outputs": []}
    other = {**fn, "outputs": [{"name": "", "type": "bool"}]}
    assert merge_abis([fn], [fn, {"type": "constructor", "inputs": []}]) == [fn]
    with pytest.raises(ValueError, match="function f differs"):
        merge_abis([fn], [other])
