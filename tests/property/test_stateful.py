"""Stateful property test: the WWWServe contract and `ledger.model` agree after every step.

A Hypothesis `RuleBasedStateMachine` drives the contract (titanoboa, in-process py-evm) and the
pure-Python reference model side by side with random actors: eight node wallets and two plain
depositors deposit, withdraw, register, leave, stake, unbond, sign and claim fee vouchers (fresh,
stale, forged and malformed ones) and run duels end to end (open, draw, commit, reveal, settle,
cancel) with random votes and random judges that never reveal, while blocks and time advance.

After every step:
* both sides succeeded or both reverted with the same reason, and they emitted the same events;
* every storage word the model describes equals the contract's (balances, stake, locks, registry,
  public-key owners, sum-tree leaves and root, claimed vouchers, packed duel words, commitments);
* conservation: the contract's ETH balance equals credit + pending + stake + escrow of open duels;
* routable weight: the tree's root equals the sum of the eligible active stakes;
* stake only went down through its owner's requestUnstake/withdrawStake or through settlement.
A sandboxed rule also checks that any staker can get all its money out after bounded delays.

Runtime knobs: WWWSERVE_PROPERTY_EXAMPLES (default 40) and WWWSERVE_PROPERTY_STEPS (default 100).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import boa
import pytest
from boa.util.abi import Address
from eth_abi import decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ledger.model import (
    SECP256K1N,
    ZERO_HASH,
    Duel,
    DuelStatus,
    ModelRevert,
    Vote,
    WWWServeModel,
)
from ledger.params import DeploymentParams

pytestmark = pytest.mark.property

CONTRACT_PATH = str(Path(__file__).resolve().parents[2] / "contracts" / "WWWServe.vy")
N_NODES = 8
N_DEPOSITORS = 2
N_ACTORS = N_NODES + N_DEPOSITORS
N_PUBKEYS = 10  # a small pool, so key collisions happen
MIN_STAKE = 1_000
ERROR_SELECTOR = bytes.fromhex("08c379a0")
# Node struct slot offsets: pubkey, endpoint (1 + 8), models (1 + 16 * 3), metadata (1 + 32), active, leaf
NODE_PUBKEY, NODE_ACTIVE, NODE_LEAF = 0, 92, 93

ACCOUNTS: list[LocalAccount] = [Account.from_key(keccak(f"wwwserve-property-{i}".encode())) for i in range(N_ACTORS)]
ADDRESSES = [a.address for a in ACCOUNTS]
PUBKEYS = [keccak(f"pubkey-{i}".encode()) for i in range(N_PUBKEYS)]

actor = st.integers(0, N_ACTORS - 1)
node = st.integers(0, N_NODES - 1)
fraction = st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.5])
# duel actions, weighted by how many of each one a duel needs
DUEL_OPS = ["open", "advance", "advance", "advance", "advance", "draw", "commit", "reveal", "settle", "cancel"]


@cache
def deployer() -> Any:
    return boa.load_partial(CONTRACT_PATH)


@cache
def _quiet_class(cls: type) -> type:
    return type(f"Quiet{cls.__name__}", (cls,), {"__repr__": lambda self: f"<WWWServe at {self.address}>"})


def fake_blockhash(number: int) -> bytes:
    return keccak(b"wwwserve-property-block" + number.to_bytes(32, "big"))


def revert_reason(output: bytes) -> str:
    """The reason string of a revert (Error(string)), or "" when there is none."""
    if output[:4] != ERROR_SELECTOR:
        return ""
    (reason,) = decode(["string"], output[4:])
    return str(reason)


def normalize(value: Any) -> Any:
    """Make a decoded log argument comparable with the model's (addresses as str, lists as lists)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [normalize(v) for v in value]
    return value


@cache  # the same few hundred slots are read after every step
def _hashmap_slot(slot: int, keys: tuple[int | str | bytes, ...]) -> int:
    for key in keys:
        if isinstance(key, str):
            key_bytes = bytes.fromhex(key[2:]).rjust(32, b"\x00")
        elif isinstance(key, bytes):
            key_bytes = key
        else:
            key_bytes = key.to_bytes(32, "big")
        slot = int.from_bytes(keccak(slot.to_bytes(32, "big") + key_bytes), "big")
    return slot


