"""What every duel duty of the Duel manager shares (judge.manager): the chain it sees (`DuelChain`), the
manager's state, and the steps several duties take (send a duty's transaction once per block, settle when
due, draw an appeal round's panel, find the challenger, read this node's evidence).

`DuelDuties` holds the state and takes the constructor's arguments; each role adds its duties as a class
of its own module (origin, duelist, executor, exchange, challenger) and `judge.manager.DuelManager` is
all of them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Sequence
from typing import Any, Literal, Protocol

from wwwserve.judge.evidence import EvidencePieces
from wwwserve.judge.journal import DuelView, VoteJournal
from wwwserve.judge.runner import JUDGE_MAX_TOKENS, JudgeModel, JudgeRunner
from wwwserve.judge.store import EvidenceStore, StoredEvidence
from wwwserve.ledger.records import DuelOutcome, DuelState, DuelStatus, Vote
from wwwserve.ledger.work import WorkAttestation
from wwwserve.node.managers.communication import CommunicationManager

__all__ = ["APPEAL_POLICIES", "AppealPolicy", "DuelChain", "DuelDuties", "RequestRunner"]

logger = logging.getLogger(__name__)

# `wwwserve_duel_outcomes_total{outcome}` of a duel that ended, by its status and outcome.
_OUTCOME_LABELS = {DuelOutcome.A_WON: "a_won", DuelOutcome.B_WON: "b_won", DuelOutcome.TIE: "tie",
                   DuelOutcome.VOIDED: "void"}

AppealPolicy = Literal["split", "never", "always"]
APPEAL_POLICIES: tuple[AppealPolicy, ...] = ("split", "never", "always")


class DuelChain(Protocol):
    """The chain as the Duel manager sees it (`judge.chain.LedgerDuelChain` fits): reads from the indexer
    (blocking but local; `challenger_of` and `duel_onchain` are RPC calls), writes as mined transactions."""

    chain_id: int

    def block_number(self) -> int: ...

    def duel(self, duel_id: int) -> DuelState | None: ...

    def duel_onchain(self, duel_id: int) -> DuelState | None: ...

    def my_seats(self) -> Sequence[tuple[DuelState, DuelView]]: ...

    def opened_by_me(self) -> Sequence[DuelState]: ...

    def awaiting_answer(self) -> Sequence[DuelState]: ...

    def as_duelist(self) -> Sequence[DuelState]: ...

    def open_duel_ids(self) -> Collection[int]: ...

    @property
    def attestation_ttl_s(self) -> int: ...

    def challenger_of(self, duel_id: int) -> str | None: ...

    def commitment_of(self, duel_id: int, round_: int, vote: Vote, salt: bytes) -> bytes: ...

    async def open_duel(self, work: WorkAttestation, salt: bytes) -> tuple[int, str]: ...

    async def draw_challenger(self, duel_id: int) -> str: ...

    async def answer_duel(self, duel_id: int, answer: bytes) -> str: ...

    async def publish_request(self, duel_id: int, work: WorkAttestation, salt: bytes, request: bytes) -> str: ...

    async def draw_judges(self, duel_id: int) -> str: ...

    async def appeal(self, duel_id: int) -> str: ...

    async def commit(self, duel_id: int, commitment: bytes) -> str: ...

    async def reveal(self, duel_id: int, vote: Vote, salt: bytes) -> str: ...

    async def settle(self, duel_id: int) -> str: ...


RequestRunner = Callable[[bytes], Awaitable[str]]
"""Run a request (its canonical bytes) on this node's backend as a whole answer; returns the text."""


