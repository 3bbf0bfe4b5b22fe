"""The duel roles' view of the real chain: duels from the indexer, the contract when it must be asked,
and every duel transaction, mined.

`LedgerDuelChain` is both the `judge.runner.JudgeChain` and the `judge.manager.DuelChain` of a
node. Which duels it is an origin, duelist, challenger or judge of, and in what state, come from its
indexer (synced by the caller: the node's Ledger manager syncs every `chain.poll_interval_s`), as
`ledger.records.DuelState` (`IndexedDuel.state`); `duel_onchain` reads the same `DuelState` from the
contract instead (`WWWServeClient.duel_with_hashes`: when the indexer may lag behind what a peer saw),
and `challenger_of` asks the contract who a draw picks now. Transactions go through its
`WWWServeClient`, run by `run_tx` off the event loop (web3 is synchronous), one at a time, each awaited
until mined. A transaction that reverts because the chain already has it (a receipt lost to a crash,
someone else settled first) surfaces as the client's typed error; the caller logs it and the next pass,
reading the indexer again, moves on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from wwwserve.judge.journal import DuelView
from wwwserve.ledger.indexer import OPEN_STATUSES
from wwwserve.ledger.records import DuelState
from wwwserve.ledger.work import WorkAttestation

__all__ = ["LedgerDuelChain", "duel_view"]


def duel_view(state: DuelState, round_: int, judge: str) -> DuelView:
    """One judge's view of its seats in round `round_` of a duel."""
    rnd = state.round_state(round_)
    if rnd is None:
        raise ValueError(f"duel {state.duel_id} has no round {round_}")
    vote = rnd.vote_of(judge)
    return DuelView(
        duel_id=state.duel_id,
        round=round_,
        open=state.is_open,
        commit_end=rnd.commit_end,
        reveal_end=rnd.reveal_end,
        committed=vote is not None or judge.lower() in rnd.committed,
        revealed_vote=vote,
        settle_after=state.settle_after(),
    )


