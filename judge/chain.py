"""The judge's view of the real chain: duels from the indexer, votes and settlements as transactions.

`LedgerJudgeChain` is the `judge.runner.JudgeChain` a node uses: which duels it sits on the panel of,
and in what state, come from its indexer (synced by the caller: the node's Ledger manager syncs every
`chain.poll_interval_s`); commits, reveals and settlements go through its `WWWServeClient`, run by
`run_tx` off the event loop (web3 is synchronous), one at a time, each awaited until mined. A
transaction that reverts because the chain already has it (a receipt lost to a crash) surfaces as the
client's typed error; the runner logs it and the next pass, reading the indexer again, moves on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from judge.evidence import DuelRecord
from judge.journal import DuelView

__all__ = ["LedgerJudgeChain", "duel_record", "duel_view"]


def _bytes32(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def duel_record(duel: Any) -> DuelRecord:
    """The on-chain record of an indexed duel (`ledger.indexer.DuelInfo`)."""
    return DuelRecord(duel.id, duel.origin, duel.a, duel.b, _bytes32(duel.question_hash),
                      _bytes32(duel.answer_a_hash), _bytes32(duel.answer_b_hash))


def duel_view(duel: Any, judge: str) -> DuelView:
    """One judge's view of an indexed duel (`ledger.indexer.DuelInfo`)."""
    me = judge.lower()
    seat = next((s for s in duel.judges if s.judge.lower() == me), None)
    return DuelView(
        duel_id=duel.id,
        status=duel.status,
        commit_end=duel.commit_end or 0,
        reveal_end=duel.reveal_end or 0,
        committed=seat is not None and (seat.commitment is not None or seat.vote is not None),
        revealed_vote=None if seat is None else seat.vote,
        all_revealed=bool(duel.judges) and all(s.vote is not None for s in duel.judges),
    )


class LedgerJudgeChain:
    """`JudgeChain` over an indexer (reads) and a `WWWServeClient` with this judge's wallet (writes)."""

    def __init__(
        self, indexer: Any, client: Any, judge: str, run_tx: Callable[[Callable[[], Any]], Awaitable[Any]]
    ) -> None:
        self.indexer = indexer
        self.client = client
        self.judge = judge
        self.chain_id = int(client.chain_id)
        self._run_tx = run_tx

    def block_number(self) -> int:
        """The newest block the indexer has seen (what its duel states are as of)."""
        cursor = self.indexer.cursor()
        return -1 if cursor is None else int(cursor.block_number)

    def my_duels(self) -> Sequence[tuple[DuelRecord, DuelView]]:
        """Duels in voting with this judge on the panel."""
        return [(duel_record(d), duel_view(d, self.judge)) for d in self.indexer.duels_judged_by(self.judge)]

    def key_of(self, address: str) -> bytes | None:
        """The ed25519 key `address` registered (from the indexer's registry)."""
        node = self.indexer.node(address)
        return None if node is None else _bytes32(node.pubkey)

    def commitment_of(self, duel_id: int, vote: int, salt: bytes) -> bytes:
        """keccak(chain, contract, duel, judge, vote, salt), computed offline like the contract does."""
        return bytes(self.client.vote_commitment(duel_id, self.judge, vote, salt))

    async def commit(self, duel_id: int, commitment: bytes) -> str:
        """commitVote, mined."""
        result = await self._run_tx(lambda: self.client.commit_vote(duel_id, commitment))
        return str(result.tx_hash)

    async def reveal(self, duel_id: int, vote: int, salt: bytes) -> str:
        """revealVote, mined."""
        result = await self._run_tx(lambda: self.client.reveal_vote(duel_id, vote, salt))
        return str(result.tx_hash)

    async def settle(self, duel_id: int) -> str:
        """settleDuel, mined."""
        result = await self._run_tx(lambda: self.client.settle_duel(duel_id))
        return str(result.tx_hash)
