"""The committed artifacts are exactly what the pinned compiler makes of the committed sources."""

from __future__ import annotations

import json

from contracts import ARTIFACTS_DIR, CONTRACTS, EVM_VERSION, VYPER_VERSION, load_artifact, source_hash
from contracts.build import compile_contract


def test_committed_artifacts_match_a_fresh_compile() -> None:
    for name in CONTRACTS:
        fresh = compile_contract(name).to_json()
        committed = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
        assert committed == fresh, f"{name}: stale artifact, run `python -m contracts.build`"


def test_artifact_records_compiler_evm_version_and_source_hash() -> None:
    art = load_artifact("WWWServe")
    assert art.compiler == f"vyper-{VYPER_VERSION}"
    assert art.evm_version == EVM_VERSION == "cancun"
    assert art.source_hash == source_hash("WWWServe")
    # EIP-170: the runtime code must deploy on chains that enforce the 24 KiB limit
    assert len(bytes.fromhex(art.deployed_bytecode.removeprefix("0x"))) <= 24_576
