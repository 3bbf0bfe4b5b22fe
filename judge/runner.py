"""The judge's work loop: for every seat this node holds on a duel's panel, do the next step once.

One `JudgeRunner.run_once()` pass looks at each (duel, round) where this node holds seats and acts on
`judge.journal.next_step`:

- DECIDE: gather the evidence (the request, A's answer, B's answer) from whoever serves it, each piece
  checked against the chain's hashes (`judge.evidence.checked_pieces`, done by the gatherer); a piece
  nobody serves decides the vote by itself (`judge.evidence.evidence_vote`); with every piece in hand,
  ask the judge model in both A/B orders (`judge.prompt`), with the answers truncated to
  `int(max_tokens * 1.2)` characters where max_tokens is the request's own. Missing pieces are asked for
  again on later passes until `commit_margin_blocks` before the commit window closes (a party may not
  have indexed the draw yet); then the vote is decided with what there is. A model that fails to answer
  is an abstention. The vote is recorded in the journal, then committed.
- COMMIT / REVEAL / SETTLE: send the transaction (the journal is advanced only after it is mined, and
  the chain is re-read every pass, so a lost reply or a restart repeats nothing the chain already has).

The chain, the evidence transport and the model sit behind small interfaces, so the same runner is
driven by the node (indexer + peer API + its backend) and by tests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import ValidationError

from wwwserve.judge.evidence import EvidencePieces, evidence_vote
from wwwserve.judge.journal import DuelView, JudgeStep, VoteJournal, next_step
from wwwserve.judge.prompt import build_prompt, combine_orders, parse_vote
from wwwserve.ledger.errors import ContractRevertedError
from wwwserve.ledger.records import DuelState, Vote
from wwwserve.ledger.work import WorkError, parse_request_bytes
from wwwserve.node.protocol import ChatCompletionRequest, CompletionRequest

__all__ = ["JudgeAction", "JudgeChain", "JudgeRunner", "prompt_text", "question_of"]

logger = logging.getLogger(__name__)
ALREADY_COMMITTED = "Duel: already committed"  # the contract's revert when a judge commits twice

JudgeModel = Callable[[str, int | None], Awaitable[str]]
"""Ask the judge's LLM one prompt (with an output budget); returns its reply text."""

EvidenceGatherer = Callable[[DuelState], Awaitable[EvidencePieces]]
"""The pieces of a duel's evidence obtainable now, each already checked against the chain's hashes."""

# The judge's reply is one letter; a little room for models that explain first.
JUDGE_MAX_TOKENS = 16


class JudgeChain(Protocol):
    """What the runner needs from the chain (the node's Ledger manager and tx sender provide it)."""

    chain_id: int

    def block_number(self) -> int:
        """The current block."""
        ...

    def my_seats(self) -> Sequence[tuple[DuelState, DuelView]]:
        """Every (duel, round) in which this judge holds seats and that is not over, with its view."""
        ...

    def commitment_of(self, duel_id: int, round_: int, vote: Vote, salt: bytes) -> bytes:
        """The commitment this judge submits for (vote, salt) in that round."""
        ...

    async def commit(self, duel_id: int, commitment: bytes) -> str:
        """Send commitVote (for the duel's current round) and wait for it to be mined; the tx hash."""
        ...

    async def reveal(self, duel_id: int, vote: Vote, salt: bytes) -> str:
        """Send revealVote and wait for it to be mined; returns the tx hash."""
        ...

    async def settle(self, duel_id: int) -> str:
        """Send settleDuel and wait for it to be mined; returns the tx hash."""
        ...


@dataclass(frozen=True)
class JudgeAction:
    """What one pass did for one seat (for logs, metrics and tests)."""

    duel_id: int
    round: int
    step: JudgeStep
    detail: str = ""