class DuelDuties:
    """The Duel manager's state and the steps its duties share (see judge.manager)."""

    def __init__(
        self,
        *,
        my_address: str,
        ledger: Any,
        communication: CommunicationManager,
        should_inspect: Callable[[], bool],
        store: EvidenceStore,
        journal: VoteJournal,
        ask_model: JudgeModel,
        run_request: RequestRunner,
        chain: DuelChain | None = None,
        poll_interval_s: float = 1.0,
        settle_grace_blocks: int = 2,
        judge_max_tokens: int = JUDGE_MAX_TOKENS,
        appeal: AppealPolicy = "split",
        draw_margin_blocks: int = 3,
        answer_margin_blocks: int = 2,
        attestation_ttl_s: float | None = None,  # default: the contract's ATTESTATION_TTL
        evidence_flush_s: float = 0.2,
        count: Callable[..., None] | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if appeal not in APPEAL_POLICIES:
            raise ValueError(f"appeal must be one of {APPEAL_POLICIES}, got {appeal!r}")
        self.my_address = my_address
        self.ledger = ledger
        self.communication = communication
        self.should_inspect = should_inspect
        self.store = store
        self.journal = journal
        self.ask_model = ask_model
        self.run_request = run_request
        self.poll_interval_s = poll_interval_s
        self.settle_grace_blocks = settle_grace_blocks
        self.judge_max_tokens = judge_max_tokens
        self.appeal_policy = appeal
        self.draw_margin_blocks = draw_margin_blocks
        self.answer_margin_blocks = answer_margin_blocks
        self.attestation_ttl_s = attestation_ttl_s
        self.evidence_flush_s = evidence_flush_s
        self._chain = chain
        self._chain_built = False  # True when `chain` built the adapter from the ledger (not given)
        self._on_close = on_close  # e.g. closes a judge backend of its own
        self._count = count or (lambda *_a, **_k: None)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_tasks: list[asyncio.Task[None]] = []
        self._runner: JudgeRunner | None = None
        self._me = my_address.lower()
        self._pending: list[StoredEvidence] = []  # A's evidence not written yet (or being written)
        self._flusher: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._gathered: dict[int, EvidencePieces] = {}  # judge: verified pieces so far, per duel
        self._challengers: dict[tuple[int, int], str] = {}  # (duel, seed block) -> challenger
        self._tried: dict[tuple[int, str], int] = {}  # (duel, action) -> block of the last attempt
        self._appealed: set[int] = set()
        self._done: set[tuple[int, str, int, int]] = set()  # (duel, action, deadline, round) mined
        # Open duels this node is a party of, with its role, as last seen: one that leaves the open set is
        # counted by how it ended (`_count_ended`). `_seen_open` collects this pass's open duels.
        self._parties: dict[int, str] = {}
        self._seen_open: set[int] = set()
        self._last_prune = 0.0

    # ---- the chain ----------------------------------------------------------------------------

    @property
    def chain(self) -> DuelChain:
        """The chain adapter (built on first use: the ledger's indexer and client exist once it started; built
        again when the ledger re-opened them, after a chain reset)."""
        stale = self._chain_built and getattr(self._chain, "indexer", None) is not self.ledger.indexer
        if self._chain is None or stale:
            from wwwserve.judge.chain import LedgerDuelChain

            self._chain = LedgerDuelChain(self.ledger.indexer, self.ledger.client, self.my_address,
                                          self.ledger.run_tx)
            self._chain_built = True
        return self._chain

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _stored(self, duel_id: int) -> StoredEvidence | None:
        for pending in reversed(self._pending):  # not flushed yet
            if pending.duel_id == duel_id:
                return pending
        return self.store.get(duel_id)

    def _challenger(self, state: DuelState) -> str | None:
        """The duel's challenger for its current answer window (an RPC call, cached per seed block)."""
        key = (state.duel_id, state.seed_block)
        found = self._challengers.get(key)
        if found is None:
            found = self.chain.challenger_of(state.duel_id)
            if found is not None:
                self._challengers[key] = found
        return found

    def _party(self, state: DuelState, role: str) -> None:
        """This pass saw `state` open, with this node as `role` (origin, executor, challenger)."""
        self._parties.setdefault(state.duel_id, role)
        self._seen_open.add(state.duel_id)

    def _count_ended(self) -> None:
        """Count the duels this node was a party of that left the open set since the last pass, by how they
        ended (`wwwserve_duel_outcomes_total`); one the indexer does not show ended yet is looked at again."""
        for duel_id in [d for d in self._parties if d not in self._seen_open]:
            state = self.chain.duel(duel_id)
            if state is not None and state.is_open:
                continue
            role = self._parties.pop(duel_id)
            if state is None:
                continue  # gone from the index (a reset chain): nothing to say about it
            outcome = "cancelled" if state.status is DuelStatus.CANCELLED else _OUTCOME_LABELS.get(state.outcome)
            if outcome is not None:
                self._count("wwwserve_duel_outcomes_total", role=role, outcome=outcome)
                logger.info("duel %d ended: %s (this node: %s)", duel_id, outcome, role)
        self._seen_open = set()

    def _first_try(self, duel_id: int, action: str, block: int) -> bool:
        """At most one attempt per duel, action and block: a revert is not retried within the same block."""
        key = (duel_id, action)
        if self._tried.get(key) == block:
            return False
        self._tried[key] = block
        return True

    async def _act(self, state: DuelState, action: str, block: int, send: Callable[[], Awaitable[str]],
                   event: str | None = None) -> None:
        """Send one duty's transaction: once per block while it fails, never again once mined for this step
        of the duel (the indexer may show the old state for a block or two)."""
        step = (state.duel_id, action, state.deadline, state.round)
        if step in self._done or not self._first_try(state.duel_id, action, block):
            return
        try:
            tx = await send()
        except Exception as exc:  # e.g. someone else settled first: the indexer will say so
            logger.info("duel %d: %s: %s", state.duel_id, action, exc)
            return
        self._done.add(step)
        if event is not None:
            self._count("wwwserve_duels_total", event=event)
        logger.info("duel %d: %s (tx %s)", state.duel_id, action, tx)

    async def _settle_if_due(self, state: DuelState, block: int, grace: int) -> bool:
        after = state.settle_after()
        if after is None or block <= after + grace:
            return False
        await self._act(state, "settle", block, functools.partial(self.chain.settle, state.duel_id), "settled")
        return True

    async def _draw_appeal_panel(self, state: DuelState, block: int) -> bool:
        """Draw round 2's seats once its seed block is mined (the first commit would too, but a judge only
        knows it holds a seat once they are drawn)."""
        second = state.round_state(2)
        if state.status is not DuelStatus.JUDGING or second is None or second.seats:
            return False
        if state.seed_block < block <= second.commit_end:
            await self._act(state, "draw appeal judges", block, functools.partial(self.chain.draw_judges,
                                                                                  state.duel_id), "judges_drawn")
            return True
        return False

