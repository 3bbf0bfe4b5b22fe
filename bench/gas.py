"""Gas figures of every state-changing WWWServe function and of whole duels, from real receipts (no pytest).

Deploys the committed artifacts (WWWServeExt, then WWWServe over it) on an in-process py-evm chain
(web3 `EthereumTesterProvider`), so the figures are receipt `gasUsed` including the intrinsic 21,000
and calldata cost, exactly what a node pays on a real chain (minus the base fee market). Functions
that WWWServe forwards to its extension pay the delegatecall too.

A duel is measured step by step: `openDuel` (the origin, over A's signed work attestation),
`answerDuel` (the drawn challenger B; it records B and draws the first panel), K `commitVote`,
K `revealVote` and `settleDuel`. Two budgets, both 600k gas:
  * the issue's list: open + K commits + K reveals + settle;
  * the whole duel: that plus `answerDuel`.
They are checked for the first duel ever (cold reserve) and steady-state duels: unanimous, a 2-1
split, and one silent seat (commits, never reveals). Those need a panel of K distinct judges (with
seats drawn with replacement, a judge drawn twice commits and reveals once): when a draw gives
fewer, the bench reverts the chain to before the duel, moves the clock a second (a new seed block
hash) and plays it again, and says how often it did. An appealed duel and a
no-show challenger are reported without a budget, as is every other function; a fee-voucher claim
has its own 80k budget. Draws walk the sortition tree, whose height grows with the number of
nodes, so everything runs on 8 and on 128 nodes.

Usage: `python bench/gas.py` (about a minute). Exit status 1 when a budget is exceeded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from web3 import EthereumTesterProvider, Web3
from web3.types import Wei

from wwwserve.contracts import EXTENSION_CONTRACT, MAIN_CONTRACT, load_artifact, merge_abis
from wwwserve.ledger.client import Vote, vote_commitment
from wwwserve.ledger.params import WEI_PER_ETH, DeploymentParams
from wwwserve.ledger.work import (
    WorkAttestation,
    answer_hash,
    inspect_commitment,
    model_hash,
    request_id_hash,
    sign_work,
)

DUEL_TARGET_GAS = 600_000
VOUCHER_CLAIM_TARGET_GAS = 80_000
# Explicit gas limit: skips eth_estimateGas (slow on py-evm) and makes a revert fail loudly.
TX_GAS_LIMIT = 5_000_000
NODE_COUNTS = (8, 128)
MODEL = "SmolLM2-135M-Instruct"
# draws tried at most to get a panel of K distinct judges
MAX_PANEL_TRIES = 30


@dataclass
class GasTable:
    """Receipt gas per labelled transaction, in call order."""

    rows: list[tuple[str, int]] = field(default_factory=list)

    def add(self, label: str, gas_used: int) -> int:
        self.rows.append((label, gas_used))
        return gas_used


@dataclass
class DuelGas:
    """One recorded duel's receipts by step."""

    open: int
    answer: int
    commits: list[int]
    reveals: list[int]
    settle: int
    extra: dict[str, int] = field(default_factory=dict)  # appeal, drawJudges, round-2 votes ...
    skipped: int = 0  # draws undone to get K distinct judges

    @property
    def issue_list(self) -> int:
        """open + K commits + K reveals + settle (the issue's budget)."""
        return self.open + sum(self.commits) + sum(self.reveals) + self.settle

    @property
    def whole(self) -> int:
        """Everything a duel costs: the issue's list, the challenger's answer (with the first panel's
        draw) and any extra step."""
        return self.issue_list + self.answer + sum(self.extra.values())