def prompt_text(prompt: Sequence[object] | str) -> str:
    """The question as the judge sees it: a completion prompt as is, chat messages as `role: content` lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" if isinstance(m, Mapping) else str(m)
                     for m in prompt)


def question_of(request: bytes) -> tuple[str, int | None]:
    """The question text and the output budget (`max_tokens`, as the executors were asked) of a request's
    canonical bytes; `ValueError` when they are not a request this network serves."""
    try:
        kind, body = parse_request_bytes(request)
        if kind == "chat":
            chat = ChatCompletionRequest.model_validate(body)
            return prompt_text(body["messages"]), chat.max_output_tokens
        completion = CompletionRequest.model_validate(body)
        return completion.prompt_text, completion.max_output_tokens
    except (WorkError, ValidationError) as exc:
        raise ValueError(f"the request is not a valid chat or completion request: {exc}") from None


@dataclass
class JudgeRunner:
    """Runs this node's judging duties (see the module docstring)."""

    chain: JudgeChain
    journal: VoteJournal
    gather: EvidenceGatherer
    ask_model: JudgeModel
    settle_grace_blocks: int = 2
    max_tokens: int = JUDGE_MAX_TOKENS  # the judge model's output budget per order
    # Missing evidence is asked for again on later passes, until this many blocks before the commit window
    # closes; then the judge decides with what it has.
    commit_margin_blocks: int = 2
    # At the last chance, how long to wait for parties that have not served yet before deciding with the
    # pieces `held` returns (what this node holds and what earlier passes gathered): a party that stalls
    # (accepts the request, never answers) must not keep an honest judge past the window and get it fined.
    held: Callable[[DuelState], EvidencePieces] | None = None
    last_chance_wait_s: float = 2.0
    _busy: set[tuple[int, int]] = field(default_factory=set, init=False, repr=False)  # seats acted on now

    async def decide(self, duel: DuelState, last_chance: bool = True) -> tuple[Vote, str] | None:
        """The vote for a duel (contract value) and why; None when evidence is still missing and this is
        not the `last_chance` to commit."""
        try:
            if last_chance and self.held is not None:
                pieces = await asyncio.wait_for(self.gather(duel), self.last_chance_wait_s)
            else:
                pieces = await self.gather(duel)
        except TimeoutError:
            assert self.held is not None
            pieces = self.held(duel)
            logger.info("duel %d: a party did not serve within %.1f s at the last chance; deciding with what is "
                        "held", duel.duel_id, self.last_chance_wait_s)
        except Exception as exc:  # a party is down, slow, or answered garbage: what is missing stays missing
            logger.info("duel %d: gathering evidence failed: %s", duel.duel_id, exc)
            pieces = EvidencePieces(duel.duel_id)
        if not pieces.complete and not last_chance:
            return None
        ruled = evidence_vote(pieces)
        if ruled is not None:
            return ruled
        assert pieces.request is not None and pieces.answer_a is not None and pieces.answer_b is not None
        try:
            question, budget = question_of(pieces.request)
        except ValueError as exc:
            return Vote.ABSTAIN, str(exc)
        prompts = build_prompt(question, pieces.answer_a, pieces.answer_b, budget)
        try:
            # Both orders at once: they queue at the model together.
            answers = await asyncio.gather(self.ask_model(prompts.in_order, self.max_tokens),
                                           self.ask_model(prompts.swapped, self.max_tokens))
            first, second = parse_vote(answers[0]), parse_vote(answers[1])
        except Exception as exc:
            logger.warning("duel %d: the judge model failed: %s", duel.duel_id, exc)
            return Vote.ABSTAIN, f"the judge model failed: {exc}"
        return combine_orders(first, second).vote, f"in order {first.value}, swapped {second.value}"

    async def run_once(self, steps: Collection[JudgeStep] | None = None) -> list[JudgeAction]:
        """One pass over this node's seats; every step that failed is retried on a later pass.

        With `steps`, only seats whose next step is one of them are acted on: the node runs DECIDE (which
        waits for its model, maybe behind user requests) in a lane of its own, so a slow decision never
        holds up another duel's commit or reveal. A seat one lane is acting on is skipped by the other.
        """
        actions = []
        deciding: list[tuple[tuple[int, int], JudgeStep, DuelState, DuelView]] = []
        block = self.chain.block_number()
        settled: set[int] = set()
        for duel, view in self.chain.my_seats():
            key = (duel.duel_id, view.round)
            if key in self._busy:
                continue
            entry = self.journal.get(*key)
            if entry is not None and view.revealed_vote is not None and entry.state != "revealed":
                entry = self.journal.mark(*key, "revealed")  # the chain has it: catch up
            elif entry is not None and view.committed and entry.state == "decided":
                entry = self.journal.mark(*key, "committed")
            step = next_step(view, entry, block, settle_grace_blocks=self.settle_grace_blocks)
            if steps is not None and step not in steps:
                continue
            if step is JudgeStep.SETTLE:
                if duel.duel_id in settled:
                    continue  # one settlement per duel, however many rounds this judge sat in
                settled.add(duel.duel_id)
            self._busy.add(key)
            if step is JudgeStep.DECIDE:
                deciding.append((key, step, duel, view))
                continue
            action = await self._act(key, step, duel, view, block)
            if action is not None:
                actions.append(action)
        # Every seat's decision at once: their model calls wait in the backend's queue together instead of
        # one seat's after another's (one after another, a node judging ten duels of a 40-request burst on
        # SmolLM2 left a third of its seats silent, each fined SILENT_PENALTY, past their commit windows).
        decided = await asyncio.gather(*(self._act(key, step, duel, view, block)
                                         for key, step, duel, view in deciding))
        return actions + [a for a in decided if a is not None]

    async def _act(self, key: tuple[int, int], step: JudgeStep, duel: DuelState, view: DuelView,
                   block: int) -> JudgeAction | None:
        try:
            detail = await self._do(step, duel, view, block)
        except Exception as exc:  # a reverted or failed tx: the next pass re-reads the chain and retries
            logger.warning("duel %d round %d: %s failed: %s", duel.duel_id, view.round, step.value, exc)
            detail = f"failed: {exc}"
        finally:
            self._busy.discard(key)
        if step not in (JudgeStep.WAIT, JudgeStep.DONE) and detail is not None:
            return JudgeAction(duel.duel_id, view.round, step, detail)
        return None

    async def _do(self, step: JudgeStep, duel: DuelState, view: DuelView, block: int) -> str | None:
        """Carry out `step`; returns what was done, or None when it waits for a later pass."""
        duel_id, round_ = duel.duel_id, view.round
        if step is JudgeStep.DECIDE:
            decision = await self.decide(duel, last_chance=block >= view.commit_end - self.commit_margin_blocks)
            if decision is None:
                return None
            vote, why = decision
            decided = self.journal.decide(duel_id, round_, vote,
                                          lambda v, s: self.chain.commitment_of(duel_id, round_, v, s))
            tx = await self.chain.commit(duel_id, decided.commitment)
            self.journal.mark(duel_id, round_, "committed", tx)
            return f"voted {decided.vote} ({why}), committed in {tx}"
        entry = self.journal.get(duel_id, round_)
        if step is JudgeStep.COMMIT and entry is not None:  # next_step commits only a recorded decision
            try:
                tx = await self.chain.commit(duel_id, entry.commitment)
            except ContractRevertedError as exc:
                if exc.reason != ALREADY_COMMITTED:
                    raise
                # Only this wallet commits for its seats: the commitment is on-chain and the view (the
                # index) has not seen it yet. Nothing to send; the reveal follows once the view has it.
                self.journal.mark(duel_id, round_, "committed")
                return None
            self.journal.mark(duel_id, round_, "committed", tx)
            return f"committed in {tx}"
        if step is JudgeStep.REVEAL and entry is not None:
            tx = await self.chain.reveal(duel_id, entry.vote, entry.salt)
            self.journal.mark(duel_id, round_, "revealed", tx)
            return f"revealed {entry.vote} in {tx}"
        if step is JudgeStep.SETTLE:
            return f"settled in {await self.chain.settle(duel_id)}"
        return ""
