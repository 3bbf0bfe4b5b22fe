"""Deployment records: `<WWWSERVE_HOME>/deployments/<chain_id>.json`.

A record says where the WWWServe contract lives on one chain and with which code and parameters, so
every process (CLI, nodes, indexer) finds the same contract without passing addresses around. It also
names the WWWServeExt extension WWWServe delegates to (deployed first, in the block before), which
nobody calls directly but an operator may want to verify. Against
another chain (production), give `--rpc-url` and `--contract` instead, or write a record by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wwwserve.ledger.errors import DeploymentNotFoundError
from wwwserve.ledger.home import wwwserve_home
from wwwserve.ledger.params import DeploymentParams


def deployments_dir(home: Path | None = None) -> Path:
    return (home or wwwserve_home()) / "deployments"


@dataclass(frozen=True)
class Deployment:
    """Where and how the contract was deployed on one chain."""

    chain_id: int
    address: str
    block_number: int
    deployer: str
    rpc_url: str
    params: DeploymentParams
    abi_hash: str
    source_hash: str
    compiler: str
    evm_version: str
    funded_accounts: list[str] = field(default_factory=list)
    # the WWWServeExt address (None in a record written by hand, or before the contract was split)
    extension: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "chainId": self.chain_id,
            "address": self.address,
            "extension": self.extension,
            "blockNumber": self.block_number,
            "deployer": self.deployer,
            "rpcUrl": self.rpc_url,
            "params": self.params.to_json(),
            "abiHash": self.abi_hash,
            "sourceHash": self.source_hash,
            "compiler": self.compiler,
            "evmVersion": self.evm_version,
            "fundedAccounts": list(self.funded_accounts),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deployment:
        return cls(
            chain_id=int(data["chainId"]),
            address=str(data["address"]),
            block_number=int(data["blockNumber"]),
            deployer=str(data["deployer"]),
            rpc_url=str(data["rpcUrl"]),
            params=DeploymentParams.from_json(dict(data["params"])),
            abi_hash=str(data["abiHash"]),
            source_hash=str(data["sourceHash"]),
            compiler=str(data["compiler"]),
            evm_version=str(data["evmVersion"]),
            funded_accounts=[str(a) for a in data.get("fundedAccounts", [])],
            extension=None if data.get("extension") is None else str(data["extension"]),
        )

    def save(self, home: Path | None = None) -> Path:
        """Write the record atomically and return its path."""
        path = deployments_dir(home) / f"{self.chain_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)
        return path


def load_deployment(chain_id: int, home: Path | None = None) -> Deployment:
    """The record for `chain_id`; DeploymentNotFoundError with a hint when there is none."""
    path = deployments_dir(home) / f"{chain_id}.json"
    if not path.exists():
        raise DeploymentNotFoundError(
            f"no deployment for chain {chain_id} in {path.parent}: run `wwwserve devnet up` "
            "or pass --contract ADDRESS"
        )
    try:
        return Deployment.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise DeploymentNotFoundError(f"{path} is not a valid deployment record: {exc}") from exc
