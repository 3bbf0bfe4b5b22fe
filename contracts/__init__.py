"""Contract sources (Vyper 0.4) and their compiled artifacts.

The Python side never compiles at run time: it loads `artifacts/<Name>.json` (ABI, creation and
runtime bytecode, compiler version, EVM version, hash of the sources). `python -m contracts.build`
recompiles them; a test fails when the committed artifacts differ from a fresh compile.
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
# Deployable contracts and the modules each one imports (the modules are hashed with it).
CONTRACTS: dict[str, tuple[str, ...]] = {"WWWServe": ("WWWServe.vy", "sortition.vy")}


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


@cache
def load_artifact(name: str = "WWWServe") -> Artifact:
    """Load a committed artifact; raises FileNotFoundError with a hint if it was never built."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m contracts.build`")
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