class Bench:
    """A deployed WWWServe pair plus funded operator wallets with known keys (they sign vouchers and
    work attestations)."""

    def __init__(self, params: DeploymentParams, node_count: int, source: str | None = None) -> None:
        self.params = params
        self.w3 = Web3(EthereumTesterProvider())
        self.tester: Any = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        funder = self.funder = self.w3.eth.accounts[0]
        self.accounts: list[LocalAccount] = [
            Account.from_key(keccak(f"wwwserve-bench-{i}".encode())) for i in range(node_count + 1)
        ]
        self._by_address: dict[str, LocalAccount] = {a.address: a for a in self.accounts}
        for acct in self.accounts:
            self.tester.add_account(acct.key.hex())
            self.w3.eth.wait_for_transaction_receipt(
                self.w3.eth.send_transaction({"from": funder, "to": acct.address, "value": Wei(100 * WEI_PER_ETH)})
            )
        (ext_abi, ext_code), (abi, code) = compile_sources(source) if source else (
            (load_artifact(EXTENSION_CONTRACT).abi, load_artifact(EXTENSION_CONTRACT).bytecode),
            (load_artifact(MAIN_CONTRACT).abi, load_artifact(MAIN_CONTRACT).bytecode),
        )
        args = params.constructor_args()
        ext, self.deploy_ext_gas = self._create(funder, ext_abi, ext_code, args)
        main, self.deploy_gas = self._create(funder, abi, code, [*args, ext])
        self.c = self.w3.eth.contract(address=Web3.to_checksum_address(main), abi=abi)
        self.chain_id = int(self.w3.eth.chain_id)
        self.worst: dict[str, int] = {}

    def _create(self, funder: str, abi: Any, bytecode: str, args: Sequence[Any]) -> tuple[str, int]:
        tx = self.w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args).transact(
            {"from": funder, "gas": 15_000_000})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx)
        if receipt["status"] != 1:
            raise RuntimeError("deployment reverted")
        return str(receipt["contractAddress"]), int(receipt["gasUsed"])

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

    def view(self, fn_name: str, *args: Any) -> Any:
        # The sender web3 would guess (the first account), named: guessing lists every account, checksummed,
        # three times a call; with 129 accounts that was half of `measure` (72 of 134 s at 128 nodes).
        return getattr(self.c.functions, fn_name)(*args).call({"from": self.funder})

    def mine_to(self, block: int) -> None:
        """Mine until the head is `block`: the next transaction lands in `block + 1`."""
        missing = block - self.w3.eth.block_number
        if missing > 0:
            self.tester.mine_blocks(missing)

    def advance_time(self, seconds: int) -> None:
        latest = self.w3.eth.get_block("latest")["timestamp"]
        self.tester.time_travel(latest + seconds)

    def account(self, address: str) -> LocalAccount:
        return self._by_address[address]


