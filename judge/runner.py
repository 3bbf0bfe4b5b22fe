"""The judge's work loop: for every duel this node was drawn to judge, do the next step once.

One `JudgeRunner.run_once()` pass looks at each duel where this node sits on the panel and acts on
`judge.journal.next_step`:

- DECIDE: fetch the evidence from the duel's origin, check it against the on-chain record
  (`judge.evidence.verify_evidence`), ask the judge model in both A/B orders (`judge.prompt`), and
  record the vote in the journal. Evidence that does not verify is voted NO_EVIDENCE at once; evidence
  not served is asked for again on later passes until `commit_margin_blocks` before the commit window
  closes, then voted NO_EVIDENCE (a majority of those voids the duel: nobody is slashed, DESIGN.md §4
  "evidence withheld"). A model that fails to answer is an abstention.
- COMMIT / REVEAL / SETTLE: send the transaction (the journal is advanced only after it is mined, and
  the chain is re-read every pass, so a lost reply or a restart repeats nothing the chain already has).

The chain, the evidence transport and the model sit behind small interfaces, so the same runner is
driven by the node (indexer + peer API + its backend) and by tests.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from judge.evidence import DuelRecord, Evidence, EvidenceError, verify_evidence
from judge.journal import VOTE_A, VOTE_ABSTAIN, VOTE_B, VOTE_NO_EVIDENCE, DuelView, JudgeStep, VoteJournal, next_step
from judge.prompt import Choice, build_prompt, combine_orders, parse_vote

__all__ = ["JudgeAction", "JudgeChain", "JudgeRunner", "prompt_text"]

logger = logging.getLogger(__name__)

JudgeModel = Callable[[str, int | None], Awaitable[str]]
"""Ask the judge's LLM one prompt (with an output budget); returns its reply text."""

EvidenceFetcher = Callable[[DuelRecord], Awaitable[Evidence | None]]
"""Fetch a duel's evidence from its origin; None when the origin does not serve it."""

# The judge's reply is one letter; a little room for models that explain first.
JUDGE_MAX_TOKENS = 16


class JudgeChain(Protocol):
    """What the runner needs from the chain (the node's Ledger manager and tx sender provide it)."""

    chain_id: int

    def block_number(self) -> int:
        """The current block."""
        ...

    def my_duels(self) -> Sequence[tuple[DuelRecord, DuelView]]:
        """Every duel this node sits on the panel of and that is not over, with this judge's view of it."""
        ...

    def key_of(self, address: str) -> bytes | None:
        """The ed25519 key `address` registered on-chain."""
        ...

    def commitment_of(self, duel_id: int, vote: int, salt: bytes) -> bytes:
        """The commitment this judge submits for (vote, salt)."""
        ...

    async def commit(self, duel_id: int, commitment: bytes) -> str:
        """Send commitVote and wait for it to be mined; returns the tx hash."""
        ...

    async def reveal(self, duel_id: int, vote: int, salt: bytes) -> str:
        """Send revealVote and wait for it to be mined; returns the tx hash."""
        ...

    async def settle(self, duel_id: int) -> str:
        """Send settleDuel and wait for it to be mined; returns the tx hash."""
        ...


@dataclass(frozen=True)
class JudgeAction:
    """What one pass did for one duel (for logs, metrics and tests)."""

    duel_id: int
    step: JudgeStep
    detail: str = ""