class LedgerDuelChain:
    """The chain through an indexer (reads) and a `WWWServeClient` with this node's wallet (writes)."""

    def __init__(
        self, indexer: Any, client: Any, me: str, run_tx: Callable[[Callable[[], Any]], Awaitable[Any]]
    ) -> None:
        self.indexer = indexer
        self.client = client
        self.me = me
        self.chain_id = int(client.chain_id)
        self._run_tx = run_tx
        self._params: Any = None

    @property
    def params(self) -> Any:
        """The deployment parameters (read once)."""
        if self._params is None:
            self._params = self.client.params()
        return self._params

    @property
    def attestation_ttl_s(self) -> int:
        """How long work can be dueled after it was attested."""
        return int(self.params.attestation_ttl_s)

    def _state(self, duel: Any) -> DuelState:
        """The state of an indexed duel (`ledger.indexer.IndexedDuel`)."""
        state: DuelState = duel.state(reveal_window_blocks=self.params.reveal_window_blocks,
                                      appeal_window_blocks=self.params.appeal_window_blocks)
        return state

    # ---- reads --------------------------------------------------------------------------------

    def block_number(self) -> int:
        """The newest block the indexer has seen (what its duel states are as of)."""
        cursor = self.indexer.cursor()
        return -1 if cursor is None else int(cursor.block_number)

    def duel(self, duel_id: int) -> DuelState | None:
        """A duel as indexed, or None."""
        duel = self.indexer.duel(duel_id)
        return None if duel is None else self._state(duel)

    def duel_onchain(self, duel_id: int) -> DuelState | None:
        """A duel as the contract has it now (RPC calls; a past round's windows are unknown here and
        read as over), or None if there is none."""
        from wwwserve.ledger.errors import UnknownDuelError

        since = int(getattr(self.indexer, "start_block", 0))  # no log of this contract is older
        try:
            state: DuelState = self.client.duel_with_hashes(duel_id, from_block=since)
        except UnknownDuelError:
            return None
        return state

    def my_seats(self) -> Sequence[tuple[DuelState, DuelView]]:
        """Every round of an open duel in which this node holds seats, with its view."""
        out = []
        for duel in self.indexer.duels_judged_by(self.me, OPEN_STATUSES, current_round_only=False):
            state = self._state(duel)
            for rnd in state.rounds:
                if rnd.seats_of(self.me):
                    out.append((state, duel_view(state, rnd.round, self.me)))
        return out

    def opened_by_me(self) -> Sequence[DuelState]:
        """Open duels this node opened."""
        return [self._state(d) for d in self.indexer.duels_opened_by(self.me)]

    def awaiting_answer(self) -> Sequence[DuelState]:
        """Every duel awaiting its challenger's answer."""
        return [self._state(d) for d in self.indexer.duels_awaiting_answer()]

    def as_duelist(self) -> Sequence[DuelState]:
        """Open duels in which this node is A or the recorded B."""
        executed = self.indexer.duels_executed_by(self.me, OPEN_STATUSES)
        challenged = self.indexer.duels_with_challenger(self.me, OPEN_STATUSES)
        seen: set[int] = set()
        out = []
        for duel in [*executed, *challenged]:
            if duel.id not in seen:
                seen.add(duel.id)
                out.append(self._state(duel))
        return out

    def open_duel_ids(self) -> set[int]:
        """Open duels this node is a party of (origin, A or B): whose evidence it must keep."""
        ids = {d.duel_id for d in self.opened_by_me()}
        ids.update(d.duel_id for d in self.as_duelist())
        return ids

    def challenger_of(self, duel_id: int) -> str | None:
        """Who the contract says the challenger is now (an RPC call)."""
        found = self.client.challenger_of(duel_id)
        return None if found is None else str(found)

    def commitment_of(self, duel_id: int, round_: int, vote: int, salt: bytes) -> bytes:
        """The vote commitment of this judge, computed offline like the contract does."""
        return bytes(self.client.vote_commitment(duel_id, round_, self.me, vote, salt))

    # ---- writes -------------------------------------------------------------------------------

    async def _tx(self, fn: Callable[[], Any]) -> Any:
        return await self._run_tx(fn)

    async def open_duel(self, work: WorkAttestation, salt: bytes) -> tuple[int, str]:
        """openDuel, mined: (duel id, tx hash)."""
        result = await self._tx(lambda: self.client.open_duel(work, salt))
        return int(result.duel_id), str(result.tx_hash)

    async def draw_challenger(self, duel_id: int) -> str:
        """drawChallenger, mined."""
        return str((await self._tx(lambda: self.client.draw_challenger(duel_id))).tx_hash)

    async def answer_duel(self, duel_id: int, answer: bytes) -> str:
        """answerDuel, mined."""
        return str((await self._tx(lambda: self.client.answer_duel(duel_id, answer))).tx_hash)

    async def publish_request(self, duel_id: int, work: WorkAttestation, salt: bytes, request: bytes) -> str:
        """publishRequest, mined."""
        return str((await self._tx(lambda: self.client.publish_request(duel_id, work, salt, request))).tx_hash)

    async def draw_judges(self, duel_id: int) -> str:
        """drawJudges (the appeal round's), mined."""
        return str((await self._tx(lambda: self.client.draw_judges(duel_id))).tx_hash)

    async def appeal(self, duel_id: int) -> str:
        """appeal, mined."""
        return str((await self._tx(lambda: self.client.appeal(duel_id))).tx_hash)

    async def commit(self, duel_id: int, commitment: bytes) -> str:
        """commitVote, mined."""
        return str((await self._tx(lambda: self.client.commit_vote(duel_id, commitment))).tx_hash)

    async def reveal(self, duel_id: int, vote: int, salt: bytes) -> str:
        """revealVote, mined."""
        return str((await self._tx(lambda: self.client.reveal_vote(duel_id, vote, salt))).tx_hash)

    async def settle(self, duel_id: int) -> str:
        """settleDuel, mined."""
        return str((await self._tx(lambda: self.client.settle_duel(duel_id))).tx_hash)
