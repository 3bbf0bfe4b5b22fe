"""A node's own events in `sim.network.Simulation`: its stake (the live auto-stake rule, and when the chain
shows the others a change), the load snapshot its policy sees, and joining and leaving the network."""

from __future__ import annotations

import hashlib
import math

from wwwserve.node import policy as policy_module
from wwwserve.node import routing
from wwwserve.node.policy import LoadSnapshot, ModelLoad
from wwwserve.sim.engine import EngineModel
from wwwserve.sim.network_core import ARRIVE, STAKE, VISIBLE, SimulationCore
from wwwserve.sim.records import InFlightRequest, SimNode

__all__ = ["NodeEvents"]


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
        """Run the live auto-stake rule for every stake interval since the last one (lazily)."""
        config = node.policy.config
        if not node.online or (not config.auto_stake and config.fixed_stake_wei is None):
            return
        interval = max(config.auto_stake_interval_s, self.config.block_time_s)
        if self.now < node.next_stake_tick:
            if not node.stake_scheduled:
                node.stake_scheduled = True
                self._push(node.next_stake_tick, STAKE, node.index)
            return
        ticks = int((self.now - node.next_stake_tick) // interval) + 1
        node.next_stake_tick += ticks * interval
        changed = False
        for _ in range(min(ticks, 16)):
            if not self._stake_step(node):
                break
            changed = True
        if changed:
            block = self.config.block_time_s
            self._stake_changed(node, (math.floor(self.now / block) + 1) * block)
            if not node.stake_scheduled:  # look again next interval: the target may need more steps
                node.stake_scheduled = True
                self._push(node.next_stake_tick, STAKE, node.index)

    def _stake_step(self, node: SimNode) -> bool:
        """One stake interval of the live rule (`stake_change_wei`) applied; whether the stake changed."""
        delta = policy_module.stake_change_wei(node.policy, self._snapshot(node), node.stake_wei)
        if self.ledger is not None:
            # On the contract: stake more from credit (an unstake would unbond; the simulated contract
            # nodes only ever top their stake up).
            if delta <= 0 or self.ledger.add_stake(node, delta, self.now) == 0:
                return False
            node.stake_wei = self.ledger.stake_wei(node)
            return True
        if delta == 0:
            return False
        node.stake_wei += delta
        node.credit_wei -= delta
        return True

    def _on_stake(self, index: int) -> None:
        node = self.nodes[index]
        node.stake_scheduled = False
        self._auto_stake(node)

    # ---- what the policy sees --------------------------------------------------------------------

    def _snapshot(self, node: SimNode) -> LoadSnapshot:
        """What the policy sees at `node` now (the same snapshot while nothing it depends on changed)."""
        credit = node.credit_wei if self.ledger is None else self.ledger.credit_wei(node)
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
        node.next_stake_tick = self.now
        config = node.policy.config
        if not config.auto_stake and config.fixed_stake_wei is None:
            # Stake left to the operator: a node in a run with no staking rule stakes one unit on joining.
            node.stake_wei = config.stake_unit_wei
            node.credit_wei -= node.stake_wei
            self._stake_changed(node, self.now + self.config.block_time_s)
        if self.now == 0.0:
            # A node there from the start has been running for a while: its stake is already where its
            # (idle) load puts it, on-chain, when the first request arrives.
            for _ in range(64):
                if not self._stake_step(node):
                    break
            node.pending_stake = None
            self._show_stake(node, node.stake_wei)
            node.next_stake_tick = max(config.auto_stake_interval_s, self.config.block_time_s)
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