def prompt_text(prompt: Sequence[object] | str) -> str:
    """The question as the judge sees it: a completion prompt as is, chat messages as `role: content` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" if isinstance(m, Mapping) else str(m)
                     for m in prompt)


@dataclass
class JudgeRunner:
    """Runs this node's judging duties (see the module docstring)."""

    chain: JudgeChain
    journal: VoteJournal
    fetch_evidence: EvidenceFetcher
    ask_model: JudgeModel
    settle_grace_blocks: int = 2
    max_tokens: int = JUDGE_MAX_TOKENS  # the judge model's output budget per order
    # Evidence not served yet is asked for again on later passes, until this many blocks before the commit
    # window closes; then the judge votes NO_EVIDENCE (the origin may simply not have indexed the draw yet).
    commit_margin_blocks: int = 2
    _busy: set[int] = field(default_factory=set, init=False, repr=False)  # duels a pass is acting on now

    async def decide(self, record: DuelRecord, last_chance: bool = True) -> tuple[int, str] | None:
        """The vote for a duel (contract value) and why; None when the evidence is not there yet and this
        is not the `last_chance` to commit."""
        try:
            evidence = await self.fetch_evidence(record)
        except Exception as exc:  # the origin is down, slow, or answered garbage
            logger.info("duel %d: evidence not fetched from %s: %s", record.duel_id, record.origin, exc)
            evidence = None
        if evidence is None:
            if not last_chance:
                return None
            return VOTE_NO_EVIDENCE, "the origin did not serve the evidence"
        try:
            verify_evidence(record, evidence, self.chain.key_of, chain_id=self.chain.chain_id)
        except EvidenceError as exc:
            return VOTE_NO_EVIDENCE, f"evidence refused: {exc}"
        prompts = build_prompt(prompt_text(evidence.prompt), evidence.answer_a, evidence.answer_b,
                               evidence.max_tokens)
        try:
            first = parse_vote(await self.ask_model(prompts.in_order, self.max_tokens))
            second = parse_vote(await self.ask_model(prompts.swapped, self.max_tokens))
        except Exception as exc:
            logger.warning("duel %d: the judge model failed: %s", record.duel_id, exc)
            return VOTE_ABSTAIN, f"the judge model failed: {exc}"
        choice = combine_orders(first, second)
        vote = {Choice.A: VOTE_A, Choice.B: VOTE_B}.get(choice, VOTE_ABSTAIN)
        return vote, f"in order {first.value}, swapped {second.value}"

    async def run_once(self, steps: Collection[JudgeStep] | None = None) -> list[JudgeAction]:
        """One pass over this node's duels; every step that failed is retried on a later pass.

        With `steps`, only duels whose next step is one of them are acted on: the node runs DECIDE (which
        waits for its model, maybe behind user requests) in a lane of its own, so a slow decision never
        holds up another duel's commit or reveal. A duel one lane is acting on is skipped by the other.
        """
        actions = []
        block = self.chain.block_number()
        for record, view in self.chain.my_duels():
            if record.duel_id in self._busy:
                continue
            entry = self.journal.get(record.duel_id)
            if entry is not None and view.revealed_vote is not None and entry.state != "revealed":
                entry = self.journal.mark(record.duel_id, "revealed")  # the chain has it: catch up
            elif entry is not None and view.committed and entry.state == "decided":
                entry = self.journal.mark(record.duel_id, "committed")
            step = next_step(view, entry, block, settle_grace_blocks=self.settle_grace_blocks)
            if steps is not None and step not in steps:
                continue
            self._busy.add(record.duel_id)
            try:
                detail = await self._do(step, record, view, block)
            except Exception as exc:  # a reverted or failed tx: the next pass re-reads the chain and retries
                logger.warning("duel %d: %s failed: %s", record.duel_id, step.value, exc)
                detail = f"failed: {exc}"
            finally:
                self._busy.discard(record.duel_id)
            if step not in (JudgeStep.WAIT, JudgeStep.DONE) and detail is not None:
                actions.append(JudgeAction(record.duel_id, step, detail))
        return actions

    async def _do(self, step: JudgeStep, record: DuelRecord, view: DuelView, block: int) -> str | None:
        """Carry out `step`; returns what was done, or None when it waits for a later pass."""
        duel_id = record.duel_id
        if step is JudgeStep.DECIDE:
            decision = await self.decide(record, last_chance=block >= view.commit_end - self.commit_margin_blocks)
            if decision is None:
                return None
            vote, why = decision
            decided = self.journal.decide(duel_id, vote, lambda v, s: self.chain.commitment_of(duel_id, v, s))
            tx = await self.chain.commit(duel_id, decided.commitment)
            self.journal.mark(duel_id, "committed", tx)
            return f"voted {decided.vote} ({why}), committed in {tx}"
        entry = self.journal.get(duel_id)
        if step is JudgeStep.COMMIT and entry is not None:  # next_step commits only a recorded decision
            tx = await self.chain.commit(duel_id, entry.commitment)
            self.journal.mark(duel_id, "committed", tx)
            return f"committed in {tx}"
        if step is JudgeStep.REVEAL and entry is not None:
            tx = await self.chain.reveal(duel_id, entry.vote, entry.salt)
            self.journal.mark(duel_id, "revealed", tx)
            return f"revealed {entry.vote} in {tx}"
        if step is JudgeStep.SETTLE:
            return f"settled in {await self.chain.settle(duel_id)}"
        return ""
