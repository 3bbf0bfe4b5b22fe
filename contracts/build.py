"""Compile the Vyper sources into `contracts/artifacts/*.json`.

Usage: `python -m contracts.build` (writes) or `python -m contracts.build --check` (exit 1 when the
committed artifacts differ from a fresh compile). Needs the `contracts` extra (vyper==0.4.3).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from contracts import ARTIFACTS_DIR, CONTRACTS, CONTRACTS_DIR, EVM_VERSION, VYPER_VERSION, Artifact, source_hash


def compile_contract(name: str) -> Artifact:
    """Compile one contract with the pinned vyper and EVM version."""
    import vyper

    if vyper.__version__ != VYPER_VERSION:
        raise RuntimeError(f"vyper {VYPER_VERSION} required, found {vyper.__version__}")
    out = subprocess.run(
        [sys.executable, "-m", "vyper", "-f", "abi,bytecode,bytecode_runtime",
         "--evm-version", EVM_VERSION, "-p", str(CONTRACTS_DIR), str(CONTRACTS_DIR / CONTRACTS[name][0])],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    abi, bytecode, runtime = json.loads(out[0]), out[1].strip(), out[2].strip()
    return Artifact(name, abi, bytecode, runtime, f"vyper-{VYPER_VERSION}", EVM_VERSION, source_hash(name))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    stale = []
    for name in CONTRACTS:
        fresh = json.dumps(compile_contract(name).to_json(), indent=1, sort_keys=True) + "\n"
        path = ARTIFACTS_DIR / f"{name}.json"
        if args.check:
            if not path.exists() or path.read_text() != fresh:
                stale.append(name)
        else:
            path.write_text(fresh)
            print(f"wrote {path.relative_to(CONTRACTS_DIR.parent)} ({(len(fresh)) // 1024} KiB)")
    if stale:
        print("stale artifacts: " + ", ".join(stale) + " (run `python -m contracts.build`)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
