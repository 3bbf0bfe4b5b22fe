"""The simulator's chain (see sim.duels): `ContractLedger`, a `DuelChain` whose clock is the simulated block
height and whose members are the simulator's nodes, and a `DuelRecord` per duel."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from wwwserve.ledger.digests import sign_voucher_offline
from wwwserve.ledger.params import DeploymentParams
from wwwserve.sim.config import JudgeBehaviour
from wwwserve.sim.duels.chain import CHAIN_ID, CONTRACT_ADDRESS, DuelChain
from wwwserve.sim.duels.judging import APPEAL_POLICIES
from wwwserve.sim.duels.run import DuelRun

__all__ = ["ContractLedger", "DuelRecord", "Simulation"]


class _Spec(Protocol):
    @property
    def quality(self) -> float: ...
    @property
    def initial_credit_wei(self) -> int: ...
    @property
    def judge_accuracy(self) -> float | None: ...
    @property
    def judges(self) -> JudgeBehaviour | None: ...


class _Node(Protocol):
    """What the ledger reads of a simulated node (sim.network's node; this module does not import it)."""

    @property
    def address(self) -> str: ...
    @property
    def models(self) -> frozenset[str]: ...
    @property
    def spec(self) -> _Spec: ...


class _Clock(Protocol):
    @property
    def block_time_s(self) -> float: ...
    @property
    def judges(self) -> JudgeBehaviour: ...


class Simulation(Protocol):
    """What the ledger reads of the simulation that owns it."""

    @property
    def config(self) -> _Clock: ...
    @property
    def nodes(self) -> Sequence[_Node]: ...
    def block_hash(self, now_s: float) -> bytes: ...


@dataclass
class DuelRecord:
    """One duel in the simulator (a CSV row), by node names."""

    duel_id: int
    opened_s: float
    origin: str
    a: str
    b: str = ""
    better: str = ""  # the answer drawn as better ("a" or "b")
    judges: tuple[str, ...] = ()  # the final round's seats
    votes: tuple[str, ...] = ()
    outcome: str = "open"
    stake_moved_wei: int = 0
    bond_wei: int = 0
    settled_s: float | None = None
    round: int = 0
    cancel_reason: str = ""
    slashes: tuple[tuple[str, str, int], ...] = ()  # (node, reason as the contract names it, wei)


class ContractLedger:
    """The simulation's chain: a `DuelChain` whose clock is the simulated block height.

    The simulator's nodes are its members (quality from `NodeSpec.quality`, honest judges right with
    probability `judge_accuracy` per A/B order and behaving as `SimConfig.judges` says: abstentions,
    no-evidence votes, missed reveals; a `NodeSpec` may set its own; appeals per `appeal`); their stake
    and credit live on the model, whose tally and settlement decide ties, voids and fines as the contract
    does.

    Money moves as the live node moves it: stake with `stake`, less stake with `requestUnstake` and, once
    unbonded, `withdrawStake` back to credit (`unstake`, `withdraw_unbonded`); delegation fees as
    cumulative vouchers the origin promises (`promise`, bounded by its free credit as `record_fee` is)
    and each payee claims with one signed `claimVoucher` per origin (`claim`, as `claim_vouchers` does).
    """

    def __init__(self, sim: Simulation, params: DeploymentParams, judge_accuracy: float, seed: int,
                 appeal: str = "never") -> None:
        self.sim = sim
        block_s = sim.config.block_time_s
        self.chain = DuelChain(params, f"sim/{seed}", accuracy=judge_accuracy, judges=sim.config.judges,
                               block_time_s=block_s,
                               blockhash=lambda n: sim.block_hash(n * block_s))
        self.model = self.chain.model
        self.address: dict[str, str] = {}
        self.name: dict[str, str] = {}
        self.duels: list[DuelRecord] = []
        self.by_id: dict[int, DuelRecord] = {}
        self.refused: dict[str, int] = {}  # openDuel's revert reasons, counted
        self.samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        # Fee vouchers: (origin, executor) member addresses -> cumulative wei promised; per origin, what it
        # promised and nobody claimed yet (what the live `credit_wei()` takes off the indexed credit).
        self.promised: dict[tuple[str, str], int] = {}
        self.unclaimed: dict[str, int] = {}
        self.fees_promised_wei = 0
        self.fees_refused = 0  # fees an origin could not promise (its free credit was below the fee)
        self.claims = 0  # claimVoucher transactions
        policy = APPEAL_POLICIES[appeal]
        for node in sim.nodes:
            member = self.chain.add(node.address, stake_wei=0, quality=node.spec.quality,
                                    credit_wei=node.spec.initial_credit_wei, appeal=policy,
                                    models=sorted(node.models), accuracy=node.spec.judge_accuracy,
                                    behaviour=node.spec.judges)
            self.address[node.address] = member.address
            self.name[member.address] = node.address

    # ---- balances
    def credit_wei(self, node: _Node) -> int:
        return self.model.credit.get(self.address[node.address], 0)

    def stake_wei(self, node: _Node) -> int:
        return self.model.active_stake.get(self.address[node.address], 0)

    def unbonding_wei(self, node: _Node) -> int:
        return self.model.unbonding_stake.get(self.address[node.address], 0)

    def free_credit_wei(self, node: _Node) -> int:
        """Credit minus fees promised and not claimed yet: what the live node's `credit_wei()` reports (the
        policy's and auto-stake's credit; may be negative after a slash)."""
        address = self.address[node.address]
        return self.model.credit.get(address, 0) - self.unclaimed.get(address, 0)

    def add_stake(self, node: _Node, amount_wei: int, now_s: float) -> int:
        """Stake `amount_wei` more from credit (as far as credit goes); returns what was staked."""
        amount = min(amount_wei, self.credit_wei(node))
        if amount > 0:
            self.tick(now_s)
            self.model.stake(self.address[node.address], amount, block_number=self.chain.block)
        return amount

    def unstake(self, node: _Node, amount_wei: int, now_s: float) -> float | None:
        """`requestUnstake(amount_wei)` (as far as the active stake goes; the unbonding period restarts for
        everything unbonding); when `withdraw_unbonded` can first succeed, or None if nothing was unstaked."""
        address = self.address[node.address]
        amount = min(amount_wei, self.stake_wei(node))
        if amount <= 0:
            return None
        self.tick(now_s)
        chain = self.chain
        self.model.request_unstake(address, amount, now_s=chain.now_s, block_number=chain.block)
        return self.withdrawable_s(node)

    def withdrawable_s(self, node: _Node) -> float:
        """When `withdrawStake` first passes its unbonding checks (time, and the duel span in blocks)."""
        address = self.address[node.address]
        model = self.model
        end_s = model.unbonding_end.get(address, 0)
        block = model.unbonding_block.get(address, 0) + model.duel_span_blocks + 1
        return max(float(end_s), self.block_time(block))

    def withdraw_unbonded(self, node: _Node, now_s: float) -> int:
        """`withdrawStake()` if it would succeed now: unbonded stake not bonded by open duels back to credit;
        the wei moved (0: not yet, or all of it bonded)."""
        self.tick(now_s)
        address = self.address[node.address]
        model, chain = self.model, self.chain
        active = model.active_stake.get(address, 0)
        unbonding = model.unbonding_stake.get(address, 0)
        bonded = model.bonded.get(address, 0)
        if (unbonding <= 0 or chain.now_s < model.unbonding_end.get(address, 0)
                or chain.block <= model.unbonding_block.get(address, 0) + model.duel_span_blocks
                or min(unbonding, active + unbonding - bonded) <= 0):
            return 0  # the contract would revert (the model is not atomic here: never call it to fail)
        return model.withdraw_stake(address, now_s=chain.now_s, block_number=chain.block)

    # ---- fee vouchers
    def promise(self, origin: _Node, executor: _Node, fee_wei: int) -> bool:
        """The origin owes `executor` `fee_wei` more (its cumulative voucher grows), if its free credit covers
        the fee (the live `record_fee` refuses otherwise, and the fee goes unpaid); whether it was promised."""
        if fee_wei <= 0:
            return False
        o, e = self.address[origin.address], self.address[executor.address]
        if fee_wei > self.free_credit_wei(origin):
            self.fees_refused += 1
            return False
        self.promised[(o, e)] = self.promised.get((o, e), 0) + fee_wei
        self.unclaimed[o] = self.unclaimed.get(o, 0) + fee_wei
        self.fees_promised_wei += fee_wei
        return True

    def owed_wei(self, executor: _Node) -> int:
        """What `executor` holds vouchers for and has not claimed."""
        e = self.address[executor.address]
        claimed = self.model.claimed
        return sum(total - claimed.get((o, ex), 0) for (o, ex), total in self.promised.items() if ex == e)

    def claim(self, executor: _Node, now_s: float) -> int:
        """`executor` claims each origin's latest voucher with value left (one signed `claimVoucher` per
        origin, as the live `claim_vouchers`); an origin with no funds left is skipped. The wei paid."""
        self.tick(now_s)
        e = self.address[executor.address]
        model = self.model
        paid_total = 0
        for (o, ex), cumulative in self.promised.items():
            if ex != e or cumulative <= model.claimed.get((o, e), 0):
                continue
            if model.credit.get(o, 0) + model.pending_withdrawal.get(o, 0) <= 0:
                continue  # "Voucher: origin has no funds": the live claim is logged and tried again later
            signature = sign_voucher_offline(self.chain.members[o].account, CHAIN_ID, CONTRACT_ADDRESS, e, cumulative)
            paid = model.claim_voucher(e, o, e, cumulative, signature)
            self.unclaimed[o] -= paid
            self.claims += 1
            paid_total += paid
        return paid_total

    def sample(self, now_s: float) -> None:
        """Record every node's (stake, credit) at `now_s`; stake counts what is unbonding (still the node's,
        still slashable, back in credit once withdrawn)."""
        self.samples.append((now_s, {n.address: (self.stake_wei(n) + self.unbonding_wei(n), self.credit_wei(n))
                                     for n in self.sim.nodes}))

    # ---- clock
    def block(self, now_s: float) -> int:
        return int(now_s // self.sim.config.block_time_s)

    def block_time(self, block: int) -> float:
        """When `block` is mined (the start of its slot)."""
        return block * self.sim.config.block_time_s

    def tick(self, now_s: float) -> None:
        self.chain.mine_to(max(self.chain.block, self.block(now_s)))

    # ---- duels
    def open(self, now_s: float, origin: _Node, a: _Node, request_id: str, model: str) -> DuelRun | None:
        """The origin opens a duel over A's answer to a request for `model` (it committed to it before
        dispatching); None when the contract refuses (e.g. the origin cannot escrow the fees, A's free stake
        is below the bond)."""
        self.tick(now_s)
        run = DuelRun(self.chain, self.address[origin.address], self.address[a.address], request_id,
                      auto_answer=False, model=model)
        if not run.open():
            self.refused[run.result.refused] = self.refused.get(run.result.refused, 0) + 1
            return None
        record = DuelRecord(run.duel_id, now_s, origin.address, a.address)
        self.duels.append(record)
        self.by_id[run.duel_id] = record
        return run

    def advance(self, run: DuelRun, now_s: float) -> None:
        self.tick(now_s)
        run.advance()
        self._update(run, now_s)

    def b_answered(self, run: DuelRun, now_s: float) -> bool:
        self.tick(now_s)
        ok = run.b_answered()
        self._update(run, now_s)
        return ok

    def _update(self, run: DuelRun, now_s: float) -> None:
        record = self.by_id[run.duel_id]
        r = run.result
        name = self.name.get
        record.b = name(r.b, r.b) if r.b else ""
        record.better = r.better
        if r.rounds:
            last = r.rounds[-1]
            record.judges = tuple(name(s, s) for s in last.seats)
            record.votes = tuple("none" if v is None else v.name for v in last.votes)
        if run.done:
            record.outcome = r.outcome
            record.cancel_reason = r.cancel_reason
            record.stake_moved_wei = r.stake_moved_wei
            record.bond_wei = r.bond_wei
            record.round = r.final_round
            record.slashes = tuple((name(a, a), why.name.lower(), amount) for a, why, amount in r.slashes)
            record.settled_s = now_s
