"""A node's own events in `sim.network.Simulation`: its ledger loops (auto-stake's looks as the live stake
loop makes them, withdrawing unbonded stake, claiming fee vouchers: the STAKE event), the fees it owes,
when the chain shows the others a stake change, the load snapshot its policy sees, and joining and
leaving the network."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from functools import cache

from wwwserve.node import policy as policy_module
from wwwserve.node import routing
from wwwserve.node.policy import LoadSnapshot, ModelLoad
from wwwserve.sim.engine import EngineModel
from wwwserve.sim.network_core import ARRIVE, STAKE, VISIBLE, SimulationCore
from wwwserve.sim.records import InFlightRequest, SimNode

__all__ = ["NodeEvents"]


@cache
def _claim_interval_s() -> float:
    """The live node's `chain.voucher_claim_interval_s` default (30 s): how often a payee claims."""
    from wwwserve.node.settings.sections import ChainSettings

    return float(ChainSettings.model_fields["voucher_claim_interval_s"].default)


class NodeEvents(SimulationCore):
    """Stake, what the policy sees, joins and leaves."""

    # ---- chain and stake --------------------------------------------------------------------------

    def block_hash(self, now_s: float) -> bytes:
        """The hash of the latest block at `now_s` (what routing seeds from)."""
        block = int(now_s // self.config.block_time_s)
        return hashlib.sha256(b"sim-block/%d/%d" % (self.config.seed, block)).digest()

    def _show_stake(self, node: SimNode, stake_wei: int) -> None:
        """The chain now shows `stake_wei` as `node`'s stake (0 when it is offline)."""
        node.visible_stake_wei = stake_wei
        min_stake = self.config.contract_params.min_stake_wei  # the contract's MIN_STAKE, as a live registry
        routable = routing.routable_stake_wei(stake_wei, min_stake) if node.online else 0
        node.peer = routing.Peer(node.address, routable, node.models, node.address)
        if self._indexes is not None:
            for model in node.models:
                self._indexes.setdefault(model, routing.StakeIndex()).set(node.address, routable)

    def _stake_changed(self, node: SimNode, at_s: float) -> None:
        """`node` sent a stake transaction: the others see it from block time `at_s`."""
        node.pending_stake = (at_s, node.stake_wei)
        self._push(at_s, VISIBLE, node.index, node.stake_wei)

    def _on_visible(self, index: int, stake_wei: int) -> None:
        node = self.nodes[index]
        if node.pending_stake is not None and node.pending_stake[1] == stake_wei and node.online:
            node.pending_stake = None
            self._show_stake(node, stake_wei)

    def _auto_stake(self, node: SimNode) -> None:
        """Make every auto-stake look due since the last call (lazily), as the live stake loop makes them.

        One look per `auto_stake_interval_s` (`node.policy.stake_look_wei`: `stake_change_wei` with the
        contract's MIN_STAKE, held back by the node's `StakeHysteresis`). This is called after whatever
        changes what the policy sees, so the looks before now saw the load of the last call
        (`SimNode.stake_seen`) and a look falling at now sees the current one: a burst that arrives after a
        quiet spell counts as one look, not as every interval of the spell. Looks that cannot change
        anything (no move called for, or one the ledger cannot make) are not repeated one by one.
        """
        config = node.policy.config
        if not node.online or (not config.auto_stake and config.fixed_stake_wei is None):
            return
        current = self._snapshot(node)
        seen = node.stake_seen if node.stake_seen is not None else current
        node.stake_seen = current
        if self.now < node.next_stake_tick:
            self._wake(node, node.next_stake_tick)  # a look at what changed now
            return
        interval = config.auto_stake_interval_s
        looks = int((self.now - node.next_stake_tick) // interval) + 1
        at_now = node.next_stake_tick + (looks - 1) * interval >= self.now
        node.next_stake_tick += looks * interval
        moved = self._looks(node, seen, looks - at_now)
        if at_now and not moved:
            moved = self._looks(node, current, 1)
        gate = node.hysteresis
        if moved:
            # The live loop waits for the transaction (mined with the next block) before its next look.
            block = self.config.block_time_s
            mined_s = (math.floor(self.now / block) + 1) * block
            self._stake_changed(node, mined_s)
            node.next_stake_tick = mined_s + interval
            self._wake(node, node.next_stake_tick)  # the target may need more steps
        elif current != (current if at_now else seen):
            self._wake(node, node.next_stake_tick)  # a look at what changed now
        elif gate is not None and 0 < gate.streak < gate.settle_intervals:
            # a move held back: it goes through at this look if the load stays as it is
            self._wake(node, node.next_stake_tick + (gate.settle_intervals - gate.streak - 1) * interval)

    def _looks(self, node: SimNode, load: LoadSnapshot, count: int) -> bool:
        """Up to `count` looks of the live stake loop at `load` (with the node's credit now), until one moves
        stake; whether one did."""
        gate = node.hysteresis
        min_stake = self.config.contract_params.min_stake_wei
        for _ in range(count):
            credit = max(0, self._free_credit_wei(node))
            snapshot = load if load.credit_wei == credit else dataclasses.replace(load, credit_wei=credit)
            delta = policy_module.stake_look_wei(node.policy, snapshot, node.stake_wei, gate, min_stake_wei=min_stake)
            if delta != 0:
                return self._move_stake(node, delta)  # a move the ledger refuses would be refused again
            # Nothing moved: the next look at the same load and stake is the same look, unless the gate is
            # counting up to a move (each look is one step of its count).
            if gate is None or not 0 < gate.streak < gate.settle_intervals:
                break
        return False

    def _move_stake(self, node: SimNode, delta_wei: int) -> bool:
        """Send the stake transaction `delta_wei` (> 0 stakes from credit, < 0 unstakes); whether it moved.

        On the contract an unstake is `requestUnstake`: the stake leaves the draw at once and comes back to
        credit by `withdrawStake` once unbonded (`_withdraw_unbonded`). Without it, the node's books move
        at once both ways."""
        ledger = self.ledger
        if ledger is None:
            node.stake_wei += delta_wei
            node.credit_wei -= delta_wei
            return True
        if delta_wei > 0:
            if ledger.add_stake(node, delta_wei, self.now) == 0:
                return False
        else:
            due_s = ledger.unstake(node, -delta_wei, self.now)
            if due_s is None:
                return False
            node.withdraw_due_s = due_s
            self._wake(node, due_s)
        node.stake_wei = ledger.stake_wei(node)
        return True

    def _wake(self, node: SimNode, at_s: float) -> None:
        """Make sure the node's ledger loops (`_on_stake`) run at `at_s` (or earlier)."""
        if at_s < node.wake_s:
            node.wake_s = at_s
            self._push(at_s, STAKE, node.index)

    def _on_stake(self, index: int) -> None:
        """The node's ledger loops: voucher claims, withdrawing unbonded stake, auto-stake's looks."""
        node = self.nodes[index]
        if self.now >= node.wake_s:
            node.wake_s = math.inf
        if self.ledger is not None:
            if self.now >= node.claim_due_s:
                self._claim(node)
            if self.now >= node.withdraw_due_s:
                self._withdraw_unbonded(node)
        self._auto_stake(node)
        for due_s in (node.claim_due_s, node.withdraw_due_s):  # a wake-up a later one took the place of
            if due_s < math.inf:
                self._wake(node, max(due_s, self.now))

    def _withdraw_unbonded(self, node: SimNode) -> None:
        ledger = self.ledger
        assert ledger is not None
        ledger.withdraw_unbonded(node, self.now)
        if ledger.unbonding_wei(node) > 0:  # bonded by an open duel, or unbonding again: look again later
            node.withdraw_due_s = max(ledger.withdrawable_s(node), self.now + _claim_interval_s())
        else:
            node.withdraw_due_s = math.inf

    # ---- fees -------------------------------------------------------------------------------------

    def _pay_fee(self, payer: SimNode, payee: SimNode) -> None:
        """`payer` owes `payee` one delegation fee (`SimConfig.fee_wei`), as the live FeeBook's `owe`.

        The fee is promised only when the payer's free credit covers it (the live `record_fee` refuses, and
        the fee goes unpaid). On the contract it is a voucher, claimed by the payee every
        `voucher_claim_interval_s` (the live default); without it the books move at once."""
        fee = self.config.fee_wei
        if fee <= 0 or payer is payee:
            return
        ledger = self.ledger
        if ledger is None:
            if fee <= payer.credit_wei:
                payer.credit_wei -= fee
                payee.credit_wei += fee
            return
        if ledger.promise(payer, payee, fee) and payee.claim_due_s == math.inf:
            # the live claim loop wakes every interval from the node's start
            interval, start_s = _claim_interval_s(), payee.spec.join_s
            payee.claim_due_s = start_s + (math.floor((self.now - start_s) / interval) + 1) * interval
            self._wake(payee, payee.claim_due_s)

    def _claim(self, node: SimNode) -> None:
        ledger = self.ledger
        assert ledger is not None
        if ledger.claim(node, self.now) > 0:
            self._auto_stake(node)  # its credit grew
        node.claim_due_s = self.now + _claim_interval_s() if ledger.owed_wei(node) > 0 else math.inf

    def settle_fees(self) -> None:
        """Every payee claims what it is owed now (the end of a run: the claims due after the last answer)."""
        if self.ledger is not None:
            for node in self.nodes:
                if node.claim_due_s < math.inf:
                    self.ledger.claim(node, self.now)
                    node.claim_due_s = math.inf

    def _free_credit_wei(self, node: SimNode) -> int:
        """The node's credit as its policy sees it: on the contract, credit less fees promised and unclaimed."""
        return node.credit_wei if self.ledger is None else self.ledger.free_credit_wei(node)

    # ---- what the policy sees --------------------------------------------------------------------

    def _snapshot(self, node: SimNode) -> LoadSnapshot:
        """What the policy sees at `node` now (the same snapshot while nothing it depends on changed)."""
        credit = self._free_credit_wei(node)
        key = (self.now, id(node.engine), node.engine_version, node.queued_user, node.queued_node, credit)
        if node.snapshot_key == key and node.snapshot is not None:
            return node.snapshot
        kv, running, waiting = node.engine.load(self.now)
        load = policy_module.observed_load(kv, running, waiting)
        models: dict[str, ModelLoad] = dict.fromkeys(node.models, load)
        node.snapshot = LoadSnapshot(models=models, user_queue=node.queued_user, node_queue=node.queued_node,
                                     credit_wei=max(0, credit))
        node.snapshot_key = key
        return node.snapshot

    # ---- joins and leaves ---------------------------------------------------------------------------

    def _on_join(self, index: int) -> None:
        node = self.nodes[index]
        node.online = True
        config = node.policy.config
        # A fresh node process: a fresh hold on auto-stake moves; its first look one interval after it starts
        # (a fixed stake is reached at once).
        settle = config.auto_stake_settle_intervals
        node.hysteresis = policy_module.StakeHysteresis(settle) if config.auto_stake else None
        node.stake_seen = None
        node.next_stake_tick = self.now + (config.auto_stake_interval_s if config.auto_stake else 0.0)
        if not config.auto_stake and config.fixed_stake_wei is None:
            # Stake left to the operator: a node in a run with no staking rule stakes one unit on joining.
            node.stake_wei = config.stake_unit_wei
            node.credit_wei -= node.stake_wei
            self._stake_changed(node, self.now + self.config.block_time_s)
        if self.now == 0.0:
            # A node there from the start has been running for a while: its stake is already where its
            # (idle) load puts it, on-chain, when the first request arrives (its hold long settled).
            min_stake = self.config.contract_params.min_stake_wei
            for _ in range(64):
                delta = policy_module.stake_change_wei(node.policy, self._snapshot(node), node.stake_wei,
                                                       min_stake_wei=min_stake)
                if delta == 0 or not self._move_stake(node, delta):
                    break
            node.pending_stake = None
            self._show_stake(node, node.stake_wei)
            node.next_stake_tick = config.auto_stake_interval_s
            node.stake_seen = self._snapshot(node)  # its load until something changes it
            return
        self._auto_stake(node)

    def _on_leave(self, index: int) -> None:
        node = self.nodes[index]
        node.online = False
        node.pending_stake = None
        self._show_stake(node, 0)
        engine = node.engine
        node.engine = EngineModel(node.spec.profile)  # its work is gone
        node.engine_version += 1
        lost = [r.payload for r in [*engine.waiting, *engine._running]]
        for req in lost:
            self._lost_at(req, node)

    def _lost_at(self, req: InFlightRequest, node: SimNode) -> None:
        """`req` was at `node`, which went away: its sender re-dispatches it, or its user loses it."""
        if req.record.status != "pending":
            return
        if req.duel_of is not None:  # the challenger went away: it does not answer (and pays for it)
            req.record.status = "failed"
            return
        req.attempt += 1
        if not req.route:
            self._close(req, "failed", self.now)
            return
        sender = self.nodes[req.route[-1]]
        req.route.pop()
        req.avoid.add(node.address.lower())  # the live sender bans a peer whose connection failed
        req.record.redispatches += 1
        delay = self.config.latency.one_way(sender.spec.region, node.spec.region)
        self._push(self.now + delay, ARRIVE, req, sender.index, req.attempt, False)
