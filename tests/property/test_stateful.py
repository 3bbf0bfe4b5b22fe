"""Stateful property test: the WWWServe contracts and `ledger.model` agree after every step.

A Hypothesis `RuleBasedStateMachine` drives the two deployed contracts (titanoboa, in-process py-evm,
through WWWServe's address with the merged ABI) and the pure-Python reference model side by side,
through the `Twin` harness of tests/unit/contract_fixtures.py. Eight node wallets and two plain
depositors deposit, withdraw, register (from a small key pool, so keys collide), update their models,
leave, stake, unstake, withdraw stake, sync draw weights, sign and claim fee vouchers (fresh, stale,
forged, malformed) and run duels end to end over signed work (sometimes forged, expired, over a
commitment to "no duel", another origin's, an unknown model's, already dueled): the drawn challenger
is recorded or not, answers (or says it has no request, which is then published or withheld, and
says it again after publication, refused), or stays silent (settled in the seed epoch, an unrecorded
challenger is drawn and slashed then), seats commit and reveal random votes or stay silent, losers
appeal, anyone settles (coherent seats paid by how rare their verdict is); blocks and time advance.

After every step:
* both sides succeeded, or both reverted with the same reason; they emitted the same events (names
  and arguments); a call that returns a value (openDuel, drawChallenger) returned the same;
* every storage word the model describes equals the contract's: credit, pending withdrawals and
  their notice, the packed stake account (active | unbonding | bonded), the unbonding word, the
  registry (key, active flag, leaf, key owners, model epochs), claimed vouchers, the sum tree's
  leaves and root, the reserve, the decayed verdict counts, each duel's packed word (with its first
  round's seats and votes), the appeal panel and every commitment; a duel's views (getDuel,
  getJudges and getVotes of both rounds) whenever it changed;
* conservation, exactly: the contract's ETH balance == model.liabilities_wei() == credit + pending +
  active and unbonding stake + escrow of open duels + deposits of open appeals + reserve;
* no balance below zero; each node's bonded stake == the sum of the bonds of the open duels it is a
  duelist in; bonded <= stake, except for a node whose stake a judge penalty cut while it was
  bonded (penalties take stake the bonds count on; the duel then takes what is left);
* only the staker (requestUnstake lowers active, withdrawStake lowers unbonding) or a duel's
  settlement or cancellation lowers a stake; a duel settles or is cancelled at most once;
* the tree's root equals the sum of its leaves, and a leaf's weight equals what the node's stake says
  once it is synced (syncWeight) - slashes reach the tree lazily.
A sandboxed rule (run, checked, rolled back) checks that anyone can end every open duel
DUEL_SPAN_BLOCKS later, and that a staker that leaves gets all its money out after the delays.
(That no function loops over all nodes is checked structurally in tests/unit/test_contract_gas.py.)

Runtime knobs: WWWSERVE_PROPERTY_EXAMPLES (default 25) and WWWSERVE_PROPERTY_STEPS (default 80);
the defaults run in about 40 s. `STATS` counts events and revert reasons, to see what a run covered.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boa
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from contract_fixtures import (
    GWEI,
    VALUE_MASK,
    ZERO32,
    ZERO_ADDRESS,
    Job,
    RevertedError,
    Twin,
    advance,
    attest,
    block_number,
    deploy,
    evm_blockhash,
    mine,
    mine_to,
    now_s,
    open_args,
    pubkey_of,
    sync_blockhashes,
)

from wwwserve.ledger.model import SECP256K1N, DuelStatus, Vote
from wwwserve.ledger.params import DeploymentParams
from wwwserve.ledger.work import answer_hash

pytestmark = pytest.mark.property

N_NODES = 8
N_DEPOSITORS = 2
N_ACTORS = N_NODES + N_DEPOSITORS
N_KEYS = 10  # a small pool of ed25519 keys, so key collisions happen
MODELS = ["m1", "m2"]
MODEL_SETS = [["m1"], ["m1", "m2"], ["m2"], ["m1"], []]
OPEN = (DuelStatus.AWAITING_ANSWER, DuelStatus.AWAITING_REQUEST, DuelStatus.JUDGING)
JUDGE_SLASHES = (2, 3)  # incoherent, silent
# Node struct slot offsets: pubkey, endpoint (1 + 8), models (1 + 16 * 3), metadata (1 + 32), active, leaf
NODE_PUBKEY, NODE_ACTIVE, NODE_LEAF = 0, 92, 93

STATS: dict[str, int] = {}
ACCOUNTS: list[LocalAccount] = [Account.from_key(keccak(f"wwwserve-property-{i}".encode())) for i in range(N_ACTORS)]
ADDRESSES = [a.address for a in ACCOUNTS]

actor = st.integers(0, N_ACTORS - 1)
node = st.integers(0, N_NODES - 1)
fraction = st.sampled_from([0.0, 0.1, 0.5, 1.0, 1.5])
# a judge's vote, as an offset from the duel's "better answer" (so panels mostly agree): the better
# side four times in seven, then the other side, abstain, no evidence, and silence (commit, never reveal)
VOTES = ["truth", "truth", "truth", "truth", "other", Vote.ABSTAIN, Vote.NO_EVIDENCE, "truth", None]
OPEN_KINDS = ["good"] * 8 + ["wrong signer", "no duel", "expired", "other origin", "unknown model", "again",
                             "bad salt", "malformed", "self"]


class LedgerMachine(RuleBasedStateMachine):
    """Contracts and model, driven in lockstep."""

    def __init__(self) -> None:
        super().__init__()
        self._anchor = boa.env.anchor()
        self._anchor.__enter__()
        sync_blockhashes()
        self.twin: Twin | None = None
        self.jobs: dict[int, tuple[Job, str]] = {}  # duel id -> (the work, its origin)
        self.all_jobs: list[tuple[Job, str]] = []
        self.votes: dict[tuple[int, int, str], tuple[int, bytes]] = {}  # (duel, round, judge) -> committed
        self.opened_at: dict[int, int] = {}  # duel id -> block it opened in
        self.closed: set[int] = set()  # duels with a DuelSettled or DuelCancelled event
        self.judge_slashed: set[str] = set()  # nodes a judge penalty cut while they were bonded
        self.steps = 0
        self.sandboxes = 0
        self.exits = 0
        self.tags = 0

    def teardown(self) -> None:
        STATS["transactions"] = STATS.get("transactions", 0) + self.steps
        self._anchor.__exit__(None, None, None)

    @property
    def m(self) -> Any:
        assert self.twin is not None
        return self.twin.m

    # ------------------------------------------------------------------ lockstep with rules
    def step(self, sender: str, name: str, args: tuple[Any, ...], model_call: Callable[[], Any], *,
             value: int = 0, may_lower: str = "") -> tuple[bool, Any]:
        """One transaction on both sides (the Twin compares outcome, reason, events and state).

        `may_lower` says what may lower stake in this step: "unstake" or "withdraw" (the sender's
        own) or "settle" (anyone's). Returns (succeeded, the model's result)."""
        assert self.twin is not None
        self.steps += 1
        m = self.m
        before = {a: (m.active_stake.get(a, 0), m.unbonding_stake.get(a, 0), m.bonded.get(a, 0)) for a in ADDRESSES}
        free_before = len(m.sortition.free)
        try:
            result = self.twin.tx(sender, name, args, model_call, value=value)
        except RevertedError as exc:
            STATS["revert " + exc.reason] = STATS.get("revert " + exc.reason, 0) + 1
            return False, None
        m = self.m
        if len(m.sortition.free) < free_before:  # a registration took a released leaf
            STATS["slots reused"] = STATS.get("slots reused", 0) + 1
        for ev_name, ev in self.twin.events:
            STATS[ev_name] = STATS.get(ev_name, 0) + 1
            if ev_name == "DuelSettled":
                label = f"outcome {ev['outcome']} round {ev['round']}"
                STATS[label] = STATS.get(label, 0) + 1
            if ev_name == "DuelCancelled":
                STATS[f"cancel {ev['reason']}"] = STATS.get(f"cancel {ev['reason']}", 0) + 1
            if ev_name in ("DuelSettled", "DuelCancelled"):
                assert ev["duelId"] not in self.closed, f"duel {ev['duelId']} ended twice"
                self.closed.add(ev["duelId"])
            if ev_name == "StakeSlashed" and ev["reason"] in JUDGE_SLASHES and before[ev["node"]][2] > 0:
                self.judge_slashed.add(ev["node"])
        for a in ADDRESSES:
            act, unb = m.active_stake.get(a, 0), m.unbonding_stake.get(a, 0)
            if act < before[a][0]:
                assert may_lower == "settle" or (may_lower == "unstake" and a == sender), (name, a)
            if unb < before[a][1]:
                assert may_lower == "settle" or (may_lower == "withdraw" and a == sender), (name, a)
            if act + unb < before[a][0] + before[a][1]:
                assert may_lower in ("settle", "withdraw"), (name, a)
        return True, result

    # ------------------------------------------------------------------ set-up
    @initialize(
        k=st.sampled_from([3, 3, 2, 1]),
        bps=st.sampled_from([500, 0, 10_000]),
        stakes=st.lists(st.integers(0, 6), min_size=7, max_size=7),
        model_sets=st.lists(st.integers(0, 3), min_size=7, max_size=7),
        credits=st.lists(st.integers(0, 3_000), min_size=N_ACTORS, max_size=N_ACTORS),
    )
    def deploy(self, k: int, bps: int, stakes: list[int], model_sets: list[int], credits: list[int]) -> None:
        params = DeploymentParams(
            min_stake_wei=100 * GWEI, unbonding_period_s=50, withdrawal_notice_s=30, k_judges=k, epoch_blocks=8,
            answer_window_blocks=5, commit_window_blocks=5, reveal_window_blocks=3, appeal_window_blocks=3,
            publish_window_blocks=4, attestation_ttl_s=40, duel_bond_wei=20 * GWEI, duelist_fee_wei=7,
            judge_fee_wei=5, judge_penalty_wei=9 * GWEI, silent_penalty_wei=4 * GWEI, reserve_payout_bps=bps,
            tree_depth=4, registration_bond_wei=30 * GWEI,
        )
        for address in ADDRESSES:
            boa.env.set_balance(address, 10**24)
        self.twin = Twin(deploy(params), params)
        self.twin.addresses = list(ADDRESSES)
        # seven of the eight nodes start registered, with stakes in MIN_STAKE/2 steps (some ineligible)
        for i in range(7):
            self.register(i, i, model_sets[i])
            self.deposit(i, (stakes[i] + 1) * 50 * GWEI)
            self.stake_fraction(i, 1.0)
        for i, amount in enumerate(credits):
            self.deposit(i, amount * GWEI)
        mine_to((block_number() // 8 + 1) * 8)  # stake and models count from this epoch

    # ------------------------------------------------------------------ credits
    def deposit(self, who: int, amount: int) -> None:
        s = ADDRESSES[who]
        self.step(s, "deposit", (), lambda: self.m.deposit(s, amount), value=amount)

    @rule(op=st.sampled_from(["deposit", "request", "cancel", "withdraw", "withdraw at the edge"]), who=actor,
          amount=st.integers(0, 500), frac=fraction)
    def bank(self, op: str, who: int, amount: int, frac: float) -> None:
        s = ADDRESSES[who]
        m = self.m
        if op == "deposit":
            self.deposit(who, amount * GWEI)
        elif op == "request":
            x = int(m.credit.get(s, 0) * frac)
            self.step(s, "requestWithdrawal", (x,), lambda: m.request_withdrawal(s, x, now_s=now_s()))
        elif op == "cancel":
            self.step(s, "cancelWithdrawal", (), lambda: m.cancel_withdrawal(s))
        else:
            if op == "withdraw at the edge":  # one second early, then exactly when the notice ends
                self._advance_to(m.withdrawable_at.get(s, 0) - 1)
                self.step(s, "withdraw", (), lambda: self.m.withdraw(s, now_s=now_s()))
                self._advance_to(self.m.withdrawable_at.get(s, 0))
            eth = boa.env.get_balance(s)
            ok, amount_out = self.step(s, "withdraw", (), lambda: self.m.withdraw(s, now_s=now_s()))
            if ok:
                assert boa.env.get_balance(s) == eth + amount_out > eth

    # ------------------------------------------------------------------ registry
    def register(self, who: int, key: int, model_set: int, *, bond_error: int = 0) -> None:
        """register(), sending what the contract asks (the bond, or nothing while the node holds a slot)
        plus `bond_error` wei."""
        s = ADDRESSES[who]
        pubkey = ZERO32 if key == N_KEYS else pubkey_of(f"key{key}")
        models = MODEL_SETS[model_set]
        value = max(0, self.m.registration_value_wei(s) + bond_error)
        self.step(s, "register", (pubkey, f"http://node{who}", models, "{}"),
                  lambda: self.m.register(s, pubkey, f"http://node{who}", models, "{}", block_number=block_number(),
                                          value_wei=value), value=value)

    @rule(op=st.sampled_from(["register", "register", "register with a wrong bond", "update", "leave", "release"]),
          who=node, key=st.integers(0, N_KEYS), model_set=st.integers(0, len(MODEL_SETS) - 1))
    def registry(self, op: str, who: int, key: int, model_set: int) -> None:
        s = ADDRESSES[who]
        if op == "register":
            self.register(who, key, model_set)
        elif op == "register with a wrong bond":
            self.register(who, key, model_set, bond_error=(-1) ** key)
        elif op == "release":
            self.step(s, "releaseSlot", (), lambda: self.m.release_slot(s, block_number=block_number()))
        elif op == "update":
            pubkey = ZERO32 if key == N_KEYS else pubkey_of(f"key{key}")
            models = MODEL_SETS[model_set]
            self.step(s, "updateNode", (pubkey, "http://moved", models, "x"),
                      lambda: self.m.update_node(s, pubkey, "http://moved", models, "x", block_number=block_number()))
        else:
            self.step(s, "leave", (), lambda: self.m.leave(s, block_number=block_number()))

    # ------------------------------------------------------------------ stake
    def stake_fraction(self, who: int, frac: float) -> None:
        s = ADDRESSES[who]
        x = int(self.m.credit.get(s, 0) * frac)
        self.step(s, "stake", (x,), lambda: self.m.stake(s, x, block_number=block_number()))

    def withdraw_stake(self, s: str) -> None:
        m = self.m
        act, unb, bonded = m.active_stake.get(s, 0), m.unbonding_stake.get(s, 0), m.bonded.get(s, 0)
        ok, amount = self.step(s, "withdrawStake", (),
                               lambda: self.m.withdraw_stake(s, now_s=now_s(), block_number=block_number()),
                               may_lower="withdraw")
        if ok:  # withdrawable = unbonding minus the bonds the active stake does not cover
            assert amount == min(unb, act + unb - bonded) > 0

    @rule(op=st.sampled_from(["stake", "stake", "unstake", "withdraw", "withdraw at the edge", "sync"]),
          who=actor, frac=fraction, other=actor)
    def staking(self, op: str, who: int, frac: float, other: int) -> None:
        s = ADDRESSES[who]
        m = self.m
        if op == "stake":
            self.stake_fraction(who, frac)
        elif op == "unstake":
            x = int(m.active_stake.get(s, 0) * frac)
            self.step(s, "requestUnstake", (x,),
                      lambda: self.m.request_unstake(s, x, now_s=now_s(), block_number=block_number()),
                      may_lower="unstake")
        elif op == "withdraw":
            self.withdraw_stake(s)
        elif op == "withdraw at the edge":  # the period is over, the blocks are not; then both are
            self._advance_to(m.unbonding_end.get(s, 0))
            mine_to(m.unbonding_block.get(s, 0) + m.duel_span_blocks)
            self.withdraw_stake(s)
            mine(1)
            self.withdraw_stake(s)
        else:
            t = ADDRESSES[other]
            synced = self.step(s, "syncWeight", (t,), lambda: self.m.sync_weight(s, t, block_number=block_number()))[0]
            if synced and t in self.m.registered_once:
                # in sync now: the leaf holds what the node's stake says (slashes arrive lazily)
                assert self.m.sortition.leaf_weight(self.m.nodes[t].leaf) == self.m.weight_of(t)

    def _advance_to(self, timestamp: int) -> None:
        if now_s() < timestamp:
            advance(timestamp - now_s())

    @rule(blocks=st.sampled_from([0, 1, 1, 2, 3, 8]), seconds=st.sampled_from([0, 0, 5, 20, 45]))
    def wait(self, blocks: int, seconds: int) -> None:
        mine(blocks)
        advance(seconds)

    # ------------------------------------------------------------------ vouchers
    @rule(origin=actor, executor=actor, submitter=actor, delta=st.integers(-3, 400),
          kind=st.sampled_from(["valid"] * 6 + ["wrong signer", "high s", "bad v", "short", "zero r", "v as 0/1"]))
    def claim_voucher(self, origin: int, executor: int, submitter: int, delta: int, kind: str) -> None:
        o, e, s = ADDRESSES[origin], ADDRESSES[executor], ADDRESSES[submitter]
        cumulative = max(0, self.m.claimed_wei(o, e) + delta * GWEI)
        digest = self.m.voucher_digest(o, e, cumulative)
        signer = ACCOUNTS[(origin + 1) % N_ACTORS] if kind == "wrong signer" else ACCOUNTS[origin]
        sig = bytes(Account.unsafe_sign_hash(digest, signer.key).signature)
        r, s_, v = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
        sig = {
            "high s": r + (SECP256K1N - s_).to_bytes(32, "big") + bytes([55 - v]),
            "bad v": sig[:64] + bytes([30]),
            "short": sig[:64],
            "zero r": ZERO32 + sig[32:],
            "v as 0/1": sig[:64] + bytes([v - 27]),
        }.get(kind, sig)
        self.step(s, "claimVoucher", (o, e, cumulative, sig), lambda: self.m.claim_voucher(s, o, e, cumulative, sig))

    # ------------------------------------------------------------------ duels: opening
    @rule(origin=node, executor=node, kind=st.sampled_from(OPEN_KINDS), model=st.integers(0, 1),
          age=st.sampled_from([0, 0, 10, 39, 40]), smart=st.booleans())
    def open_duel(self, origin: int, executor: int, kind: str, model: int, age: int, smart: bool) -> None:
        assert self.twin is not None
        m = self.m
        if smart:  # an active origin and an executor with a free bond, serving the model
            active = [i for i in range(N_NODES) if m.node(ADDRESSES[i]).active]
            able = [i for i in range(N_NODES) if m.free_stake(ADDRESSES[i]) >= m.params.duel_bond_wei]
            if active:
                origin = active[origin % len(active)]
            able = [i for i in able if i != origin]
            if able:
                executor = able[executor % len(able)]
            models = list(m.node(ADDRESSES[executor]).models) or MODELS
            name = models[model % len(models)]
        else:
            name = MODELS[model]
        o, a = ADDRESSES[origin], ACCOUNTS[executor]
        c = self.twin.c
        if kind == "again" and self.all_jobs:
            job, o = self.all_jobs[executor % len(self.all_jobs)]
        else:
            self.tags += 1
            tag = f"w{self.tags}"
            if kind == "unknown model":
                name = "never-served"
            if kind == "self":
                a = ACCOUNTS[origin]
            work_origin = ADDRESSES[(origin + 1) % N_ACTORS] if kind == "other origin" else o
            issued = now_s() - (m.params.attestation_ttl_s + 1 if kind == "expired" else age)
            job = attest(c, work_origin, a, tag, model=name, wants_duel=kind != "no duel", issued_at=issued,
                         signer=ACCOUNTS[(executor + 1) % N_ACTORS] if kind == "wrong signer" else None)
            if kind == "malformed":
                job = dataclasses.replace(job, work=dataclasses.replace(job.work, signature=job.work.signature[:64]))
        salt = keccak(b"guessed") if kind == "bad salt" else job.salt
        opened = block_number()
        ok, duel_id = self.step(o, "openDuel", open_args(job, salt=salt),
                                lambda: self.m.open_duel(o, job.work, salt, now_s=now_s(), block_number=opened))
        if ok:
            self.jobs[duel_id] = (job, o)
            self.all_jobs.append((job, o))
            self.opened_at[duel_id] = opened

    # ------------------------------------------------------------------ duels: the next step of one
    def _duel(self, pick: int) -> int | None:
        ids = self.m.open_duel_ids()
        return ids[pick % len(ids)] if ids else None

    @rule(pick=st.integers(0, 50), choice=st.integers(0, 99), who=actor, vote=st.integers(0, len(VOTES) - 1),
          flag=st.booleans(), stages=st.integers(1, 4))
    def advance_duel(self, pick: int, choice: int, who: int, vote: int, flag: bool, stages: int) -> None:
        """Take an open duel one to four stages further (open one if there is none), sometimes the
        wrong way."""
        duel_id = self._duel(pick)
        if duel_id is None:
            self.open_duel(pick % N_NODES, choice % N_NODES, "good", vote, 0, True)
            return
        for i in range(stages):
            d = self.m.duels[duel_id]
            c = (choice + 17 * i) % 100
            if d.status == DuelStatus.AWAITING_ANSWER:
                self._awaiting_answer(duel_id, c, who, flag and i == 0)
            elif d.status == DuelStatus.AWAITING_REQUEST:
                self._awaiting_request(duel_id, c, who)
            elif d.status == DuelStatus.JUDGING:
                self._judging(duel_id, c, who, vote + i, flag and i == 0)

    @rule(pick=st.integers(0, 50), choice=st.integers(0, 99), who=actor, vote=st.integers(0, len(VOTES) - 1),
          flag=st.booleans(), stages=st.integers(1, 4))
    def advance_duel_again(self, pick: int, choice: int, who: int, vote: int, flag: bool, stages: int) -> None:
        self.advance_duel(pick, choice, who, vote, flag, stages)  # duels need many steps: two rules' worth

    def _awaiting_answer(self, duel_id: int, choice: int, who: int, flag: bool) -> None:
        assert self.twin is not None
        d = self.m.duels[duel_id]
        anyone = ADDRESSES[who]
        if block_number() <= d.seed_block:
            if flag:  # too early
                self._draw(duel_id, anyone)
            mine_to(d.seed_block + 1)
            return
        if block_number() > d.deadline or choice % 8 == 7:
            mine_to(d.deadline + 1)
            self._settle(duel_id, anyone)
            return
        b = self.twin.challenger_of(duel_id)
        c = choice % 8
        if c in (0, 1):
            self._draw(duel_id, anyone)
        elif c in (2, 3, 4) and b != ZERO_ADDRESS:
            self._answer(duel_id, b, answer_hash(f"b{duel_id}"))
        elif (c == 5 or (c == 6 and d.published)) and b != ZERO_ADDRESS:
            self._answer(duel_id, b, ZERO32)  # "no request" (refused once the request was published)
        else:  # someone else answers
            self._answer(duel_id, anyone, answer_hash("intruder"))

    def _draw(self, duel_id: int, sender: str) -> None:
        self.step(sender, "drawChallenger", (duel_id,),
                  lambda: self.m.draw_challenger(sender, duel_id, block_number=block_number(),
                                                 blockhash=evm_blockhash))

    def _answer(self, duel_id: int, sender: str, h: bytes) -> None:
        self.step(sender, "answerDuel", (duel_id, h),
                  lambda: self.m.answer_duel(sender, duel_id, h, block_number=block_number(), blockhash=evm_blockhash))

    def _awaiting_request(self, duel_id: int, choice: int, who: int) -> None:
        d = self.m.duels[duel_id]
        anyone = ADDRESSES[who]
        job, _ = self.jobs[duel_id]
        c = choice % 6
        if c == 5 or block_number() > d.deadline:
            mine_to(d.deadline + 1)
            self._settle(duel_id, anyone)
            return
        request = job.request + b" " if c == 4 else job.request
        work_job = self.all_jobs[choice % len(self.all_jobs)][0] if c == 3 else job
        self.step(anyone, "publishRequest",
                  (duel_id, work_job.work.request_id, work_job.work.request_hash, work_job.work.model_hash,
                   work_job.work.answer_hash, work_job.salt, work_job.work.issued_at, work_job.work.signature,
                   request),
                  lambda: self.m.publish_request(anyone, duel_id, work_job.work, work_job.salt, request,
                                                 block_number=block_number()))

    def _judging(self, duel_id: int, choice: int, who: int, vote: int, flag: bool) -> None:
        m = self.m
        d = m.duels[duel_id]
        anyone = ADDRESSES[who]
        panel = d.panels.get(d.round)
        if panel is None:  # an appeal round, not drawn yet
            if block_number() <= d.seed_block:
                if flag:
                    self.step(anyone, "drawJudges", (duel_id,),
                              lambda: self.m.draw_judges(anyone, duel_id, block_number=block_number(),
                                                         blockhash=evm_blockhash))
                mine_to(d.seed_block + 1)
            elif block_number() > d.deadline or choice % 5 == 0:
                mine_to(d.deadline + 1)
                self._settle(duel_id, anyone)
            elif flag:
                self.step(anyone, "drawJudges", (duel_id,),
                          lambda: self.m.draw_judges(anyone, duel_id, block_number=block_number(),
                                                     blockhash=evm_blockhash))
            else:  # a previewed seat's first commit draws the panel
                seats = m.preview_judges(duel_id, block_number=block_number(), blockhash=evm_blockhash)
                self._commit(duel_id, seats[choice % len(seats)] if seats else anyone, vote)
                self._commit_all(duel_id, vote)
            return
        judges = list(dict.fromkeys(m.sortition.owner(leaf) for leaf in panel.leaves))
        reveal_end = d.deadline + m.params.reveal_window_blocks
        if block_number() <= d.deadline:
            pending = [j for j in judges if (duel_id, d.round, j) not in self.votes]
            if pending and choice % 6 != 5:
                for i in range(len(pending) if choice % 2 else 1 + choice % len(pending)):
                    self._commit(duel_id, pending[i], vote + 3 * i)
            elif choice % 12 == 11:
                self._commit(duel_id, anyone, vote)  # maybe not a judge, maybe twice
            else:
                mine_to(d.deadline + 1)
        elif block_number() <= reveal_end:
            pending = [j for j in judges if (duel_id, d.round, j) in self.votes
                       and panel.votes[[m.sortition.owner(leaf) for leaf in panel.leaves].index(j)] == Vote.NONE]
            if pending and choice % 6 != 5:
                for i in range(len(pending) if choice % 2 else 1 + choice % len(pending)):
                    self._reveal(duel_id, pending[i], honest=not (flag and i == 0 and choice % 7 == 0))
            else:
                mine_to(reveal_end + 1)
        elif d.round == 1 and block_number() <= reveal_end + m.params.appeal_window_blocks and choice % 3 == 0:
            outcome = panel.tally()[0]
            loser = {1: d.b_leaf, 2: d.a_leaf}.get(int(outcome))
            appellant = m.sortition.owner(loser) if loser is not None and not flag else anyone
            self.step(appellant, "appeal", (duel_id,), lambda: self.m.appeal(appellant, duel_id,
                                                                             block_number=block_number()))
        else:
            if d.round == 1 and (flag or choice % 2):
                mine_to(reveal_end + m.params.appeal_window_blocks + 1)
            self._settle(duel_id, anyone)

    def _commit(self, duel_id: int, judge: str, vote_index: int) -> None:
        d = self.m.duels[duel_id]
        rnd = max(d.round, 1)
        truth = Vote.A if duel_id % 3 == 0 else Vote.B  # the duel's better answer
        v = VOTES[vote_index % len(VOTES)]
        v = truth if v == "truth" else (Vote.A if truth == Vote.B else Vote.B) if v == "other" else v
        salt = keccak(f"salt-{duel_id}-{rnd}-{judge}-{self.steps}".encode())
        com = self.m.vote_commitment(duel_id, rnd, judge, int(v or Vote.A), salt)
        ok, _ = self.step(judge, "commitVote", (duel_id, com),
                          lambda: self.m.commit_vote(judge, duel_id, com, block_number=block_number(),
                                                     blockhash=evm_blockhash))
        if ok:
            self.votes[(duel_id, rnd, judge)] = (int(v) if v is not None else -1, salt)

    def _commit_all(self, duel_id: int, vote: int) -> None:
        d = self.m.duels[duel_id]
        panel = d.panels.get(d.round)
        if panel is None:
            return
        for i, j in enumerate(dict.fromkeys(self.m.sortition.owner(leaf) for leaf in panel.leaves)):
            if (duel_id, d.round, j) not in self.votes:
                self._commit(duel_id, j, vote + 3 * i)

    def _reveal(self, duel_id: int, judge: str, honest: bool) -> None:
        rnd = self.m.duels[duel_id].round
        v, salt = self.votes.get((duel_id, rnd, judge), (1, b"\x01" * 32))
        if v == -1:
            return  # this judge never reveals (a silent seat)
        if not honest:
            salt = keccak(salt)
        self.step(judge, "revealVote", (duel_id, v, salt),
                  lambda: self.m.reveal_vote(judge, duel_id, v, salt, block_number=block_number()))

    def _settle(self, duel_id: int, sender: str) -> None:
        d = self.m.duels.get(duel_id)
        unrecorded = d is not None and d.status == DuelStatus.AWAITING_ANSWER and not d.b_drawn
        ok, _ = self.step(sender, "settleDuel", (duel_id,),
                          lambda: self.m.settle_duel(sender, duel_id, block_number=block_number(),
                                                     blockhash=evm_blockhash),
                          may_lower="settle")
        if ok and unrecorded and self.twin is not None and self.twin.event("StakeSlashed"):
            label = "no-show drawn and slashed at settlement"
            STATS[label] = STATS.get(label, 0) + 1

    # a duel call anywhere, any time, by anyone (mostly reverts; both sides must agree on why)
    @rule(op=st.sampled_from(["draw", "answer", "publish", "judges", "commit", "reveal", "appeal", "settle"]),
          pick=st.integers(0, 50), who=actor, vote=st.integers(0, 5))
    def stray_duel_call(self, op: str, pick: int, who: int, vote: int) -> None:
        open_ids = self.m.open_duel_ids()
        ids = open_ids if open_ids and pick % 3 else [*sorted(self.m.duels), 12345]
        duel_id = ids[pick % len(ids)]
        s = ADDRESSES[who]
        m = self.m
        if op == "draw":
            self._draw(duel_id, s)
        elif op == "answer":
            self._answer(duel_id, s, answer_hash("stray") if vote else ZERO32)
        elif op == "publish":
            job = self.jobs.get(duel_id, self.all_jobs[0] if self.all_jobs else (None, ""))[0]
            if job is not None:
                self.step(s, "publishRequest",
                          (duel_id, job.work.request_id, job.work.request_hash, job.work.model_hash,
                           job.work.answer_hash, job.salt, job.work.issued_at, job.work.signature, job.request),
                          lambda: self.m.publish_request(s, duel_id, job.work, job.salt, job.request,
                                                         block_number=block_number()))
        elif op == "judges":
            self.step(s, "drawJudges", (duel_id,),
                      lambda: self.m.draw_judges(s, duel_id, block_number=block_number(), blockhash=evm_blockhash))
        elif op == "commit":
            com = ZERO32 if vote == 0 else m.vote_commitment(duel_id, 1, s, vote, b"\x02" * 32)
            self.step(s, "commitVote", (duel_id, com),
                      lambda: self.m.commit_vote(s, duel_id, com, block_number=block_number(),
                                                 blockhash=evm_blockhash))
        elif op == "reveal":
            self.step(s, "revealVote", (duel_id, vote, b"\x02" * 32),
                      lambda: self.m.reveal_vote(s, duel_id, vote, b"\x02" * 32, block_number=block_number()))
        elif op == "appeal":
            self.step(s, "appeal", (duel_id,), lambda: self.m.appeal(s, duel_id, block_number=block_number()))
        else:
            self._settle(duel_id, s)

    # ------------------------------------------------------------------ leaving for good, and a slot reused
    @precondition(lambda self: self.twin is not None and self.steps >= 40 * (self.exits + 1))
    @rule(who=node, rejoin=st.booleans(), model_set=st.integers(0, len(MODEL_SETS) - 1))
    def exit_for_good(self, who: int, rejoin: bool, model_set: int) -> None:
        """A node leaves, unstakes everything, withdraws it after the delays and releases its registry slot
        (which the contract refuses while stake remains, e.g. bonded by an open duel); with `rejoin` it
        registers again once the cooldown is over and takes the oldest released leaf. Duels still open
        may name it by that leaf: from then on they name nobody by it."""
        self.exits += 1
        s = ADDRESSES[who]
        m = self.m
        if m.node(s).active:
            self.step(s, "leave", (), lambda: self.m.leave(s, block_number=block_number()))
        active = m.active_stake.get(s, 0)
        if active:
            self.step(s, "requestUnstake", (active,),
                      lambda: self.m.request_unstake(s, active, now_s=now_s(), block_number=block_number()),
                      may_lower="unstake")
        self._advance_to(self.m.unbonding_end.get(s, 0) + 1)
        mine_to(max(block_number(), self.m.unbonding_block.get(s, 0) + self.m.duel_span_blocks + 1))
        # the duels it is a duelist of bond its stake until they end: settle those (anyone may, after their
        # span); the others (it as origin or judge) stay open and may outlive its slot
        stranger = ADDRESSES[-1]
        for duel_id in self.m.open_duel_ids():
            d = self.m.duels[duel_id]
            if s in (self.m.party(d, d.a_leaf), self.m.party(d, d.b_leaf) if d.b_drawn else None):
                mine_to(max(block_number(), self.opened_at.get(duel_id, 0) + self.m.duel_span_blocks + 1))
                self.step(stranger, "settleDuel", (duel_id,),
                          lambda duel_id=duel_id: self.m.settle_duel(stranger, duel_id, block_number=block_number(),
                                                                     blockhash=evm_blockhash),
                          may_lower="settle")
        if self.m.unbonding_stake.get(s, 0):
            self.withdraw_stake(s)
        if self.step(s, "releaseSlot", (), lambda: self.m.release_slot(s, block_number=block_number()))[0]:
            STATS["slots released for good"] = STATS.get("slots released for good", 0) + 1
        if rejoin:  # with its old key (leave() freed it; nobody else may have taken it since)
            mine(self.m.slot_cooldown_blocks + 1)
            pubkey, models = self.m.node(s).pubkey, MODEL_SETS[model_set]
            value = self.m.registration_value_wei(s)
            self.step(s, "register", (pubkey, f"http://node{who}", models, "{}"),
                      lambda: self.m.register(s, pubkey, f"http://node{who}", models, "{}",
                                              block_number=block_number(), value_wei=value), value=value)

    # ------------------------------------------------------------------ liveness (sandboxed)
    @precondition(lambda self: self.twin is not None and self.steps >= 25 * (self.sandboxes + 1))
    @rule(who=node)
    def everyone_can_leave(self, who: int) -> None:
        """DUEL_SPAN_BLOCKS after now, anyone can end every open duel; then a staker that left and
        unstaked everything gets every wei out after the delays. Rolled back afterwards."""
        assert self.twin is not None
        self.sandboxes += 1
        s = ADDRESSES[who]
        saved = (copy.deepcopy(self.twin.m), dict(self.twin._seen), set(self.closed), set(self.judge_slashed),
                 self.steps)
        with boa.env.anchor():
            m = self.m
            p = m.params
            if m.node(s).active:
                assert self.step(s, "leave", (), lambda: self.m.leave(s, block_number=block_number()))[0]
            active = m.active_stake.get(s, 0)
            if active:
                assert self.step(s, "requestUnstake", (active,),
                                 lambda: self.m.request_unstake(s, active, now_s=now_s(), block_number=block_number()),
                                 may_lower="unstake")[0]
            advance(p.unbonding_period_s)
            mine(m.duel_span_blocks + 1)
            stranger = ADDRESSES[-1]
            for duel_id in self.m.open_duel_ids():  # opened before now: their span is over
                assert block_number() > self.opened_at.get(duel_id, 0) + m.duel_span_blocks
                self.step(stranger, "settleDuel", (duel_id,),
                          lambda duel_id=duel_id: self.m.settle_duel(stranger, duel_id, block_number=block_number(),
                                                                     blockhash=evm_blockhash),
                          may_lower="settle")
                assert self.m.duels[duel_id].status not in OPEN, duel_id
            m = self.m
            assert m.bonded.get(s, 0) == 0
            if m.unbonding_stake.get(s, 0):
                self.withdraw_stake(s)
            if s in self.m.registered_once:  # the registration bond comes back too
                assert self.step(s, "releaseSlot", (), lambda: self.m.release_slot(s, block_number=block_number()))[0]
            credit = self.m.credit.get(s, 0)
            if credit:
                assert self.step(s, "requestWithdrawal", (credit,),
                                 lambda: self.m.request_withdrawal(s, credit, now_s=now_s()))[0]
            advance(p.withdrawal_notice_s)
            if self.m.pending_withdrawal.get(s, 0):
                assert self.step(s, "withdraw", (), lambda: self.m.withdraw(s, now_s=now_s()))[0]
            m = self.m
            assert (m.total_stake(s), m.credit.get(s, 0), m.pending_withdrawal.get(s, 0)) == (0, 0, 0)
            self.check_agreement()
        self.twin.m, self.twin._seen, self.closed, self.judge_slashed, self.steps = saved

    # ------------------------------------------------------------------ after every step
    @invariant()
    def check_agreement(self) -> None:
        if self.twin is None:
            return
        twin, m = self.twin, self.m
        st_ = twin.storage
        twin.check()  # balances, stake accounts, reserve, root, duel words and views, conservation
        held = sum(m.credit.values()) + sum(m.pending_withdrawal.values()) + sum(m.active_stake.values()) \
            + sum(m.unbonding_stake.values()) + m.reserve \
            + m.params.registration_bond_wei * sum(st_.get("registeredOnce", a) for a in ADDRESSES)

        def holder(d: Any, leaf: int) -> str | None:
            """The node that holds `leaf` now and is the party the duel names by it (None after a release)."""
            who = m.party(d, leaf)
            return who if who in m.registered_once and m.nodes[who].leaf == leaf else None
        bonds: dict[str, int] = {}
        for duel_id, d in m.duels.items():
            if d.status in OPEN:
                held += m.duel_escrow_wei + (m.appeal_fee_wei if d.round == 2 else 0)
                for leaf in [d.a_leaf] + ([d.b_leaf] if d.b_drawn else []):
                    duelist = holder(d, leaf)
                    if duelist is not None:  # a node that released its slot holds no bonds
                        bonds[duelist] = bonds.get(duelist, 0) + d.bond_wei
            for (rnd, judge), c in d.commitments.items():
                owners = [m.party(d, leaf) for leaf in d.panels[rnd].leaves]
                if judge not in owners:
                    # the judge released its slot: another node took it, or the judge itself came back
                    # after the cooldown on a leaf (maybe one of this panel's) the duel no longer names
                    continue
                seat = owners.index(judge)
                word = st_.get("commitments", 4 * (2 * duel_id + rnd - 1) + seat // 2)
                assert (word >> (128 * (seat % 2))) & ((1 << 128) - 1) == c, (duel_id, rnd, judge)
        assert boa.env.get_balance(twin.c.address) == held == m.liabilities_wei()
        for a in ADDRESSES:
            book = (m.credit.get(a, 0), m.pending_withdrawal.get(a, 0), m.active_stake.get(a, 0),
                    m.unbonding_stake.get(a, 0), m.bonded.get(a, 0))
            assert min(book) >= 0, (a, book)
            assert m.bonded.get(a, 0) == bonds.get(a, 0), (a, m.bonded.get(a, 0), bonds.get(a, 0))
            assert m.bonded.get(a, 0) <= m.total_stake(a) or a in self.judge_slashed, a
            assert st_.get("withdrawableAt", a) == m.withdrawable_at.get(a, 0)
            assert st_.get("unbonding", a) == m.unbonding_end.get(a, 0) | (m.unbonding_block.get(a, 0) << 128)
            rec = m.node(a)
            assert st_.get("nodes", a, offset=NODE_PUBKEY) == int.from_bytes(rec.pubkey, "big"), a
            assert st_.get("nodes", a, offset=NODE_ACTIVE) == int(rec.active), a
            assert st_.get("nodes", a, offset=NODE_LEAF) == rec.leaf, a
            assert st_.get("registeredOnce", a) == int(a in m.registered_once)
            for mid in range(1, m.model_count + 1):
                start, stop = m.model_epochs.get((a, mid), (0, 0))
                assert st_.get("modelEpochs", a, mid) == start | (stop << 128), (a, mid)
            for e in ADDRESSES[:4]:
                assert st_.get("claimed", a, e) == m.claimed_wei(a, e)
        for key in range(N_KEYS):
            owner = st_.get("pubkeyOwner", pubkey_of(f"key{key}"))
            assert owner == int(m.pubkey_owner.get(pubkey_of(f"key{key}"), ZERO_ADDRESS), 16)
        tree = m.sortition
        assert st_.get("sortition.leafCount") == tree.leaf_count
        assert st_.get("activeNodeCount") == m.active_node_count
        assert st_.get("modelCount") == m.model_count
        leaves = 0
        for leaf in range(tree.leaf_count):
            word = st_.get("sortition.tree", tree.leaves + leaf)
            assert word & VALUE_MASK == tree.leaf_weight(leaf), leaf
            leaves += word & VALUE_MASK
        assert leaves == tree.total_weight()


LedgerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("WWWSERVE_PROPERTY_EXAMPLES", "25")),
    stateful_step_count=int(os.environ.get("WWWSERVE_PROPERTY_STEPS", "80")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
TestLedgerStateful = LedgerMachine.TestCase


@pytest.fixture(scope="module", autouse=True)
def steps_taken() -> Iterator[None]:
    """Print how many transactions (both sides, in lockstep) the run took; CI's long tier sets
    WWWSERVE_PROPERTY_MIN_STEPS and fails a run that took fewer (Hypothesis may end a run early)."""
    yield
    taken = STATS.get("transactions", 0)
    print(f"\nstateful property test: {taken} transactions; {STATS.get('slots released for good', 0)} registry "
          f"slots released (besides those in rolled-back liveness checks), {STATS.get('slots reused', 0)} taken "
          "again by a later registration")
    wanted = int(os.environ.get("WWWSERVE_PROPERTY_MIN_STEPS", "0"))
    assert taken >= wanted, f"the stateful run took {taken} transactions, fewer than the {wanted} asked"
