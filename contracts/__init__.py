"""Contract sources (Vyper 0.4) and their compiled artifacts.

The Python side never compiles at run time: it loads `artifacts/<Name>.json` (ABI, creation and
runtime bytecode, compiler version, EVM version, hash of the sources). `python -m wwwserve.contracts.build`
recompiles them; a test fails when the committed artifacts differ from a fresh compile.

The ledger is one module (`core.vy`) compiled into two contracts so that each fits EIP-170:
`WWWServeExt` (deployed first) and `WWWServe` (deployed with the extension's address, which it
reaches by delegatecall). Users see one address, WWWServe's, and one ABI: `artifacts/WWWServe.json`
carries the union of both contracts' ABIs with WWWServe's bytecode; `artifacts/WWWServeExt.json`
carries the extension's own ABI and bytecode, needed only to deploy it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

CONTRACTS_DIR = Path(__file__).resolve().parent
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
VYPER_VERSION = "0.4.3"
# Both anvil (latest hardfork) and py-evm run cancun; TSTORE/MCOPY are available.
EVM_VERSION = "cancun"
# The contract users call, and the extension it delegatecalls (deployed first).
MAIN_CONTRACT = "WWWServe"
EXTENSION_CONTRACT = "WWWServeExt"
# Deployable contracts, in deployment order, and the sources each one is built from (all of them are
# hashed into its artifact, so a change to a shared module makes both artifacts stale).
CONTRACTS: dict[str, tuple[str, ...]] = {
    EXTENSION_CONTRACT: ("WWWServeExt.vy", "core.vy", "sortition.vy"),
    MAIN_CONTRACT: ("WWWServe.vy", "core.vy", "sortition.vy"),
}
# EIP-170: the most code a deployed contract may have on mainnet-rules chains (runtime code and the
# immutables appended to it: `contracts.build.deployed_size`).
MAX_RUNTIME_BYTES = 24_576


@dataclass(frozen=True)
class Artifact:
    """A compiled contract as the Python side consumes it."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler: str
    evm_version: str
    source_hash: str

    @property
    def abi_hash(self) -> str:
        """sha256 of the canonical ABI JSON (recorded in deployments/<chain_id>.json)."""
        return hashlib.sha256(json.dumps(self.abi, sort_keys=True).encode()).hexdigest()

    @property
    def runtime_size(self) -> int:
        """Bytes of runtime code (without the immutables Vyper appends at deployment)."""
        return len(bytes.fromhex(self.deployed_bytecode.removeprefix("0x")))

    def to_json(self) -> dict[str, Any]:
        return {
            "contractName": self.name,
            "compiler": self.compiler,
            "evmVersion": self.evm_version,
            "sourceHash": self.source_hash,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
        }


def source_hash(name: str) -> str:
    """sha256 over the contract's source files, in a fixed order."""
    h = hashlib.sha256()
    for fname in CONTRACTS[name]:
        h.update(fname.encode() + b"\0" + (CONTRACTS_DIR / fname).read_bytes() + b"\0")
    return h.hexdigest()


def merge_abis(main: list[dict[str, Any]], extension: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ABI users see at WWWServe's address: WWWServe's own entries (its constructor, its
    fallback, its functions and events), then every entry of the extension it does not already
    have (the extension's constructor excluded: it is not callable at WWWServe's address).

    Entries are identified by (type, name, input types); both contracts compile the same module, so
    an entry present in both must be identical, and a mismatch is a build error, not a silent pick."""

    def key(item: dict[str, Any]) -> tuple[str, str, tuple[str, ...]]:
        return (item["type"], item.get("name", ""), tuple(i["type"] for i in item.get("inputs", ())))

    merged = list(main)
    seen = {key(item): item for item in main}
    for item in extension:
        if item["type"] == "constructor":
            continue
        k = key(item)
        if k in seen:
            if seen[k] != item:
                raise ValueError(f"{k[0]} {k[1]} differs between WWWServe and WWWServeExt")
            continue
        seen[k] = item
        merged.append(item)
    return merged


@cache
def load_artifact(name: str = MAIN_CONTRACT) -> Artifact:
    """Load a committed artifact; raises FileNotFoundError with a hint if it was never built.

    `load_artifact()` is WWWServe with the merged ABI (what clients and the indexer use);
    `load_artifact(EXTENSION_CONTRACT)` is the extension (what a deployment sends first)."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m wwwserve.contracts.build`")
    data = json.loads(path.read_text())
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler=data["compiler"],
        evm_version=data["evmVersion"],
        source_hash=data["sourceHash"],
    )


def load_extension_artifact() -> Artifact:
    """The WWWServeExt artifact (deploy it first; WWWServe's constructor takes its address)."""
    return load_artifact(EXTENSION_CONTRACT)