class Storage:
    """Raw reads of the contract's storage words (Vyper layout: HashMap slot = keccak(slot ++ key))."""

    def __init__(self, c: Any) -> None:
        layout = c.compiler_data.storage_layout["storage_layout"]
        self.base = {name: info["slot"] for name, info in layout.items() if "slot" in info}
        self.base.update({f"sortition.{k}": v["slot"] for k, v in layout["sortition"].items()})
        self.address = Address(c.address)

    def word(self, slot: int) -> int:
        return int(boa.env.evm.get_storage(self.address, slot))

    def slot(self, name: str, *keys: int | str | bytes) -> int:
        return _hashmap_slot(self.base[name], keys)

    def get(self, name: str, *keys: int | str | bytes, offset: int = 0) -> int:
        return self.word(self.slot(name, *keys) + offset)


class LedgerMachine(RuleBasedStateMachine):
    """Contract and model, driven in lockstep."""

    def __init__(self) -> None:
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        self.c: Any = None
        self.model: WWWServeModel
        self.storage: Storage
        self.votes: dict[tuple[int, str], tuple[int, bytes]] = {}  # what each judge committed to
        self.steps = 0
        self.exit_checks = 0

    def teardown(self) -> None:
        self._anchor.__exit__(None, None, None)

    # ------------------------------------------------------------------ chain helpers
    @property
    def block(self) -> int:
        return int(boa.env.evm.patch.block_number)

    @property
    def now(self) -> int:
        return int(boa.env.evm.patch.timestamp)

    def _sync_blockhashes(self) -> None:
        now = self.block
        boa.env.evm.patch.prev_hashes = [fake_blockhash(now - 1 - i) for i in range(min(256, now))]

    def blockhash(self, number: int) -> bytes:
        """What BLOCKHASH(number) returns now (0 outside the last 256 blocks)."""
        if 0 <= self.block - number - 1 < 256:
            return fake_blockhash(number)
        return b"\x00" * 32

    # ------------------------------------------------------------------ lockstep
    def raw(self, name: str, *args: Any, value: int = 0) -> Callable[[], Any]:
        """A transaction to `name(*args)`; returns the raw computation (no exception on revert)."""
        data = getattr(self.c, name).prepare_calldata(*args)
        return lambda: boa.env.execute_code(to_address=self.c.address, data=data, value=value)

    def step(self, sender: str, contract_call: Callable[[], Any], model_call: Callable[[], object],
             *, stake_may_drop: str = "") -> bool:
        """Run one transaction on both sides and require the same outcome and events.

        `stake_may_drop` names what may lower stake in this step: "unstake", "withdraw" (the sender's
        own) or "settle" (anyone's). Returns whether the transaction succeeded.
        """
        self.steps += 1
        before = {a: (self.model.active_stake.get(a, 0), self.model.unbonding_stake.get(a, 0)) for a in ADDRESSES}
        try:
            model_result = model_call()
            model_reason: str | None = None
        except ModelRevert as exc:
            model_result, model_reason = None, exc.reason
        with boa.env.prank(sender):
            computation = contract_call()
        reason = revert_reason(bytes(computation.output)) if computation.is_error else None
        assert reason == model_reason, f"contract: {reason!r}, model: {model_reason!r}"
        if reason is not None:
            return False
        logs = [(type(log).__name__, {k: normalize(v) for k, v in log._asdict().items() if k != "address"})
                for log in self.c.get_logs(computation)]
        expected = [(ev.name, {k: normalize(v) for k, v in ev.args.items()}) for ev in self.model.events]
        assert logs == expected
        if isinstance(model_result, int) and not isinstance(model_result, bool) and len(computation.output) == 32:
            assert int.from_bytes(computation.output, "big") == model_result  # openDuel's id
        for a in ADDRESSES:
            act, unb = self.model.active_stake.get(a, 0), self.model.unbonding_stake.get(a, 0)
            if act < before[a][0]:
                assert stake_may_drop == "settle" or (stake_may_drop == "unstake" and a == sender), a
            if unb < before[a][1]:
                assert stake_may_drop == "settle" or (stake_may_drop == "withdraw" and a == sender), a
            if act + unb < sum(before[a]):
                assert stake_may_drop in ("settle", "withdraw"), a
        return True

    # ------------------------------------------------------------------ set-up
    @initialize(
        gamma=st.sampled_from([10_000, 5_000, 3_333]),
        minority=st.sampled_from([2_000, 3_001]),
        abstain=st.sampled_from([500, 0]),
        stakes=st.lists(st.integers(0, 8), min_size=7, max_size=7),
        unbond=st.lists(st.sampled_from([0.0, 0.0, 0.2, 0.5]), min_size=7, max_size=7),
        credits=st.lists(st.integers(0, 20_000), min_size=N_ACTORS, max_size=N_ACTORS),
    )
    def deploy(self, gamma: int, minority: int, abstain: int, stakes: list[int], unbond: list[float],
               credits: list[int]) -> None:
        params = DeploymentParams(
            min_stake_wei=MIN_STAKE, unbonding_period_s=50, withdrawal_notice_s=30, k_judges=3,
            seed_delay_blocks=1, draw_window_blocks=8, commit_window_blocks=8, reveal_window_blocks=8,
            settle_window_blocks=4, gamma_bps=gamma, minority_slash_bps=minority, abstain_slash_bps=abstain,
            duelist_fee_wei=7, judge_fee_wei=5, tree_depth=5,
        )
        for address in ADDRESSES:
            boa.env.set_balance(address, 10**24)
        self.c = deployer().deploy(*params.constructor_args())
        # boa renders the reverting contract (with a dump of all its storage) on every revert, which
        # gets slower as the run goes on; half of these steps revert, so give it a short repr
        self.c.__class__ = _quiet_class(type(self.c))
        self.model = WWWServeModel(params, chain_id=int(boa.env.evm.patch.chain_id), address=str(self.c.address))
        self.storage = Storage(self.c)
        self._sync_blockhashes()
        # seven of the eight nodes start registered (stakes in MIN_STAKE/2 steps: some ineligible)
        for i, half_stakes in enumerate(stakes):
            self.register(i, i, False)
            self.deposit(i, (half_stakes + 1) * MIN_STAKE // 2)
            self.stake_fraction(i, 1.0)
            self.request_unstake(i, unbond[i])  # some stake stays slashable while unbonding
        for i, amount in enumerate(credits):
            self.deposit(i, amount)

    # ------------------------------------------------------------------ credits
    def deposit(self, who: int, amount: int) -> None:
        s = ADDRESSES[who]
        self.step(s, self.raw("deposit", value=amount), lambda: self.model.deposit(s, amount))

    def request_withdrawal(self, who: int, frac: float) -> None:
        s = ADDRESSES[who]
        amount = int(self.model.credit.get(s, 0) * frac)
        self.step(s, self.raw("requestWithdrawal", amount),
                  lambda: self.model.request_withdrawal(s, amount, now_s=self.now))

    def cancel_withdrawal(self, who: int) -> None:
        s = ADDRESSES[who]
        self.step(s, self.raw("cancelWithdrawal"), lambda: self.model.cancel_withdrawal(s))

    def withdraw(self, who: int) -> None:
        s = ADDRESSES[who]
        eth_before = boa.env.get_balance(s)
        if self.step(s, self.raw("withdraw"), lambda: self.model.withdraw(s, now_s=self.now)):
            assert boa.env.get_balance(s) == eth_before + self.model.events[0].args["amount"]

    # ------------------------------------------------------------------ time
    def advance_time(self, seconds: int) -> None:
        boa.env.evm.patch.timestamp += seconds

    def mine(self, blocks: int) -> None:
        boa.env.evm.patch.block_number += blocks
        self._sync_blockhashes()

    # ------------------------------------------------------------------ registry
    def register(self, who: int, key: int, no_models: bool) -> None:
        s = ADDRESSES[who]
        pubkey = b"\x00" * 32 if key == N_PUBKEYS - 1 and no_models else PUBKEYS[key]
        models = [] if no_models and key % 2 else [f"model-{who}"]
        endpoint, metadata = f"http://node{who}.example", f'{{"k":{key}}}'
        if self.step(s, self.raw("register", pubkey, endpoint, models, metadata),
                     lambda: self.model.register(s, pubkey, endpoint, models, metadata)):
            self._check_node_record(s)

    def update_node(self, who: int, key: int, endpoint: str = "http://moved") -> None:
        s = ADDRESSES[who]
        models = ["m1", "m2"][: 1 + key % 2]
        if self.step(s, self.raw("updateNode", PUBKEYS[key], endpoint, models, "x"),
                     lambda: self.model.update_node(s, PUBKEYS[key], endpoint, models, "x")):
            self._check_node_record(s)

    def leave(self, who: int) -> None:
        s = ADDRESSES[who]
        self.step(s, self.raw("leave"), lambda: self.model.leave(s))

    def _check_node_record(self, s: str) -> None:
        rec, expected = self.c.nodes(s), self.model.node(s)
        assert (rec.pubkey, rec.endpoint, list(rec.models), rec.metadata, rec.active, rec.leaf) == (
            expected.pubkey, expected.endpoint, list(expected.models), expected.metadata, expected.active,
            expected.leaf)

    # ------------------------------------------------------------------ stake
    def stake_fraction(self, who: int, frac: float) -> None:
        s = ADDRESSES[who]
        amount = int(self.model.credit.get(s, 0) * frac)
        self.step(s, self.raw("stake", amount), lambda: self.model.stake(s, amount))

    def request_unstake(self, who: int, frac: float) -> None:
        s = ADDRESSES[who]
        amount = int(self.model.active_stake.get(s, 0) * frac)
        self.step(s, self.raw("requestUnstake", amount),
                  lambda: self.model.request_unstake(s, amount, now_s=self.now), stake_may_drop="unstake")

    def withdraw_stake(self, who: int) -> None:
        s = ADDRESSES[who]
        self.step(s, self.raw("withdrawStake"),
                  lambda: self.model.withdraw_stake(s, now_s=self.now, block_number=self.block),
                  stake_may_drop="withdraw")

    # ------------------------------------------------------------------ grouped rules
    # Related operations share one rule, so Hypothesis (which picks rules uniformly) spends about
    # half of the steps on duels, whose lifecycle needs many steps in order.
    @rule(op=st.sampled_from(["deposit", "request", "cancel", "withdraw", "withdraw at the edge"]), who=actor,
          amount=st.integers(0, 20_000), frac=fraction)
    def bank(self, op: str, who: int, amount: int, frac: float) -> None:
        if op == "deposit":
            self.deposit(who, amount)
        elif op == "request":
            self.request_withdrawal(who, frac)
        elif op == "cancel":
            self.cancel_withdrawal(who)
        elif op == "withdraw":
            self.withdraw(who)
        else:  # one second early, then exactly when the notice ends
            self._advance_to(self.model.withdrawable_at.get(ADDRESSES[who], 0) - 1)
            self.withdraw(who)
            self._advance_to(self.model.withdrawable_at.get(ADDRESSES[who], 0))
            self.withdraw(who)

    @rule(op=st.sampled_from(["register", "register", "update", "leave"]), who=node,
          key=st.integers(0, N_PUBKEYS - 1), odd=st.booleans())
    def registry(self, op: str, who: int, key: int, odd: bool) -> None:
        if op == "register":
            self.register(who, key, odd)
        elif op == "update":
            self.update_node(who, key, "http://b:1" if odd else "http://a")
        else:
            self.leave(who if odd else who % N_ACTORS)

    @rule(op=st.sampled_from(["stake", "stake", "unstake", "withdraw", "withdraw at the edge"]), who=actor,
          frac=fraction)
    def staking(self, op: str, who: int, frac: float) -> None:
        if op == "stake":
            self.stake_fraction(who, frac)
        elif op == "unstake":
            self.request_unstake(who, frac)
        elif op == "withdraw":
            self.withdraw_stake(who)
        else:  # exactly at the end of unbonding and of the duel lock, then one block later
            s = ADDRESSES[who]
            self._advance_to(self.model.unbonding_end.get(s, 0))
            self._wait_until(self.model.locked_until.get(s, 0))
            self.withdraw_stake(who)
            self.mine(1)
            self.withdraw_stake(who)

    def _advance_to(self, timestamp: int) -> None:
        if self.now < timestamp:
            self.advance_time(timestamp - self.now)

    @rule(blocks=st.sampled_from([0, 1, 1, 2, 3, 7]), seconds=st.sampled_from([0, 0, 5, 20, 60]))
    def wait(self, blocks: int, seconds: int) -> None:
        if blocks:
            self.mine(blocks)
        if seconds:
            self.advance_time(seconds)

    # ------------------------------------------------------------------ vouchers
    @rule(origin=actor, executor=actor, submitter=actor, delta=st.integers(-3, 400),
          kind=st.sampled_from(["valid"] * 6 + ["wrong signer", "high s", "bad v", "short", "zero r", "v as 0/1"]))
    def claim_voucher(self, origin: int, executor: int, submitter: int, delta: int, kind: str) -> None:
        o, e, s = ADDRESSES[origin], ADDRESSES[executor], ADDRESSES[submitter]
        cumulative = max(0, self.model.claimed_wei(o, e) + delta)
        digest = self.model.voucher_digest(o, e, cumulative)
        signer = ACCOUNTS[(origin + 1) % N_ACTORS] if kind == "wrong signer" else ACCOUNTS[origin]
        sig = bytes(Account.unsafe_sign_hash(digest, signer.key).signature)
        if kind == "high s":
            high_s = SECP256K1N - int.from_bytes(sig[32:64], "big")
            sig = sig[:32] + high_s.to_bytes(32, "big") + bytes([55 - sig[64]])
        elif kind == "bad v":
            sig = sig[:64] + bytes([30])
        elif kind == "short":
            sig = sig[:64]
        elif kind == "zero r":
            sig = b"\x00" * 32 + sig[32:]
        elif kind == "v as 0/1":
            sig = sig[:64] + bytes([sig[64] - 27])
        self.step(s, self.raw("claimVoucher", o, e, cumulative, sig),
                  lambda: self.model.claim_voucher(s, o, e, cumulative, sig))

    # ------------------------------------------------------------------ duels
    # Each duel action usually picks a duel (and judge) for which it can succeed, mining just
    # enough blocks first, and sometimes an arbitrary one, so both the lifecycle and its reverts
    # are exercised. Two rules share the dispatcher so that duels get about a third of the steps.
    @rule(op=st.sampled_from(DUEL_OPS), a=actor, b=actor, x=actor, pick=st.integers(0, 50),
          vote=st.sampled_from([1, 1, 1, 2, 2, 3, 4, 0, 5]), smart=st.sampled_from([True, True, True, False]),
          flag=st.booleans())
    def duel(self, op: str, a: int, b: int, x: int, pick: int, vote: int, smart: bool, flag: bool) -> None:
        if op == "open":
            self.open_duel(a % N_NODES, b % N_NODES, x % N_NODES, pick % 4, smart)
        elif op == "advance":
            self.advance_duel(pick, a, b, vote, flag)
        elif op == "draw":
            self.draw_judges(pick, a, smart)
        elif op == "commit":  # one to three judges act in a row (each its own transaction)
            for i in range(1 + b % 3):
                ballot = [1, 1, 2, 3, 4][(vote + i * x) % 5] if i else vote
                self.commit_vote(pick, (a + i) % N_ACTORS, ballot, smart, flag)
        elif op == "reveal":
            for i in range(1 + b % 3):
                self.reveal_vote(pick, (a + i) % N_ACTORS, smart, flag or vote != 0 or i > 0)
        elif op == "settle":
            self.settle_duel(pick, a, smart, flag)
        else:
            self.cancel_undrawn_duel(pick, a, smart and flag)

    @rule(op=st.sampled_from(DUEL_OPS), a=actor, b=actor, x=actor, pick=st.integers(0, 50),
          vote=st.sampled_from([1, 1, 1, 2, 2, 3, 4, 0, 5]), smart=st.sampled_from([True, True, True, False]),
          flag=st.booleans())
    def duel_again(self, op: str, a: int, b: int, x: int, pick: int, vote: int, smart: bool, flag: bool) -> None:
        self.duel(op, a, b, x, pick, vote, smart, flag)

    def advance_duel(self, pick: int, seat: int, count: int, vote: int, early: bool) -> None:
        """Take an open duel one stage further (open one if none): draw (or cancel once the draw
        window is over), then 1-3 commits, then 1-3 reveals, then settlement. Judges skipped here
        may never commit or reveal; `early` settles as soon as the reveal window allows it."""
        m = self.model
        open_ids = m.open_duel_ids()
        if not open_ids:
            self.open_duel(seat % N_NODES, count % N_NODES, vote % N_NODES, pick % 4, True)
            return
        duel_id = open_ids[pick % len(open_ids)]
        duel = m.duels[duel_id]
        if duel.info.status == DuelStatus.AWAITING_JUDGES:
            if self.block > duel.info.seed_block + m.params.draw_window_blocks:
                self.cancel_undrawn_duel(-duel_id, seat % N_ACTORS, False)
            else:
                self.draw_judges(-duel_id, seat % N_ACTORS, True)
            return
        uncommitted = self._unrevealed(duel, committed=False)
        committed = self._unrevealed(duel, committed=True)
        if self.block <= duel.info.commit_end and uncommitted and not (early and committed):
            for i in range(1 + count % len(uncommitted)):
                self.commit_vote(-duel_id, (seat + i) % N_ACTORS, [1, 1, 2, 1, 3, 4, 2][(vote + i) % 7], True, False)
        elif committed and self.block <= duel.info.reveal_end and not (early and len(committed) == 1):
            for i in range(1 + count % len(committed)):
                self.reveal_vote(-duel_id, (seat + i) % N_ACTORS, True, True)
        else:
            self.settle_duel(-duel_id, seat % N_ACTORS, True, True)

    def _duel_id(self, pick: int, fits: Callable[[Duel], bool] | None = None) -> int:
        """A duel for which `fits` holds when there is one; else any duel or the next (unknown) id.
        A negative `pick` names duel -pick directly."""
        if pick < 0:
            return -pick
        m = self.model
        candidates = [d for d, duel in sorted(m.duels.items()) if fits is not None and fits(duel)]
        if not candidates:
            candidates = [*range(1, m.duel_count + 2)]
        return candidates[pick % len(candidates)]

    def _unrevealed(self, duel: Duel, *, committed: bool) -> list[str]:
        """Panel judges that have not revealed and have (or have not) an open commitment."""
        judges = [self.model.sortition.owner(leaf) for leaf in duel.panel.judge_leaves]
        return [j for j, v in zip(judges, duel.panel.votes, strict=True)
                if v == Vote.NONE and (duel.commitments.get(j, ZERO_HASH) != ZERO_HASH) == committed]

    def open_duel(self, origin: int, a: int, b: int, tag: int, smart: bool) -> None:
        active = [i for i in range(N_NODES) if self.model.node(ADDRESSES[i]).active]
        if smart and len(active) >= 3:
            origin = active[origin % len(active)]
            rest = [i for i in active if i != origin]
            a = rest[a % len(rest)]
            rest = [i for i in rest if i != a]
            b = rest[b % len(rest)]
        o, pa, pb = ADDRESSES[origin], ADDRESSES[a], ADDRESSES[b]
        q, ha, hb = (keccak(f"{x}{tag}".encode()) for x in "qab")
        self.step(o, self.raw("openDuel", pa, pb, q, ha, hb),
                  lambda: self.model.open_duel(o, pa, pb, q, ha, hb, block_number=self.block))

    def _wait_until(self, block: int) -> None:
        if self.block < block:
            self.mine(block - self.block)

    def draw_judges(self, pick: int, who: int, smart: bool) -> None:
        window = self.model.params.draw_window_blocks
        duel_id = self._duel_id(pick, (lambda d: d.info.status == DuelStatus.AWAITING_JUDGES
                                       and self.block <= d.info.seed_block + window) if smart else None)
        duel = self.model.duels.get(duel_id)
        if smart and duel is not None:
            self._wait_until(duel.info.seed_block + 1)  # mine just enough for the seed block to exist
        seed_hash = self.blockhash(duel.info.seed_block) if duel else b"\x00" * 32
        self.step(ADDRESSES[who], self.raw("drawJudges", duel_id),
                  lambda: self.model.draw_judges(ADDRESSES[who], duel_id, block_number=self.block,
                                                 blockhash=seed_hash))

    def cancel_undrawn_duel(self, pick: int, who: int, smart: bool) -> None:
        duel_id = self._duel_id(pick, (lambda d: d.info.status == DuelStatus.AWAITING_JUDGES) if smart else None)
        duel = self.model.duels.get(duel_id)
        if smart and duel is not None and duel.info.status == DuelStatus.AWAITING_JUDGES:
            self._wait_until(duel.info.seed_block + self.model.params.draw_window_blocks + 1)
        self.step(ADDRESSES[who], self.raw("cancelUndrawnDuel", duel_id),
                  lambda: self.model.cancel_undrawn_duel(ADDRESSES[who], duel_id, block_number=self.block))

    def _seat(self, duel_id: int, seat: int, fitting: list[str]) -> str:
        """Smart: one of `fitting`. Else a judge of the duel, or anyone (seats 8 and 9)."""
        if fitting:
            return fitting[seat % len(fitting)]
        judges = self.model.get_judges(duel_id)
        if seat < N_NODES and judges:
            return judges[seat % len(judges)]
        return ADDRESSES[seat]

    def commit_vote(self, pick: int, seat: int, vote: int, smart: bool, empty: bool) -> None:
        duel_id = self._duel_id(pick, (lambda d: d.info.status == DuelStatus.VOTING and self.block
                                       <= d.info.commit_end and bool(self._unrevealed(d, committed=False)))
                                if smart else None)
        duel = self.model.duels.get(duel_id)
        fitting = self._unrevealed(duel, committed=False) if smart and duel is not None else []
        judge = self._seat(duel_id, seat, fitting)
        salt = keccak(f"salt-{duel_id}-{judge}-{self.steps}".encode())
        com = b"\x00" * 32 if empty and not smart else self.model.vote_commitment(duel_id, judge, vote, salt)
        if self.step(judge, self.raw("commitVote", duel_id, com),
                     lambda: self.model.commit_vote(judge, duel_id, com, block_number=self.block)):
            self.votes[(duel_id, judge)] = (vote, salt)

    def reveal_vote(self, pick: int, seat: int, smart: bool, honest: bool) -> None:
        duel_id = self._duel_id(pick, (lambda d: d.info.status == DuelStatus.VOTING and self.block
                                       <= d.info.reveal_end and bool(self._unrevealed(d, committed=True)))
                                if smart else None)
        duel = self.model.duels.get(duel_id)
        fitting = self._unrevealed(duel, committed=True) if smart and duel is not None else []
        judge = self._seat(duel_id, seat, fitting)
        if fitting and duel is not None:
            self._wait_until(duel.info.commit_end + 1)  # mine into the reveal window
        vote, salt = self.votes.get((duel_id, judge), (1, b"\x01" * 32))
        if not honest:
            salt = keccak(salt)
        self.step(judge, self.raw("revealVote", duel_id, vote, salt),
                  lambda: self.model.reveal_vote(judge, duel_id, vote, salt, block_number=self.block))

    def settle_duel(self, pick: int, who: int, smart: bool, wait: bool) -> None:
        duel_id = self._duel_id(pick, (lambda d: d.info.status == DuelStatus.VOTING) if smart else None)
        duel = self.model.duels.get(duel_id)
        if smart and wait and duel is not None and duel.info.status == DuelStatus.VOTING:
            self._wait_until(duel.info.reveal_end + 1)  # the silent judges had their chance
        self.step(ADDRESSES[who], self.raw("settleDuel", duel_id),
                  lambda: self.model.settle_duel(ADDRESSES[who], duel_id, block_number=self.block),
                  stake_may_drop="settle")

    # ------------------------------------------------------------------ liveness (sandboxed)
    # a sandbox: at most once per 12 real steps, so it does not crowd them out
    @precondition(lambda self: self.steps >= 12 * (self.exit_checks + 1))
    @rule(who=node)
    def staker_can_exit(self, who: int) -> None:
        """Leave, wait out the duel lock and the unbonding period, unstake, withdraw everything.

        Runs inside a snapshot (contract) and on a copy (model), so the run goes on unchanged.
        """
        s = ADDRESSES[who]
        p = self.model.params
        horizon = (p.seed_delay_blocks + p.draw_window_blocks + p.commit_window_blocks + p.reveal_window_blocks
                   + p.settle_window_blocks)
        # a lock never reaches further than one duel's lifetime from now
        assert self.model.locked_until.get(s, 0) <= self.block + horizon
        self.exit_checks += 1
        saved_model, saved_votes, saved_steps = copy.deepcopy(self.model), dict(self.votes), self.steps
        with boa.env.anchor():
            if self.model.node(s).active:
                assert self.step(s, self.raw("leave"), lambda: self.model.leave(s))
            active = self.model.active_stake.get(s, 0)
            if active:
                assert self.step(s, self.raw("requestUnstake", active),
                                 lambda: self.model.request_unstake(s, active, now_s=self.now),
                                 stake_may_drop="unstake")
            self.advance_time(p.unbonding_period_s)
            self.mine(horizon + 1)
            if self.model.unbonding_stake.get(s, 0):
                assert self.step(s, self.raw("withdrawStake"),
                                 lambda: self.model.withdraw_stake(s, now_s=self.now, block_number=self.block),
                                 stake_may_drop="withdraw")
            credit = self.model.credit.get(s, 0)
            if credit:
                assert self.step(s, self.raw("requestWithdrawal", credit),
                                 lambda: self.model.request_withdrawal(s, credit, now_s=self.now))
            self.advance_time(p.withdrawal_notice_s)
            if self.model.pending_withdrawal.get(s, 0):
                assert self.step(s, self.raw("withdraw"), lambda: self.model.withdraw(s, now_s=self.now))
            assert self.model.total_stake(s) == 0 == self.model.credit.get(s, 0)
            assert self.model.pending_withdrawal.get(s, 0) == 0
            self.check_agreement()
        self.model, self.votes, self.steps = saved_model, saved_votes, saved_steps

    # ------------------------------------------------------------------ after every step
    @invariant()
    def check_agreement(self) -> None:
        if self.c is None:
            return
        m, st_ = self.model, self.storage
        held = 0
        eligible = 0
        for a in ADDRESSES:
            pairs = {
                "credit": m.credit.get(a, 0),
                "pendingWithdrawal": m.pending_withdrawal.get(a, 0),
                "withdrawableAt": m.withdrawable_at.get(a, 0),
                "activeStake": m.active_stake.get(a, 0),
                "unbondingStake": m.unbonding_stake.get(a, 0),
                "unbondingEnd": m.unbonding_end.get(a, 0),
                "lockedUntil": m.locked_until.get(a, 0),
                "registeredOnce": int(a in m.registered_once),
            }
            for name, expected in pairs.items():
                assert st_.get(name, a) == expected >= 0, (name, a)
            rec = m.node(a)
            assert st_.get("nodes", a, offset=NODE_PUBKEY) == int.from_bytes(rec.pubkey, "big"), a
            assert st_.get("nodes", a, offset=NODE_ACTIVE) == int(rec.active), a
            assert st_.get("nodes", a, offset=NODE_LEAF) == rec.leaf, a
            for e in ADDRESSES:
                assert st_.get("claimed", a, e) == m.claimed_wei(a, e), (a, e)
            held += pairs["credit"] + pairs["pendingWithdrawal"] + pairs["activeStake"] + pairs["unbondingStake"]
            if rec.active and pairs["activeStake"] >= m.params.min_stake_wei:
                eligible += pairs["activeStake"]
        for pubkey in PUBKEYS:
            owner = st_.get("pubkeyOwner", pubkey)
            assert owner == int(m.pubkey_owner.get(pubkey, "0x" + "00" * 20), 16), pubkey.hex()
        # sortition: leaves and root (the contract keeps no other levels in sync, by design)
        tree = m.sortition
        assert st_.get("sortition.leafCount") == tree.leaf_count
        for leaf in range(tree.leaf_count):
            assert st_.get("sortition.tree", tree.leaves + leaf) == tree.leaf_weight(leaf), leaf
            assert st_.get("sortition.leafOwner", leaf) == int(tree.owner(leaf), 16)
        assert st_.get("sortition.tree", 1) == tree.total_weight() == eligible == m.eligible_weight_wei()
        # duels: packed words and open commitments
        assert st_.word(st_.base["duelCount"]) == m.duel_count
        assert st_.word(st_.base["activeNodeCount"]) == m.active_node_count
        open_duels = 0
        for duel_id, duel in m.duels.items():
            assert st_.get("duelInfo", duel_id) == duel.info.pack(), duel_id
            assert st_.get("duelPanel", duel_id) == duel.panel.pack(), duel_id
            for judge in m.get_judges(duel_id):
                assert st_.get("commitments", duel_id, judge) == int.from_bytes(m.commitment(duel_id, judge), "big")
            open_duels += duel.info.status in (DuelStatus.AWAITING_JUDGES, DuelStatus.VOTING)
        # conservation: every wei the contract holds is owed to someone
        balance = boa.env.get_balance(self.c.address)
        assert balance == m.balance_wei == held + open_duels * m.duel_escrow_wei == m.liabilities_wei()


LedgerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("WWWSERVE_PROPERTY_EXAMPLES", "40")),
    stateful_step_count=int(os.environ.get("WWWSERVE_PROPERTY_STEPS", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TestLedgerStateful = LedgerMachine.TestCase
