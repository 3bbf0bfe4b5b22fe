"""Compile the Vyper sources into `contracts/artifacts/*.json`.

Usage: `python -m wwwserve.contracts.build` (writes) or `python -m wwwserve.contracts.build --check` (exit 1 when the
committed artifacts differ from a fresh compile, a contract outgrows EIP-170, or the two contracts'
storage layouts differ). Needs the `contracts` extra (vyper==0.4.3).

WWWServe's artifact carries the merged ABI (`contracts.merge_abis`): WWWServe delegatecalls the
extension for every selector it does not export, so its address answers both ABIs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from functools import cache
from typing import Any

from wwwserve.contracts import (
    ARTIFACTS_DIR,
    CONTRACTS,
    CONTRACTS_DIR,
    EVM_VERSION,
    EXTENSION_CONTRACT,
    MAIN_CONTRACT,
    MAX_RUNTIME_BYTES,
    VYPER_VERSION,
    Artifact,
    merge_abis,
    source_hash,
)


def _vyper(name: str, formats: str) -> list[str]:
    """Run the pinned vyper on one contract; one output line per requested format."""
    return list(_vyper_cached(name, formats, source_hash(name)))


@cache
def _vyper_cached(name: str, formats: str, sources: str) -> tuple[str, ...]:
    # keyed by the sources' hash: a process compiles each version of a contract once (the merged ABI
    # needs the extension's, the layout check both contracts' again)
    import vyper

    if vyper.__version__ != VYPER_VERSION:
        raise RuntimeError(f"vyper {VYPER_VERSION} required, found {vyper.__version__}")
    return tuple(subprocess.run(
        [sys.executable, "-m", "vyper", "-f", formats,
         "--evm-version", EVM_VERSION, "-p", str(CONTRACTS_DIR), str(CONTRACTS_DIR / CONTRACTS[name][0])],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines())


def compile_own(name: str) -> Artifact:
    """Compile one contract with the pinned vyper and EVM version, with its own ABI only."""
    out = _vyper(name, "abi,bytecode,bytecode_runtime")
    abi, bytecode, runtime = json.loads(out[0]), out[1].strip(), out[2].strip()
    return Artifact(name, abi, bytecode, runtime, f"vyper-{VYPER_VERSION}", EVM_VERSION, source_hash(name))


def compile_contract(name: str) -> Artifact:
    """The artifact of `name` as committed: the extension as compiled; WWWServe with the merged ABI."""
    own = compile_own(name)
    if name != MAIN_CONTRACT:
        return own
    merged = merge_abis(own.abi, compile_own(EXTENSION_CONTRACT).abi)
    return Artifact(own.name, merged, own.bytecode, own.deployed_bytecode, own.compiler, own.evm_version,
                    own.source_hash)


def storage_layout(name: str) -> dict[str, Any]:
    """The contract's storage layout (`vyper -f layout`, storage part): where each variable lives.

    The extension runs on WWWServe's storage by delegatecall, so both layouts must be identical."""
    layout: dict[str, Any] = json.loads(_vyper(name, "layout")[0])["storage_layout"]
    return layout


def immutables_size(name: str) -> int:
    """Bytes of immutables Vyper appends to the runtime code at deployment (`vyper -f layout`, code
    part). Every immutable of an initialized module counts, used by this contract or not."""

    def total(node: dict[str, Any]) -> int:
        if "length" in node and "offset" in node:
            return int(node["length"])
        return sum(total(child) for child in node.values() if isinstance(child, dict))

    layout: dict[str, Any] = json.loads(_vyper(name, "layout")[0]).get("code_layout", {})
    return total(layout)


def deployed_size(artifact: Artifact) -> int:
    """Bytes of code the contract has once deployed: runtime code plus its immutables. EIP-170 caps this."""
    return artifact.runtime_size + immutables_size(artifact.name)


def problems(artifacts: dict[str, Artifact]) -> list[str]:
    """What makes a set of fresh artifacts undeployable: oversized code, diverging storage."""
    out = [f"{a.name}: {deployed_size(a)} bytes of code once deployed (runtime + immutables) > "
           f"{MAX_RUNTIME_BYTES} (EIP-170)" for a in artifacts.values() if deployed_size(a) > MAX_RUNTIME_BYTES]
    if storage_layout(MAIN_CONTRACT) != storage_layout(EXTENSION_CONTRACT):
        out.append(f"{MAIN_CONTRACT} and {EXTENSION_CONTRACT} have different storage layouts")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    fresh = {name: compile_contract(name) for name in CONTRACTS}
    bad = problems(fresh)
    for line in bad:
        print(f"error: {line}", file=sys.stderr)
    stale = []
    for name, artifact in fresh.items():
        text = json.dumps(artifact.to_json(), indent=1, sort_keys=True) + "\n"
        path = ARTIFACTS_DIR / f"{name}.json"
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        elif not bad:
            path.write_text(text)
            print(f"wrote {path.relative_to(CONTRACTS_DIR.parent)} ({len(text) // 1024} KiB, "
                  f"{artifact.runtime_size} bytes of runtime code + {immutables_size(name)} of immutables, "
                  f"of {MAX_RUNTIME_BYTES})")
    if stale:
        print("stale artifacts: " + ", ".join(stale) + " (run `python -m wwwserve.contracts.build`)", file=sys.stderr)
    return 1 if stale or bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