def compile_sources(directory: str) -> tuple[tuple[list[dict[str, Any]], str], tuple[list[dict[str, Any]], str]]:
    """Compile a variant of the contract pair (for A/B gas experiments): `directory` holds
    WWWServeExt.vy, WWWServe.vy and the modules they import. Returns ((ext ABI, bytecode),
    (merged ABI, bytecode))."""
    src = Path(directory).resolve()
    out = {}
    for name in (EXTENSION_CONTRACT, MAIN_CONTRACT):
        lines = subprocess.run(
            [sys.executable, "-m", "vyper", "-f", "abi,bytecode", "--evm-version", "cancun", "-p", str(src),
             str(src / f"{name}.vy")],
            check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()
        out[name] = (json.loads(lines[0]), lines[1].strip())
    ext_abi, ext_code = out[EXTENSION_CONTRACT]
    main_abi, main_code = out[MAIN_CONTRACT]
    return (ext_abi, ext_code), (merge_abis(main_abi, ext_abi), main_code)


def register_args(i: int) -> tuple[bytes, str, list[str], str]:
    """Realistic registration fields: one model, a short endpoint and a small JSON metadata blob."""
    return (
        keccak(f"pubkey-{i}".encode()),
        f"https://node{i}.wwwserve.example:8443",
        [MODEL],
        '{"gpu":"H100","region":"eu-west","price_per_1k_tokens_wei":1000000000000}',
    )


# ---------------------------------------------------------------------------------------------
# duel steps


@dataclass
class OpenDuel:
    duel_id: int
    work: WorkAttestation
    salt: bytes
    request: bytes


def open_duel(bench: Bench, origin: LocalAccount, a: LocalAccount, tag: str) -> tuple[OpenDuel, int]:
    """The origin duels A's signed work over request `tag`; returns the duel and openDuel's gas."""
    request = json.dumps({"kind": "chat", "request": {"model": MODEL, "prompt": tag}}).encode()
    rid = request_id_hash(tag)
    salt = keccak(f"inspect {tag}".encode())
    work = sign_work(a, bench.chain_id, bench.c.address, WorkAttestation(
        origin=origin.address, executor=a.address, request_id=rid, request_hash=keccak(request),
        model_hash=model_hash(MODEL), answer_hash=answer_hash(f"answer of A to {tag}"),
        inspect=inspect_commitment(rid, True, salt), issued_at=int(bench.w3.eth.get_block("latest")["timestamp"]),
    ))
    gas = bench.tx(origin, "openDuel", a.address, rid, work.request_hash, work.model_hash, work.answer_hash, salt,
                   work.issued_at, work.signature)
    return OpenDuel(bench.view("duelIdOf", origin.address, rid), work, salt, request), gas


def challenger(bench: Bench, duel_id: int) -> LocalAccount:
    """Mine past the seed block; the node a draw picks as challenger."""
    bench.mine_to(max(bench.w3.eth.block_number, bench.view("getDuel", duel_id)[3] + 1))
    b = bench.view("challengerOf", duel_id)
    if int(b, 16) == 0:
        raise RuntimeError(f"duel {duel_id}: no challenger can be drawn")
    return bench.account(b)


def answer(bench: Bench, duel_id: int, text: str = "answer of B") -> tuple[LocalAccount, int]:
    b = challenger(bench, duel_id)
    return b, bench.tx(b, "answerDuel", duel_id, answer_hash(text))


def vote_round(bench: Bench, duel_id: int, round_: int, choose: Callable[[int], int | None]
               ) -> tuple[list[int], list[int]]:
    """Each distinct judge i of the round commits `choose(i)` and reveals it after the commit window
    (None: commits, never reveals). Returns the (commit, reveal) receipts."""
    judges = list(dict.fromkeys(bench.view("getJudges", duel_id, round_)))
    salts = [keccak(f"salt {duel_id} {round_} {j}".encode()) for j in judges]
    commits, reveals = [], []
    for i, j in enumerate(judges):
        commitment = vote_commitment(bench.chain_id, bench.c.address, duel_id, round_, j, choose(i) or Vote.A,
                                     salts[i])
        commits.append(bench.tx(bench.account(j), "commitVote", duel_id, commitment))
    bench.mine_to(bench.view("getDuel", duel_id)[4])  # the commit end
    for i, j in enumerate(judges):
        vote = choose(i)
        if vote is not None:
            reveals.append(bench.tx(bench.account(j), "revealVote", duel_id, vote, salts[i]))
    return commits, reveals


def settle_after_appeal_window(bench: Bench, duel_id: int, settler: LocalAccount) -> int:
    p = bench.params
    bench.mine_to(bench.view("getDuel", duel_id)[4] + p.reveal_window_blocks + p.appeal_window_blocks)
    return bench.tx(settler, "settleDuel", duel_id)


def judged_duel(bench: Bench, tag: str, origin: LocalAccount, a: LocalAccount, settler: LocalAccount,
                choose: Callable[[int], int | None], top_up: Callable[[], None]) -> DuelGas:
    """One duel judged in round 1 by a panel of K distinct judges. When the contract draws fewer, the
    chain goes back to before the duel and the clock moves a second (so the seed block's hash, and
    the draw, change); `skipped` counts those tries, which leave no trace in the state."""
    k = bench.params.k_judges
    for attempt in range(MAX_PANEL_TRIES):
        snapshot = bench.tester.take_snapshot()
        duel, open_gas = open_duel(bench, origin, a, f"{tag} #{attempt}")
        _, answer_gas = answer(bench, duel.duel_id)
        if len(set(bench.view("getJudges", duel.duel_id, 1))) != k:
            bench.tester.revert_to_snapshot(snapshot)
            bench.advance_time(1)
            continue
        commits, reveals = vote_round(bench, duel.duel_id, 1, choose)
        settle = settle_after_appeal_window(bench, duel.duel_id, settler)
        top_up()
        return DuelGas(open_gas, answer_gas, commits, reveals, settle, skipped=attempt)
    raise RuntimeError(f"{tag}: no panel of {k} distinct judges in {MAX_PANEL_TRIES} tries")


def appealed_duel(bench: Bench, origin: LocalAccount, a: LocalAccount, settler: LocalAccount) -> DuelGas:
    """Round 1 for A, B appeals, a 2K+1-seat round 2 (drawn by drawJudges) for B: the verdict flips."""
    duel, open_gas = open_duel(bench, origin, a, "appealed")
    b, answer_gas = answer(bench, duel.duel_id)
    commits, reveals = vote_round(bench, duel.duel_id, 1, lambda i: Vote.A)
    bench.mine_to(bench.view("getDuel", duel.duel_id)[4] + bench.params.reveal_window_blocks)
    extra = {"appeal": bench.tx(b, "appeal", duel.duel_id)}
    bench.mine_to(bench.view("getDuel", duel.duel_id)[3])  # round 2's seed block
    extra["drawJudges (round 2)"] = bench.tx(settler, "drawJudges", duel.duel_id)
    commits2, reveals2 = vote_round(bench, duel.duel_id, 2, lambda i: Vote.B)
    for i, gas in enumerate(commits2):
        extra[f"commitVote round 2 #{i + 1}"] = gas
    for i, gas in enumerate(reveals2):
        extra[f"revealVote round 2 #{i + 1}"] = gas
    settle = bench.tx(settler, "settleDuel", duel.duel_id)  # every round-2 seat revealed: final at once
    return DuelGas(open_gas, answer_gas, commits, reveals, settle, extra)


def no_show_duel(bench: Bench, origin: LocalAccount, a: LocalAccount, settler: LocalAccount) -> DuelGas:
    """B is drawn (drawChallenger) and never answers: settleDuel cancels, B's bond goes to the reserve."""
    duel, open_gas = open_duel(bench, origin, a, "no-show")
    challenger(bench, duel.duel_id)
    draw = bench.tx(settler, "drawChallenger", duel.duel_id)
    bench.mine_to(bench.view("getDuel", duel.duel_id)[4])  # the answer deadline
    settle = bench.tx(settler, "settleDuel", duel.duel_id)
    return DuelGas(open_gas, 0, [], [], settle, {"drawChallenger": draw})


def withheld_request_duel(bench: Bench, origin: LocalAccount, a: LocalAccount, settler: LocalAccount) -> dict[str, int]:
    """B cannot get the request, the origin publishes it, B answers; nobody judges (every seat silent)."""
    duel, _ = open_duel(bench, origin, a, "withheld")
    b = challenger(bench, duel.duel_id)
    gas = {"answerDuel (no request)": bench.tx(b, "answerDuel", duel.duel_id, bytes(32))}
    w = duel.work
    gas["publishRequest"] = bench.tx(origin, "publishRequest", duel.duel_id, w.request_id, w.request_hash,
                                     w.model_hash, w.answer_hash, duel.salt, w.issued_at, w.signature, duel.request)
    _, gas["answerDuel (after publish)"] = answer(bench, duel.duel_id)
    gas["settleDuel (all seats silent)"] = settle_after_appeal_window(bench, duel.duel_id, settler)
    return gas


def sign_voucher(bench: Bench, origin: LocalAccount, executor: str, cumulative_wei: int) -> bytes:
    digest = bench.view("voucherDigest", origin.address, executor, cumulative_wei)
    return bytes(Account.unsafe_sign_hash(digest, origin.key).signature)


# ---------------------------------------------------------------------------------------------
# the run


@dataclass
class GasReport:
    """Everything one benchmark run (one network size) measured."""

    params: DeploymentParams
    node_count: int
    deploy_gas: int  # WWWServe
    deploy_ext_gas: int  # WWWServeExt
    functions: GasTable
    duel_steps: GasTable
    duels: dict[str, DuelGas]
    budgets: list[tuple[str, int, int]]  # (label, gas used, target)
    reports: list[tuple[str, int]]  # (label, gas used): totals without a budget
    worst_by_function: dict[str, int]  # largest receipt per contract function over the whole run


def measure(params: DeploymentParams, node_count: int = NODE_COUNTS[0], source: str | None = None) -> GasReport:
    """Deploy, exercise every state-changing function and the duel scenarios, collect receipts."""
    bench = Bench(params, node_count, source)
    nodes = bench.accounts[:node_count]
    depositor = bench.accounts[node_count]
    fns = GasTable()
    stake_wei = 10 * params.min_stake_wei

    # --- registry, credits and stake (first call = cold storage, then a steady-state repeat)
    bond = params.registration_bond_wei
    fns.add("register (first)", bench.tx(nodes[0], "register", *register_args(0), value=bond))
    for i, node in enumerate(nodes[1:], start=1):
        bench.tx(node, "register", *register_args(i), value=bond)
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
    bench.mine_to(bench.w3.eth.block_number + 1)
    fns.add("withdraw", bench.tx(depositor, "withdraw"))

    # --- vouchers: the depositor (origin) pays node 1 (executor); a third party submits the first
    sig = sign_voucher(bench, depositor, nodes[1].address, 10**15)
    voucher_first = fns.add("claimVoucher (first)", bench.tx(nodes[2], "claimVoucher", depositor.address,
                                                             nodes[1].address, 10**15, sig))
    sig = sign_voucher(bench, depositor, nodes[1].address, 3 * 10**15)
    voucher_again = fns.add("claimVoucher (again)", bench.tx(nodes[1], "claimVoucher", depositor.address,
                                                             nodes[1].address, 3 * 10**15, sig))

    # stake and models count for draws from the next epoch
    bench.mine_to((bench.w3.eth.block_number // params.epoch_blocks + 1) * params.epoch_blocks)

    def top_up() -> None:
        """Restake what duels took, so every node stays drawable with the same weight."""
        for node in nodes:
            missing = stake_wei - bench.view("activeStake", node.address)
            if missing > 0:
                bench.tx(node, "stake", missing)

    # --- duels: the first ever (cold reserve), then steady state
    origin, a, settler = nodes[0], nodes[1], nodes[-1]
    k = params.k_judges
    duels: dict[str, DuelGas] = {}
    duels["first duel"] = judged_duel(bench, "first", origin, a, settler, lambda i: Vote.A, top_up)
    duels["steady, unanimous"] = judged_duel(bench, "unanimous", origin, a, settler, lambda i: Vote.A, top_up)
    duels[f"steady, {k - k // 2}-{k // 2} split"] = judged_duel(
        bench, "split", origin, a, settler, lambda i: Vote.A if i < k - k // 2 else Vote.B, top_up)
    duels["steady, 1 silent seat"] = judged_duel(
        bench, "silent", origin, a, settler, lambda i: Vote.A if i < k - 1 else None, top_up)
    duels["appealed (round 2 overturns)"] = appealed_duel(bench, origin, a, settler)
    top_up()
    duels["no-show challenger"] = no_show_duel(bench, origin, a, settler)
    top_up()
    for label, gas in withheld_request_duel(bench, origin, a, settler).items():
        fns.add(label, gas)
    top_up()

    steps = GasTable()
    for tag, d in duels.items():
        steps.add(f"{tag}: openDuel", d.open)
        if d.answer:
            steps.add(f"{tag}: answerDuel (draws B and the panel)", d.answer)
        for i, gas in enumerate(d.commits):
            steps.add(f"{tag}: commitVote #{i + 1}", gas)
        for i, gas in enumerate(d.reveals):
            steps.add(f"{tag}: revealVote #{i + 1}", gas)
        for label, gas in d.extra.items():
            steps.add(f"{tag}: {label}", gas)
        steps.add(f"{tag}: settleDuel", d.settle)

    # --- slashed stake catches up with the draw tree; leave, re-register (same leaf), unstake
    fns.add("syncWeight", bench.tx(settler, "syncWeight", a.address))
    fns.add("leave", bench.tx(nodes[7], "leave"))
    fns.add("register (again, same leaf)", bench.tx(nodes[7], "register", keccak(b"k7b"), *register_args(7)[1:]))
    fns.add("requestUnstake", bench.tx(nodes[7], "requestUnstake", bench.view("activeStake", nodes[7].address)))
    bench.advance_time(params.unbonding_period_s)
    bench.mine_to(bench.w3.eth.block_number + params.duel_span_blocks + 1)
    fns.add("withdrawStake", bench.tx(nodes[7], "withdrawStake"))
    bench.tx(nodes[7], "leave")
    fns.add("releaseSlot", bench.tx(nodes[7], "releaseSlot"))
    bench.mine_to(bench.w3.eth.block_number + params.slot_cooldown_blocks + 1)
    fns.add("register (a released leaf)",
            bench.tx(nodes[7], "register", keccak(b"k7c"), *register_args(7)[1:], value=bond))

    budgets: list[tuple[str, int, int]] = []
    for tag in ("first duel", "steady, unanimous", f"steady, {k - k // 2}-{k // 2} split", "steady, 1 silent seat"):
        budgets.append((f"{tag}: issue's list", duels[tag].issue_list, DUEL_TARGET_GAS))
        budgets.append((f"{tag}: whole duel", duels[tag].whole, DUEL_TARGET_GAS))
    budgets += [
        ("voucher claim, first", voucher_first, VOUCHER_CLAIM_TARGET_GAS),
        ("voucher claim, again", voucher_again, VOUCHER_CLAIM_TARGET_GAS),
    ]
    reports = [(f"{tag}: whole duel", duels[tag].whole) for tag in ("appealed (round 2 overturns)",
                                                                     "no-show challenger")]
    return GasReport(params, node_count, bench.deploy_gas, bench.deploy_ext_gas, fns, steps, duels, budgets,
                     reports, dict(bench.worst))


def print_report(report: GasReport) -> bool:
    """Print one network size's tables; True when every budget holds."""
    print(f"\n=== {report.node_count} nodes ===")
    print(f"\n{'function':<52}{'gasUsed':>10}")
    for label, gas in report.functions.rows:
        print(f"{label:<52}{gas:>10,}")
    print(f"\n{'duel step':<52}{'gasUsed':>10}")
    for label, gas in report.duel_steps.rows:
        print(f"{label:<52}{gas:>10,}")
    skipped = {tag: d.skipped for tag, d in report.duels.items() if d.skipped}
    k = report.params.k_judges
    print(f"\n(panels of {k} distinct judges: {sum(skipped.values())} draw(s) with a judge holding two seats were "
          f"undone (chain reverted to before the duel, clock moved a second) and the duel replayed"
          f"{': ' + ', '.join(f'{t} {n}' for t, n in skipped.items()) if skipped else ''})")
    print(f"\n{'budget':<52}{'gasUsed':>10}{'target':>10}  result")
    ok = True
    for label, gas, target in report.budgets:
        ok = ok and gas <= target
        print(f"{label:<52}{gas:>10,}{target:>10,}  {'PASS' if gas <= target else 'OVER'}")
    for label, gas in report.reports:
        print(f"{label:<52}{gas:>10,}{'-':>10}  (report)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--source", help="compile WWWServeExt.vy and WWWServe.vy from this directory instead of "
                                         "loading the committed artifacts")
    parser.add_argument("--tree-depth", type=int, default=DeploymentParams().tree_depth)
    parser.add_argument("--k-judges", type=int, default=DeploymentParams().k_judges)
    parser.add_argument("--nodes", type=int, nargs="+", default=list(NODE_COUNTS),
                        help="network sizes to measure (at least 8 nodes each)")
    args = parser.parse_args()
    params = dataclasses.replace(DeploymentParams(), tree_depth=args.tree_depth, k_judges=args.k_judges)
    if min(args.nodes) < 8:
        parser.error("--nodes: at least 8 nodes (an origin, A, a challenger and judges to draw)")
    reports = [measure(params, n, args.source) for n in args.nodes]
    first = reports[0]
    print(f"WWWServe gas: receipt gasUsed on py-evm (cancun), K={params.k_judges}, tree depth {params.tree_depth}; "
          f"deploy: WWWServeExt {first.deploy_ext_gas:,} + WWWServe {first.deploy_gas:,} = "
          f"{first.deploy_ext_gas + first.deploy_gas:,}")
    ok = all([print_report(r) for r in reports])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
