"""Duels in `sim.network.Simulation` (with `SimConfig.contract`; sim.duels runs them on the contract's model):
the origin opens one over the answer it committed to duel, each step runs when the contract's windows allow
at the simulated block height, and the model work of a duel runs on the engines of the nodes that do it,
competing with their other work, as on the live node (judge/manager.py):

- B, drawn by the contract, fetches the request (one link delay from the origin) and runs it on its own
  engine; an answer not done by the end of the answer window is no answer (B pays its bond). Every duel
  B is drawn for is a request of its own in its engine's batch (the live challenger answers them all at
  once). The contract draws B once: there is no redraw of a busy or absent challenger.
- Each seat holder, once its round's seats are drawn, fetches the evidence from the parties (a round trip
  to the farthest of the origin, A and B: the live judge asks them all at once) and asks its model in both
  A/B orders at once (`judge.runner.JudgeRunner.decide`): two requests on its own engine, each a prompt
  of the request and both answers in the reference template (`judge.prompt.build_prompt`; the answers
  are counted whole: the reference's cut to 1.2 characters per token of the request's `max_tokens`
  leaves the workloads' answers whole but for their longest) and an answer of `JudgeBehaviour.reply_tokens`
  (default: the whole `judge.max_tokens` budget, `JUDGE_MAX_TOKENS`, 16; the fake backend's scripted judge
  answers one word, and so holds its slot for the first word only). A judge whose two replies are not
  both in when the last block of the commit window is mined never commits: its seats are silent, as a
  live judge still waiting for its model (behind user requests) when the window closes. A judge offline
  then (or when its work would start) is silent too. `JudgeBehaviour` (`SimConfig.judges`) adds its own
  rates on top: no-evidence votes (no model call then) and reveals missed after committing.

Model calls are requests like B's copy: an `InFlightRequest` whose `duel_of` is the duel, never sent
to a user (sim.network hands a finished one to `ContractLedger.b_answered`, which ignores all but B's
awaited answer)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from wwwserve.judge.prompt import build_prompt
from wwwserve.judge.runner import JUDGE_MAX_TOKENS
from wwwserve.sim.config import RequestSpec
from wwwserve.sim.network_core import DUEL, ENGINE, SAMPLE, SimulationCore
from wwwserve.sim.records import InFlightRequest, RequestRecord, SimNode

if TYPE_CHECKING:
    from wwwserve.sim.duels import DuelRun

__all__ = ["JUDGE_TEMPLATE_TOKENS", "DuelEvents"]

CHARS_PER_TOKEN = 4  # English text, about (the judge's prompt is counted from its template's characters)
JUDGE_TEMPLATE_TOKENS = len(build_prompt("", "", "").in_order) // CHARS_PER_TOKEN
"""The reference judge prompt's own tokens, around the request and the two answers."""


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
        run = ledger.open(self.now, origin, executor, req.request_id, req.model)
        if run is not None:
            run.judge_work = self._judge_work
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
        served = self._duel_requests[run.duel_id]  # kept until the duel ends: the judges' prompts hold it
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

    def _judge_work(self, run: DuelRun, address: str, asks_model: bool) -> Callable[[], bool]:
        """A seat holder starts deciding (`DuelRun.judge_work`): with `asks_model`, after fetching the
        evidence, its two model calls on its own engine; the check says whether its decision is in."""
        assert self.ledger is not None
        judge = self._by_name.get(self.ledger.name.get(address, ""))
        if judge is None or not judge.online:
            return lambda: False
        if not asks_model:  # the evidence alone decides: no model call
            return lambda: judge.online
        served = self._duel_requests[run.duel_id]
        spec = served.spec
        # The request and both answers (B ran the same request: as long as A's) in the reference template.
        prompt = spec.prompt_tokens + 2 * spec.output_tokens + JUDGE_TEMPLATE_TOKENS
        behaviour = judge.spec.judges or self.config.judges
        reply = JUDGE_MAX_TOKENS if behaviour.reply_tokens is None else behaviour.reply_tokens
        call = RequestSpec(self.now, judge.address, prompt, reply, spec.model)
        region = judge.spec.region
        parties = {run.origin, run.a, run.b} - {""}
        fetch = max((2 * self.config.latency.one_way(region, self._by_name[self.ledger.name[p]].spec.region)
                     for p in parties), default=0.0)
        calls = []
        for _order in range(2):  # (A, B) and swapped, asked at once
            copy = InFlightRequest(RequestRecord(served.record.rid, judge.address, self.now, prompt, reply), call)
            copy.request_id = f"{served.request_id}/judge"
            copy.duel_of = run
            calls.append(copy)
            self._push(self.now + fetch, ENGINE, judge.index, -1, copy)

        def ready() -> bool:  # asked once, when the last block of the commit window is mined
            done = judge.online and all(c.record.status == "done" for c in calls)
            for c in calls:
                if c.record.status == "pending":  # its engine goes on with it (so does the live one's); unread
                    c.record.status = "late"
            return done

        return ready

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

