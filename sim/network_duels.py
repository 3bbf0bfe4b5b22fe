"""Duels in `sim.network.Simulation` (with `SimConfig.contract`; sim.duels runs them on the contract's model):
the origin opens one over the answer it committed to duel, each step runs when the contract's windows allow
at the simulated block height, and B, drawn by the contract, runs the request on its own engine."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from wwwserve.sim.network_core import DUEL, ENGINE, SAMPLE, SimulationCore
from wwwserve.sim.records import InFlightRequest, RequestRecord, SimNode

if TYPE_CHECKING:
    from wwwserve.sim.duels import DuelRun

__all__ = ["DuelEvents"]


class DuelEvents(SimulationCore):
    """Opening duels, their steps, the challenger's run, balance samples (contract only)."""

    def _open_duel(self, req: InFlightRequest, executor: SimNode) -> None:
        """The answer is back at the origin, which committed to duel it: it opens the duel over the work
        its executor attested (only work delegated straight from the origin: a multi-hop answer was
        attested to the last hop, not to the origin)."""
        ledger = self.ledger
        if ledger is None or req.duel_origin < 0 or req.route != [req.duel_origin]:
            return
        origin = self.nodes[req.duel_origin]
        run = ledger.open(self.now, origin, executor, req.request_id)
        if run is not None:
            self._duels_open += 1
            self._duel_requests[run.duel_id] = req
            self._schedule_duel(run)

    def _schedule_duel(self, run: DuelRun) -> None:
        assert self.ledger is not None
        self._push(max(self.now, self.ledger.block_time(run.due_block)), DUEL, run, run.due_block)

    def _on_duel(self, run: DuelRun, due: int) -> None:
        """The duel's next step is due (the contract's windows at the simulated block height)."""
        ledger = self.ledger
        assert ledger is not None
        if run.done or run.due_block != due:
            return  # stale: the challenger answered before the end of its window
        step = run.step
        copy = self._duel_copies.pop(run.duel_id, None)
        if copy is not None and copy.record.status == "pending":  # the answer window is over: B gives up
            if copy.engine_req is not None and copy.executor >= 0:
                executor = self.nodes[copy.executor]
                self._settle_engine(executor, executor.engine.abort(self.now, copy.engine_req))
            copy.record.status = "failed"
        ledger.advance(run, self.now)
        if step == "challenger" and not run.done:
            self._challenger_runs(run)
        self._after_duel_step(run)

    def _challenger_runs(self, run: DuelRun) -> None:
        """B, drawn by the contract, fetches the request from the origin and runs it on its engine (the
        user has had A's answer for a while: this copy is only for the judges)."""
        assert self.ledger is not None
        served = self._duel_requests.pop(run.duel_id)
        b = self._by_name.get(self.ledger.name.get(run.b, ""))
        if b is None or not b.online:
            return  # B does not answer; the step due at the end of the window settles it
        origin = self._by_name[self.ledger.name[run.origin]]
        shadow = RequestRecord(served.record.rid, served.record.source, served.record.arrival_s,
                               served.spec.prompt_tokens, served.spec.output_tokens)
        copy = InFlightRequest(shadow, served.spec)
        copy.request_id = served.request_id
        copy.duel_of = run
        copy.route = [origin.index]
        self._duel_copies[run.duel_id] = copy
        delay = self.config.latency.one_way(origin.spec.region, b.spec.region)
        self._push(self.now + delay, ENGINE, b.index, -1, copy)

    def _after_duel_step(self, run: DuelRun) -> None:
        ledger = self.ledger
        assert ledger is not None
        if not run.done:
            self._schedule_duel(run)
            return
        self._duels_open -= 1
        self._duel_copies.pop(run.duel_id, None)
        self._duel_requests.pop(run.duel_id, None)
        result = run.result
        involved = {result.origin, result.a, result.b, *(seat for r in result.rounds for seat in r.seats)} - {""}
        block = self.config.block_time_s
        for address in involved:  # every seat of every round may have been paid or slashed
            node = self._by_name[ledger.name[address]]
            node.stake_wei = ledger.stake_wei(node)
            self._stake_changed(node, (math.floor(self.now / block) + 1) * block)
            self._auto_stake(node)

    def _on_sample(self) -> None:
        assert self.ledger is not None
        self.ledger.sample(self.now)
        if self._open > 0 or self._duels_open > 0:
            self._push(self.now + self.config.sample_every_s, SAMPLE)

