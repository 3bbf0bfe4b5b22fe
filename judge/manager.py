"""Duels, node side (docs/duels.md): the origin's, the executor's, the challenger's and the judge's parts.

**Origin.** Before a user's request is first delegated the dispatcher draws, blind, whether this node
will duel the answer (`should_inspect`, `policy.p_inspect`) and sends only the commitment with the
request (`node.extensions.Inspection`). The user is always served by the executor A the
dispatcher picked. When A's answer is in and checked (its work attestation included) and the draw said
duel, `open_soon` stores the evidence (the request's canonical bytes, A's answer, A's work attestation
and the inspection salt) and opens the duel on-chain (`openDuel`), in the background. The loop then does
what only the origin is asked to: draw the challenger a few blocks before the answer deadline if it did
not show up (so a no-show is punishable), publish the request on-chain if the challenger says it could
not get it, draw an appeal round's panel, and settle once nothing can change the duel.

**Executor (A).** Every delegated answer carries a work attestation signed with the wallet key (made
by the app); `keep_work` keeps the request and the answer, so A can serve its own answer to the judges
whatever the origin does (written in batches off the request path, pruned once no duel can need them).

**Challenger (B).** The contract draws B. The loop looks at duels awaiting an answer whose seed block is
mined and asks the contract who the challenger is; if it is this node, it asks the origin and A at once for
the request over the signed peer API (the first that checks against the duel's requestHash wins, so a
party that stalls costs nothing when the other serves: the window counts blocks), runs it on its
own backend as a whole answer with the request's own sampling parameters, keeps it, and commits its hash
(`answerDuel`) within the answer window. If nobody serves the request it answers the zero hash, and runs
the request once the origin publishes it on-chain.

**Judge.** `judge.runner.JudgeRunner` works through every round in which the contract gave this node
seats (it may be a party of the duel too: seats exclude nobody): the evidence comes from whoever holds each
piece, this node's own store first (`gather`), checked against the chain; votes are
committed and revealed, and the duel settled when due. **Appeals**: a duelist that lost round 1 appeals
by `judge.appeal` ("split": when round 1's revealed A/B votes were not unanimous).

**Evidence** (`/peer/evidence`, `evidence_for`): each node serves what it holds for a duel to the seat
holders of any of its rounds, and the request alone to its challenger.

Not done (docs/duels.md leaves it open): the commitment binds *whether* the origin will duel, not that
it does. An origin that commits wantsDuel = true to every request and opens only the duels it likes
after seeing the answers is not caught here; the remedy would be for the origin to send the executor
the reveal (wantsDuel, salt) after serving, and for an executor to refuse delegations for a while from
an origin whose revealed wantsDuel = true was not followed by `openDuel` within the TTL.

Decisions that wait for a model (a judge's verdict, the challenger's answer) run in lanes of their own,
so they never delay a commit, a reveal or a settlement: the chain's windows are counted in blocks and do
not wait. Everything here is off the request path and never raises into it: a failure is logged and
counted (`wwwserve_duels_total{event}`), and the next pass looks again. A duel this node is a party of (origin,
executor or challenger) is counted once more when a pass finds it ended, by how
(`wwwserve_duel_outcomes_total{role,outcome}`).

`DuelManager` is one class to its callers; its duties live by role in modules of their own:

  duties      the state they share, `DuelChain` (the chain as they see it), the steps several take
  origin      opening duels, and what only the origin is asked to do
  duelist     appeals and settlements of a duel this node duels in
  executor    keeping the evidence of this node's work
  exchange    serving evidence to peers, fetching it from them, gathering it as a judge
  challenger  answering as the drawn challenger
  manager     the judge's lane (`judge.runner.JudgeRunner`), pruning, the loops, start and close
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from wwwserve.judge.challenger import ChallengerDuties, request_runner
from wwwserve.judge.duelist import DuelistDuties
from wwwserve.judge.duties import APPEAL_POLICIES, DuelChain
from wwwserve.judge.exchange import PATH_EVIDENCE, EvidenceRefusedError, fetch_evidence
from wwwserve.judge.executor import ExecutorDuties
from wwwserve.judge.journal import JudgeStep
from wwwserve.judge.origin import OriginDuties
from wwwserve.judge.runner import JudgeModel, JudgeRunner
from wwwserve.node.backends.base import GenerationRequest
from wwwserve.node.protocol import new_request_id

__all__ = ["APPEAL_POLICIES", "PATH_EVIDENCE", "DuelChain", "DuelManager", "EvidenceRefusedError", "fetch_evidence",
           "model_asker", "request_runner"]

logger = logging.getLogger(__name__)

# Rows older than the attestation TTL plus this are pruned unless their duel is open: by then any duel
# over them was opened long enough ago for the indexer to know it.
PRUNE_GRACE_S = 120.0
PRUNE_INTERVAL_S = 60.0


class DuelManager(OriginDuties, DuelistDuties, ExecutorDuties, ChallengerDuties):
    """Every duel duty of one node (see the module docstring); constructed with `DuelDuties`' arguments."""

    async def _prune(self) -> None:
        """Forget evidence no duel can need any more (see PRUNE_GRACE_S) and the judge's cached pieces."""
        now = time.monotonic()
        if now - self._last_prune < PRUNE_INTERVAL_S:
            return
        self._last_prune = now
        ttl_s = self.attestation_ttl_s
        if ttl_s is None:
            ttl_s = float(await asyncio.to_thread(lambda: self.chain.attestation_ttl_s))
        keep = set(await asyncio.to_thread(self.chain.open_duel_ids))
        cutoff_ms = int((time.time() - ttl_s - PRUNE_GRACE_S) * 1000)
        gone = await asyncio.to_thread(self.store.prune, cutoff_ms, keep)
        if gone:
            logger.info("pruned the evidence of %d answers no duel can need any more", gone)
        seated = {state.duel_id for state, _ in self.chain.my_seats()}
        for duel_id in [d for d in self._gathered if d not in seated]:
            del self._gathered[duel_id]
        # What the duties remember of duels that are over (or never were this node's) goes too.
        live = keep | seated | {state.duel_id for state in self.chain.awaiting_answer()}
        self._tried = {k: v for k, v in self._tried.items() if k[0] in live}
        self._done = {k for k in self._done if k[0] in live}
        self._challengers = {k: v for k, v in self._challengers.items() if k[0] in live}
        self._appealed &= live

    # ---- the loop -------------------------------------------------------------------------------

    def _judge_runner(self) -> JudgeRunner:
        if self._runner is None:
            # A piece nobody serves is asked for again until a third of the commit window is left (at
            # least 2 blocks): a judge then decides with what it has and still has time to commit; a
            # fixed 2-block margin left judges silent, and fined, on fast blocks or behind a busy model.
            window = getattr(self.chain.params, "commit_window_blocks", 6) if hasattr(self.chain, "params") else 6
            self._runner = JudgeRunner(self.chain, self.journal, self.gather, self.ask_model,
                                       settle_grace_blocks=self.settle_grace_blocks, max_tokens=self.judge_max_tokens,
                                       commit_margin_blocks=max(2, int(window) // 3), held=self.held)
        return self._runner

    async def run_once(self, lane: Literal["chain", "decide", "answer"] = "chain") -> None:
        """One pass of one lane: "chain" (origin and duelist duties, commits, reveals, settlements),
        "decide" (the judge's verdicts) or "answer" (the challenger's answers)."""
        runner = self._judge_runner()
        block = self.chain.block_number()
        if block < 0:
            return
        if lane == "answer":
            await self._challenger_duties(block)
            return
        if lane == "chain":
            await self._origin_duties(block)
            await self._duelist_duties(block)
            self._count_ended()
            await self._prune()
        steps = [JudgeStep.DECIDE] if lane == "decide" else [s for s in JudgeStep if s is not JudgeStep.DECIDE]
        for action in await runner.run_once(steps):
            self._count("wwwserve_judge_steps_total", step=action.step.value)
            logger.info("judging duel %d round %d: %s %s", action.duel_id, action.round, action.step.value,
                        action.detail)

    async def _loop(self, lane: Literal["chain", "decide", "answer"]) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.run_once(lane)
            except Exception:
                logger.warning("duel round (%s) failed", lane, exc_info=True)

    def start(self) -> None:
        """Start the lanes: chain duties, the judge's decisions and the challenger's answers apart (those
        wait for a model, maybe behind user requests; commits, reveals and settlements must not)."""
        if not self._loop_tasks:
            loop = asyncio.get_running_loop()
            self._loop_tasks = [loop.create_task(self._loop(lane)) for lane in ("chain", "decide", "answer")]

    async def aclose(self) -> None:
        """Stop the loops; duels being opened get a moment to finish, A's evidence is written, the stores
        close."""
        for task in self._loop_tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush_evidence()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        self.store.close()
        self.journal.close()
        if self._on_close is not None:
            await self._on_close()


def model_asker(generate: Callable[[GenerationRequest], Awaitable[Any]], model: str) -> JudgeModel:
    """A `JudgeModel` over this node's own backend: greedy, one user message, a short answer."""

    async def ask(prompt: str, max_tokens: int | None) -> str:
        req = GenerationRequest(request_id=new_request_id("judge"), model=model,
                                messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0.0)
        result = await generate(req)
        return str(result.text)

    return ask
