"""Gas figures of every state-changing WWWServe function, from real receipts (no pytest).

Deploys the committed artifact on an in-process py-evm chain (web3 `EthereumTesterProvider`), so the
figures are receipt `gasUsed` including the intrinsic 21,000 and calldata cost, exactly what a node
pays on a real chain (minus the base fee market). Prints one table per scenario and checks the two
budgets the design promises: a full duel lifecycle (open + draw + K commits + K reveals + settle)
within 600k gas, and a fee-voucher claim within 80k gas.

Usage: `python bench/gas.py` (about 10 s). Exit status 1 when a budget is exceeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3
from web3.types import Wei

from contracts import load_artifact
from ledger.model import vote_commitment
from ledger.params import WEI_PER_ETH, DeploymentParams

FULL_DUEL_TARGET_GAS = 600_000
VOUCHER_CLAIM_TARGET_GAS = 80_000
# Explicit gas limit: skips eth_estimateGas (slow on py-evm) and makes a revert fail loudly.
TX_GAS_LIMIT = 5_000_000
NODE_COUNT = 8


@dataclass
class GasTable:
    """Receipt gas per labelled transaction, in call order."""

    rows: list[tuple[str, int]] = field(default_factory=list)

    def add(self, label: str, gas_used: int) -> int:
        self.rows.append((label, gas_used))
        return gas_used


class Bench:
    """A deployed WWWServe plus funded operator wallets with known keys (to sign vouchers)."""

    def __init__(self, params: DeploymentParams, source: str | None = None) -> None:
        self.params = params
        self.w3 = Web3(EthereumTesterProvider())
        self.tester: Any = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        funder = self.w3.eth.accounts[0]
        self.accounts: list[LocalAccount] = [
            Account.from_key(keccak(f"wwwserve-bench-{i}".encode())) for i in range(NODE_COUNT + 1)
        ]
        for acct in self.accounts:
            self.tester.add_account(acct.key.hex())
            self.w3.eth.wait_for_transaction_receipt(
                self.w3.eth.send_transaction({"from": funder, "to": acct.address, "value": Wei(100 * WEI_PER_ETH)})
            )
        abi, bytecode = compile_source(source) if source else (load_artifact().abi, load_artifact().bytecode)
        factory = self.w3.eth.contract(abi=abi, bytecode=bytecode)
        tx = factory.constructor(*params.constructor_args()).transact({"from": funder, "gas": 10_000_000})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        self.deploy_gas: int = receipt["gasUsed"]
        self.c = self.w3.eth.contract(address=receipt["contractAddress"], abi=abi)
        self.worst: dict[str, int] = {}

    def tx(self, sender: LocalAccount, fn_name: str, *args: Any, value: int = 0) -> int:
        """Send one transaction and return its receipt gasUsed; raise if it reverted."""
        fn = getattr(self.c.functions, fn_name)(*args)
        tx_hash = fn.transact({"from": sender.address, "gas": TX_GAS_LIMIT, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise RuntimeError(f"{fn_name} reverted")
        gas: int = receipt["gasUsed"]
        self.worst[fn_name] = max(self.worst.get(fn_name, 0), gas)
        return gas

    def mine(self, blocks: int) -> None:
        self.tester.mine_blocks(blocks)

    def advance_time(self, seconds: int) -> None:
        latest = self.w3.eth.get_block("latest")["timestamp"]
        self.tester.time_travel(latest + seconds)

    def address_of(self, addr: str) -> LocalAccount:
        return next(a for a in self.accounts if a.address == addr)


def compile_source(path: str) -> tuple[list[dict[str, Any]], str]:
    """Compile a variant of the contract (for A/B gas experiments); its imports resolve next to it."""
    from pathlib import Path

    src = Path(path).resolve()
    out = subprocess.run(
        [sys.executable, "-m", "vyper", "-f", "abi,bytecode", "-p", str(src.parent), str(src)],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()
    return json.loads(out[0]), out[1].strip()


def register_args(i: int) -> tuple[bytes, str, list[str], str]:
    """Realistic registration fields: one model, a short endpoint and a small JSON metadata blob."""
    return (
        keccak(f"pubkey-{i}".encode()),
        f"https://node{i}.wwwserve.example:8443",
        ["SmolLM2-135M-Instruct"],
        '{"gpu":"H100","region":"eu-west","price_per_1k_tokens_wei":1000000000000}',
    )


def run_duel(bench: Bench, table: GasTable | None, tag: str, origin: LocalAccount, a: LocalAccount,
             b: LocalAccount, votes: Sequence[int | None]) -> int:
    """Run one full duel lifecycle and return its total gas.

    `votes` are cast in panel order; None = the judge commits but never reveals (settlement then
    waits for the reveal window). `table=None` runs it without recording (warm-up).
    """
    p = bench.params
    rows = table if table is not None else GasTable()
    q, ha, hb = keccak(b"q" + tag.encode()), keccak(b"a" + tag.encode()), keccak(b"b" + tag.encode())
    duel_id = bench.c.functions.duelCount().call() + 1
    total = rows.add(f"{tag}: openDuel", bench.tx(origin, "openDuel", a.address, b.address, q, ha, hb))
    bench.mine(p.seed_delay_blocks)
    total += rows.add(f"{tag}: drawJudges", bench.tx(origin, "drawJudges", duel_id))
    judges = [bench.address_of(j) for j in bench.c.functions.getJudges(duel_id).call()]
    if len(judges) != len(votes):
        raise RuntimeError(f"{tag}: drew {len(judges)} judges, expected {len(votes)}")
    salts = [keccak(f"{tag}-salt-{i}".encode()) for i in range(len(judges))]
    chain_id = bench.w3.eth.chain_id
    for i, (judge, vote) in enumerate(zip(judges, votes, strict=True)):
        commitment = vote_commitment(chain_id, bench.c.address, duel_id, judge.address, vote or 1, salts[i])
        total += rows.add(f"{tag}: commitVote #{i + 1}", bench.tx(judge, "commitVote", duel_id, commitment))
    bench.mine(p.commit_window_blocks)
    for i, (judge, vote) in enumerate(zip(judges, votes, strict=True)):
        if vote is not None:
            total += rows.add(f"{tag}: revealVote #{i + 1}", bench.tx(judge, "revealVote", duel_id, vote, salts[i]))
    if None in votes:
        bench.mine(p.reveal_window_blocks)
    total += rows.add(f"{tag}: settleDuel", bench.tx(origin, "settleDuel", duel_id))
    return total


def top_up(bench: Bench, nodes: list[LocalAccount], stake_wei: int) -> None:
    """Restake what duels took, so every node stays a judge candidate (not recorded)."""
    for node in nodes:
        missing = stake_wei - bench.c.functions.activeStake(node.address).call()
        if missing > 0:
            bench.tx(node, "stake", missing)


def warm_up(bench: Bench, nodes: list[LocalAccount], stake_wei: int) -> None:
    """Run duels until every node has been locked once, so later lock writes are nonzero-to-nonzero."""
    for n in range(4 * len(nodes)):
        if all(bench.c.functions.lockedUntil(x.address).call() > 0 for x in nodes):
            return
        origin, a, b = (nodes[(n + i) % len(nodes)] for i in range(3))
        run_duel(bench, None, f"warm-up {n}", origin, a, b, [1] * bench.params.k_judges)
        top_up(bench, nodes, stake_wei)
    raise RuntimeError("warm-up did not lock every node")


def sign_voucher(bench: Bench, origin: LocalAccount, executor: str, cumulative_wei: int) -> bytes:
    digest = bench.c.functions.voucherDigest(origin.address, executor, cumulative_wei).call()
    return bytes(Account.unsafe_sign_hash(digest, origin.key).signature)


@dataclass
class GasReport:
    """Everything one benchmark run measured."""

    params: DeploymentParams
    deploy_gas: int
    functions: GasTable
    duel_steps: GasTable
    budgets: list[tuple[str, int, int]]  # (label, gas used, target)
    worst_by_function: dict[str, int]  # largest receipt per contract function over the whole run


def measure(params: DeploymentParams, source: str | None = None) -> GasReport:
    """Deploy, exercise every state-changing function and a few duel lifecycles, collect receipts."""
    bench = Bench(params, source)
    nodes = bench.accounts[:NODE_COUNT]
    depositor = bench.accounts[NODE_COUNT]
    fns = GasTable()
    stake_wei = 10 * params.min_stake_wei

    # --- registry, credits and stake (first call = cold storage, then a steady-state repeat)
    fns.add("register (first)", bench.tx(nodes[0], "register", *register_args(0)))
    for i, node in enumerate(nodes[1:], start=1):
        bench.tx(node, "register", *register_args(i))
    fns.add("updateNode", bench.tx(nodes[0], "updateNode", keccak(b"new-key"), *register_args(0)[1:]))
    fns.add("deposit (first)", bench.tx(depositor, "deposit", value=WEI_PER_ETH))
    fns.add("deposit (again)", bench.tx(depositor, "deposit", value=WEI_PER_ETH))
    for node in nodes:
        bench.tx(node, "deposit", value=5 * WEI_PER_ETH)
    fns.add("stake (first)", bench.tx(nodes[0], "stake", stake_wei))
    for node in nodes[1:]:
        bench.tx(node, "stake", stake_wei)
    fns.add("stake (again)", bench.tx(nodes[0], "stake", params.min_stake_wei))
    fns.add("requestWithdrawal", bench.tx(depositor, "requestWithdrawal", WEI_PER_ETH // 2))
    fns.add("cancelWithdrawal", bench.tx(depositor, "cancelWithdrawal"))
    bench.tx(depositor, "requestWithdrawal", WEI_PER_ETH // 2)
    bench.advance_time(params.withdrawal_notice_s)
    bench.mine(1)
    fns.add("withdraw", bench.tx(depositor, "withdraw"))

    # --- vouchers: the depositor (origin) pays node 1 (executor); a third party submits the first
    sig = sign_voucher(bench, depositor, nodes[1].address, 10**15)
    voucher_first = fns.add("claimVoucher (first)", bench.tx(nodes[2], "claimVoucher", depositor.address,
                                                             nodes[1].address, 10**15, sig))
    sig = sign_voucher(bench, depositor, nodes[1].address, 3 * 10**15)
    voucher_again = fns.add("claimVoucher (again)", bench.tx(nodes[1], "claimVoucher", depositor.address,
                                                             nodes[1].address, 3 * 10**15, sig))

    # --- duels: the first ever (cold slots), then steady state (every lock already nonzero)
    duel = GasTable()
    k = params.k_judges
    split = [2] * (k - k // 2) + [1] * (k // 2)
    first = run_duel(bench, duel, "first duel", nodes[0], nodes[1], nodes[2], [1] * k)
    top_up(bench, nodes, stake_wei)
    warm_up(bench, nodes, stake_wei)
    steady = run_duel(bench, duel, "steady, unanimous", nodes[0], nodes[1], nodes[2], [1] * k)
    top_up(bench, nodes, stake_wei)
    steady_split = run_duel(bench, duel, "steady, split", nodes[0], nodes[1], nodes[2], split)
    top_up(bench, nodes, stake_wei)
    silent = run_duel(bench, duel, "steady, 1 silent", nodes[3], nodes[4], nodes[5], [1] * (k - 1) + [None])
    top_up(bench, nodes, stake_wei)
    voided = run_duel(bench, duel, "steady, voided", nodes[3], nodes[4], nodes[5], [4] * k)

    # --- cancellation paths
    q = keccak(b"cancel")
    duel_id = bench.c.functions.duelCount().call() + 1
    bench.tx(nodes[0], "openDuel", nodes[1].address, nodes[2].address, q, q, q)
    bench.mine(params.seed_delay_blocks + params.draw_window_blocks)
    fns.add("cancelUndrawnDuel", bench.tx(nodes[6], "cancelUndrawnDuel", duel_id))

    # --- leave, re-register (same leaf), unstake
    fns.add("leave", bench.tx(nodes[7], "leave"))
    fns.add("register (again, same leaf)", bench.tx(nodes[7], "register", keccak(b"k7b"), *register_args(7)[1:]))
    active = bench.c.functions.activeStake(nodes[7].address).call()
    fns.add("requestUnstake", bench.tx(nodes[7], "requestUnstake", active))
    bench.advance_time(params.unbonding_period_s)
    locked_until = bench.c.functions.lockedUntil(nodes[7].address).call()
    bench.mine(max(1, locked_until - bench.w3.eth.block_number + 1))
    fns.add("withdrawStake", bench.tx(nodes[7], "withdrawStake"))

    budgets = [
        ("full duel, first (unanimous)", first, FULL_DUEL_TARGET_GAS),
        ("full duel, steady (unanimous)", steady, FULL_DUEL_TARGET_GAS),
        (f"full duel, steady ({k - k // 2}-{k // 2} split)", steady_split, FULL_DUEL_TARGET_GAS),
        ("full duel, steady (1 never reveals)", silent, FULL_DUEL_TARGET_GAS),
        ("full duel, steady (voided)", voided, FULL_DUEL_TARGET_GAS),
        ("voucher claim, first", voucher_first, VOUCHER_CLAIM_TARGET_GAS),
        ("voucher claim, again", voucher_again, VOUCHER_CLAIM_TARGET_GAS),
    ]
    return GasReport(params, bench.deploy_gas, fns, duel, budgets, dict(bench.worst))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", help="compile this .vy instead of loading the committed artifact")
    parser.add_argument("--tree-depth", type=int, default=DeploymentParams().tree_depth)
    parser.add_argument("--k-judges", type=int, default=DeploymentParams().k_judges)
    args = parser.parse_args()
    params = dataclasses.replace(DeploymentParams(), tree_depth=args.tree_depth, k_judges=args.k_judges)
    report = measure(params, args.source)

    print(f"WWWServe gas: receipt gasUsed on py-evm (cancun), K={params.k_judges}, "
          f"tree depth {params.tree_depth}, {NODE_COUNT} nodes; deploy: {report.deploy_gas:,}")
    print(f"\n{'function':<40}{'gasUsed':>10}")
    for label, gas in report.functions.rows:
        print(f"{label:<40}{gas:>10,}")
    print(f"\n{'duel step':<40}{'gasUsed':>10}")
    for label, gas in report.duel_steps.rows:
        print(f"{label:<40}{gas:>10,}")
    print(f"\n{'budget':<40}{'gasUsed':>10}{'target':>10}  result")
    ok = True
    for label, gas, target in report.budgets:
        ok = ok and gas <= target
        print(f"{label:<40}{gas:>10,}{target:>10,}  {'PASS' if gas <= target else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
